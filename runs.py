"""Runs: what a run folder is, its record, which runs may be combined, which files it finished, its protocol.

A run is `<workdir>/runs/run{r}/`: settings.json, its record (start_run); scores/<stem>.tsv, its folds' test scores;
validation_scores/fold{k}/<stem>.tsv; fold{k}/metrics.json once fold k is finished (docs/protocol.md, What a run
records). task4b.py and runtime.py start runs here; evaluate.py, infer.py, plot_results.py and compare.py ask here
which runs to use. Nothing here computes a metric.
"""
import hashlib
import json
import math
import platform
import shlex
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import config
import experiment
import extract_features
import utils
from utils import DataError

TRAIN_HINT = 'run: python task4b.py --workdir DIR'

# The code a run's numbers depend on, recorded by its fingerprint (utils.code_fingerprint). Training's here, the
# features' in their manifest (extract_features.CODE), the evaluation's in each metrics file (evaluate.SCORING_CODE).
TRAINING_CODE = ('task4b.py', 'model.py', 'data_generator.py', 'runtime.py', 'augment.py')
MODEL_CODE = ('model.py', 'runtime.py')     # of those, the code that turns a model's weights into scores (infer.py)
VALIDATION_SCORES = 'validation_scores'     # runs/run{r}/validation_scores/fold{k}/<stem>.tsv
CODE_COPY = 'code'                          # runs/run{r}/code/: the source the run ran, config.py included


# -----------------------------------------------------------------------------
# The record of a run: what its numbers depend on

# recorded by these names beside the config values
RUN_FLAGS = {'SEED': 'seed', 'MAX_EPOCHS': 'epochs', 'LOSS': 'loss', 'PRECISION': 'precision'}


def defining_settings():
    """The config values a run records: those that define an experiment, but the flags recorded by name (RUN_FLAGS)."""
    return {name: getattr(config, name) for name in utils.DEFAULTS if experiment.defines(name) and name not in RUN_FLAGS}


def training_settings(seed, epochs, loss_kind, precision=None, device='cpu'):
    """What a checkpoint must agree with to be resumed: seed, schedule, loss, precision (default config.PRECISION),
    the kind of device ('cpu' or 'cuda': they round differently), the config values of training, its code."""
    # here, not at the top: torch's 1.8 s of start-up for the scripts that only read records
    from model import output_bias_init
    values = defining_settings()
    # the initialisation the loss really gets: 'mse' ignores OUTPUT_BIAS_INIT, so its runs never differ by it
    values['OUTPUT_BIAS_INIT'] = output_bias_init(loss_kind)
    if values['OUTPUT_BIAS_INIT'] != 'prior':
        values.pop('OUTPUT_BIAS_CLIP', None)
    return {'seed': seed, 'epochs': epochs, 'loss': loss_kind, 'precision': precision or config.PRECISION,
            'device': str(device).split(':')[0], 'config': values, 'code': utils.code_record(TRAINING_CODE)}


def complete_config(values):
    """The config values of a run's record with each setting they lack at its default (utils.with_defaults)."""
    names = [n for n in defining_settings() if n != 'OUTPUT_BIAS_CLIP' or values.get('OUTPUT_BIAS_INIT') == 'prior']
    return utils.with_defaults(values, names)


def complete(record):
    """A run's record completed with the defaults of the settings it lacks (training's and the features')."""
    record = json.loads(json.dumps(record, default=str))
    training, features = record.get('training'), record.get('features')
    if isinstance(training, dict) and isinstance(training.get('config'), dict):
        training['config'] = complete_config(training['config'])
    if isinstance(features, dict) and isinstance(features.get('params'), dict):
        features['params'] = json.loads(json.dumps({**extract_features.default_feature_params(), **features['params']},
                                                   default=str))
    return record


def features_record(manifest):
    """The features' part of a run's record, from their manifest (their embeddings' only when they have any)."""
    return {**{key: manifest.get(key) for key in ('params', 'code', 'dataset', 'folds_sha256')},
            **({'embeddings': manifest['embeddings']} if 'embeddings' in manifest else {})}   # only when made


def run_record(manifest, epochs, loss_kind, precision=None, device='cpu'):
    """Everything but the seed that can change a run's numbers: the training settings, and the features'."""
    training = training_settings(None, epochs, loss_kind, precision, device)
    del training['seed']
    return json.loads(json.dumps({'training': training, 'features': features_record(manifest)}))  # as read back


def record_id(record):
    """12 hex digits of the hash of the completed record: a setting added at its default names no other run."""
    return hashlib.sha256(json.dumps(complete(record), sort_keys=True, default=str).encode()).hexdigest()[:12]


