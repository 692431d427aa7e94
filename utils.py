"""Small helpers shared by the scripts: file ids and paths, fold lists, atomic writes, code fingerprints, the check
of config values (a run's record and settings.json: runs.py)."""
import ast
import copy
import difflib
import hashlib
import json
import math
import os
import subprocess
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


SNAPSHOT_RECORD = 'snapshot.json'           # in a snapshot of the code: where and from which commit it was taken
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
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + '\n')     # paths as strings


def code_fingerprint(path):
    """12 hex digits of a Python file's code: its syntax tree without docstrings, so that an edit of comments,
    docstrings or layout keeps the fingerprint and any other edit changes it. The tree is written out without the
    fields that newer Pythons add empty, so 3.11 to 3.13 agree."""
    def canonical(node):
        if isinstance(node, list):
            return '[' + ','.join(map(canonical, node)) + ']'
        if not isinstance(node, ast.AST):
            return repr(node)
        fields = []
        for name, value in ast.iter_fields(node):
            if (name == 'body' and isinstance(node, DOCUMENTED) and value and isinstance(value[0], ast.Expr)
                    and isinstance(value[0].value, ast.Constant) and isinstance(value[0].value.value, str)):
                value = value[1:]                              # the docstring
            if name == 'values' and isinstance(node, ast.JoinedStr):   # 3.12 adds empty parts to some f-strings
                value = [v for v in value if not (isinstance(v, ast.Constant) and v.value == '')]
            if value is not None and value != []:
                fields.append(f'{name}={canonical(value)}')
        return f'{type(node).__name__}({",".join(fields)})'
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    return hashlib.sha256(canonical(tree).encode()).hexdigest()[:12]


DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def code_record(names, root=None):
    """{file name: code_fingerprint} of the project's files `names` (in config.REPO_ROOT: the code running)."""
    return {name: code_fingerprint(Path(root or config.REPO_ROOT) / name) for name in names}


def differences(a, b, prefix=''):
    """Every leaf that differs between two nested dicts of settings -> [(dotted key, value in a, value in b)]."""
    found = []
    for key in list(a) + [k for k in b if k not in a]:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += differences(left, right, f'{prefix}{key}.')
        elif left != right:
            found.append((f'{prefix}{key}', left, right))
    return found


