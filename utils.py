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


def read_file_lists(split_file, folds_dir):
    """-> (file ids: the split's, then new ones of the fold files; {fold: {part: ids}}), checked (check_folds)."""
    try:
        split = read_file_list(split_file)
        folds = {fold: read_fold(fold, folds_dir) for fold in range(1, config.N_FOLDS + 1)}
    except (FileNotFoundError, ValueError) as error:  # the message names the file
        raise DataError(f'{error}; run: python make_folds.py (it writes the split and fold files), or give the '
                        f'files with --split-file and --folds-dir') from None
    file_ids = list(dict.fromkeys(split + [i for parts in folds.values() for ids in parts.values() for i in ids]))
    for file_id in file_ids:
        scene = scene_of(file_id)
        if file_id.count('/') != 1 or scene not in config.SCENES or not file_id.startswith(f'{scene}/{scene}_'):
            raise DataError(f'{split_file} or {folds_dir}: file id {file_id!r} is not of the form '
                            f'<scene>/<scene>_NN with a scene of config.SCENES')
    check_folds(file_ids, folds, split_file, folds_dir)
    return file_ids, folds


def check_folds(file_ids, folds, split_file, folds_dir):
    """Refuse fold files that break cross-validation: a part listing a file twice, a file in two parts of a fold
    (leakage), a fold without training files, a file in no test part or in two (two fold timelines, and the second
    fold's training would delete the first one's score file)."""
    fix = 'correct the fold files, or write new ones with python make_folds.py'
    tested = {}
    for fold, parts in folds.items():
        if not parts['train']:
            raise DataError(f'{fold_file(fold, "train", folds_dir)}: no training files '
                            f'(the fold\'s scaler is fitted on them)')
        seen = {}
        for part, ids in parts.items():
            path = fold_file(fold, part, folds_dir)
            for file_id in ids:
                if seen.get(file_id) == part:
                    raise DataError(f'{path}: file id {file_id} is listed twice; {fix}')
                if file_id in seen:
                    other = fold_file(fold, seen[file_id], folds_dir)
                    raise DataError(f'{path}: file id {file_id} is also in {other}; the train, val and test parts of '
                                    f'a fold must be disjoint; {fix}')
                seen[file_id] = part
        for file_id in parts['test']:
            if file_id in tested:
                raise DataError(f'{fold_file(fold, "test", folds_dir)}: file id {file_id} is also in '
                                f'{fold_file(tested[file_id], "test", folds_dir)}; every file must be in exactly '
                                f'one test part; {fix}')
            tested[file_id] = fold
    untested = [i for i in file_ids if i not in tested]
    if untested:
        raise DataError(f'{split_file} and {folds_dir}: file id {untested[0]} is in no fold{{k}}_test.csv '
                        f'({len(untested)} such files); every file must be in exactly one test part; {fix}')


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
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path, text):
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json_atomic(path, obj):
    # strict JSON: a NaN or Infinity, which jq, JavaScript and pandas refuse, fails here rather than in their hands
    write_text_atomic(path, json.dumps(obj, indent=2, default=str, allow_nan=False) + '\n')     # paths as strings


def code_fingerprint(path):
    """12 hex digits of a Python file's syntax tree without docstrings: an edit of comments, docstrings or layout
    keeps it, any other edit changes it. Fields that newer Pythons add empty are left out, so 3.11 to 3.13 agree."""
    def canonical(node):
        if isinstance(node, list):
            return '[' + ','.join(map(canonical, node)) + ']'
        if not isinstance(node, ast.AST):
            return repr(node)
        fields = []
        for name, value in ast.iter_fields(node):
            if name == 'body' and isinstance(node, DOCUMENTED) and ast.get_docstring(node, clean=False) is not None:
                value = value[1:]
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
# config.py's settings: their defaults, sections and checks, all read from config.py itself

