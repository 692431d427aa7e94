"""Speed levers that must not change the function (issue 5): the preloaded allocator, --jobs, --run."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import config
import task4b
import utils

REPO = Path(__file__).resolve().parent.parent

# A few training steps of the CRNN in a fresh process; parameters and losses into argv[1] (torch.save).
TRAIN_STEPS = """
import sys, os, torch
sys.path.insert(0, {repo!r})
import config, task4b
from model import build_model, soft_label_loss
torch.set_num_threads(1)
task4b.seed_everything(0, 'cpu')
model = build_model('cpu')
optimizer = task4b.new_optimizer(model)
g = torch.Generator().manual_seed(1)
X = torch.randn(12, 60, config.N_MELS, generator=g)
Y = torch.rand(12, 60, len(config.CLASSES), generator=g)
losses = [task4b.train_one_epoch(model, optimizer, X, Y, g, config.LOSS) for _ in range(2)]
torch.save({{'losses': torch.cat(losses), 'params': model.state_dict(),
            'ld_preload': os.environ.get('LD_PRELOAD', '')}}, sys.argv[1])
"""

TUNED_GLIBC = {'MALLOC_MMAP_THRESHOLD_': str(1 << 30), 'MALLOC_TRIM_THRESHOLD_': str(1 << 31)}


def train_in_subprocess(tmp_path, name, extra_env):
    env = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', *TUNED_GLIBC)}
    env.update(extra_env)
    out = tmp_path / f'{name}.pt'
    subprocess.run([sys.executable, '-c', TRAIN_STEPS.format(repo=str(REPO)), str(out)], env=env, check=True,
                   timeout=300)
    return torch.load(out, weights_only=False)


def test_allocators_give_bit_identical_training(tmp_path):
    """glibc, glibc with tuned mmap/trim thresholds, and every installed allocator of config: the same bits."""
    variants = {'glibc_tuned': TUNED_GLIBC}
    for name in config.ALLOCATOR_LIBRARIES:
        env, path = utils.allocator_env(name, {})
        if env is not None:
            variants[name] = env
    plain = train_in_subprocess(tmp_path, 'glibc', {})
    assert plain['ld_preload'] == ''
    for name, env in variants.items():
        other = train_in_subprocess(tmp_path, name, env)
        if name in config.ALLOCATOR_LIBRARIES:
            assert other['ld_preload'] == utils.find_allocator(name)
        assert torch.equal(plain['losses'], other['losses']), name
        assert plain['params'].keys() == other['params'].keys()
        for key, value in plain['params'].items():
            assert torch.equal(value, other['params'][key]), (name, key)


def test_reexec_preloads_the_allocator_once_or_says_how_to_install_it():
    code = ('import os, sys; sys.path.insert(0, sys.argv[1]); import utils; utils.reexec_with_allocator("tcmalloc");'
            'print(os.environ.get("LD_PRELOAD", ""), os.environ.get("TCMALLOC_RELEASE_RATE"), sep="|")')
    env = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', utils.ALLOCATOR_GUARD)}
    done = subprocess.run([sys.executable, '-c', code, str(REPO)], env=env, capture_output=True, text=True,
                          check=True, timeout=60)
    path = utils.find_allocator('tcmalloc')
    if path:
        assert done.stdout.strip() == f'{path}|0'
    else:
        assert done.stdout.strip() == '|None'
        assert 'apt-get install -y libtcmalloc-minimal4' in done.stderr


# -----------------------------------------------------------------------------
# --jobs and --run: the same scores as a sequential run

ARGS = ['--folds', '1', '2', '--epochs', '1', '--seed', '3', '--device', 'cpu']


def copy_workdir(src, dst):
    shutil.copytree(Path(src) / config.FEATURES_DIR, Path(dst) / config.FEATURES_DIR)
    shutil.copytree(Path(src) / config.METADATA_DIR, Path(dst) / config.METADATA_DIR)
    return Path(dst)


def score_files(workdir, run=0):
    scores = Path(workdir) / config.RUNS_DIR / f'run{run}' / 'scores'
    return {p.name: p.read_bytes() for p in sorted(scores.glob('*.tsv'))}


@pytest.fixture(scope='module')
def sequential(demo_workdir, tmp_path_factory):
    workdir = copy_workdir(demo_workdir, tmp_path_factory.mktemp('sequential'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                  # as each of 2 jobs on 2 cores
    try:
        assert task4b.main(['--workdir', str(workdir)] + ARGS) == 0
    finally:
        torch.set_num_threads(threads)
    return workdir


def test_jobs_2_gives_the_scores_and_metrics_of_a_sequential_run(sequential, demo_workdir, tmp_path, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    workdir = copy_workdir(demo_workdir, tmp_path)
    assert task4b.main(['--workdir', str(workdir), '--jobs', '2'] + ARGS) == 0
    expected = score_files(sequential)
    assert len(expected) > 0 and score_files(workdir) == expected
    run = f'{config.RUNS_DIR}/run0/metrics.json'
    a, b = json.loads((sequential / run).read_text()), json.loads((workdir / run).read_text())
    assert {k: a[k] for k in ('ER_m', 'F1_m', 'F1_M', 'F1_thop', 'n_files')} == \
        {k: b[k] for k in ('ER_m', 'F1_m', 'F1_M', 'F1_thop', 'n_files')}
    a, b = json.loads((sequential / 'results.json').read_text()), json.loads((workdir / 'results.json').read_text())
    assert a['mean'] == b['mean'] and [r['seed'] for r in a['runs']] == [r['seed'] for r in b['runs']] == [3]
    assert (workdir / config.RUNS_DIR / 'run0' / 'fold2.log').is_file()


def test_run_selects_one_run_with_its_seed_and_evaluate_gathers_the_jobs(sequential, demo_workdir, tmp_path):
    """Run 1 fold by fold, as two jobs of a cluster array, uses seed + 1; evaluate.py gathers the run."""
    import evaluate
    workdir = copy_workdir(demo_workdir, tmp_path)
    rest = ['--epochs', '1', '--seed', '2', '--device', 'cpu', '--run', '1']
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert task4b.main(['--workdir', str(workdir), '--folds', '2'] + rest) == 0
        assert task4b.main(['--workdir', str(workdir), '--folds', '1'] + rest) == 0
    finally:
        torch.set_num_threads(threads)
    assert not (workdir / config.RUNS_DIR / 'run0').exists()
    assert score_files(workdir, run=1) == score_files(sequential, run=0)     # seed 2 + 1 == seed 3 + 0
    assert evaluate.main(['--workdir', str(workdir)]) == 0
    gathered = json.loads((workdir / 'results.json').read_text())
    run_metrics = json.loads((workdir / config.RUNS_DIR / 'run1' / 'metrics.json').read_text())
    assert gathered['n_runs'] == 1 and run_metrics['n_files'] == len(score_files(workdir, run=1))
    assert np.isclose(gathered['mean']['F1_m'], run_metrics['F1_m'])
