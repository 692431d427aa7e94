"""Features, frame-level soft targets, per-fold normalised arrays and evaluation metadata (SPEC 2, 3).

    python extract_features.py --data-root data/MAESTRO_Real --workdir .
    python extract_features.py --data-root data/demo --workdir /tmp/wd --jobs 2
    python extract_features.py --data-root DIR --workdir DIR --folds-dir my_folds   # e.g. the official folds

Reads every file id of development_split.csv and of the fold files, and writes
    <workdir>/features/files/<stem>.npz    features (frames, 64), targets (frames, 17), duration
    <workdir>/features/fold{k}.npz         scaler of the fold's training files, train/val sequences, test files
    <workdir>/features/manifest.json       what the files above were computed from (written last)
    <workdir>/metadata/gt_dev.csv          hard-label events (soft > 0.5) of the 11 evaluated classes
    <workdir>/metadata/development_metadata.csv   audio durations

It is a cache: a second run with nothing changed reads no audio; a changed feature parameter (config.py),
audio file, annotation file or fold file is detected and exactly the affected part recomputed.
"""
import argparse
import concurrent.futures
import csv
import hashlib
import io
import json
import multiprocessing
import os
import struct
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
import soundfile as sf
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import config
import evaluate
import utils
from utils import DataError

CACHE_FORMAT = 2               # bump when the code changes what the files contain
FRAMES_PER_CHUNK = 128         # STFT frames transformed at once: (128, N_FFT) float32 buffers stay in cache
READ_BLOCK = 1 << 18           # audio frames read at once (keeps peak memory at ~2x the mono signal)
EPS_FRAMES = 1e-6              # 1.2 / 0.2 is 5.999999999999999 in floating point: nudge before floor/ceil
ANNOTATION_COLUMNS = ['onset', 'offset', 'event_label', 'soft']


def feature_params():
    """The config values that determine the files this script writes; any change recomputes everything."""
    return {
        'cache_format': CACHE_FORMAT,
        'sample_rate': config.SAMPLE_RATE, 'hop_length': config.HOP_LENGTH, 'n_fft': config.N_FFT,
        'window': config.WINDOW, 'center': config.CENTER, 'pad_mode': config.PAD_MODE,
        'mel_power': config.MEL_POWER, 'n_mels': config.N_MELS, 'fmin': config.FMIN, 'fmax': config.FMAX,
        'log_mel': config.LOG_MEL, 'log_offset': config.LOG_OFFSET,
        'classes': list(config.CLASSES), 'hard_classes': list(config.HARD_CLASSES),
        'hard_label_threshold': config.HARD_LABEL_THRESHOLD, 'merge_gap': config.MERGE_GAP,
        'min_event_length': config.MIN_EVENT_LENGTH, 'sequence_length': config.SEQUENCE_LENGTH,
    }


# -----------------------------------------------------------------------------
# Audio and mel features


def changed_feature_param(saved):
    """First feature parameter whose saved value differs from config.py's now -> (name, saved, now), or None."""
    return utils.first_difference(saved, feature_params())


def check_wav_complete(path):
    """Raise DataError when a RIFF WAV holds fewer audio bytes than its header declares.

    libsndfile reads a truncated WAV without complaint (it just returns fewer frames), so look at the header.
    """
    with open(path, 'rb') as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
            return  # not plain RIFF WAV (RF64, W64, FLAC...): leave it to libsndfile
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack('<4sI', f.read(8))
            if chunk == b'data':
                if length not in (0, 0xFFFFFFFF) and pos + 8 + length > size:
                    raise DataError(f'{path}: truncated WAV: the header declares {length} bytes of audio, '
                                    f'the file holds {size - pos - 8} (re-download or re-generate it)')
                return
            pos += 8 + length + (length & 1)


def check_audio(path):
    """Raise DataError unless `path` is an audio file libsndfile opens, whole (not truncated)."""
    check_wav_complete(path)
    try:
        sf.info(str(path))
    except sf.SoundFileError as error:
        raise DataError(f'{path}: cannot read audio ({error})') from None


def audio_duration(path):
    """Seconds of audio of a file: samples / its own sample rate (development_metadata.csv)."""
    info = sf.info(str(path))
    return info.frames / info.samplerate