def git_state(root):
    """(git commit, whether tracked files differ from it) of the code at root: a snapshot's record of its repository
    (runtime.snapshot), else git's answer, or (None, None)."""
    record = Path(root) / SNAPSHOT_RECORD
    if record.is_file():
        state = json.loads(record.read_text())
        return state.get('git_commit'), state.get('git_dirty')

    def git(*args):
        return subprocess.run(['git', *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git('rev-parse', 'HEAD') or None
        return commit, bool(git('status', '--porcelain', '--untracked-files=no')) if commit else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def limit_math_threads(n=1):
    """Cap BLAS/OpenMP threads of this process (for worker processes that run side by side)."""
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMBA_NUM_THREADS'):
        os.environ[var] = str(n)
    threadpool_limits(n)


class DataError(ValueError):
    """Bad input (a file that is missing, malformed or stale): the message names the file and what to do."""


# -----------------------------------------------------------------------------
# config.py: values no script can work with, refused before any work starts (an edit that breaks the network or
# the batches would otherwise end in a traceback of torch or of range() that names neither setting)

# the settings and their defaults, as config.py gives them (an experiment changes config's values, never these)
DEFAULTS = {n: copy.deepcopy(v) for n, v in vars(config).items() if n.isupper() and not callable(v)
            and n not in (*config.DERIVED, 'PER_COMMAND', 'RUN_FLAGS', 'DERIVED')}
KINDS = {bool: 'True or False', int: 'an integer', float: 'a number', str: 'a string', list: 'a list',
         tuple: 'a list', dict: 'a dict'}


def check_name(name, where):
    if name in config.DERIVED:
        raise DataError(f'{where}: {name} is derived (from CLASSES and HARD_CLASSES, or HOP_LENGTH and '
                        f'SAMPLE_RATE); set those instead')
    if name not in DEFAULTS:
        near = difflib.get_close_matches(name.upper(), list(DEFAULTS), n=1)
        raise DataError(f'{where}: config.py has no setting {name}' + (f'; did you mean {near[0]}?' if near else
                                                                        '; python experiment.py --list shows them'))


def checked(name, value, where):
    """value for config.NAME -> the value as config holds it (an int for a float, a str for a Path and a list for a
    tuple taken), or a DataError naming where it came from (the items of a list: config_problem)."""
    default = DEFAULTS[name]
    for kind, accepted in ((float, int), (Path, str), (tuple, list)):
        if isinstance(default, kind) and type(value) is accepted:
            value = kind(value)
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, type(default)):
        expected = 'a path' if isinstance(default, Path) else KINDS.get(type(default), type(default).__name__)
        raise DataError(f'{where}: expected {expected}, as config.{name} = {default!r}')
    return value


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


CONFIG_CHOICES = {'LOSS': ('bce', 'mse'), 'TARGETS': ('soft', 'hard'), 'PRECISION': ('float32', 'bfloat16', 'tf32'),
                  'OUTPUT_BIAS_INIT': ('prior', 'torch'),
                  'TIMELINE': ('fold', 'file'),
                  'LOG_MEL': (False, True), 'CENTER': (False, True), 'TRACK_ENERGY': (False, True),
                  'FILTER_AUGMENT_FORM': ('step', 'linear')}
CONFIG_COUNTS = {name: 1 for name in ('SAMPLE_RATE', 'HOP_LENGTH', 'N_FFT', 'N_MELS', 'SEQUENCE_LENGTH', 'FEATURE_JOBS',
                                      'CONV_CHANNELS', 'CONV_KERNEL', 'GRU_UNITS', 'DENSE_UNITS', 'BATCH_SIZE',
                                      'MAX_EPOCHS', 'RUNS')}
CONFIG_COUNTS.update(N_FOLDS=2, F1_THOP_TIME_DECIMALS=0, SEED=0)          # name -> the smallest integer it may be
CONFIG_COUNTS.update(FILTER_AUGMENT_MIN_BANDS=1, FILTER_AUGMENT_MIN_WIDTH=1)
CONFIG_COUNTS.update(dict.fromkeys(('FRAME_SHIFT', 'FILTER_AUGMENT_BANDS', 'TIME_MASKS', 'TIME_MASK_WIDTH', 'FREQ_MASKS',
                                    'FREQ_MASK_WIDTH'), 0))
CONFIG_RANGES = {                                                        # name -> (test, what it must be)
    'THRESHOLD': (lambda v: 0 <= v <= 1, 'a number in [0, 1]'),
    'MIXUP': (lambda v: 0 <= v <= 1, 'a probability in [0, 1]'),
    'MIXSTYLE': (lambda v: 0 <= v <= 1, 'a probability in [0, 1]'),
    'FILTER_AUGMENT_DB': (lambda v: v >= 0, 'a number >= 0'),
    'HARD_LABEL_THRESHOLD': (lambda v: 0 <= v <= 1, 'a number in [0, 1]'),
    'DROPOUT': (lambda v: 0 <= v < 1, 'a number in [0, 1)'),
    'OUTPUT_BIAS_CLIP': (lambda v: 0 < v < 0.5, 'a number in (0, 0.5)'),
    'PAUC_MAX_FPR': (lambda v: 0 < v <= 1, 'a number in (0, 1]'),
    'FMIN': (lambda v: v >= 0, 'a number >= 0'),
    'MERGE_GAP': (lambda v: v >= 0, 'a number >= 0'),
    'MIN_EVENT_LENGTH': (lambda v: v >= 0, 'a number >= 0'),
    'ADAM_EPS': (lambda v: v >= 0, 'a number >= 0'),
    'LR_DECAY_PATIENCE': (lambda v: v >= 0, 'a number >= 0'),
    'EARLY_STOP_PATIENCE': (lambda v: v >= 0, 'a number >= 0'),
    **{name: (lambda v: v > 0, 'a number > 0') for name in (
        'FMAX', 'MEL_POWER', 'LOG_OFFSET', 'LEARNING_RATE', 'LR_DECAY_FACTOR', 'SEGMENT_LENGTH',
        'ANNOTATION_RESOLUTION', 'DEMO_SCALE', 'MIXUP_ALPHA', 'MIXSTYLE_ALPHA')},
}


def config_problem():
    """The first value of config.py that no script can work with -> 'config.NAME = value: expected ...', or None."""
    for name, choices in CONFIG_CHOICES.items():
        if getattr(config, name) not in choices:
            return f'config.{name} = {getattr(config, name)!r}: expected {" or ".join(map(repr, choices))}'
    for name, smallest in CONFIG_COUNTS.items():
        value = getattr(config, name)
        if not _integer(value) or value < smallest:
            return f'config.{name} = {value!r}: expected an integer of at least {smallest}'
    for name, (test, what) in CONFIG_RANGES.items():
        value = getattr(config, name)
        if not _number(value) or not test(value):
            return f'config.{name} = {value!r}: expected {what}'
    country = config.ENERGY_COUNTRY
    if not (isinstance(country, str) and len(country) == 3 and country.isascii() and country.isalpha()
            and country.isupper()):
        return f"config.ENERGY_COUNTRY = {country!r}: expected a country's 3-letter ISO code in capitals, e.g. 'FIN'"
    return (network_problem() or classes_problem() or spectrum_problem() or augmentation_problem()
            or median_filter_problem())


def network_problem():
    """Sizes of the CRNN it cannot be built with (torch's errors name no setting), or None."""
    pools, kernel, bands = config.POOL_SIZES, config.CONV_KERNEL, config.N_MELS
    if not isinstance(pools, (list, tuple)) or not pools or not all(_integer(p) and p >= 1 for p in pools):
        return f'config.POOL_SIZES = {pools!r}: expected a list of integers of at least 1, one per conv block'
    if kernel % 2 == 0:
        return f'config.CONV_KERNEL = {kernel}: expected an odd size (same padding keeps the frames then)'
    if bands < math.prod(pools):
        return (f'config.N_MELS = {bands} with config.POOL_SIZES = {list(pools)}: the max-pools over frequency reduce '
                f'the {bands} mel bands to 0; expected N_MELS at least the product of POOL_SIZES, '
                f'{math.prod(pools)}, or smaller pools')
    if not (isinstance(config.ADAM_BETAS, (list, tuple)) and len(config.ADAM_BETAS) == 2
            and all(_number(b) and 0 <= b < 1 for b in config.ADAM_BETAS)):
        return f'config.ADAM_BETAS = {config.ADAM_BETAS!r}: expected two numbers in [0, 1)'
    return None


def classes_problem():
    """Class lists the outputs cannot be mapped with, or None."""
    for name in ('CLASSES', 'HARD_CLASSES'):
        classes = getattr(config, name)
        if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
            return f'config.{name} = {classes!r}: expected a list of class names'
        twice = [c for c in classes if classes.count(c) > 1]
        if twice:
            return f'config.{name}: {twice[0]!r} is listed twice; expected each class once'
    missing = [c for c in config.HARD_CLASSES if c not in config.CLASSES]
    if missing:
        return (f'config.HARD_CLASSES: {missing[0]!r} is not in config.CLASSES; expected the evaluated classes to '
                f'be among the {len(config.CLASSES)} classes the model predicts')
    return None


def spectrum_problem():
    """A mel range the sample rate cannot give, or None."""
    if not config.FMIN < config.FMAX <= config.SAMPLE_RATE / 2:
        return (f'config.FMAX = {config.FMAX!r} with config.FMIN = {config.FMIN!r}: expected FMIN < FMAX <= '
                f'SAMPLE_RATE / 2 = {config.SAMPLE_RATE / 2}')
    return None


def augmentation_problem():
    """Augmentations wider than what they cut (a sequence's frames, the mel bands), or None."""
    for name, limit, of in (('FRAME_SHIFT', config.SEQUENCE_LENGTH - 1, 'SEQUENCE_LENGTH - 1'),
                            ('TIME_MASK_WIDTH', config.SEQUENCE_LENGTH, 'SEQUENCE_LENGTH'),
                            ('FREQ_MASK_WIDTH', config.N_MELS, 'N_MELS'),
                            ('FILTER_AUGMENT_BANDS', config.N_MELS, 'N_MELS')):
        if getattr(config, name) > limit:
            return f'config.{name} = {getattr(config, name)}: expected at most {of} = {limit}'
    fewest, most, width = config.FILTER_AUGMENT_MIN_BANDS, config.FILTER_AUGMENT_BANDS, config.FILTER_AUGMENT_MIN_WIDTH
    if most and fewest > most:
        return f'config.FILTER_AUGMENT_MIN_BANDS = {fewest}: expected at most FILTER_AUGMENT_BANDS = {most}'
    if most and fewest * width > config.N_MELS:     # more bands than the fewest may shrink the width to fit
        return (f'config.FILTER_AUGMENT_MIN_WIDTH = {width}: expected FILTER_AUGMENT_MIN_BANDS ({fewest}) bands of '
                f'that width to fit in N_MELS = {config.N_MELS} mel bins')
    return None


def median_filter_problem():
    """A median filter without a centre frame, or one for a class that is not evaluated, or None."""
    def odd(length):
        return _integer(length) and length >= 1 and length % 2 == 1
    if not odd(config.MEDIAN_FILTER):
        return f'config.MEDIAN_FILTER = {config.MEDIAN_FILTER!r}: expected an odd number of frames (1: no filter)'
    for label, length in config.MEDIAN_FILTER_BY_CLASS.items():
        if label not in config.HARD_CLASSES:
            return (f'config.MEDIAN_FILTER_BY_CLASS: {label!r} is not an evaluated class; expected one of '
                    f'config.HARD_CLASSES')
        if not odd(length):
            return f'config.MEDIAN_FILTER_BY_CLASS[{label!r}] = {length!r}: expected an odd number of frames'
    grid = config.TUNE_MEDIAN_FILTERS
    if not grid or not all(odd(length) for length in grid):
        return f'config.TUNE_MEDIAN_FILTERS = {grid!r}: expected a list of odd numbers of frames (1: no filter)'
    return None
