"""Features, frame-level soft targets, per-fold normalised arrays and evaluation metadata (docs/method.md, sections
Folds and metadata, Features and Pretrained embeddings).

    python extract_features.py --data-root data/MAESTRO_Real --workdir .
    python extract_features.py --data-root data/demo --workdir /tmp/wd --jobs 2
    python extract_features.py --data-root DIR --workdir DIR --folds-dir my_folds --split-file my_split.csv

Reads every file id of the split file (default development_split.csv) and of the fold files, and writes
    <workdir>/features/files/<stem>.npz    features (frames, 64) float32, targets (frames, 17) float64, duration
    <workdir>/features/embeddings/<stem>.npz   with config.EMBEDDINGS: the file's embeddings (frames, 768 or 2048),
                                           which the features above then hold after the mel bands
    <workdir>/features/fold{k}.npz         the fold's scaler (fitted on its training files), sequences, test files
    <workdir>/features/manifest.json       the settings and input files the above were computed from (written last)
    <workdir>/metadata/gt_dev.csv          events of the 11 evaluated classes, soft > 0.5 (post_processing.py)
    <workdir>/metadata/development_metadata.csv   audio durations

Every run recomputes everything (MAESTRO Real in 4 to 15 s on 2 cores, docs/speed.md); load_fold, which training
calls, refuses features whose manifest disagrees with config.py, the feature code or the input files.
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import audio_io
import config
import experiment
import front_end
import embeddings
import post_processing
import utils
from utils import DataError

EPS_FRAMES = 1e-6              # 1.2 / 0.2 is 5.999999999999999 in floating point: nudge before floor/ceil
ANNOTATION_COLUMNS = ['onset', 'offset', 'event_label', 'soft']
MANIFEST = 'manifest.json'
# the code the feature arrays and targets depend on; gt_dev.csv's events depend on post_processing.py's, recorded
# apart: evaluate.py rebuilds them from the stored targets when it changes (refresh_ground_truth)
CODE = ('extract_features.py', 'audio_io.py', 'front_end.py')
REFERENCE_CODE = ('post_processing.py',)


def feature_params():
    """config.py's sections 'Data set' and 'Features' (what the files written here depend on), names in lower case."""
    return {name.lower(): getattr(config, name) for name in utils.DEFAULTS if utils.feature_setting(name)}


def default_feature_params():
    """feature_params() as config.py's defaults give them (an experiment changes config's values, never these)."""
    return {name.lower(): value for name, value in utils.DEFAULTS.items() if utils.feature_setting(name)}


def changed_feature_param(saved):
    """First feature parameter whose saved value differs from config.py's now -> (name, saved, now), or None; one
    the saved ones lack (recorded before it existed) reads as its default."""
    def as_read(values):
        return json.loads(json.dumps(values, default=str))
    return next(iter(utils.differences(as_read({**default_feature_params(), **saved}), as_read(feature_params()))), None)


def features_dir(workdir):
    return Path(workdir) / config.FEATURES_DIR