def read_audio(path):
    """WAV (16/24/32-bit PCM, any channel count) -> (samples,) mono float32 in [-1, 1) at config.SAMPLE_RATE."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'{path}: audio file not found')
    check_wav_complete(path)
    try:
        with sf.SoundFile(str(path)) as f:
            n, channels, sample_rate = f.frames, f.channels, f.samplerate
            mono = np.empty(n, dtype=np.float32)
            block = np.empty((min(READ_BLOCK, max(n, 1)), channels), dtype=np.float32)
            pos = 0
            while pos < n:  # read in blocks: the whole stereo file at once would double peak memory
                got = f.read(out=block[:min(READ_BLOCK, n - pos)])
                if len(got) == 0:
                    raise DataError(f'{path}: truncated audio: read {pos} of {n} frames')
                np.copyto(mono[pos:pos + len(got)], got[:, 0])
                for c in range(1, channels):
                    mono[pos:pos + len(got)] += got[:, c]
                pos += len(got)
    except sf.SoundFileError as error:
        raise DataError(f'{path}: cannot read audio ({error})') from None
    if channels > 1:
        mono *= np.float32(1.0 / channels)
    if sample_rate != config.SAMPLE_RATE:
        import librosa  # imported lazily: only resampling and the reference path need it
        mono = librosa.resample(mono, orig_sr=sample_rate, target_sr=config.SAMPLE_RATE).astype(np.float32)
    return mono


@lru_cache(maxsize=4)
def _mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax):
    """librosa's mel filterbank (Slaney scale, area norm), transposed and cut after its last non-zero FFT bin.

    -> (n_bins, n_mels) float32, n_bins <= n_fft // 2 + 1 (5600 of 8821 for 14 kHz): the bins above fmax
    only ever multiply zeros, so their magnitudes are never computed.
    """
    import librosa
    mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
    n_bins = int(np.nonzero(mel.any(axis=0))[0].max()) + 1
    return np.ascontiguousarray(mel[:, :n_bins].T, dtype=np.float32)


@lru_cache(maxsize=4)
def _window(name, n_fft):
    import librosa
    return librosa.filters.get_window(name, n_fft, fftbins=True).astype(np.float32)  # (n_fft,)


def _finish_mel(mel):
    """Optional log compression (config.LOG_MEL); the reference feeds linear magnitudes."""
    if config.LOG_MEL:
        mel = np.log(mel + config.LOG_OFFSET)
    return mel


def compute_mel_features(audio):
    """Mono audio at config.SAMPLE_RATE -> mel-band magnitudes (frames, N_MELS) float32, frames = 1 + N // hop.

    The fast path: float32 real FFT over framed audio, chunk by chunk. Equal to
    compute_mel_features_reference (librosa, float64) within 1e-5 of the largest magnitude (tested).
    """
    audio = np.asarray(audio, dtype=np.float32)
    n_fft, hop = config.N_FFT, config.HOP_LENGTH
    if config.CENTER:  # centred frames: n_fft // 2 zeros each side (librosa's 'constant' pad mode)
        if config.PAD_MODE != 'constant':
            raise ValueError(f'config.PAD_MODE {config.PAD_MODE!r}: the fast path implements only "constant"')
        padded = np.zeros(len(audio) + 2 * (n_fft // 2), dtype=np.float32)
        padded[n_fft // 2:n_fft // 2 + len(audio)] = audio
    else:
        padded = audio
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # (frames, n_fft), a view
    window = _window(config.WINDOW, n_fft)
    mel_t = _mel_filterbank(config.SAMPLE_RATE, n_fft, config.N_MELS, config.FMIN, config.FMAX)  # (bins, mels)
    out = np.empty((len(frames), config.N_MELS), dtype=np.float32)  # (frames, 64)
    # one math thread for whoever calls (extraction workers, infer.py): BLAS splits the mel product differently
    # with more threads, which changes the last bits of the features and then the scores
    with threadpool_limits(limits=1):
        _mel_chunks(frames, window, mel_t, out)
    return _finish_mel(out).astype(np.float32, copy=False)


def _mel_chunks(frames, window, mel_t, out):
    """Frames (frames, n_fft), a view -> window, |rfft|, mel product into out (frames, n_mels), chunk by chunk."""
    n_bins = mel_t.shape[0]
    buffer = np.empty((min(FRAMES_PER_CHUNK, len(frames)), frames.shape[1]), dtype=np.float32)
    for start in range(0, len(frames), FRAMES_PER_CHUNK):
        stop = min(start + FRAMES_PER_CHUNK, len(frames))
        chunk = buffer[:stop - start]
        np.multiply(frames[start:stop], window, out=chunk)                            # (chunk, n_fft)
        spectrum = scipy.fft.rfft(chunk, axis=1, workers=1, overwrite_x=True)         # (chunk, n_fft/2+1) complex64
        magnitude = np.abs(spectrum[:, :n_bins])                                      # (chunk, bins) float32
        if config.MEL_POWER != 1:
            magnitude **= np.float32(config.MEL_POWER)
        np.matmul(magnitude, mel_t, out=out[start:stop])                              # (chunk, 64)


def compute_mel_features_reference(audio):
    """The same features computed by librosa in float64 (slow; the tests compare the fast path with it)."""
    import librosa
    mel = librosa.feature.melspectrogram(
        y=np.asarray(audio, dtype=np.float64), sr=config.SAMPLE_RATE, n_fft=config.N_FFT,
        hop_length=config.HOP_LENGTH, win_length=config.N_FFT, window=config.WINDOW, center=config.CENTER,
        pad_mode=config.PAD_MODE, power=config.MEL_POWER, n_mels=config.N_MELS, fmin=config.FMIN,
        fmax=config.FMAX, dtype=np.float64)
    return _finish_mel(mel.T)  # (frames, 64) float64


# -----------------------------------------------------------------------------
# Soft labels


def read_soft_labels(path):
    """Annotation file -> DataFrame onset, offset, event_label, soft (validated; soft values clipped to 1).

    One row per line `onset<TAB>offset<TAB>label<TAB>soft`; blank lines are skipped, an empty file has no
    events. The number of clipped values is in df.attrs['n_clipped'] (extract() warns once per run).
    Errors name the file and line: wrong column count, unknown label, non-numeric or negative value,
    offset <= onset.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f'{path}: annotation file not found') from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f'{path}: cannot read annotation file ({error})') from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    for number, line in rows:  # counted here, where the line number is known; pandas pads or fails without it
        if line.count('\t') != len(ANNOTATION_COLUMNS) - 1:
            raise DataError(f'{path}, line {number}: expected {len(ANNOTATION_COLUMNS)} tab-separated columns '
                            f'(onset, offset, label, soft value), found {line.count(chr(9)) + 1}: {line!r}')
    if rows:
        labels = pd.read_csv(io.StringIO('\n'.join(line for _, line in rows)), sep='\t', header=None,
                             names=ANNOTATION_COLUMNS, dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    else:
        labels = pd.DataFrame({name: pd.Series(dtype=str) for name in ANNOTATION_COLUMNS})
    lines = [number for number, _ in rows]

    def refuse(bad, message):  # the first bad row, by its line number
        if np.any(bad):
            k = int(np.argmax(bad))
            raise DataError(f'{path}, line {lines[k]}: {message(k)}')

    labels['event_label'] = labels['event_label'].str.strip()
    for column in ('onset', 'offset', 'soft'):
        text_values = labels[column]
        values = pd.to_numeric(text_values.str.strip(), errors='coerce').astype(float).to_numpy()
        refuse(~np.isfinite(values), lambda k: f'{column} {text_values.iloc[k]!r} is not a number')
        refuse(values < 0, lambda k: f'negative {column} {text_values.iloc[k]}')
        labels[column] = values
    refuse(~labels['event_label'].isin(config.CLASSES), lambda k: f'unknown label {labels["event_label"].iloc[k]!r} '
           f'(expected one of config.CLASSES: {", ".join(config.CLASSES)})')
    refuse(labels['offset'] <= labels['onset'],
           lambda k: f'offset {labels["offset"].iloc[k]} <= onset {labels["onset"].iloc[k]}')
    above = (labels['soft'] > 1.0).to_numpy()
    labels['soft'] = labels['soft'].clip(upper=1.0)  # the real files hold values like 1.0000000000000002
    labels = labels[ANNOTATION_COLUMNS].reset_index(drop=True)
    labels.attrs['n_clipped'] = int(above.sum())
    return labels


def rasterize_soft_labels(labels_df, n_frames):
    """Soft labels -> (n_frames, 17) float64 targets: rows [floor(onset/0.2), ceil(offset/0.2)) of the label's
    column set to its soft value; frames past the end of the audio cut off. Kept in float64 until training:
    the hard labels (soft > 0.5) are taken on these values."""
    targets = np.zeros((n_frames, len(config.CLASSES)), dtype=np.float64)  # (frames, 17)
    if len(labels_df) == 0:
        return targets
    starts = np.floor(labels_df['onset'].to_numpy(float) / config.FRAME_SECONDS + EPS_FRAMES).astype(int)
    stops = np.ceil(labels_df['offset'].to_numpy(float) / config.FRAME_SECONDS - EPS_FRAMES).astype(int)
    columns = [config.CLASSES.index(label) for label in labels_df['event_label']]
    for start, stop, column, soft in zip(starts, np.minimum(stops, n_frames), columns, labels_df['soft']):
        targets[start:stop, column] = soft
    return targets


# -----------------------------------------------------------------------------
# Per-fold arrays


def fit_fold_scaler(features_list):
    """sklearn StandardScaler fitted on the frames of all given files -> mean (64,), scale (64,) float32."""
    from sklearn.preprocessing import StandardScaler  # imported here: only fold building needs it
    if not sum(len(f) for f in features_list):
        raise ValueError('fit_fold_scaler: no frames to fit on')
    frames = np.concatenate(features_list)  # (frames, 64), all files at once
    scaler = StandardScaler().fit(frames)
    return scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)