def versions():
    """Versions of python and the libraries behind the numbers."""
    libraries = ('torch', 'numpy', 'librosa', 'sed_eval', 'sed_scores_eval')
    return {'python': platform.python_version(), **{name: version(name) for name in libraries}}


def copy_code(run_dir, features_code):
    """run_dir/code/: the code of the run's record and config.py as they are now, comments included (compare.py)."""
    for name in ['config.py', *TRAINING_CODE, *features_code]:
        utils.write_text_atomic(Path(run_dir) / CODE_COPY / name, (Path(config.REPO_ROOT) / name).read_text())


def start_run(run_dir, record, seed, restart=False, device_details=None):
    """Write run_dir/settings.json and the copy of its code -> its record id. A run folder whose record differs is
    refused, naming the differences, unless restart: then the old run is removed first."""
    path = Path(run_dir) / 'settings.json'
    new_id = record_id(record)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        if old.get('record') and record_id(old['record']) == new_id and old.get('seed') == seed:
            return old.get('record_id', new_id)      # the id its folds' metrics were written with
        if not restart:
            differences = utils.differences(complete(old.get('record', {})), complete(record))
            if old.get('seed') != seed:
                differences.insert(0, ('seed', old.get('seed'), seed))
            shown = '; '.join(f'{key}: {a!r} there, {b!r} now' for key, a, b in differences[:3])
            raise DataError(f'{run_dir}: a run of other settings ({shown}{"; ..." if len(differences) > 3 else ""}); '
                            f'start it over with --restart (removes it), or use another --workdir')
        shutil.rmtree(run_dir)
    experiment.save()                           # the workdir keeps the experiment of its runs
    commit, dirty = utils.git_state(config.REPO_ROOT)
    copy_code(run_dir, record['features'].get('code') or {})
    from model import complexity                # here, not at the top: torch (see training_settings)
    utils.write_json_atomic(path, {'seed': seed, 'record_id': new_id, 'record': record, 'versions': versions(),
                                   'device': device_details, 'complexity': complexity(), 'git_commit': commit,
                                   'git_dirty': dirty, 'experiment': experiment.current(), 'command': sys.argv})
    return new_id


# -----------------------------------------------------------------------------
# The runs of a workdir: which there are, which may be combined, what each finished

def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def read_settings(run_dir):
    """run_dir/settings.json, the run's record (task4b.py writes it when the run starts), or a DataError."""
    path = Path(run_dir) / 'settings.json'
    settings = _read_json(path)
    if not {'seed', 'record_id', 'record'} <= set(settings):
        raise DataError(f'{path}: missing or written by an older version (no record of the run\'s settings); '
                        f'train the run again with task4b.py --restart, or evaluate its score files with --scores')
    return settings


def run_order(run_dir):
    """Sort key of run folders: run2 before run10."""
    digits = Path(run_dir).name[len('run'):]
    return (int(digits) if digits.isdigit() else math.inf, Path(run_dir).name)


def find_run_dirs(workdir):
    """`<workdir>/runs/run*` folders whose scores/ holds score files, in run order."""
    dirs = [p.parent for p in (Path(workdir) / config.RUNS_DIR).glob('run*/scores') if any(p.glob('*.tsv'))]
    return sorted(dirs, key=run_order)


def select_runs(workdir, runs=None):
    """The run folders of workdir to combine -> (run dirs in run order, their record). runs: run numbers (default
    every run with score files). Runs of different records are refused, naming the differences."""
    if runs is None:
        run_dirs = find_run_dirs(workdir)
        if not run_dirs:
            raise DataError(f'{Path(workdir) / config.RUNS_DIR}: no run*/scores folder with score files; {TRAIN_HINT}')
    else:
        run_dirs = [Path(workdir) / config.RUNS_DIR / f'run{r}' for r in runs]
        absent = [str(d) for d in run_dirs if not d.is_dir()]
        if absent:
            raise DataError(f'{", ".join(absent)}: no such run; the runs there: '
                            f'{[d.name for d in find_run_dirs(workdir)]}')
    settings = {d: read_settings(d) for d in run_dirs}
    ids = {d: record_id(settings[d]['record']) for d in run_dirs}     # anew: older runs' ids lack later settings
    first = run_dirs[0]
    for run_dir in run_dirs[1:]:
        if ids[run_dir] != ids[first]:
            differences = utils.differences(complete(settings[first]['record']), complete(settings[run_dir]['record']))
            shown = '; '.join(f'{key}: {a!r} vs {b!r}' for key, a, b in differences[:3])
            alike = ' '.join(d.name[3:] for d in run_dirs if ids[d] == ids[first])
            raise DataError(f'{first.name} and {run_dir.name} of {Path(workdir) / config.RUNS_DIR} were trained with '
                            f'other settings ({shown}); choose runs of one kind, e.g. --runs {alike}')
    check_features_of_runs(workdir, first, settings[first]['record'])
    return run_dirs, settings[first]['record']