# Soft labels (docs/method.md, Data; Features)
def read_soft_labels(path):
    """Annotation file (lines `onset<TAB>offset<TAB>label<TAB>soft`, blank ones skipped) -> DataFrame onset, offset,
    event_label, soft, soft values clipped to 1 (their count in df.attrs['n_clipped']). A bad line is refused naming
    the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f'{path}: annotation file not found') from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f'{path}: cannot read annotation file ({error})') from None
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    for number, line in numbered:
        if line.count('\t') != len(ANNOTATION_COLUMNS) - 1:
            raise DataError(f'{path}, line {number}: expected {len(ANNOTATION_COLUMNS)} tab-separated columns '
                            f'(onset, offset, label, soft value), found {line.count(chr(9)) + 1}: {line!r}')
    lines = [number for number, _ in numbered]
    labels = pd.DataFrame([line.split('\t') for _, line in numbered], columns=ANNOTATION_COLUMNS, dtype=str)

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
    labels.attrs['n_clipped'] = int((labels['soft'] > 1.0).sum())
    labels['soft'] = labels['soft'].clip(upper=1.0)  # the real files hold values like 1.0000000000000002
    return labels


def rasterize_soft_labels(labels_df, n_frames):
    """Soft labels -> (n_frames, 17) float64 targets (docs/method.md, Features); float64 until training: the hard
    labels (soft > 0.5) are taken on these values."""
    targets = np.zeros((n_frames, len(config.CLASSES)), dtype=np.float64)  # (frames, 17)
    starts = np.floor(labels_df['onset'].to_numpy(float) / config.FRAME_SECONDS + EPS_FRAMES).astype(int)
    stops = np.ceil(labels_df['offset'].to_numpy(float) / config.FRAME_SECONDS - EPS_FRAMES).astype(int)
    columns = [config.CLASSES.index(label) for label in labels_df['event_label']]
    for start, stop, column, soft in zip(starts, np.minimum(stops, n_frames), columns, labels_df['soft']):
        targets[start:stop, column] = soft
    return targets


# Per-fold arrays (docs/method.md, Features: normalisation and sequences)
def fit_fold_scaler(features_list):
    """sklearn StandardScaler fitted on the frames of all given files -> mean (64,), scale (64,) float32."""
    # imported here: 1.5 s of start-up for the scripts that read features but never fit a scaler
    from sklearn.preprocessing import StandardScaler
    if not sum(len(f) for f in features_list):
        raise ValueError('fit_fold_scaler: no frames to fit on')
    scaler = StandardScaler().fit(np.concatenate(features_list))  # (frames, 64), all files at once
    return scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)


def normalise(features, mean, scale):
    return ((features - mean) / scale).astype(np.float32, copy=False)


def make_sequences(features_list, targets_list, mean, scale):
    """Files concatenated in time, normalised, cut into consecutive SEQUENCE_LENGTH-frame sequences, remainder
    dropped -> X (n, 200, 64) float32, Y (n, 200, 17) float64."""
    length = config.SEQUENCE_LENGTH
    n = sum(len(f) for f in features_list) // length
    X = np.empty((n * length, len(mean)), dtype=np.float32)
    Y = np.empty((n * length, len(config.CLASSES)), dtype=np.float64)
    pos = 0
    for features, targets in zip(features_list, targets_list):
        take = min(len(features), n * length - pos)
        X[pos:pos + take] = normalise(features[:take], mean, scale)
        Y[pos:pos + take] = targets[:take]
        pos += take
    return X.reshape(n, length, X.shape[1]), Y.reshape(n, length, len(config.CLASSES))


def build_fold(features, targets, parts):
    """{'train', 'val', 'test'} file ids -> the arrays of fold{k}.npz (scaler fitted on 'train' only)."""
    mean, scale = fit_fold_scaler([features[i] for i in parts['train']])

    def sequences(ids):
        return make_sequences([features[i] for i in ids], [targets[i] for i in ids], mean, scale)
    X_train, Y_train = sequences(parts['train'])
    X_val, Y_val = sequences(parts['val'])
    offsets = np.concatenate([[0], np.cumsum([len(features[i]) for i in parts['test']])]).astype(np.int64)
    X_test = np.empty((offsets[-1], len(mean)), dtype=np.float32)           # test files, whole, end to end
    for k, file_id in enumerate(parts['test']):
        X_test[offsets[k]:offsets[k + 1]] = normalise(features[file_id], mean, scale)
    return {'mean': mean, 'scale': scale, 'X_train': X_train, 'Y_train': Y_train, 'X_val': X_val, 'Y_val': Y_val,
            'test_files': np.array(parts['test'], dtype=str), 'X_test': X_test, 'test_offsets': offsets}


# The stage
def _file_features(audio_file):
    """Worker: audio file -> (features (frames, 64), duration: samples / the file's own sample rate)."""
    features = front_end.compute(audio_io.read_audio(audio_file))  # first: its errors name bad audio
    info = sf.info(str(audio_file))
    return features, info.frames / info.samplerate


def _worker(settings):
    utils.limit_math_threads(1)
    experiment.apply(settings)


def compute_files(todo, audio_files, jobs):
    """Yield (file_id, features (frames, 64), duration) for the ids in `todo` as `jobs` processes finish them."""
    front_end.chosen().prepare()       # once here, before forking: each worker would build it again (~1 s)
    with tqdm(total=len(todo), desc='features', unit='file', file=sys.stderr) as progress:
        if jobs <= 1 or len(todo) <= 1:
            # one math thread, as the workers: bit-identical files for any --jobs
            with threadpool_limits(limits=1):
                for file_id in todo:
                    yield (file_id, *_file_features(audio_files[file_id]))
                    progress.update()
            return
        # uncapped BLAS threads in each worker fight over the cores (34 s instead of 5 s measured); a spawned worker
        # imports config afresh and is given the command's experiment. Largest files first: no long one starts last.
        context = multiprocessing.get_context('fork' if sys.platform.startswith('linux') else 'spawn')
        largest_first = sorted(todo, key=lambda i: -os.path.getsize(audio_files[i]))
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context, initializer=_worker,
                                                    initargs=(experiment.current()['settings'],)) as pool:
            futures = {pool.submit(_file_features, audio_files[i]): i for i in largest_first}
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield (futures[future], *future.result())
                    progress.update()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def compute_embeddings(workdir, audio_files, frames, inputs, net, sha256):
    """{file_id: (frames, width) float32}, config.EMBEDDINGS' embeddings of each file at its mel frames, each saved
    as it finishes with what it was computed from: a rerun computes only the files it lacks."""
    record = embeddings.record(sha256)
    sources = {i: json.dumps({**record, 'audio': inputs[i]['audio'], 'frames': n}, sort_keys=True)
               for i, n in frames.items()}
    done = {i: embeddings.stored(embeddings.path(workdir, i), sources[i]) for i in frames}
    todo = [i for i, emb in done.items() if emb is None]
    device = next(net.parameters()).device
    for file_id in tqdm(todo, desc=f'{config.EMBEDDINGS} embeddings ({device.type})', unit='file', file=sys.stderr):
        done[file_id] = embeddings.at_frames(net, config.EMBEDDINGS, audio_io.read_audio(audio_files[file_id]),
                                                        frames[file_id])
        _save_npz(embeddings.path(workdir, file_id), embeddings=done[file_id], source=np.array(sources[file_id]))
    return done


