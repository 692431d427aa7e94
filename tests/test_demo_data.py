"""The demo data set: MAESTRO Real's layout and format, reproducible, with learnable classes."""
import math

import librosa
import numpy as np
import pytest
import soundfile

import config
import demo_data
import utils

SCALE = 0.03                      # 5.4 .. 9 s per file: all 49 files in about a second
FEW = ['cafe_restaurant/cafe_restaurant_07', 'metro_station/metro_station_10']


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    demo_data.generate_demo_dataset(root, scale=SCALE, seed=config.DEMO_SEED, progress=False)
    return root


def read_rows(path):
    """[(onset, offset, label, soft)] of an annotation file, parsed strictly."""
    rows = []
    for line in path.read_text().splitlines():
        onset, offset, label, soft = line.split('\t')
        rows.append((float(onset), float(offset), label, float(soft)))
    return rows


def file_bytes(root, file_ids):
    return {file_id: (utils.audio_path(root, file_id).read_bytes(), utils.annotation_path(root, file_id).read_bytes())
            for file_id in file_ids}


def test_same_seed_gives_same_bytes_also_for_a_subset(demo_root, tmp_path):
    demo_data.generate_demo_dataset(tmp_path / 'a', scale=SCALE, seed=config.DEMO_SEED, file_ids=FEW, progress=False)
    assert file_bytes(tmp_path / 'a', FEW) == file_bytes(demo_root, FEW)


def test_different_seed_gives_different_bytes(demo_root, tmp_path):
    demo_data.generate_demo_dataset(tmp_path / 'b', scale=SCALE, seed=config.DEMO_SEED + 1, file_ids=FEW,
                                    progress=False)
    other, same_seed = file_bytes(tmp_path / 'b', FEW), file_bytes(demo_root, FEW)
    for file_id in FEW:
        assert other[file_id][0] != same_seed[file_id][0]
        assert other[file_id][1] != same_seed[file_id][1]


def test_layout_and_audio_format_of_the_real_set(demo_root):
    low, high = config.DEMO_LENGTH_RANGE
    lengths = []
    for file_id in utils.development_file_ids():
        info = soundfile.info(str(utils.audio_path(demo_root, file_id)))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (44100, 2, 'PCM_24', 'WAV')
        assert SCALE * low <= info.duration <= SCALE * high
        assert utils.annotation_path(demo_root, file_id).is_file()
        lengths.append(info.frames)
    assert len(set(lengths)) > 40                                         # drawn per file
    assert any(frames % config.SAMPLE_RATE for frames in lengths)         # real files end mid-second


def test_annotation_rows_are_one_second_with_soft_values_of_five_annotators(demo_root):
    all_soft = []
    for file_id in utils.development_file_ids():
        duration = soundfile.info(str(utils.audio_path(demo_root, file_id))).duration
        for onset, offset, label, soft in read_rows(utils.annotation_path(demo_root, file_id)):
            assert label in config.CLASSES
            assert onset == int(onset) and offset == onset + 1 and 0 <= onset < math.ceil(duration)
            assert 0 < soft <= 1 + 1e-9
            all_soft.append(soft)
    all_soft = np.array(all_soft)
    np.testing.assert_allclose(all_soft * 5, np.round(all_soft * 5), atol=1e-9)   # 0.2, 0.4, ..., 1.0
    assert set(np.round(all_soft * 5).astype(int)) == {1, 2, 3, 4, 5}            # uncertain edges exist
    assert (all_soft > 1.0).any()                                                # like 1.0000000000000002


def test_every_hard_class_occurs_and_each_scene_holds_several(demo_root):
    present = {scene: set() for scene in config.SCENES}
    for file_id in utils.development_file_ids():
        for _, _, label, soft in read_rows(utils.annotation_path(demo_root, file_id)):
            if soft > config.HARD_LABEL_THRESHOLD:
                present[utils.scene_of(file_id)].add(label)
    assert set(config.HARD_CLASSES) <= set().union(*present.values())
    for scene, labels in present.items():
        assert len(labels & set(config.HARD_CLASSES)) >= 3, scene
    assert 'metro approaching' not in present['cafe_restaurant']                   # scene-dependent priors


def mel_and_targets(root, file_id):
    """Linear mel magnitudes (frames, 64) as the features, and (frames, 17) soft targets."""
    audio, sr = soundfile.read(str(utils.audio_path(root, file_id)), dtype='float32')
    mel = librosa.feature.melspectrogram(y=audio.mean(axis=1), sr=sr, n_fft=config.N_FFT,
                                         hop_length=config.HOP_LENGTH, power=config.MEL_POWER,
                                         n_mels=config.N_MELS, fmin=config.FMIN, fmax=config.FMAX).T
    targets = np.zeros((len(mel), len(config.CLASSES)))
    for onset, offset, label, soft in read_rows(utils.annotation_path(root, file_id)):
        start, stop = round(onset / config.FRAME_SECONDS), round(offset / config.FRAME_SECONDS)
        targets[start:stop, config.CLASSES.index(label)] = soft
    return mel, targets


def test_classes_are_louder_in_their_band_while_active(demo_root):
    mels, targets = zip(*(mel_and_targets(demo_root, file_id) for file_id in utils.development_file_ids()))
    mel, target = np.concatenate(mels), np.concatenate(targets)
    centres = librosa.mel_frequencies(config.N_MELS + 2, fmin=config.FMIN, fmax=config.FMAX)[1:-1]
    checked = []
    for c, label in enumerate(config.CLASSES):
        low, high = demo_data.CLASS_SOUNDS[label][:2]
        band = mel[:, (centres >= low) & (centres <= high)].mean(axis=1)
        active, silent = target[:, c] > config.HARD_LABEL_THRESHOLD, target[:, c] == 0
        if active.sum() >= 10:
            assert band[active].mean() > 2 * band[silent].mean(), label
            checked.append(label)
    assert len(checked) >= 12 and set(checked) >= set(config.HARD_CLASSES)


def test_cli_writes_the_requested_files(tmp_path):
    assert demo_data.main(['--out', str(tmp_path), '--scale', '0.01', '--seed', '5', '--files', FEW[0]]) == 0
    assert soundfile.info(str(utils.audio_path(tmp_path, FEW[0]))).channels == 2
    assert not utils.audio_path(tmp_path, FEW[1]).exists()


def test_cli_rejects_an_unknown_scene(tmp_path, capsys):
    assert demo_data.main(['--out', str(tmp_path), '--files', 'airport/airport_00']) == 2
    assert 'airport/airport_00' in capsys.readouterr().err
