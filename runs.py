"""Runs: what a run folder is and its record (runs/run{r}/settings.json, written when the run starts).

The record is everything but the seed that can change a run's numbers (run_record): the training settings
(training_settings: epochs, loss and every config value of training) and the features' (features_record: their
parameters, data set and fold lists, as extraction recorded them). task4b.py and runtime.py start runs here.
"""
import hashlib
import json
import platform
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import config
import utils
from utils import DataError

# config values that cannot change what a training computes, by exact name: a checkpoint need not agree with them
# to be resumed, and a run's record leaves them out; every other upper-case value of config.py (a new one too) is
# a training setting
NOT_TRAINING_SETTINGS = {
    # names of files and folders: a renamed folder holds the same run
    'AUDIO_DIR', 'ANNOTATION_DIR', 'FEATURES_DIR', 'METADATA_DIR', 'GT_FILE', 'DURATIONS_FILE', 'RUNS_DIR',
    'DEMO_MARKER', 'SCENES',
    # the demo generator, the download, the recognition of the official folds (recorded by their hash)
    'DEMO_SCALE', 'DEMO_SEED', 'DEMO_LENGTH_RANGE', 'AUDIO_SUBTYPE', 'ZENODO_URL', 'DEVELOPMENT_ARCHIVES',
    'EVALUATION_ARCHIVES', 'OFFICIAL_FOLDS_SHA256',
    # speed only
    'FEATURE_JOBS', 'CHANNELS_LAST', 'KEEP_FREED_MEMORY',
    # defaults of flags, recorded on their own (seed, epochs, loss), and the number of runs
    'SEED', 'MAX_EPOCHS', 'LOSS', 'RUNS',
    # derived from the settings recorded
    'HARD_INDEX', 'FRAME_SECONDS',
    # evaluation only: evaluate.py re-scores with their values now, and the table's protocol names them
    'THRESHOLD', 'SEGMENT_LENGTH', 'MERGE_GAP', 'MIN_EVENT_LENGTH', 'TIMELINE', 'F1_THOP_TIME_DECIMALS',
    'PAUC_MAX_FPR', 'PUBLISHED', 'PUBLISHED_PROTOCOL',
}


# -----------------------------------------------------------------------------
# The record of a run: what its numbers depend on

def training_settings(seed, epochs, loss_kind):
    """What a checkpoint must agree with to be resumed: seed, schedule, loss and the config values of training."""
    # here, not at the top: model.py imports torch, 1.8 s and 185 MB of start-up (measured) for evaluate.py,
    # plot_results.py and compare.py, which read records and never make one
    from model import output_bias_init
    values = {k: v for k, v in vars(config).items() if k.isupper() and not isinstance(v, Path)
              and k not in NOT_TRAINING_SETTINGS}
    # the initialisation the loss really gets: 'mse' ignores OUTPUT_BIAS_INIT, so its runs never differ by it
    values['OUTPUT_BIAS_INIT'] = output_bias_init(loss_kind)
    if values['OUTPUT_BIAS_INIT'] != 'prior':
        values.pop('OUTPUT_BIAS_CLIP', None)
    return {'seed': seed, 'epochs': epochs, 'loss': loss_kind, 'config': values}


def features_record(manifest):
    """What a run's numbers depend on of its features (a part of its record): their parameters, the data set and
    the fold lists, as extraction recorded them in its manifest."""
    return {key: manifest.get(key) for key in ('params', 'dataset', 'folds_sha256')}


def run_record(manifest, epochs, loss_kind):
    """Everything but the seed that can change a run's numbers: the training settings, and the features'
    (their parameters, data set and fold lists, as extraction recorded them)."""
    training = training_settings(None, epochs, loss_kind)
    del training['seed']
    return json.loads(json.dumps({'training': training, 'features': features_record(manifest)}))  # as read back


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


def versions():
    """Versions of python and the libraries behind the numbers, and the repository's git commit (or None)."""
    found = {'python': platform.python_version()}
    found.update({name: version(name) for name in ('torch', 'numpy', 'librosa', 'sed_eval', 'sed_scores_eval')})
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=config.REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return found, commit


def start_run(run_dir, record, seed, restart=False):
    """Write run_dir/settings.json, the run's record, when the run starts -> its record id. A run folder whose
    record differs is refused, naming the differences, unless restart: then the old run is removed first."""
    path = Path(run_dir) / 'settings.json'
    new_id = record_id(record)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        if old.get('record_id') == new_id and old.get('seed') == seed:
            return new_id
        if not restart:
            differences = record_differences(old.get('record', {}), record)
            if old.get('seed') != seed:
                differences.insert(0, ('seed', old.get('seed'), seed))
            shown = '; '.join(f'{key}: {a!r} there, {b!r} now' for key, a, b in differences[:3])
            raise DataError(f'{run_dir}: a run of other settings ({shown}{"; ..." if len(differences) > 3 else ""}); '
                            f'start it over with --restart (removes it), or use another --workdir')
        shutil.rmtree(run_dir)
    found, commit = versions()
    utils.write_json_atomic(path, {'seed': seed, 'record_id': new_id, 'record': record, 'versions': found,
                                   'git_commit': commit, 'command': sys.argv})
    return new_id