def write_metadata(workdir, file_ids, targets, durations):
    """metadata/gt_dev.csv (hard-label events) and metadata/development_metadata.csv (durations)."""
    metadata_dir = Path(workdir) / config.METADATA_DIR
    gt_lines, duration_lines = ['filename\tonset\toffset\tevent_label'], ['filename\tduration']
    for file_id in file_ids:
        stem = utils.file_stem(file_id)
        # runs of whole seconds, touching ones merged; no evaluation setting changes this file
        hard = post_processing.hard_labels(targets[file_id])                                  # (frames, 11)
        events = post_processing.events_from_activity(hard, config.HARD_CLASSES, stem, merge_gap=0.0,
                                                      min_length=config.ANNOTATION_RESOLUTION)
        gt_lines += [f'{stem}.wav\t{e.onset}\t{e.offset}\t{e.event_label}' for e in events]
        duration_lines.append(f'{stem}\t{durations[file_id]!r}')
    utils.write_text_atomic(metadata_dir / config.GT_FILE, '\n'.join(gt_lines) + '\n')
    utils.write_text_atomic(metadata_dir / config.DURATIONS_FILE, '\n'.join(duration_lines) + '\n')


def refresh_ground_truth(workdir):
    """gt_dev.csv rebuilt from the stored soft targets when REFERENCE_CODE changed since it was made."""
    manifest, reference = read_manifest(workdir, check=False), utils.code_record(REFERENCE_CODE)
    if not manifest or manifest.get('reference_code') == reference:
        return
    targets = {}
    for file_id in manifest['files']:
        with np.load(utils.file_features_path(workdir, file_id)) as data:
            targets[file_id] = data['targets']
    write_metadata(workdir, list(manifest['files']), targets, {i: f['duration'] for i, f in manifest['files'].items()})
    utils.write_json_atomic(features_dir(workdir) / MANIFEST, {**manifest, 'reference_code': reference})
    print(f'{Path(workdir) / config.METADATA_DIR / config.GT_FILE}: rebuilt from the stored targets '
          f'({", ".join(REFERENCE_CODE)} changed since)', file=sys.stderr)