def normalise(features, mean, scale):
    return ((features - mean) / scale).astype(np.float32, copy=False)


def make_sequences(features_list, targets_list, mean, scale):
    """Files concatenated in time, normalised, cut into consecutive SEQUENCE_LENGTH-frame sequences, remainder
    dropped -> X (n, 200, 64) float32, Y (n, 200, 17) float64."""
    length = config.SEQUENCE_LENGTH
    n = sum(len(f) for f in features_list) // length
    X = np.empty((n * length, config.N_MELS), dtype=np.float32)
    Y = np.empty((n * length, len(config.CLASSES)), dtype=np.float64)
    pos = 0
    for features, targets in zip(features_list, targets_list):
        take = min(len(features), n * length - pos)
        X[pos:pos + take] = normalise(features[:take], mean, scale)
        Y[pos:pos + take] = targets[:take]
        pos += take
    return X.reshape(n, length, config.N_MELS), Y.reshape(n, length, len(config.CLASSES))


def build_fold(features, targets, parts):
    """{'train', 'val', 'test'} file ids -> the arrays of fold{k}.npz (scaler fitted on 'train' only)."""
    mean, scale = fit_fold_scaler([features[i] for i in parts['train']])
    X_train, Y_train = make_sequences([features[i] for i in parts['train']], [targets[i] for i in parts['train']],
                                      mean, scale)
    X_val, Y_val = make_sequences([features[i] for i in parts['val']], [targets[i] for i in parts['val']],
                                  mean, scale)
    lengths = [len(features[i]) for i in parts['test']]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (n_test + 1,)
    X_test = np.empty((offsets[-1], config.N_MELS), dtype=np.float32)     # test files, whole, end to end
    for k, file_id in enumerate(parts['test']):
        X_test[offsets[k]:offsets[k + 1]] = normalise(features[file_id], mean, scale)
    return {'mean': mean, 'scale': scale, 'X_train': X_train, 'Y_train': Y_train, 'X_val': X_val, 'Y_val': Y_val,
            'test_files': np.array(parts['test'], dtype=str), 'X_test': X_test, 'test_offsets': offsets}


