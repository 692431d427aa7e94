"""Pretrained embeddings beside the mel bands (config.EMBEDDINGS; docs/method.md, Pretrained embeddings): their
alignment to the 0.2 s frames and windows, extraction (stored, resumable, the checkpoint's SHA-256 recorded and
checked), the fused CRNN, one training epoch and infer.py, on a tiny random BEATs checkpoint of the official format
(one layer, the published width of 768) and the 3-s files of test_extract_features' data set."""
import hashlib
import json

import librosa
import numpy as np
import pytest
import torch

import audio_io
import config
import embeddings
import extract_features as ef
import infer
import model
import pretrained
import task4b
import utils
from test_extract_features import IDS, dataset  # noqa: F401 (a fixture)
from test_pretrained import BEATS_AS2M_CONFIG, seeded_state
from utils import DataError

TINY_BEATS = {**BEATS_AS2M_CONFIG, 'encoder_layers': 1, 'encoder_ffn_embed_dim': 64, 'embed_dim': 32,
              'conv_pos': 16, 'conv_pos_groups': 16}     # 3 M parameters, 768-value embeddings


def tiny_beats_checkpoint(path, seed=0):
    """A random BEATs checkpoint saved as microsoft/unilm saves its own."""
    state = seeded_state(pretrained.BEATs(TINY_BEATS).state_dict(), seed=seed)
    torch.save({'cfg': TINY_BEATS, 'model': state}, path)
    return path


@pytest.fixture
def checkpoint(tmp_path):
    return tiny_beats_checkpoint(tmp_path / 'beats_tiny.pt')


@pytest.fixture
def beats_on(checkpoint, monkeypatch):
    """config.EMBEDDINGS = 'beats' with the tiny checkpoint, for this test."""
    monkeypatch.setattr(config, 'EMBEDDINGS', 'beats')
    monkeypatch.setattr(config, 'EMBEDDINGS_CHECKPOINT', str(checkpoint))
    return checkpoint


def test_frames_take_the_linear_interpolation_of_the_step_centres():
    step, centre = 0.16, 0.0875
    steps = (centre + step * np.arange(40))[:, None] * np.ones((1, 3))    # each step's value: its centre time
    frames = embeddings.frames_from_steps(steps.astype(np.float32), step, centre, 30)
    times = np.arange(30) * config.FRAME_SECONDS                          # centred frames
    expected = np.clip(times, centre, centre + 39 * step)                  # the first step before its centre
    np.testing.assert_allclose(frames, np.repeat(expected[:, None], 3, axis=1), atol=1e-5)


def test_each_step_comes_from_the_10s_window_where_it_lies_most_centrally(checkpoint):
    net, _ = embeddings.load_embedder('beats', checkpoint, 'cpu')
    rate = pretrained.BEATS_SAMPLE_RATE
    audio = (np.random.default_rng(0).standard_normal(12 * rate) * 0.1).astype(np.float32)   # windows 0 and 8 s
    steps, step = embeddings.embedding_steps(net, 'beats', audio)
    padded = np.concatenate([audio, np.zeros(round(18 * rate) - len(audio), np.float32)])
    windows = [pretrained.beats_embeddings(net, padded[round(s * rate):round((s + 10) * rate)])[0] for s in (0, 8)]
    assert step == 0.16 and steps.shape == (50 + 62, 768)
    for g in range(len(steps)):
        t = 0.0875 + 0.16 * g
        margins = [min(t - s, s + 10 - t) if 0 <= g - 50 * k < 62 else -np.inf for k, s in enumerate((0, 8))]
        k = int(np.argmax(margins))                                      # the earlier window on a tie
        np.testing.assert_allclose(steps[g], windows[k][g - 50 * k], atol=1e-4, err_msg=f'step {g}')