def finished_fold_metrics(run_dir):
    """{fold number: its metrics.json} of the run's finished folds trained under its current record, in fold order."""
    current = read_settings(run_dir)['record_id']
    folds = {}
    for path in Path(run_dir).glob('fold*/metrics.json'):
        metrics, number = _read_json(path), path.parent.name[len('fold'):]
        if metrics.get('record_id') == current and number.isdigit():
            folds[int(number)] = metrics
    return dict(sorted(folds.items()))


def finished_folds(run_dir):
    """{fold number: stems of its test files} of the run's finished folds trained under its current record."""
    return {fold: sorted(m.get('files', [])) for fold, m in finished_fold_metrics(run_dir).items()}


def finished_files(run_dir):
    """Stems of the test files of the run's finished folds trained under its current record."""
    stems = sorted({stem for stems in finished_folds(run_dir).values() for stem in stems})
    if not stems:
        raise DataError(f'{run_dir}: no finished fold of its current settings (fold*/metrics.json); {TRAIN_HINT}')
    return stems


def scores_sha256(run_dir, stems):
    """The hash of these score files' names and contents: metrics are reused only over the files they scored."""
    digest = hashlib.sha256()
    for stem in sorted(stems):
        path = Path(run_dir) / 'scores' / f'{stem}.tsv'
        content = path.read_bytes() if path.is_file() else b''
        digest.update(f'{stem}\0{len(content)}\0'.encode() + content)
    return digest.hexdigest()


def validation_scores_dir(run_dir, fold):
    """`<run_dir>/validation_scores/fold{k}/`: the scores of fold k's validation files by its selected model."""
    return Path(run_dir) / VALIDATION_SCORES / f'fold{fold}'


def validation_files(workdir, fold):
    """The validation file ids of fold k, from the fold lists the workdir's features were extracted with."""
    folds_dir = extract_features.read_manifest(workdir, check=False).get('folds_dir', config.FOLDS_DIR)
    try:
        return utils.read_fold(fold, folds_dir)['val']
    except (FileNotFoundError, ValueError) as error:
        raise DataError(f'{error}; scoring the validation files needs the fold lists the features were extracted '
                        f'with') from None


def missing_validation_scores(workdir, run_dir, fold):
    """Stems of fold k's validation files that the run has no validation score file of."""
    folder = validation_scores_dir(run_dir, fold)
    return [utils.file_stem(i) for i in validation_files(workdir, fold)
            if not (folder / f'{utils.file_stem(i)}.tsv').is_file()]


# -----------------------------------------------------------------------------
# A run's record against the workdir's features now

def folds_name(folds_sha256):
    """The fold lists of a record, for people: the official folds, or other fold files by their hash."""
    if folds_sha256 == config.OFFICIAL_FOLDS_SHA256:
        return 'the official folds'
    return f'other fold files (hash {str(folds_sha256)[:12]})' if folds_sha256 else 'unknown fold files'


def check_features_of_runs(workdir, run_dir, record):
    """Refuse runs trained on other features or fold lists than workdir holds now (extracted again since): their
    scores would be regrouped into the new folds and scored against the new references without a word (the record
    keeps the folds' hash, not their lists). A workdir without features has nothing to compare."""
    manifest_path = Path(workdir) / config.FEATURES_DIR / extract_features.MANIFEST
    if not manifest_path.is_file():
        return
    manifest = extract_features.read_manifest(workdir)
    differences = utils.differences(complete({'features': record.get('features', {})})['features'],
                                    complete({'features': features_record(manifest)})['features'], 'features.')
    if not differences:
        return
    shown = '; '.join(f'{key}: {folds_name(a)} then, {folds_name(b)} now' if key == 'features.folds_sha256' else
                      f'{key}: {a!r} then, {b!r} now' for key, a, b in differences[:3])
    run = Path(run_dir).name[len('run'):]
    raise DataError(f'{run_dir}: trained on other features than {manifest_path} describes now ({shown}'
                    f'{"; ..." if len(differences) > 3 else ""}); extract them again as the run had them, or train '
                    f'it again on these, run: python task4b.py --workdir {shlex.quote(str(workdir))} --run {run} '
                    f'--restart')