# -----------------------------------------------------------------------------
# The stage, a cache: every npz holds the key of what it was computed from (parameters and input files)


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _key(*parts):
    return _sha256(json.dumps(parts, sort_keys=True, default=str).encode())


def _stat(path):
    stat = os.stat(path)
    return {'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}


def _fold_files_hash(fold, folds_dir):
    return _key([_sha256(utils.fold_file(fold, part, folds_dir).read_bytes()) for part in ('train', 'val', 'test')])


def _save_npz(path, **arrays):
    def write(tmp):
        with open(tmp, 'wb') as f:  # a file object: np.savez would append '.npz' to the temporary name
            np.savez(f, **arrays)
    utils.atomic_write(path, write)


def _npz_values(path, *names):
    """{name: value} of small entries of an npz (str or number), None when missing or unreadable."""
    try:
        with np.load(path) as data:
            return {name: data[name].item() for name in names}
    except (OSError, KeyError, ValueError, EOFError):
        return None


def features_dir(workdir):
    return Path(workdir) / config.FEATURES_DIR


def _file_npz(workdir, file_id):
    return utils.file_features_path(workdir, file_id)


def read_file_lists(split_file, folds_dir):
    """-> (file ids: the split's, then new ones of the fold files; {fold: {'train', 'val', 'test': ids}})."""
    def read(path, hint):
        try:
            return utils.read_file_list(path)
        except (FileNotFoundError, ValueError) as error:
            raise DataError(f'{error}; run: {hint}') from None

    file_ids = read(split_file, 'python make_folds.py (it writes development_split.csv)')
    folds = {}
    for fold in range(1, config.N_FOLDS + 1):
        folds[fold] = {part: read(utils.fold_file(fold, part, folds_dir), 'python make_folds.py, or put the '
                                  'fold files there') for part in ('train', 'val', 'test')}
        if not folds[fold]['train']:
            raise DataError(f'{utils.fold_file(fold, "train", folds_dir)}: no training files '
                            f'(the fold\'s scaler is fitted on them)')
        file_ids += [i for part in folds[fold].values() for i in part]
    file_ids = list(dict.fromkeys(file_ids))
    for file_id in file_ids:
        scene = utils.scene_of(file_id)
        if file_id.count('/') != 1 or scene not in config.SCENES or not file_id.startswith(f'{scene}/{scene}_'):
            raise DataError(f'{split_file} or {folds_dir}: file id {file_id!r} is not of the form '
                            f'<scene>/<scene>_NN with a scene of config.SCENES')
    return file_ids, folds


def _file_features(audio_file):
    """Worker: audio file -> (features (frames, 64), duration s)."""
    audio = read_audio(audio_file)
    return compute_mel_features(audio), audio_duration(audio_file)


def compute_files(todo, audio_files, jobs):
    """Yield (file_id, features (frames, 64), duration) for the ids in `todo` as `jobs` processes finish them."""
    if not todo:
        return
    # filterbank and window built once here, before forking: each worker would import librosa for them (~1 s)
    _window(config.WINDOW, config.N_FFT)
    _mel_filterbank(config.SAMPLE_RATE, config.N_FFT, config.N_MELS, config.FMIN, config.FMAX)
    with tqdm(total=len(todo), desc='features', unit='file', file=sys.stderr) as progress:
        if jobs <= 1 or len(todo) <= 1:
            # one math thread here too: the same arithmetic as the workers (bit-identical files for any --jobs),
            # and the BLAS thread pool only slows these small products down
            with threadpool_limits(limits=1):
                for file_id in todo:
                    yield (file_id, *_file_features(audio_files[file_id]))
                    progress.update()
            return
        # fork where available (no re-import); every worker caps its math libraries at one thread: two
        # processes with uncapped BLAS threads fight over the cores (34 s instead of 5 s measured here)
        context = multiprocessing.get_context('fork' if sys.platform.startswith('linux') else 'spawn')
        largest_first = sorted(todo, key=lambda i: -os.path.getsize(audio_files[i]))
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context,
                                                    initializer=utils.limit_math_threads, initargs=(1,)) as pool:
            futures = {pool.submit(_file_features, audio_files[i]): i for i in largest_first}
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield (futures[future], *future.result())
                    progress.update()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def write_metadata(workdir, file_ids, targets, durations):
    """metadata/gt_dev.csv (hard-label events) and metadata/development_metadata.csv (durations), SPEC 2."""
    metadata_dir = Path(workdir) / config.METADATA_DIR
    gt_lines, duration_lines = ['filename\tonset\toffset\tevent_label'], ['filename\tduration']
    for file_id in file_ids:
        stem = utils.file_stem(file_id)
        events = evaluate.events_from_activity(evaluate.hard_labels(targets[file_id]), config.HARD_CLASSES, stem)
        gt_lines += [f'{stem}.wav\t{e.onset}\t{e.offset}\t{e.event_label}' for e in events]
        duration_lines.append(f'{stem}\t{durations[file_id]!r}')
    utils.write_text_atomic(metadata_dir / config.GT_FILE, '\n'.join(gt_lines) + '\n')
    utils.write_text_atomic(metadata_dir / config.DURATIONS_FILE, '\n'.join(duration_lines) + '\n')


