"""docs/extending.md's worked examples hold: each diff applies to a copy of the repository; the setting, the loss and
the augmentation train for an epoch with their values set, the run records them and compare.py names them against
the default; the front end's features have its width, the network reads them and the features' record names it."""
import json
import re
import subprocess
import sys
from pathlib import Path

import config
from helpers import copy_workdir

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / 'docs' / 'extending.md'
# one epoch of fold 1 of a narrow network, untracked: what the examples change is what is checked, not the learning
ONE_EPOCH = ['--folds', '1', '--epochs', '1', '--device', 'cpu', '--set', 'CONV_CHANNELS=16', '--set', 'TRACK_ENERGY=False']


def diffs():
    """The guide's diffs by the heading of their section: {'A setting: a 2-layer GRU': diff text, ...}."""
    found, heading = {}, None
    for line_block in re.split(r'^(## .*)$', GUIDE.read_text(), flags=re.M):
        if line_block.startswith('## '):
            heading = line_block[3:].strip()
        elif heading:
            blocks = re.findall(r'```diff\n(.*?)```', line_block, flags=re.S)
            if blocks:
                found[heading] = blocks[0]
    return found


def copy_of_repository(path):
    """The repository's tracked files (as a clone has them) in path."""
    files = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO / name).read_bytes())
    return path


def apply(diff, repo):
    subprocess.run(['git', 'apply', '--unidiff-zero', '-'], cwd=repo, input=diff, text=True, check=True)


def run(repo, script, *args):
    done = subprocess.run([sys.executable, script, *map(str, args)], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_each_example_of_the_guide_applies_trains_is_recorded_and_named_by_compare(demo_workdir, tmp_path):
    examples = diffs()
    assert len(examples) == 4, list(examples)
    setting, loss, gain, front = examples.values()
    repo = copy_of_repository(tmp_path / 'repo')
    apply(setting, repo)
    apply(loss, repo)
    default = copy_workdir(demo_workdir, tmp_path / 'default')
    run(repo, 'task4b.py', '--workdir', default, *ONE_EPOCH)

    apply(gain, repo)                     # config.py edited, the original's way: the next workdir takes its value
    idea = copy_workdir(demo_workdir, tmp_path / 'idea')
    run(repo, 'task4b.py', '--workdir', idea, '--set', 'GRU_LAYERS=2', '--loss', 'focal', *ONE_EPOCH)
    record = json.loads((idea / config.RUNS_DIR / 'run0' / 'settings.json').read_text())['record']['training']
    assert (record['config']['GRU_LAYERS'], record['loss'], record['config']['FILTER_AUGMENT_BANDS']) == (2, 'focal', 1)
    named = run(repo, 'compare.py', default, idea, '--out', tmp_path / 'comparison', '--bootstrap', 50)
    for line in ('training.config.GRU_LAYERS: 1 vs 2', "training.loss: 'bce' vs 'focal'",
                 'training.config.FILTER_AUGMENT_BANDS: 0 vs 1'):
        assert f'- {line}' in named, named
    assert 'Code of' not in named                         # both trained with the same code

    apply(front, repo)                    # its features, the network that reads them and their record
    width, outputs, recorded = json.loads(run(repo, '-c', FRONT_END_CHECK))
    assert width == 2 * config.N_MELS and outputs == [1, 51, len(config.CLASSES)] and recorded == 'mel_deltas'


FRONT_END_CHECK = '''
import json, numpy as np, torch
import config, experiment, extract_features, front_end, model
with experiment.applied({'FRONT_END': 'mel_deltas'}):
    features = front_end.compute(np.random.default_rng(0).standard_normal(10 * config.SAMPLE_RATE).astype(np.float32))
    outputs = model.CRNN()(torch.from_numpy(features)[None])
    print(json.dumps([features.shape[1], list(outputs.shape), extract_features.feature_params()['front_end']]))
'''
