"""Small helpers shared by the scripts: file ids and paths, fold lists, atomic writes."""
import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from threadpoolctl import threadpool_limits

import config


def development_file_ids():
    """The 49 development file ids `<scene>/<scene>_NN` (config.SCENES), in a fixed order."""
    return [f'{scene}/{scene}_{nn}' for scene, nns in config.SCENES.items() for nn in nns]


def scene_of(file_id):
    """`cafe_restaurant/cafe_restaurant_07` -> `cafe_restaurant`."""
    return file_id.split('/')[0]


def file_stem(file_id):
    """`cafe_restaurant/cafe_restaurant_07` -> `cafe_restaurant_07` (the name in gt_dev.csv and score files)."""
    return file_id.split('/')[-1]


def audio_path(data_root, file_id):
    return Path(data_root) / config.AUDIO_DIR / f'{file_id}.wav'


def annotation_path(data_root, file_id):
    scene = scene_of(file_id)
    return Path(data_root) / config.ANNOTATION_DIR / f'soft_labels_{scene}' / f'{file_stem(file_id)}.txt'


def read_file_list(path):
    """File ids of a split or fold CSV (header `filename`, one id per row)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: file list not found')
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0] != 'filename':
        raise ValueError(f'{path}: expected a header line `filename`, found {lines[:1]}')
    return lines[1:]


def fold_file(fold, part, folds_dir=None):
    """Path of `fold{k}_{train,val,test}.csv`."""
    return Path(folds_dir or config.FOLDS_DIR) / f'fold{fold}_{part}.csv'


def read_fold(fold, folds_dir=None):
    """{'train': [...], 'val': [...], 'test': [...]} file ids of one fold."""
    return {part: read_file_list(fold_file(fold, part, folds_dir)) for part in ('train', 'val', 'test')}


def folds_sha256(folds_dir=None):
    """One hash of the file ids of all fold files, in order: tells the official folds from others."""
    lists = [read_fold(fold, folds_dir) for fold in range(1, config.N_FOLDS + 1)]
    return hashlib.sha256(json.dumps(lists).encode()).hexdigest()


def file_features_path(workdir, file_id):
    """`<workdir>/features/files/<stem>.npz`: one file's features and soft targets (extract_features.py)."""
    return Path(workdir) / config.FEATURES_DIR / 'files' / f'{file_stem(file_id)}.npz'


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path, write):
    """Call `write(tmp_path)`, then rename onto `path`: a kill never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path, text):
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def first_difference(saved, current):
    """The first key whose value differs between two dicts of settings -> (key, saved, current), or None."""
    for key in list(current) + [k for k in saved if k not in current]:
        if saved.get(key) != current.get(key):
            return key, saved.get(key), current.get(key)
    return None


def record_id(record):
    """A short name of a record (a dict of settings): 12 hex digits of its hash."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:12]


def record_differences(a, b, prefix=''):
    """Every leaf that differs between two nested dicts of settings -> [(dotted key, value in a, value in b)]."""
    differences = []
    for key in list(a) + [k for k in b if k not in a]:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            differences += record_differences(left, right, f'{prefix}{key}.')
        elif left != right:
            differences.append((f'{prefix}{key}', left, right))
    return differences


def limit_math_threads(n=1):
    """Cap BLAS/OpenMP threads of this process (for worker processes that run side by side)."""
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMBA_NUM_THREADS'):
        os.environ[var] = str(n)
    threadpool_limits(n)


class DataError(ValueError):
    """Bad input (a file that is missing, malformed or stale): the message names the file and what to do."""


def command(main):
    """The error convention of every script: main(argv) -> exit status; a DataError is one line on stderr
    (`error: <file>: <what is wrong>; <what to do>`) and exit status 2, never a traceback."""
    @functools.wraps(main)
    def run(argv=None):
        try:
            return main(argv) or 0
        except DataError as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
    return run