def _metadata_hashes(workdir):
    paths = [Path(workdir) / config.METADATA_DIR / name for name in (config.GT_FILE, config.DURATIONS_FILE)]
    return {p.name: _sha256(p.read_bytes()) if p.is_file() else None for p in paths}


def extract(data_root, workdir, folds_dir=None, jobs=None, split_file=None):
    """The whole stage: per-file features and targets, fold arrays, metadata; a cache -> report dict.

    Report: 'files' (ids), 'computed' (audio read), 'relabelled' (annotation changed: targets only),
    'reused', 'folds_built' (fold numbers), 'metadata_written', 'n_clipped', 'computed_audio_seconds' (of the
    files computed), 'seconds' (wall time).
    """
    started = time.perf_counter()
    data_root, workdir = Path(data_root), Path(workdir)
    folds_dir, split_file = Path(folds_dir or config.FOLDS_DIR), Path(split_file or config.DEVELOPMENT_SPLIT)
    jobs = config.FEATURE_JOBS if jobs is None else jobs
    params = feature_params()
    params_key = _key(params)

    # Which files: the split plus every fold file, as they are
    file_ids, folds = read_file_lists(split_file, folds_dir)
    get_data = (f'get the data: python download_data.py --data-root {data_root}, or python demo_data.py '
                f'--out {data_root}')
    if not (data_root / config.AUDIO_DIR).is_dir():
        raise DataError(f'{data_root}: no {config.AUDIO_DIR}/ folder in the data root; {get_data}')
    audio_files = {i: utils.audio_path(data_root, i) for i in file_ids}
    annotation_files = {i: utils.annotation_path(data_root, i) for i in file_ids}
    for file_id in file_ids:
        for path in (audio_files[file_id], annotation_files[file_id]):
            if not path.is_file():
                raise DataError(f'{path}: not found (file id {file_id} is listed in {split_file} or {folds_dir}); '
                                f'{get_data}')

    # Per file: reused (its npz has the key of the current inputs), relabelled (the annotation changed: the
    # features are kept, the targets rasterised again) or computed
    entries, computed, relabelled, reused = {}, [], [], []
    for file_id in file_ids:
        entry = {'audio': _stat(audio_files[file_id]),
                 'annotation': {**_stat(annotation_files[file_id]),
                                'sha256': _sha256(annotation_files[file_id].read_bytes())}}
        entry['features_key'] = _key(params_key, entry['audio'])
        entry['key'] = _key(entry['features_key'], entry['annotation'])
        stored = _npz_values(_file_npz(workdir, file_id),
                             'cache_key', 'features_key', 'n_frames', 'duration', 'n_clipped')
        if stored and stored['cache_key'] == entry['key']:
            entry.update({name: stored[name] for name in ('n_frames', 'duration', 'n_clipped')})
            reused.append(file_id)
        elif stored and stored['features_key'] == entry['features_key']:
            relabelled.append(file_id)
        else:
            computed.append(file_id)
        entries[file_id] = entry

    # Annotations and audio headers first (cheap): bad input stops the run before any audio is decoded
    labels = {i: read_soft_labels(annotation_files[i]) for i in computed + relabelled}
    for file_id in computed:
        check_audio(audio_files[file_id])
    n_clipped = sum(df.attrs['n_clipped'] for df in labels.values())
    if n_clipped:
        print(f'warning: {n_clipped} soft values above 1 clipped to 1 in '
              f'{sum(df.attrs["n_clipped"] > 0 for df in labels.values())} annotation files', file=sys.stderr)

    features, targets = {}, {}

    def store(file_id, file_features, duration):  # rasterise the labels, write the file's npz
        entry = entries[file_id]
        entry.update(n_frames=len(file_features), duration=duration, n_clipped=labels[file_id].attrs['n_clipped'])
        features[file_id] = file_features
        targets[file_id] = rasterize_soft_labels(labels[file_id], len(file_features))
        _save_npz(_file_npz(workdir, file_id), features=file_features, targets=targets[file_id],
                  **{name: np.array(entry[name]) for name in ('duration', 'n_frames', 'n_clipped', 'features_key')},
                  cache_key=np.array(entry['key']))

    for file_id in relabelled:
        with np.load(_file_npz(workdir, file_id)) as data:
            store(file_id, data['features'], float(data['duration']))
    for file_id, file_features, duration in compute_files(computed, audio_files, jobs):
        store(file_id, file_features, duration)  # while the workers go on with the next files

    def load(file_id):  # features and targets of a reused file, read when a fold or the metadata needs them
        if file_id not in features:
            with np.load(_file_npz(workdir, file_id)) as data:
                features[file_id], targets[file_id] = data['features'], data['targets']
        return features[file_id], targets[file_id]

    # Folds: rebuilt when a fold file or one of its files changed
    fold_entries, folds_built = {}, []
    for fold, parts in folds.items():
        fold_ids = list(dict.fromkeys(i for part in parts.values() for i in part))
        files_sha256 = _fold_files_hash(fold, folds_dir)
        key = _key(params_key, files_sha256, [(i, entries[i]['key']) for i in fold_ids])
        fold_entries[str(fold)] = {'key': key, 'files_sha256': files_sha256, **parts}
        path = features_dir(workdir) / f'fold{fold}.npz'
        if (_npz_values(path, 'cache_key') or {}).get('cache_key') != key:
            for file_id in fold_ids:
                load(file_id)
            _save_npz(path, **build_fold(features, targets, parts), cache_key=np.array(key))
            folds_built.append(fold)

    # Metadata (SPEC 2): rewritten when a file changed or the CSVs differ from what this stage wrote
    manifest_path = features_dir(workdir) / 'manifest.json'
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        old = {}
    metadata = {'key': _key(params_key, [(i, entries[i]['key']) for i in file_ids]),
                'sha256': _metadata_hashes(workdir)}
    metadata_written = old.get('metadata') != metadata
    if metadata_written:
        write_metadata(workdir, file_ids, targets={i: load(i)[1] for i in file_ids},
                       durations={i: entries[i]['duration'] for i in file_ids})
        metadata['sha256'] = _metadata_hashes(workdir)

    # The manifest last: load_fold trusts nothing of a run that stopped before here
    dataset = 'demo' if (data_root / config.DEMO_MARKER).is_file() else 'MAESTRO Real'
    manifest = {'params': params, 'dataset': dataset, 'data_root': str(data_root.resolve()),
                'folds_dir': str(folds_dir.resolve()), 'folds_sha256': utils.folds_sha256(folds_dir),
                'split_file': str(split_file.resolve()), 'files': entries, 'folds': fold_entries,
                'metadata': metadata}
    if manifest != old:
        utils.write_json_atomic(manifest_path, manifest)
    return {'files': file_ids, 'computed': computed, 'relabelled': relabelled, 'reused': reused,
            'folds_built': folds_built, 'metadata_written': metadata_written, 'n_clipped': n_clipped,
            'computed_audio_seconds': sum(entries[i]['duration'] for i in computed),
            'seconds': time.perf_counter() - started}


