"""extract_features.py: features and targets (docs/method.md, Features), per-fold arrays, metadata, bad input,
and load_fold refusing features older than their inputs."""
import json
import os
import types

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from sklearn.preprocessing import StandardScaler

import audio_io
import config
import extract_features as ef
import front_end
import utils
from utils import DataError

IDS = ['cafe_restaurant/cafe_restaurant_00', 'city_center/city_center_02', 'grocery_store/grocery_store_00',
       'metro_station/metro_station_00', 'residential_area/residential_area_00']


def write_audio(path, seconds=3.0, gain=0.1, seed=0, sample_rate=44100, channels=2, subtype='PCM_24'):
    """Noise plus a tone (a different one per seed), written with soundfile -> the float signal written."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    tone = np.sin(2 * np.pi * (300 + 200 * seed) * t)[:, None]
    audio = gain * np.clip(0.3 * rng.standard_normal((n, channels)) + 0.5 * tone, -1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate, subtype=subtype)
    return audio


def write_labels(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join('\t'.join(str(v) for v in row) + '\n' for row in rows))


def write_list(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('filename\n' + ''.join(f'{i}\n' for i in ids))


@pytest.fixture
def dataset(tmp_path):
    """5 files of 3 s, 5 folds (fold k: test file k, validation file k+1, training the other 3), in tmp."""
    root, folds_dir = tmp_path / 'data', tmp_path / 'folds'
    for k, file_id in enumerate(IDS):
        write_audio(utils.audio_path(root, file_id), seed=k)
        write_labels(utils.annotation_path(root, file_id),
                     [(0.0, 1.0, 'car', 0.8), (1.0, 2.0, 'car', 0.4), (1.0, 2.0, 'people talking', 1.0)])
    write_list(tmp_path / 'split.csv', IDS)
    for fold in range(1, config.N_FOLDS + 1):
        test, val = IDS[(fold - 1) % len(IDS)], IDS[fold % len(IDS)]
        write_list(utils.fold_file(fold, 'test', folds_dir), [test])
        write_list(utils.fold_file(fold, 'val', folds_dir), [val])
        write_list(utils.fold_file(fold, 'train', folds_dir), [i for i in IDS if i not in (test, val)])
    workdir = tmp_path / 'work'

    def run(**kwargs):
        return ef.extract(root, workdir, folds_dir, **{'jobs': 1, 'split_file': tmp_path / 'split.csv', **kwargs})
    return types.SimpleNamespace(root=root, folds_dir=folds_dir, workdir=workdir, run=run)


@pytest.fixture
def audio_reads(monkeypatch):
    """Count the audio files read by extract() (jobs=1 runs in this process)."""
    calls = []
    read_audio = audio_io.read_audio
    monkeypatch.setattr(audio_io, 'read_audio', lambda path: calls.append(path) or read_audio(path))
    return calls


def compute_mel_features_reference(audio):
    """The features of config.py computed by librosa in float64: slow, the yardstick of the float32 fast path."""
    mel = librosa.feature.melspectrogram(
        y=np.asarray(audio, dtype=np.float64), sr=config.SAMPLE_RATE, n_fft=config.N_FFT,
        hop_length=config.HOP_LENGTH, win_length=config.N_FFT, window=config.WINDOW, center=config.CENTER,
        pad_mode=config.PAD_MODE, power=config.MEL_POWER, n_mels=config.N_MELS, fmin=config.FMIN,
        fmax=config.FMAX, dtype=np.float64).T                                  # (frames, 64) float64
    return np.log(mel + config.LOG_OFFSET) if config.LOG_MEL else mel


def file_arrays(workdir, file_id):
    with np.load(utils.file_features_path(workdir, file_id)) as data:
        return {name: data[name] for name in data.files}


def outputs(workdir):
    """{relative path: arrays of an npz, or the text of a CSV} of everything extract() wrote but the manifest."""
    found = {}
    for path in sorted(workdir.rglob('*')):
        if path.suffix == '.npz':
            with np.load(path) as data:
                found[str(path.relative_to(workdir))] = {name: data[name] for name in data.files}
        elif path.suffix == '.csv':
            found[str(path.relative_to(workdir))] = path.read_text()
    return found


def assert_same_outputs(one, two):
    assert one.keys() == two.keys()
    for name, value in one.items():
        if isinstance(value, str):
            assert value == two[name], name
        else:
            assert value.keys() == two[name].keys(), name
            for key in value:
                np.testing.assert_array_equal(value[key], two[name][key], err_msg=f'{name} {key}')


# -----------------------------------------------------------------------------
# Features


@pytest.mark.parametrize('n_samples', [0, 1, 8819, 8820, 8821, 3 * 44100 + 17])
def test_frame_count_is_one_plus_samples_over_hop(n_samples):
    features = front_end.compute_mel_features(np.zeros(n_samples, dtype=np.float32))
    assert features.shape == (1 + n_samples // config.HOP_LENGTH, config.N_MELS)


def test_float32_path_within_1e5_of_the_float64_reference(tmp_path):
    write_audio(tmp_path / 'a.wav', seconds=4.0, gain=0.8, seed=3)
    audio = audio_io.read_audio(tmp_path / 'a.wav')
    fast, reference = front_end.compute_mel_features(audio), compute_mel_features_reference(audio)
    assert reference.dtype == np.float64
    assert np.abs(fast - reference).max() <= 1e-5 * np.abs(reference).max()


def test_log_mel_option_compresses_the_linear_magnitudes(monkeypatch):
    signal = np.random.default_rng(2).standard_normal(44100).astype(np.float32)
    linear = front_end.compute_mel_features(signal)
    monkeypatch.setattr(config, 'LOG_MEL', True)
    np.testing.assert_allclose(front_end.compute_mel_features(signal), np.log(linear + config.LOG_OFFSET),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('subtype', ['PCM_16', 'PCM_24', 'PCM_32'])
@pytest.mark.parametrize('channels', [1, 2, 3])
def test_pcm_16_24_32_bit_with_any_channel_count_is_read_as_mono_average(tmp_path, subtype, channels):
    written = write_audio(tmp_path / 'a.wav', seconds=1.0, gain=0.5, channels=channels, subtype=subtype)
    audio = audio_io.read_audio(tmp_path / 'a.wav')
    assert audio.dtype == np.float32 and audio.shape == (len(written),)
    np.testing.assert_allclose(audio, written.mean(axis=1), atol=2.0 ** -14)


def test_another_sample_rate_is_resampled_to_44100(tmp_path):
    n = 22050
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / 22050)
    sf.write(tmp_path / 'a.wav', tone, 22050, subtype='PCM_16')
    audio = audio_io.read_audio(tmp_path / 'a.wav')
    assert len(audio) == 44100
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * config.SAMPLE_RATE / len(audio) == pytest.approx(1000, abs=2)


def test_unreadable_wav_is_an_error_naming_the_file(tmp_path):
    (tmp_path / 'a.wav').write_bytes(b'not a wav file' * 10)
    with pytest.raises(DataError, match='a.wav: cannot read audio'):
        audio_io.read_audio(tmp_path / 'a.wav')


@pytest.mark.parametrize('n_samples, message', [(0, 'no audio samples'), (4410, 'shorter than one frame')])
def test_audio_of_no_samples_or_shorter_than_a_frame_is_refused_at_extraction(dataset, n_samples, message, capsys):
    path = utils.audio_path(dataset.root, IDS[2])
    sf.write(path, np.zeros((n_samples, 2)), 44100, subtype='PCM_24')
    code = ef.main(['--data-root', str(dataset.root), '--workdir', str(dataset.workdir), '--folds-dir',
                    str(dataset.folds_dir), '--split-file', str(dataset.root.parent / 'split.csv'), '--jobs', '1'])
    last = capsys.readouterr().err.splitlines()[-1]                          # after the progress bar
    assert code == 2 and last.startswith(f'error: {path}: ') and message in last
    assert not (dataset.workdir / config.METADATA_DIR).exists()              # no duration 0 written


def test_truncated_wav_is_an_error_naming_the_file(tmp_path):
    write_audio(tmp_path / 'a.wav', seconds=1.0)
    data = (tmp_path / 'a.wav').read_bytes()
    (tmp_path / 'a.wav').write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match='a.wav: truncated WAV'):
        audio_io.read_audio(tmp_path / 'a.wav')


# -----------------------------------------------------------------------------
# Soft labels


def test_rasterisation_follows_floor_onset_ceil_offset_with_the_rows_value():
    labels = pd.DataFrame({'onset': [12.0, 0.3, 1.0, 1.2], 'offset': [13.0, 0.5, 1.1, 1.4],
                           'event_label': ['car', 'birds_singing', 'cash register beeping', 'footsteps'],
                           'soft': [0.8, 0.6, 0.2, 0.7]})
    targets = ef.rasterize_soft_labels(labels, 70)
    assert targets.shape == (70, len(config.CLASSES)) and targets.dtype == np.float64
    car, birds, cash, steps = (config.CLASSES.index(c) for c in ('car', 'birds_singing', 'cash register beeping',
                                                                 'footsteps'))
    assert np.flatnonzero(targets[:, car]).tolist() == list(range(60, 65))   # floor(60.0) .. ceil(65.0)
    assert np.allclose(targets[60:65, car], 0.8)
    assert np.flatnonzero(targets[:, birds]).tolist() == [1, 2]              # floor(1.5) .. ceil(2.5)
    assert np.flatnonzero(targets[:, cash]).tolist() == [5]                  # floor(5.0) .. ceil(5.5)
    assert np.flatnonzero(targets[:, steps]).tolist() == [6]                 # 1.2 / 0.2 is 5.999999999999999
    assert np.count_nonzero(targets) == 5 + 2 + 1 + 1


def test_rows_past_the_end_of_the_audio_are_cut(tmp_path):
    write_labels(tmp_path / 'a.txt', [(12.0, 13.0, 'car', 0.8), (20.0, 21.0, 'car', 0.9)])
    targets = ef.rasterize_soft_labels(ef.read_soft_labels(tmp_path / 'a.txt'), 63)
    assert targets.shape == (63, len(config.CLASSES))
    assert np.flatnonzero(targets[:, config.CLASSES.index('car')]).tolist() == [60, 61, 62]


def test_empty_annotation_file_has_no_events(tmp_path):
    (tmp_path / 'a.txt').write_text('')
    labels = ef.read_soft_labels(tmp_path / 'a.txt')
    assert list(labels.columns) == ['onset', 'offset', 'event_label', 'soft'] and len(labels) == 0
    assert not ef.rasterize_soft_labels(labels, 10).any()


def test_soft_values_above_one_are_clipped_and_counted(tmp_path):
    write_labels(tmp_path / 'a.txt', [(0.0, 1.0, 'car', repr(float(np.nextafter(1.0, 2.0)))), (1.0, 2.0, 'car', 0.5),
                                      (2.0, 3.0, 'car', 1.5)])
    labels = ef.read_soft_labels(tmp_path / 'a.txt')
    assert labels['soft'].tolist() == [1.0, 0.5, 1.0]
    assert labels.attrs['n_clipped'] == 2


BAD_ROWS = {  # second line of the file -> expected message after `<path>, line 2: `
    'wrong column count': ('1.0\t2.0\tcar', 'expected 4 tab-separated columns .* found 3'),
    'too many columns': ('1.0\t2.0\tcar\t0.5\textra', 'expected 4 tab-separated columns .* found 5'),
    'unknown label': ('1.0\t2.0\tsubmarine\t0.5', "unknown label 'submarine'"),
    'non-numeric onset': ('one\t2.0\tcar\t0.5', "onset 'one' is not a number"),
    'non-numeric soft value': ('1.0\t2.0\tcar\thigh', "soft 'high' is not a number"),
    'negative onset': ('-1.0\t2.0\tcar\t0.5', 'negative onset -1.0'),
    'negative soft value': ('1.0\t2.0\tcar\t-0.5', 'negative soft -0.5'),
    'offset before onset': ('3.0\t2.0\tcar\t0.5', 'offset 2.0 <= onset 3.0'),
    'offset equal to onset': ('2.0\t2.0\tcar\t0.5', 'offset 2.0 <= onset 2.0'),
}


@pytest.mark.parametrize('case', BAD_ROWS)
def test_bad_annotation_row_is_an_error_naming_file_and_line(tmp_path, case):
    line, message = BAD_ROWS[case]
    (tmp_path / 'a.txt').write_text(f'0.0\t1.0\tcar\t0.8\n{line}\n2.0\t3.0\tcar\t0.8\n')
    with pytest.raises(DataError, match=f'a.txt, line 2: {message}'):
        ef.read_soft_labels(tmp_path / 'a.txt')


# -----------------------------------------------------------------------------
# The whole stage on a small data set


def test_extract_writes_per_file_and_per_fold_arrays(dataset, monkeypatch):
    monkeypatch.setattr(config, 'SEQUENCE_LENGTH', 4)
    report = dataset.run()
    assert report['files'] == IDS and report['audio_seconds'] == pytest.approx(5 * 3.0)
    n_frames = 1 + int(3.0 * 44100) // config.HOP_LENGTH
    with np.load(dataset.workdir / 'features' / 'files' / 'cafe_restaurant_00.npz') as data:
        assert data['features'].shape == (n_frames, config.N_MELS) and data['features'].dtype == np.float32
        assert data['targets'].shape == (n_frames, len(config.CLASSES)) and float(data['duration']) == 3.0
    fold = ef.load_fold(dataset.workdir, 1)
    n_train = 3 * n_frames // 4
    assert fold['X_train'].shape == (n_train, 4, config.N_MELS) and fold['X_train'].dtype == np.float32
    assert fold['Y_train'].shape == (n_train, 4, len(config.CLASSES))
    assert fold['X_val'].shape == (n_frames // 4, 4, config.N_MELS)
    assert fold['test_files'] == [IDS[0]]
    assert len(fold['X_test']) == 1 and fold['X_test'][0].shape == (n_frames, config.N_MELS)
    assert fold['mean'].shape == fold['scale'].shape == (config.N_MELS,) and fold['mean'].dtype == np.float32


def test_sequences_are_consecutive_cuts_of_the_concatenated_files(dataset, monkeypatch):
    monkeypatch.setattr(config, 'SEQUENCE_LENGTH', 7)
    dataset.run()
    fold = ef.load_fold(dataset.workdir, 1)
    train = utils.read_fold(1, dataset.folds_dir)['train']
    files = [np.load(dataset.workdir / 'features' / 'files' / f'{utils.file_stem(i)}.npz') for i in train]
    frames = np.concatenate([(f['features'] - fold['mean']) / fold['scale'] for f in files])
    targets = np.concatenate([f['targets'] for f in files])
    n = len(frames) // 7                                              # the remainder is dropped
    np.testing.assert_allclose(fold['X_train'], frames[:n * 7].reshape(n, 7, -1), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(fold['Y_train'], targets[:n * 7].reshape(n, 7, -1))


def test_scaler_of_a_fold_is_fitted_on_its_training_files_only(dataset):
    # fold 1: test IDS[0], validation IDS[1], training IDS[2:]; make the training files 50x louder
    for k, file_id in enumerate(IDS):
        write_audio(utils.audio_path(dataset.root, file_id), gain=0.5 if k >= 2 else 0.01, seed=k)
    dataset.run()
    features = {}
    for file_id in IDS:
        with np.load(dataset.workdir / 'features' / 'files' / f'{utils.file_stem(file_id)}.npz') as data:
            features[file_id] = data['features']
    on_train = StandardScaler().fit(np.concatenate([features[i] for i in IDS[2:]]))
    on_all = StandardScaler().fit(np.concatenate(list(features.values())))
    fold = ef.load_fold(dataset.workdir, 1)
    np.testing.assert_allclose(fold['mean'], on_train.mean_, rtol=1e-4)
    np.testing.assert_allclose(fold['scale'], on_train.scale_, rtol=1e-4)
    assert np.all(np.abs(fold['mean'] - on_all.mean_) > 0.1 * on_all.mean_)   # it would catch a fit on all files
    # ... and applied to validation and test files
    np.testing.assert_allclose(fold['X_test'][0], (features[IDS[0]] - on_train.mean_) / on_train.scale_,
                               rtol=1e-3, atol=1e-4)


def test_fold_scaler_weighs_every_frame_alike_not_every_file():
    # one file of 1 frame at 0, one of 3 frames at 4: the frames' mean 3 and population std sqrt(3), where a mean
    # of the files' means would give 2
    mean, scale = ef.fit_fold_scaler([np.zeros((1, config.N_MELS)), np.full((3, config.N_MELS), 4.0)])
    assert mean.dtype == scale.dtype == np.float32 and mean.shape == scale.shape == (config.N_MELS,)
    np.testing.assert_allclose(mean, 3.0, rtol=1e-6)
    np.testing.assert_allclose(scale, np.sqrt(3.0), rtol=1e-6)


def test_fold_scaler_without_frames_is_refused():
    with pytest.raises(ValueError, match='no frames to fit on'):
        ef.fit_fold_scaler([np.zeros((0, config.N_MELS))])


def test_parallel_workers_give_the_same_files(dataset, tmp_path):
    dataset.run()
    ef.extract(dataset.root, tmp_path / 'parallel', dataset.folds_dir, jobs=2, split_file=tmp_path / 'split.csv')
    for file_id in IDS:
        name = f'features/files/{utils.file_stem(file_id)}.npz'
        with np.load(dataset.workdir / name) as one, np.load(tmp_path / 'parallel' / name) as two:
            np.testing.assert_array_equal(one['features'], two['features'])
            np.testing.assert_array_equal(one['targets'], two['targets'])


def test_soft_values_above_one_give_one_warning_line_per_run(dataset, capsys):
    for file_id in IDS[:3]:
        write_labels(utils.annotation_path(dataset.root, file_id), [(0.0, 1.0, 'car', 1.0000000000000002),
                                                                    (1.0, 2.0, 'car', 1.0000000000000002)])
    report = dataset.run()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith('warning')]
    assert report['n_clipped'] == 6
    assert warnings == ['warning: 6 soft values above 1 clipped to 1 in 3 annotation files']


def test_empty_annotation_file_and_other_sample_rate_run_without_error(dataset):
    utils.annotation_path(dataset.root, IDS[0]).write_text('')
    write_audio(utils.audio_path(dataset.root, IDS[1]), sample_rate=22050, channels=1, subtype='PCM_16')
    dataset.run()
    with np.load(dataset.workdir / 'features' / 'files' / f'{utils.file_stem(IDS[0])}.npz') as data:
        assert not data['targets'].any()
    with np.load(dataset.workdir / 'features' / 'files' / f'{utils.file_stem(IDS[1])}.npz') as data:
        assert len(data['features']) == 1 + 3 * 44100 // config.HOP_LENGTH
        assert float(data['duration']) == 3.0                                # samples / the file's own rate


# -----------------------------------------------------------------------------
# Bad input: a clear error, nothing a later run trusts


def test_listed_file_without_audio_is_an_error_naming_the_missing_path(dataset):
    missing = utils.audio_path(dataset.root, IDS[3])
    missing.unlink()
    with pytest.raises(DataError, match=f'{missing}: not found'):
        dataset.run()
    assert not (dataset.workdir / 'features').exists()


@pytest.mark.parametrize('damage, message', [(lambda data: data[:5000], 'truncated WAV'),
                                             (lambda data: b'garbage' * 100, 'cannot read audio')])
def test_bad_wav_stops_the_run_before_anything_is_written(dataset, damage, message):
    path = utils.audio_path(dataset.root, IDS[2])
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=f'{path}: {message}'):
        dataset.run()
    assert not (dataset.workdir / 'features').exists() and not (dataset.workdir / 'metadata').exists()


def test_bad_annotation_after_a_good_run_leaves_the_old_manifest_and_load_fold_refuses(dataset):
    dataset.run()
    manifest = (dataset.workdir / 'features' / 'manifest.json').read_text()
    path = utils.annotation_path(dataset.root, IDS[0])
    path.write_text('0.0\t1.0\tcar\t0.5\n1.0\t2.0\tboat\t0.5\n')
    with pytest.raises(DataError, match=f'{path}, line 2: unknown label'):
        dataset.run()
    assert (dataset.workdir / 'features' / 'manifest.json').read_text() == manifest
    with pytest.raises(DataError, match=f'{path}: changed since extraction; run: python extract_features.py'):
        ef.load_fold(dataset.workdir, 1)


def test_main_prints_the_error_and_exits_2(dataset, capsys):
    utils.audio_path(dataset.root, IDS[0]).unlink()
    code = ef.main(['--data-root', str(dataset.root), '--workdir', str(dataset.workdir), '--folds-dir',
                    str(dataset.folds_dir), '--split-file', str(dataset.root.parent / 'split.csv'), '--jobs', '1'])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith('error: ') and 'Traceback' not in err and 'cafe_restaurant_00.wav: not found' in err


def test_malformed_file_id_in_a_fold_file_is_an_error(dataset):
    write_list(utils.fold_file(2, 'test', dataset.folds_dir), ['cafe_restaurant_00'])
    with pytest.raises(DataError, match="file id 'cafe_restaurant_00' is not of the form <scene>/<scene>_NN"):
        dataset.run()


def test_missing_fold_file_names_it_and_the_command(dataset):
    utils.fold_file(3, 'val', dataset.folds_dir).unlink()
    with pytest.raises(DataError, match='fold3_val.csv.*run: python make_folds.py'):
        dataset.run()


def test_fold_whose_test_part_overlaps_its_training_part_is_refused_naming_both(dataset):
    train = utils.read_fold(1, dataset.folds_dir)['train']
    write_list(utils.fold_file(1, 'test', dataset.folds_dir), [IDS[0], train[0]])     # a training file tested too
    with pytest.raises(DataError) as error:
        dataset.run()
    assert str(error.value).startswith(f'{utils.fold_file(1, "test", dataset.folds_dir)}: file id {train[0]} is '
                                       f'also in {utils.fold_file(1, "train", dataset.folds_dir)}; the train, val '
                                       f'and test parts of a fold must be disjoint')
    assert not (dataset.workdir / config.FEATURES_DIR).exists()                       # refused before any write


def test_file_in_two_test_folds_is_refused_naming_both(dataset):
    write_list(utils.fold_file(2, 'test', dataset.folds_dir), [IDS[1], IDS[0]])      # IDS[0] is fold 1's test file
    write_list(utils.fold_file(2, 'train', dataset.folds_dir), IDS[3:])
    with pytest.raises(DataError, match=f'fold2_test.csv: file id {IDS[0]} is also in .*fold1_test.csv; every file '
                                        f'must be in exactly one test part'):
        dataset.run()


def test_file_in_no_test_fold_is_refused_naming_it(dataset):
    write_list(utils.fold_file(5, 'test', dataset.folds_dir), [])                    # IDS[4] now never tested
    write_list(utils.fold_file(5, 'train', dataset.folds_dir), IDS[1:])
    with pytest.raises(DataError, match=f'split.csv and .*folds: file id {IDS[4]} is in no fold'):
        dataset.run()


def test_file_listed_twice_in_a_part_is_refused(dataset):
    train = utils.read_fold(3, dataset.folds_dir)['train']
    write_list(utils.fold_file(3, 'train', dataset.folds_dir), train + train[:1])
    with pytest.raises(DataError, match=f'fold3_train.csv: file id {train[0]} is listed twice'):
        dataset.run()


def test_main_refuses_overlapping_folds_in_one_line(dataset, capsys):
    write_list(utils.fold_file(4, 'val', dataset.folds_dir), [IDS[3]])               # fold 4's test file
    code = ef.main(['--data-root', str(dataset.root), '--workdir', str(dataset.workdir), '--folds-dir',
                    str(dataset.folds_dir), '--split-file', str(dataset.root.parent / 'split.csv'), '--jobs', '1'])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1 and 'Traceback' not in err
    assert f'fold4_test.csv: file id {IDS[3]} is also in {utils.fold_file(4, "val", dataset.folds_dir)}' in err


# -----------------------------------------------------------------------------
# Every run recomputes; the manifest tells load_fold what the files were computed from


def test_second_run_reads_all_audio_again_and_writes_identical_files(dataset, audio_reads):
    dataset.run()
    first = outputs(dataset.workdir)
    dataset.run()
    assert len(audio_reads) == 2 * len(IDS)
    assert_same_outputs(first, outputs(dataset.workdir))


def test_second_run_replaces_edited_or_deleted_outputs(dataset):
    dataset.run()
    first = outputs(dataset.workdir)
    (dataset.workdir / config.METADATA_DIR / config.GT_FILE).write_text('edited\n')
    (dataset.workdir / config.METADATA_DIR / config.DURATIONS_FILE).unlink()
    (dataset.workdir / 'features' / 'fold3.npz').unlink()
    np.savez(utils.file_features_path(dataset.workdir, IDS[1]), **file_arrays(dataset.workdir, IDS[0]))
    dataset.run()
    assert_same_outputs(first, outputs(dataset.workdir))


def test_manifest_records_the_settings_and_every_input_file(dataset):
    dataset.run()
    manifest = json.loads((dataset.workdir / 'features' / 'manifest.json').read_text())
    assert manifest['params'] == ef.feature_params() and manifest['dataset'] == 'MAESTRO Real'
    assert manifest['data_root'] == str(dataset.root.resolve())
    assert manifest['folds_dir'] == str(dataset.folds_dir.resolve())
    assert manifest['folds_sha256'] == utils.folds_sha256(dataset.folds_dir)
    assert list(manifest['files']) == IDS
    audio = utils.audio_path(dataset.root, IDS[2]).stat()
    assert manifest['files'][IDS[2]]['audio'] == {'size': audio.st_size, 'mtime_ns': audio.st_mtime_ns}
    annotation = utils.annotation_path(dataset.root, IDS[2]).stat()
    assert manifest['files'][IDS[2]]['annotation'] == {'size': annotation.st_size, 'mtime_ns': annotation.st_mtime_ns}
    assert manifest['files'][IDS[2]]['duration'] == 3.0


def test_manifest_names_a_demo_data_root_demo(dataset):
    (dataset.root / config.DEMO_MARKER).write_text('demo\n')
    dataset.run()
    assert json.loads((dataset.workdir / 'features' / 'manifest.json').read_text())['dataset'] == 'demo'


def test_load_fold_without_features_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match='features not extracted yet; run: python extract_features.py '
                                        '--data-root DIR'):
        ef.load_fold(tmp_path, 1)


def test_load_fold_with_an_unreadable_manifest_says_features_not_extracted_yet(dataset):
    dataset.run()
    (dataset.workdir / 'features' / 'manifest.json').write_text('{"params": ')
    with pytest.raises(DataError, match='features not extracted yet; run: python extract_features.py'):
        ef.load_fold(dataset.workdir, 1)


def test_load_fold_names_the_parameter_changed_since_extraction(dataset, monkeypatch):
    dataset.run()
    monkeypatch.setattr(config, 'FMAX', 13000.0)
    with pytest.raises(DataError, match=r'feature parameter fmax changed since extraction \(14000.0 -> 13000.0\); '
                                        r'run: python extract_features.py --data-root '):
        ef.load_fold(dataset.workdir, 2)


def test_rerun_after_a_parameter_change_is_accepted_by_load_fold(dataset, monkeypatch):
    dataset.run()
    before = file_arrays(dataset.workdir, IDS[0])['features']
    monkeypatch.setattr(config, 'FMAX', 12000.0)
    dataset.run()
    assert ef.load_fold(dataset.workdir, 1)['mean'].shape == (config.N_MELS,)
    assert not np.array_equal(file_arrays(dataset.workdir, IDS[0])['features'], before)


def test_load_fold_refuses_after_an_annotation_file_was_touched(dataset):
    dataset.run()
    path = utils.annotation_path(dataset.root, IDS[3])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))          # same content, newer
    with pytest.raises(DataError, match=f'{path}: changed since extraction; run: python extract_features.py'):
        ef.load_fold(dataset.workdir, 1)


def test_load_fold_refuses_after_an_audio_file_changed(dataset):
    dataset.run()
    path = utils.audio_path(dataset.root, IDS[4])
    write_audio(path, seconds=2.0, seed=9)
    with pytest.raises(DataError, match=f'{path}: changed since extraction; run: python extract_features.py'):
        ef.load_fold(dataset.workdir, 1)


def test_load_fold_accepts_features_whose_data_root_was_deleted(dataset):
    dataset.run()
    for path in dataset.root.rglob('*.wav'):
        path.unlink()
    assert ef.load_fold(dataset.workdir, 1)['test_files'] == [IDS[0]]


def test_load_fold_refuses_after_a_fold_file_changed(dataset):
    dataset.run()
    write_list(utils.fold_file(2, 'val', dataset.folds_dir), IDS[:1])
    with pytest.raises(DataError, match=f'fold files changed since extraction; run: python extract_features.py '
                                        f'.* --folds-dir {dataset.folds_dir}'):
        ef.load_fold(dataset.workdir, 2)


def test_load_fold_refuses_a_deleted_fold_array(dataset):
    dataset.run()
    (dataset.workdir / 'features' / 'fold4.npz').unlink()
    with pytest.raises(DataError, match='fold4.npz: missing; run: python extract_features.py'):
        ef.load_fold(dataset.workdir, 4)


@pytest.mark.parametrize('step', ['build_fold', 'write_metadata'])
def test_killed_extraction_leaves_no_manifest_and_load_fold_says_not_extracted(dataset, monkeypatch, step):
    dataset.run()                                              # a good run first: its manifest must go too

    def killed(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(ef, step, killed)
    with pytest.raises(KeyboardInterrupt):
        dataset.run()
    assert not (dataset.workdir / 'features' / 'manifest.json').exists()
    assert not [p for p in dataset.workdir.rglob('*') if p.name.endswith('.tmp')]   # nothing half-written
    with pytest.raises(DataError, match='features not extracted yet'):
        ef.load_fold(dataset.workdir, 1)


def test_main_prints_one_summary_line(dataset, capsys):
    ef.main(['--data-root', str(dataset.root), '--workdir', str(dataset.workdir), '--folds-dir',
             str(dataset.folds_dir), '--split-file', str(dataset.root.parent / 'split.csv'), '--jobs', '1'])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith('5 files, 0.2 min of audio, ') and 'x real time, ' in out[0]
