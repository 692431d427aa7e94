"""Test helpers shared by several test files."""
import json
from pathlib import Path

import utils

RECORD = {'training': {'epochs': 150, 'loss': 'bce', 'config': {}}, 'features': {'dataset': 'demo'}}


def write_run(run_dir, stems, record=RECORD, seed=42):
    """A run folder as task4b.py leaves it, for tests that write its score files themselves: settings.json with
    the run's record, and fold1/metrics.json naming `stems` as the files of a finished fold of that record."""
    run_dir = Path(run_dir)
    record_id = utils.record_id(record)
    (run_dir / 'fold1').mkdir(parents=True, exist_ok=True)
    (run_dir / 'settings.json').write_text(json.dumps({'seed': seed, 'record_id': record_id, 'record': record}))
    (run_dir / 'fold1' / 'metrics.json').write_text(json.dumps({'record_id': record_id, 'files': sorted(stems)}))
    return run_dir
