"""Speed levers that must not change the function: the malloc settings, --jobs, --run."""
import ctypes
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import config
import runtime
import task4b
from augment import Augmenter
from helpers import SMALL, copy_workdir, score_files

REPO = Path(__file__).resolve().parent.parent

# A few training steps of the CRNN in a fresh process (argv[2] == 'keep': runtime.keep_freed_memory() first);
# parameters and losses into argv[1].
TRAIN_STEPS = """
import sys, torch
sys.path.insert(0, {repo!r})
import config, runtime, task4b
from augment import Augmenter
from model import build_model
tuned = runtime.keep_freed_memory() if sys.argv[2] == 'keep' else False
torch.set_num_threads(1)
runtime.seed_everything(0, 'cpu')
model = build_model('cpu')
optimizer = task4b.new_optimizer(model)
g = torch.Generator().manual_seed(1)
X = torch.randn(12, 60, config.N_MELS, generator=g)
Y = torch.rand(12, 60, len(config.CLASSES), generator=g)
augmenter = Augmenter(0, torch.zeros(config.N_MELS), torch.ones(config.N_MELS))
losses = [task4b.train_one_epoch(model, optimizer, X, Y, g, config.LOSS, augmenter) for _ in range(2)]
torch.save({{'losses': torch.cat(losses), 'params': model.state_dict(), 'tuned': tuned}}, sys.argv[1])
"""


def train_in_subprocess(tmp_path, malloc):
    out = tmp_path / f'{malloc}.pt'
    subprocess.run([sys.executable, '-c', TRAIN_STEPS.format(repo=str(REPO)), str(out), malloc], check=True,
                   timeout=300)
    return torch.load(out, weights_only=True)


def glibc_mallopt():
    """Whether this C library has glibc's mallopt, through which runtime.keep_freed_memory acts."""
    try:
        return hasattr(ctypes.CDLL('libc.so.6'), 'mallopt')
    except OSError:
        return False


@pytest.mark.skipif(not config.KEEP_FREED_MEMORY or not glibc_mallopt(),
                    reason='config.KEEP_FREED_MEMORY off, or no glibc: keep_freed_memory changes nothing here')
def test_keeping_freed_memory_gives_bit_identical_training(tmp_path):
    plain, kept = train_in_subprocess(tmp_path, 'plain'), train_in_subprocess(tmp_path, 'keep')
    assert kept['tuned'] and not plain['tuned']          # glibc took the settings
    assert torch.equal(plain['losses'], kept['losses'])
    assert all(torch.equal(value, kept['params'][key]) for key, value in plain['params'].items())


def test_new_tensors_left_unfilled_change_no_number():
    """seed_everything turns off deterministic mode's NaN fill of new tensors; the fill must be all it changes."""
    from model import build_model

    def train(fill):
        runtime.seed_everything(0, 'cpu')
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        torch.utils.deterministic.fill_uninitialized_memory = fill
        model = build_model('cpu')
        optimizer = task4b.new_optimizer(model)
        g = torch.Generator().manual_seed(1)
        X = torch.randn(12, 60, config.N_MELS, generator=g)
        Y = torch.rand(12, 60, len(config.CLASSES), generator=g)
        augmenter = Augmenter(0, torch.zeros(config.N_MELS), torch.ones(config.N_MELS))
        losses = torch.cat([task4b.train_one_epoch(model, optimizer, X, Y, g, config.LOSS, augmenter)
                            for _ in range(2)])
        return losses, model.state_dict()

    try:
        (filled_losses, filled), (losses, params) = train(True), train(False)
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = False
    assert torch.equal(filled_losses, losses)
    assert all(torch.equal(value, params[key]) for key, value in filled.items())


# -----------------------------------------------------------------------------
# --jobs and --run: the same scores as a sequential run

ARGS = ['--folds', '1', '2', '--epochs', '1', '--seed', '3', '--device', 'cpu'] + SMALL


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


@pytest.mark.slow
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
    snapshots = list((workdir / 'snapshots').iterdir())          # the children ran a copy of the code
    assert len(snapshots) == 1 and (snapshots[0] / 'task4b.py').read_bytes() == (REPO / 'task4b.py').read_bytes()
    assert (snapshots[0] / 'settings.py').is_file()


@pytest.mark.slow
def test_run_selects_one_run_with_its_seed_and_evaluate_gathers_the_jobs(sequential, demo_workdir, tmp_path):
    """Run 1 fold by fold, as two jobs of a cluster array, uses seed + 1; evaluate.py gathers the run."""
    import evaluate
    workdir = copy_workdir(demo_workdir, tmp_path)
    rest = ['--epochs', '1', '--seed', '2', '--device', 'cpu', '--run', '1'] + SMALL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert task4b.main(['--workdir', str(workdir), '--folds', '2'] + rest) == 0
        assert task4b.main(['--workdir', str(workdir), '--folds', '1'] + rest) == 0
    finally:
        torch.set_num_threads(threads)
    assert not (workdir / config.RUNS_DIR / 'run0').exists()
    assert not (workdir / 'results.json').exists() and not (workdir / config.RUNS_DIR / 'run1' / 'metrics.json').exists()
    assert score_files(workdir, run=1) == score_files(sequential, run=0)     # seed 2 + 1 == seed 3 + 0
    assert evaluate.main(['--workdir', str(workdir)]) == 0
    gathered = json.loads((workdir / 'results.json').read_text())
    run_metrics = json.loads((workdir / config.RUNS_DIR / 'run1' / 'metrics.json').read_text())
    assert gathered['n_runs'] == 1 and run_metrics['n_files'] == len(score_files(workdir, run=1))
    for key in ('ER_m', 'F1_thop', 'pAUC'):      # defined also when a 1-epoch model detects nothing (F1 undefined)
        assert np.isclose(gathered['mean'][key], run_metrics[key])
