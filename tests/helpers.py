"""Test helpers shared by several test files."""
import json
import shutil
from pathlib import Path

import numpy as np

import config
import runs
import utils

RECORD = {'training': {'epochs': 150, 'loss': 'bce', 'config': {}, 'code': utils.code_record(runs.TRAINING_CODE)},
          'features': {'dataset': 'demo'}}


# The CRNN with 16 conv filters and 8 GRU units per direction instead of config.py's 128 and 32: the same layers and
# code paths at about 1/50 of the multiply-adds, for tests of what training writes, records and repeats (resume,
# jobs, bit-identity, records), not of what the default network learns
SMALL_NETWORK = {'CONV_CHANNELS': 16, 'GRU_UNITS': 8}
SMALL = [arg for name, value in SMALL_NETWORK.items() for arg in ('--set', f'{name}={value}')]   # as task4b.py flags


def write_run(run_dir, stems, record=RECORD, seed=42, folds=None):
    """A run folder as task4b.py leaves it, for tests that write its score files themselves: settings.json with
    the run's record (its features those of the workdir, when it has any), and fold1/metrics.json naming `stems`
    as the files of a finished fold of that record (folds: {k: stems} of several finished folds instead)."""
    run_dir = Path(run_dir)
    manifest = run_dir.parent.parent / config.FEATURES_DIR / 'manifest.json'
    if manifest.is_file():
        record = {**record, 'features': runs.features_record(json.loads(manifest.read_text()))}
    record_id = runs.record_id(record)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / 'settings.json').write_text(json.dumps({'seed': seed, 'record_id': record_id, 'record': record}))
    for fold, fold_stems in (folds or {1: stems}).items():
        (run_dir / f'fold{fold}').mkdir(exist_ok=True)
        (run_dir / f'fold{fold}' / 'metrics.json').write_text(json.dumps({'record_id': record_id,
                                                                          'files': sorted(fold_stems)}))
    return run_dir


def copy_workdir(workdir, path):
    """A workdir of its own (features and metadata of the shared one), so runs do not see each other's files."""
    for name in (config.FEATURES_DIR, config.METADATA_DIR):
        shutil.copytree(Path(workdir) / name, Path(path) / name)
    return Path(path)


def score_files(workdir, run=0):
    """{name: bytes} of a run's score files."""
    scores_dir = Path(workdir) / config.RUNS_DIR / f'run{run}' / 'scores'
    return {p.name: p.read_bytes() for p in sorted(scores_dir.glob('*.tsv'))}


def write_random_scores(workdir, run_dir, stems, seed=0):
    """Score files of uniform random frame scores for `stems`, as many frames as each file's features."""
    import score_io
    rng = np.random.default_rng(seed)
    for stem in stems:
        n_frames = len(np.load(utils.file_features_path(workdir, stem))['targets'])
        score_io.write_score_file(Path(run_dir) / 'scores' / f'{stem}.tsv',
                                  rng.random((n_frames, len(config.HARD_CLASSES))))


def frame_scores(n, active, low=0.0):
    """(n, 11) scores: `low` everywhere, and value v on frames [i, j) of class c for (c, i, j, v) in active."""
    scores = np.full((n, len(config.HARD_CLASSES)), low)
    for label, i, j, value in active:
        scores[i:j, config.HARD_CLASSES.index(label)] = value
    return scores


def energy_kind(sources):
    """What a tracked step's sources ({part: how}) make its figure, read here apart from cost.kind_of: measured
    when a counter gave every part, estimated when none did, partly measured between; unknown without any part,
    or where a part's way (each begins 'measured', 'estimated' or 'unknown') is not known."""
    ways = {way.split()[0].rstrip(':') for how in sources.values() for way in how.split(' + ')}
    if not ways or not ways <= {'measured', 'estimated'}:
        return 'unknown'
    return 'partly measured' if len(ways) == 2 else ways.pop()