def _settings_in_order():
    """{setting: the title of its section (a `# ---` rule, then `# Title`)} of each NAME config.py assigns, in order."""
    path = Path(config.__file__)
    lines = path.read_text().splitlines()
    titles = {number + 2: lines[number + 1].lstrip('#').strip() for number, line in enumerate(lines[:-1])
              if line.startswith('# ---') and lines[number + 1].startswith('# ')}
    sections, title = {}, ''
    for node in ast.parse('\n'.join(lines), filename=str(path)).body:
        title = next((t for n, t in sorted(titles.items(), reverse=True) if n <= node.lineno), title)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper() and target.id not in config.DERIVED + ('DERIVED',):
                sections[target.id] = title
    return sections


SECTIONS = _settings_in_order()
# the settings and their defaults, as config.py gives them (an experiment changes config's values, never these)
DEFAULTS = {name: copy.deepcopy(getattr(config, name)) for name in SECTIONS}
CHECKS = {name: check for name, check in vars(config).get('__annotations__', {}).items() if name in DEFAULTS}
KINDS = {bool: 'True or False', int: 'an integer', float: 'a number', str: 'a string', list: 'a list',
         tuple: 'a list', dict: 'a dict'}


def per_command(name):
    """Whether a setting may change from command to command on one workdir (its section says '(per command)')."""
    return '(per command' in SECTIONS[name]


def feature_setting(name):
    """Whether a setting is recorded with the features (its section is 'Data set' or 'Features')."""
    return SECTIONS[name] in ('Data set', 'Features')


def with_defaults(values, names):
    """{setting: value} of a record -> the same with each of `names` it lacks at config.py's default, as a record
    reads back (tuples as lists): a run recorded before a setting existed trained as its default does."""
    return json.loads(json.dumps({**{n: DEFAULTS[n] for n in names}, **values}, default=str))


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
    tuple taken), or a DataError naming where it came from (its check, config.py's annotation: config_problem)."""
    default = DEFAULTS[name]
    for kind, accepted in ((float, int), (Path, str), (tuple, list)):
        if isinstance(default, kind) and type(value) is accepted:
            value = kind(value)
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, type(default)):
        expected = 'a path' if isinstance(default, Path) else KINDS.get(type(default), type(default).__name__)
        raise DataError(f'{where}: expected {expected}, as config.{name} = {default!r}')
    return value


def config_problem():
    """The first value of config.py that no script can work with -> ([the settings it names, the wrong one first],
    'config.NAME = value: expected ...'), or None: each setting's own check, then the rules that join several."""
    for name, check in CHECKS.items():
        value = getattr(config, name)
        if not check(value):
            return [name], f'config.{name} = {value!r}: expected {check.expected}'
    return network_problem() or classes_problem() or spectrum_problem() or augmentation_problem() or \
        median_filter_problem()


def network_problem():
    """A front end that does not exist, or sizes of the CRNN it cannot be built with (torch's errors name no
    setting), naming first the setting that differs from config.py's default, or None."""
    import front_end
    if config.FRONT_END not in front_end.FRONT_ENDS:
        return ['FRONT_END'], (f'config.FRONT_END = {config.FRONT_END!r}: expected one of '
                               f'{", ".join(map(repr, front_end.FRONT_ENDS))} (front_end.FRONT_ENDS)')
    pools, bands = config.POOL_SIZES, front_end.input_width()
    if bands < math.prod(pools):
        names = sorted(['POOL_SIZES', 'N_MELS', 'FRONT_END'], key=lambda n: getattr(config, n) == DEFAULTS[n])
        return names, (f'config.{names[0]} = {getattr(config, names[0])!r}: the front end {config.FRONT_END!r} gives '
                       f'{bands} input bands, and the max-pools over frequency of POOL_SIZES = {list(pools)} reduce '
                       f'them to 0; expected at least their product, {math.prod(pools)}, input bands, or smaller pools')