def _stat(path):
    stat = os.stat(path)
    return {'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}


def _save_npz(path, **arrays):
    def write(tmp):
        with open(tmp, 'wb') as f:  # a file object: np.savez would append '.npz' to the temporary name
            np.savez(f, **arrays)
    utils.atomic_write(path, write)


def extract(data_root, workdir, folds_dir=None, jobs=None, split_file=None):
    """The whole stage -> {'files': ids, 'n_clipped', 'audio_seconds', 'seconds': wall time}."""
    started = time.perf_counter()
    data_root, workdir = Path(data_root), Path(workdir)
    folds_dir, split_file = Path(folds_dir or config.FOLDS_DIR), Path(split_file or config.DEVELOPMENT_SPLIT)
    jobs = config.FEATURE_JOBS if jobs is None else jobs
    # the checkpoint first: one that cannot be used stops the run before any work
    net, sha256 = embeddings.load_embedder() if config.EMBEDDINGS != 'none' else (None, None)

    file_ids, folds = utils.read_file_lists(split_file, folds_dir)
    get_data = (f'get the data: python download_data.py --data-root {shlex.quote(str(data_root))}, or python '
                f'demo_data.py --out {shlex.quote(str(data_root))}')
    if not (data_root / config.AUDIO_DIR).is_dir():
        raise DataError(f'{data_root}: no {config.AUDIO_DIR}/ folder in the data root; {get_data}')
    audio_files = {i: utils.audio_path(data_root, i) for i in file_ids}
    annotation_files = {i: utils.annotation_path(data_root, i) for i in file_ids}
    inputs = {}  # taken before reading: an input that changes during the run is then refused by load_fold
    for file_id in file_ids:
        for kind, path in (('audio', audio_files[file_id]), ('annotation', annotation_files[file_id])):
            if not path.is_file():
                raise DataError(f'{path}: not found (file id {file_id} is listed in {split_file} or '
                                f'{folds_dir}); {get_data}')
            inputs.setdefault(file_id, {})[kind] = _stat(path)

    # all of it in memory (25 MB for MAESTRO Real) before the first write: bad input leaves the last run untouched
    labels = {i: read_soft_labels(annotation_files[i]) for i in file_ids}  # first: cheap, and often the bad input
    n_clipped = sum(df.attrs['n_clipped'] for df in labels.values())
    if n_clipped:
        print(f'warning: {n_clipped} soft values above 1 clipped to 1 in '
              f'{sum(df.attrs["n_clipped"] > 0 for df in labels.values())} annotation files', file=sys.stderr)
    features, targets, durations = {}, {}, {}
    for file_id, file_features, duration in compute_files(file_ids, audio_files, jobs):
        features[file_id], durations[file_id] = file_features, duration
        targets[file_id] = rasterize_soft_labels(labels[file_id], len(file_features))
    if net is not None:          # the embeddings beside the mel bands, (frames, 64 + width)
        embedded = compute_embeddings(workdir, audio_files, {i: len(f) for i, f in features.items()}, inputs, net,
                                      sha256)
        features = {i: np.concatenate([features[i], embedded[i]], axis=1) for i in file_ids}

    # the manifest goes first and comes back last: load_fold trusts no files of a run killed in between
    manifest_path = features_dir(workdir) / MANIFEST
    manifest_path.unlink(missing_ok=True)
    for file_id in file_ids:
        _save_npz(utils.file_features_path(workdir, file_id), features=features[file_id],
                  targets=targets[file_id], duration=np.array(durations[file_id]))
    for fold, parts in folds.items():
        _save_npz(features_dir(workdir) / f'fold{fold}.npz', **build_fold(features, targets, parts))
    write_metadata(workdir, file_ids, targets, durations)
    utils.write_json_atomic(manifest_path, {
        'params': feature_params(), 'code': utils.code_record(CODE),
        'reference_code': utils.code_record(REFERENCE_CODE),
        'dataset': 'demo' if (data_root / config.DEMO_MARKER).is_file() else 'MAESTRO Real',
        'data_root': str(data_root.resolve()), 'folds_dir': str(folds_dir.resolve()),
        'split_file': str(split_file.resolve()), 'folds_sha256': utils.folds_sha256(folds_dir),
        'files': {i: {**inputs[i], 'duration': durations[i]} for i in file_ids},
        **({'embeddings': embeddings.record(sha256)} if net is not None else {})})
    return {'files': file_ids, 'n_clipped': n_clipped, 'audio_seconds': sum(durations[i] for i in file_ids),
            'seconds': time.perf_counter() - started}


def read_manifest(workdir, check=True):
    """The manifest of workdir's features, refused (DataError with the command to run) when missing, from an older
    version, or older than the feature parameters, code, fold files or inputs. check False: as it is, or {}."""
    workdir = Path(workdir)
    manifest_path = features_dir(workdir) / MANIFEST
    fresh = f'python extract_features.py --data-root DIR --workdir {shlex.quote(str(workdir))}'
    try:
        manifest = json.loads(manifest_path.read_text())
        if not check:
            return manifest
    except (OSError, ValueError):
        if not check:
            return {}
        raise DataError(f'{manifest_path}: features not extracted yet; run: {fresh}') from None
    missing = [k for k in ('params', 'code', 'dataset', 'data_root', 'folds_dir', 'split_file', 'folds_sha256',
                           'files') if k not in manifest]
    if missing:
        raise DataError(f'{manifest_path}: written by an older version (no {", ".join(missing)}); run: {fresh}')
    run = 'python extract_features.py ' + ' '.join(f'{flag} {shlex.quote(str(value))}' for flag, value in (
        ('--data-root', manifest['data_root']), ('--workdir', workdir), ('--folds-dir', manifest['folds_dir']),
        ('--split-file', manifest['split_file'])))
    changed = changed_feature_param(manifest['params'])
    if changed:
        name, old, new = changed
        raise DataError(f'{manifest_path}: feature parameter {name} changed since extraction '
                        f'({old!r} -> {new!r}); run: {run}')
    for name, _, _ in utils.differences(manifest['code'], utils.code_record(CODE))[:1]:
        raise DataError(f'{manifest_path}: the code of {name} changed since extraction (comments and '
                        f'docstrings aside); run: {run}')
    if config.EMBEDDINGS != 'none':
        embeddings.check(manifest_path, manifest.get('embeddings') or {}, run)
    folds_dir = Path(manifest['folds_dir'])
    try:
        folds_changed = utils.folds_sha256(folds_dir) != manifest['folds_sha256']
    except FileNotFoundError:  # fold lists moved away since: the extracted arrays still stand
        folds_changed = False
    except ValueError:
        folds_changed = True
    if folds_changed:
        raise DataError(f'{folds_dir}: fold files changed since extraction; run: {run}')
    data_root = Path(manifest['data_root'])
    for file_id, recorded in manifest['files'].items():  # all of them: the metadata covers every file
        for kind, path in (('audio', utils.audio_path(data_root, file_id)),
                           ('annotation', utils.annotation_path(data_root, file_id))):
            if path.is_file() and _stat(path) != recorded[kind]:  # a deleted data root is no reason to stop
                raise DataError(f'{path}: changed since extraction; run: {run}')
    manifest['run'] = run
    return manifest


def load_fold(workdir, fold):
    """The arrays of one fold (build_fold's, refused as read_manifest refuses): mean, scale, X_train, Y_train, X_val,
    Y_val (make_sequences); test_files, a list of ids; X_test, one (frames, 64) float32 array per test file."""
    run = read_manifest(workdir)['run']
    path = features_dir(workdir) / f'fold{fold}.npz'
    if not path.is_file():
        raise DataError(f'{path}: missing; run: {run}')
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    offsets, X_test = arrays.pop('test_offsets'), arrays.pop('X_test')
    arrays['test_files'] = [str(i) for i in arrays['test_files']]
    arrays['X_test'] = [X_test[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return arrays


@experiment.command(workdir=True)
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
    args = experiment.parse_args(parser, argv)
    report = extract(args.data_root, args.workdir, args.folds_dir, args.jobs, args.split_file)
    experiment.save()
    seconds, audio = report['seconds'], report['audio_seconds']
    print(f'{len(report["files"])} files, {audio / 60:.1f} min of audio, {audio / max(seconds, 1e-9):.0f}x real '
          f'time, {seconds:.2f} s')


if __name__ == '__main__':
    raise SystemExit(main())