def test_extraction_stores_the_embeddings_of_the_resampled_audio_at_the_mel_frames(dataset, beats_on):  # noqa: F811
    dataset.run()
    net, _ = embeddings.load_embedder('beats', beats_on, 'cpu')
    with np.load(utils.file_features_path(dataset.workdir, IDS[0])) as stored:
        features = stored['features']
    audio = audio_io.read_audio(utils.audio_path(dataset.root, IDS[0]))
    frames = 1 + len(audio) // config.HOP_LENGTH
    resampled = librosa.resample(audio, orig_sr=config.SAMPLE_RATE, target_sr=16000)            # 3 s: one window
    window = np.concatenate([resampled, np.zeros(160000 - len(resampled), np.float32)])
    steps, step = pretrained.beats_embeddings(net, window)
    assert features.shape == (frames, 64 + 768)
    np.testing.assert_array_equal(features[:, :64], ef.front_end.compute(audio))
    np.testing.assert_allclose(features[:, 64:], embeddings.frames_from_steps(steps, step, 0.0875, frames), atol=1e-4)
    manifest = ef.read_manifest(dataset.workdir)
    assert manifest['params']['embeddings'] == 'beats'
    assert manifest['embeddings']['sha256'] == hashlib.sha256(beats_on.read_bytes()).hexdigest()
    fold = ef.load_fold(dataset.workdir, 1)             # every value, the embeddings' too, standardised per fold
    assert fold['mean'].shape == (64 + 768,) and fold['X_test'][0].shape == (frames, 64 + 768)


def test_a_rerun_skips_the_files_done_and_a_killed_run_continues(dataset, beats_on, monkeypatch):  # noqa: F811
    computed, embed = [], embeddings.at_frames

    def counted(net, kind, audio, n_frames):
        if len(computed) == 2 and not hasattr(counted, 'killed'):
            counted.killed = True
            raise KeyboardInterrupt                   # the run killed while embedding its third file
        computed.append(n_frames)
        return embed(net, kind, audio, n_frames)
    monkeypatch.setattr(embeddings, 'at_frames', counted)
    with pytest.raises(KeyboardInterrupt):
        dataset.run()
    assert len(list((dataset.workdir / 'features' / 'embeddings').glob('*.npz'))) == 2
    dataset.run()
    assert len(computed) == len(IDS)                   # the 2 files saved before the kill were not computed again
    dataset.run()
    assert len(computed) == len(IDS)


def test_another_checkpoint_refuses_the_features_and_computes_them_again(dataset, beats_on, tmp_path,  # noqa: F811
                                                                         monkeypatch):
    dataset.run()
    other = tiny_beats_checkpoint(tmp_path / 'other.pt', seed=1)
    monkeypatch.setattr(config, 'EMBEDDINGS_CHECKPOINT', str(other))
    with pytest.raises(DataError, match=f'features made with the checkpoint of SHA-256 [0-9a-f]{{64}}; {other} is '
                                        f'another file'):
        ef.load_fold(dataset.workdir, 1)
    before = np.load(embeddings.path(dataset.workdir, IDS[0]))['embeddings']
    dataset.run()
    after = np.load(embeddings.path(dataset.workdir, IDS[0]))['embeddings']
    assert not np.allclose(before, after)
    ef.load_fold(dataset.workdir, 1)


@pytest.mark.parametrize('damage, message', [
    ('missing', 'no such file; expected a BEATs checkpoint'),
    ('truncated', 'cannot be read by torch.load'),
    ('none', 'no checkpoint: give its file, --set EMBEDDINGS_CHECKPOINT=PATH'),
])
def test_an_unusable_checkpoint_is_one_line_before_any_work(dataset, beats_on, damage, message, capsys):  # noqa: F811
    path = str(beats_on)
    if damage == 'truncated':
        beats_on.write_bytes(beats_on.read_bytes()[:1000])
    elif damage == 'missing':
        beats_on.unlink()
    code = ef.main(['--data-root', dataset.root, '--workdir', dataset.workdir, '--folds-dir', dataset.folds_dir,
                    '--split-file', dataset.root.parent / 'split.csv', '--jobs', '1', '--set', 'EMBEDDINGS=beats',
                    '--set', f'EMBEDDINGS_CHECKPOINT={"" if damage == "none" else path}'])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert damage == 'none' or path in err
    assert not dataset.workdir.exists()


@pytest.mark.parametrize('name, value', [('FILTER_AUGMENT_BANDS', 3), ('MIXSTYLE', 0.5), ('FREQ_MASKS', 1)])
def test_augmentations_of_the_mel_bands_are_refused_with_embeddings(name, value, monkeypatch):
    monkeypatch.setattr(config, name, value)
    assert utils.config_problem() is None
    monkeypatch.setattr(config, 'EMBEDDINGS', 'beats')
    names, message = utils.config_problem()
    assert names == [name, 'EMBEDDINGS'] and 'acts on the mel bands' in message