def load_fold(workdir, fold):
    """The arrays of one fold (see the module docstring), checked against the current config and fold files."""
    workdir = Path(workdir)
    out = features_dir(workdir)
    manifest_path = out / 'manifest.json'
    run = f'python extract_features.py --data-root DIR --workdir {workdir}'
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise DataError(f'{manifest_path}: features not extracted yet; run: {run}') from None
    except ValueError:
        raise DataError(f'{manifest_path}: unreadable manifest; run: {run}') from None
    run = f'python extract_features.py --data-root {manifest.get("data_root", "DIR")} --workdir {workdir}'
    if manifest.get('folds_dir') and Path(manifest['folds_dir']) != Path(config.FOLDS_DIR).resolve():
        run += f' --folds-dir {manifest["folds_dir"]}'
    if manifest.get('split_file') and Path(manifest['split_file']) != Path(config.DEVELOPMENT_SPLIT).resolve():
        run += f' --split-file {manifest["split_file"]}'
    changed = changed_feature_param(manifest.get('params', {}))
    if changed:
        name, old, new = changed
        raise DataError(f'{manifest_path}: feature parameter {name} changed since extraction '
                        f'({old!r} -> {new!r}); run: {run}')
    entry = manifest.get('folds', {}).get(str(fold))
    if entry is None:
        raise DataError(f'{manifest_path}: no fold {fold} extracted (folds {sorted(manifest.get("folds", {}))}); '
                        f'run: {run}')
    # Inputs changed since extraction (those still present; a deleted data root is no reason to stop)
    folds_dir = Path(manifest['folds_dir'])
    if all(utils.fold_file(fold, part, folds_dir).is_file() for part in ('train', 'val', 'test')):
        if _fold_files_hash(fold, folds_dir) != entry['files_sha256']:
            raise DataError(f'{folds_dir}: fold {fold} files changed since extraction; run: {run}')
    data_root = Path(manifest['data_root'])
    for file_id in {i for part in ('train', 'val', 'test') for i in entry[part]}:
        for kind, path in (('audio', utils.audio_path(data_root, file_id)),
                           ('annotation', utils.annotation_path(data_root, file_id))):
            recorded = manifest['files'][file_id][kind]
            if path.is_file() and _stat(path) != {'size': recorded['size'], 'mtime_ns': recorded['mtime_ns']}:
                raise DataError(f'{path}: changed since extraction; run: {run}')
    path = out / f'fold{fold}.npz'
    if (_npz_values(path, 'cache_key') or {}).get('cache_key') != entry['key']:
        raise DataError(f'{path}: missing or not the one the manifest describes; run: {run}')
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files if name != 'cache_key'}
    offsets = arrays.pop('test_offsets')
    X_test = arrays.pop('X_test')
    arrays['test_files'] = [str(i) for i in arrays['test_files']]
    arrays['X_test'] = [X_test[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', type=Path, default=config.DATA_ROOT, metavar='DIR',
                        help='folder holding development_audio/ and development_annotation/ (default: %(default)s)')
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR, metavar='DIR',
                        help='where features/ and metadata/ go (default: %(default)s)')
    parser.add_argument('--folds-dir', type=Path, default=config.FOLDS_DIR, metavar='DIR',
                        help='folder of fold{k}_{train,val,test}.csv, used as they are (default: %(default)s)')
    parser.add_argument('--split-file', type=Path, default=config.DEVELOPMENT_SPLIT, metavar='FILE',
                        help='list of the development file ids (default: %(default)s)')
    parser.add_argument('--jobs', type=int, default=config.FEATURE_JOBS, metavar='N',
                        help='worker processes, one math thread each (default: %(default)s)')
    args = parser.parse_args(argv)
    try:
        report = extract(args.data_root, args.workdir, args.folds_dir, args.jobs, args.split_file)
    except DataError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    seconds, audio = report['seconds'], report['computed_audio_seconds']
    speed = f' ({audio / 60:.1f} min of audio, {audio / seconds:.0f}x real time)' if report['computed'] else ''
    print(f'{len(report["files"])} files: {len(report["computed"])} computed, '
          f'{len(report["relabelled"])} relabelled, {len(report["reused"])} reused; '
          f'folds rebuilt: {report["folds_built"] or "none"}; '
          f'metadata {"written" if report["metadata_written"] else "unchanged"}; {seconds:.2f} s{speed}')


if __name__ == '__main__':
    main()