def check_code_of_runs(run_dir, record):
    """Refuse to run a run's models with other code than it was trained with where that code turns weights into
    scores (MODEL_CODE, infer.py); an edit of the training alone leaves its models' scores as they were."""
    recorded = record.get('training', {}).get('code') or {}
    differences = utils.differences({name: recorded.get(name) for name in MODEL_CODE}, utils.code_record(MODEL_CODE))
    if differences:
        files = ', '.join(key for key, _, _ in differences)
        raise DataError(f'{run_dir}: trained with other code than this checkout holds ({files}; comments and '
                        f'docstrings aside); use the code it was trained with (its git commit in settings.json, '
                        f'the files in {Path(run_dir) / CODE_COPY}), or train it again')


def check_scores_folder(workdir, scores_dir):
    """A folder of score files given by hand (--scores), checked as a run's when its parent holds settings.json."""
    run_dir = Path(scores_dir).resolve().parent
    record = _read_json(run_dir / 'settings.json').get('record')
    if record:
        check_features_of_runs(workdir, run_dir, record)


# -----------------------------------------------------------------------------
# The protocol of a table: the runs' record and the evaluation's settings

def read_protocol(workdir, run_dirs, scoring):
    """How a table was computed, keyed as config.PUBLISHED_PROTOCOL: the data set and the folds, the runs' completed
    record (select_runs lets only runs of one record through) and the settings they were scored with."""
    manifest = extract_features.read_manifest(workdir, check=False)
    official = manifest.get('folds_sha256') == config.OFFICIAL_FOLDS_SHA256
    # pAUC is not in the published table: its setting is no part of the protocol
    protocol = {'data set': manifest.get('dataset', 'unknown'),
                'folds': 'official' if official else manifest.get('folds_dir', 'unknown'),
                **{name: value for name, value in scoring.items() if name in utils.DEFAULTS and name != 'PAUC_MAX_FPR'}}
    record = _read_json(Path(run_dirs[0]) / 'settings.json').get('record', {}) if run_dirs else {}
    training = complete(record).get('training') if record.get('training') else None
    if training:
        # CHANNELS_LAST is recorded, so that runs of both never combine, but changes the last bits only
        protocol.update({name: training.get(key) for name, key in RUN_FLAGS.items() if name != 'SEED'})
        protocol.update({k: v for k, v in training['config'].items() if k != 'CHANNELS_LAST'})
    return json.loads(json.dumps(protocol))          # as results.json reads back: tuples are lists


def protocol_label(protocol):
    """The table's row label: `demo data, loss bce, soft targets, float32, 80 epochs, official folds, timeline per
    fold, F1_thop time_decimals 30`, then every other setting that differs from its default (`MIXUP 0.5`)."""
    folds, epochs = protocol.get('folds', 'unknown'), protocol.get('MAX_EPOCHS', 'unknown')
    named = ('data set', 'folds', 'LOSS', 'TARGETS', 'PRECISION', 'MAX_EPOCHS', 'TIMELINE', 'F1_THOP_TIME_DECIMALS',
             'OUTPUT_BIAS_INIT')
    others = ''.join(f', {name} {value}' for name, value in protocol.items() if name not in named
                     and name in utils.DEFAULTS and value != json.loads(json.dumps(utils.DEFAULTS[name], default=str)))
    return (f"{protocol.get('data set', 'unknown')} data, loss {protocol.get('LOSS', 'unknown')}, "
            f"{protocol.get('TARGETS', 'soft')} targets, {protocol.get('PRECISION', 'float32')}, "
            f"{epochs} epoch{'' if epochs == 1 else 's'}, "
            f"{'official folds' if folds == 'official' else f'folds of {folds}'}, "
            f"timeline per {protocol.get('TIMELINE', 'unknown')}, F1_thop time_decimals "
            f"{protocol.get('F1_THOP_TIME_DECIMALS', 'unknown')}{others}")


def protocol_differences(protocol):
    """Every setting of a table's protocol that differs from the published one (config.PUBLISHED_PROTOCOL, else the
    default), ['MAX_EPOCHS 2 (published: 150)', ...], and those no run record states (a folder of score files)."""
    published = json.loads(json.dumps({**utils.DEFAULTS, **config.PUBLISHED_PROTOCOL}, default=str))
    differences = [f'{key} {value} (published: {published[key]})' for key, value in protocol.items()
                   if key in published and value != published[key]]
    missing = [key for key in config.PUBLISHED_PROTOCOL if key not in protocol]
    if missing:
        differences.append(f'not recorded: {", ".join(missing)} (no run record, settings.json)')
    return differences