def test_the_fused_crnn_adds_the_projection_and_the_wider_gru_input(monkeypatch):
    monkeypatch.setattr(config, 'EMBEDDINGS', 'beats')
    net = model.CRNN()
    projection = 768 * 384 + 384
    wider_gru = 2 * 3 * config.GRU_UNITS * 384                     # 2 directions x 3 gates x the 384 new inputs
    assert sum(p.numel() for p in net.parameters()) == 380_113 + projection + wider_gru
    assert net(torch.zeros(2, 50, 64 + 768)).shape == (2, 50, 17)
    monkeypatch.setattr(config, 'EMBEDDINGS', 'none')
    assert not hasattr(model.CRNN(), 'embedding_projection')


def test_one_epoch_records_the_embeddings_and_infer_scores_new_audio(dataset, checkpoint, tmp_path,  # noqa: F811
                                                                     capsys):
    common = ['--set', f'EMBEDDINGS_CHECKPOINT={checkpoint}', '--set', 'TRACK_ENERGY=False']
    assert ef.main(['--data-root', dataset.root, '--workdir', dataset.workdir, '--folds-dir', dataset.folds_dir,
                    '--split-file', dataset.root.parent / 'split.csv', '--jobs', '1', '--set', 'EMBEDDINGS=beats',
                    '--set', 'SEQUENCE_LENGTH=8', '--set', 'TIME_MASK_WIDTH=8', *common]) == 0
    assert task4b.main(['--workdir', dataset.workdir, '--folds', '1', '--epochs', '1', '--device', 'cpu',
                        '--set', 'TRACK_ENERGY=False']) == 0          # the workdir keeps EMBEDDINGS, not the path
    settings = json.loads((dataset.workdir / 'runs' / 'run0' / 'settings.json').read_text())
    assert settings['record']['training']['config']['EMBEDDINGS'] == 'beats'
    assert settings['record']['features']['embeddings']['sha256'] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert settings['complexity']['embeddings']['parameters'] > 90e6             # BEATs' published size
    audio = tmp_path / 'audio'
    audio.mkdir()
    for file_id in IDS[:2]:
        (audio / f'{utils.file_stem(file_id)}.wav').write_bytes(utils.audio_path(dataset.root, file_id).read_bytes())
    out = tmp_path / 'out'
    assert infer.main(['--audio', audio, '--workdir', dataset.workdir, '--out', out, *common]) == 0
    scores = (out / 'scores' / f'{utils.file_stem(IDS[0])}.tsv').read_text().splitlines()
    assert len(scores) == 1 + 16                                       # a header, then 3 s of 0.2 s frames
    capsys.readouterr()
    other = tiny_beats_checkpoint(tmp_path / 'other.pt', seed=1)
    assert infer.main(['--audio', audio, '--workdir', dataset.workdir, '--out', tmp_path / 'out2',
                       '--set', f'EMBEDDINGS_CHECKPOINT={other}', '--set', 'TRACK_ENERGY=False']) == 2
    assert f'{other} is another file' in capsys.readouterr().err


@pytest.mark.parametrize('kind', ['beats', 'cnn14'])
def test_windows_give_every_step_at_its_time_on_one_grid(kind, monkeypatch):
    """A network stand-in that reports, for each step of a window, the audio at the step's centre; on a ramp (each
    sample its own time in s) the steps must come out at their times, centre + step x index, across the windows."""
    embedder = embeddings.EMBEDDERS[kind]
    step = {'beats': 0.16, 'cnn14': 0.32}[kind]
    rate = embedder.sample_rate

    def times_at_step_centres(net, windows):           # (windows, 10 s) -> (windows, steps, 1)
        index = np.round((embedder.centre + step * np.arange(int(10 / step) - 1)) * rate).astype(int)
        return windows[:, index][..., None], step
    monkeypatch.setitem(embeddings.EMBEDDERS, kind, embedder.__class__(
        embedder.load, times_at_step_centres, rate, embedder.width, embedder.centre))
    ramp = (np.arange(23 * rate) / rate).astype(np.float32)          # 4 windows, the last one zero-padded
    steps, _ = embeddings.embedding_steps(None, kind, ramp)
    times = embedder.centre + step * np.arange(len(steps))
    inside = times < 23 - step                                        # beyond the audio, the padding's zeros
    np.testing.assert_allclose(steps[inside, 0], times[inside], atol=1e-3)