def classes_problem():
    """Class lists the outputs cannot be mapped with, or None."""
    for name in ('CLASSES', 'HARD_CLASSES'):
        classes = getattr(config, name)
        if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
            return [name], f'config.{name} = {classes!r}: expected a list of class names'
        twice = [c for c in classes if classes.count(c) > 1]
        if twice:
            return [name], f'config.{name}: {twice[0]!r} is listed twice; expected each class once'
    missing = [c for c in config.HARD_CLASSES if c not in config.CLASSES]
    if missing:
        return (['HARD_CLASSES', 'CLASSES'], f'config.HARD_CLASSES: {missing[0]!r} is not in config.CLASSES; expected '
                f'the evaluated classes to be among the {len(config.CLASSES)} classes the model predicts')
    return None


def spectrum_problem():
    """A mel range the sample rate cannot give, or None."""
    if not config.FMIN < config.FMAX <= config.SAMPLE_RATE / 2:
        return (['FMAX', 'FMIN', 'SAMPLE_RATE'],
                f'config.FMAX = {config.FMAX!r} with config.FMIN = {config.FMIN!r}: expected FMIN < FMAX <= '
                f'SAMPLE_RATE / 2 = {config.SAMPLE_RATE / 2}')
    return None


def augmentation_problem():
    """Augmentations wider than what they cut, or of the mel bands with embeddings beside them (they would act on
    the embeddings' values as if they were bands), or None."""
    import front_end
    if config.EMBEDDINGS != 'none':
        for name in ('FILTER_AUGMENT_BANDS', 'MIXSTYLE', 'FREQ_MASKS'):
            if getattr(config, name):
                return ([name, 'EMBEDDINGS'], f'config.{name} = {getattr(config, name)!r}: it acts on the mel bands, '
                        f'and config.EMBEDDINGS = {config.EMBEDDINGS!r} sets embeddings beside them; expected 0 with '
                        f'embeddings (frame shift, time masks and mixup act on both alike)')
    bands = front_end.input_width()
    for name, limit, of in (('FRAME_SHIFT', config.SEQUENCE_LENGTH - 1, 'SEQUENCE_LENGTH - 1'),
                            ('TIME_MASK_WIDTH', config.SEQUENCE_LENGTH, 'SEQUENCE_LENGTH'),
                            ('FREQ_MASK_WIDTH', bands, 'the input bands'),
                            ('FILTER_AUGMENT_BANDS', bands, 'the input bands')):
        if getattr(config, name) > limit:
            return [name], f'config.{name} = {getattr(config, name)}: expected at most {of} = {limit}'
    fewest, most, width = config.FILTER_AUGMENT_MIN_BANDS, config.FILTER_AUGMENT_BANDS, config.FILTER_AUGMENT_MIN_WIDTH
    if most and fewest > most:
        return (['FILTER_AUGMENT_MIN_BANDS', 'FILTER_AUGMENT_BANDS'],
                f'config.FILTER_AUGMENT_MIN_BANDS = {fewest}: expected at most FILTER_AUGMENT_BANDS = {most}')
    if most and fewest * width > bands:     # more bands than the fewest may shrink the width to fit
        return (['FILTER_AUGMENT_MIN_WIDTH', 'FILTER_AUGMENT_MIN_BANDS'],
                f'config.FILTER_AUGMENT_MIN_WIDTH = {width}: expected FILTER_AUGMENT_MIN_BANDS ({fewest}) bands of '
                f'that width to fit in the {bands} input bands')
    return None


def median_filter_problem():
    """A median filter for a class that is not evaluated, or None (their lengths: config.py's checks)."""
    for label in config.MEDIAN_FILTER_BY_CLASS:
        if label not in config.HARD_CLASSES:
            return (['MEDIAN_FILTER_BY_CLASS'], f'config.MEDIAN_FILTER_BY_CLASS: {label!r} is not an evaluated class; '
                    f'expected one of config.HARD_CLASSES')
    return None
