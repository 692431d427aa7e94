"""What training needs besides the method: memory settings, checkpoints to resume from, parallel jobs.

task4b.py calls each of these in a line; none of them changes a number the method computes. What a run is and
its record (settings.json, training_settings) are runs.py's; here the checkpoints are compared with them.
"""
import ctypes
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import config
import experiment
import extract_features
import utils
from runs import run_record, start_run
from utils import DataError


def keep_freed_memory():
    """Tell glibc's malloc to keep freed memory for reuse instead of returning it to the system.

    Every training step frees and allocates again the activations of the first convolution (210 MB for a batch
    of 32). By default glibc serves blocks that large with mmap and unmaps them when freed, so each step faults
    the pages in again; with both thresholds at 1 GiB they stay in the heap, at the cost of a higher peak.
    config.KEEP_FREED_MEMORY = False, or another C library: no change.
    """
    if not config.KEEP_FREED_MEMORY:
        return False
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3          # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30))


# -----------------------------------------------------------------------------
# Checkpoints: only what torch's safe loader reads (tensors, numbers, strings, lists, dicts)

def save_checkpoint(path, state, generator):
    """state (model, optimizer, schedule, ... as state dicts) and the random states -> path, atomically."""
    rng = {'torch': torch.get_rng_state(), 'shuffle': generator.get_state()}
    if torch.cuda.is_available():
        rng['cuda'] = torch.cuda.get_rng_state_all()
    utils.atomic_write(path, lambda tmp: torch.save({**state, 'rng': rng}, tmp))


def load_torch_file(path, what):
    """A .pt file read by torch's safe loader (no code runs), or a one-line DataError naming the file."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:        # a foreign pickle, a truncated or old-format file: torch raises several kinds
        reason = str(error).strip().splitlines()[0][:200]
        raise DataError(f'{path}: not a {what} that loads safely ({type(error).__name__}: {reason}); delete it and '
                        f'train again (python task4b.py)') from None


def load_checkpoint(path, settings, generator):
    """The checkpoint at path, checked against settings (runs.training_settings), with the random states restored
    -> dict, or None."""
    if not Path(path).is_file():
        return None
    checkpoint = load_torch_file(path, 'checkpoint of task4b.py')
    missing = [k for k in ('epoch', 'finished', 'model', 'optimizer', 'schedule', 'best_model', 'history', 'rng',
                           'settings') if k not in checkpoint]
    if missing:
        raise DataError(f'{path}: not a checkpoint of this version of task4b.py (missing {missing}); '
                        f'run without --resume to start the fold over')
    for key in ('seed', 'epochs', 'loss'):
        if checkpoint['settings'].get(key) != settings[key]:
            raise DataError(f'{path}: trained with {key} {checkpoint["settings"].get(key)}, asked now '
                            f'{settings[key]}; resume with the same flags, or run without --resume')
    changed = utils.first_difference(checkpoint['settings'].get('code', {}), settings['code'])
    if changed:
        raise DataError(f'{path}: trained with other code of {changed[0]} (comments and docstrings aside); '
                        f'restore it, or run without --resume to start over')
    changed = utils.first_difference(checkpoint['settings']['config'], settings['config'])
    if changed:
        key, old, new = changed
        raise DataError(f'{path}: config.{key} was {old!r}, is now {new!r}; restore it, or run without --resume '
                        f'to start over')
    torch.set_rng_state(checkpoint['rng']['torch'])
    generator.set_state(checkpoint['rng']['shuffle'])
    if 'cuda' in checkpoint['rng'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint['rng']['cuda'])
    return checkpoint


def start_fold_over(fold_dir, test_files):
    """Remove what an earlier training of this fold left (its metrics, checkpoint, model and the score files of
    its test files): nothing of it may pass for the new training's."""
    run_dir = Path(fold_dir).parent
    stale = [Path(fold_dir) / name for name in ('metrics.json', 'checkpoint.pt', 'best_model.pt')]
    stale += [run_dir / d / f'{utils.file_stem(i)}.tsv' for i in test_files for d in ('scores', 'scores_all_classes')]
    for path in stale:
        path.unlink(missing_ok=True)


# -----------------------------------------------------------------------------
# --jobs: (run, fold) trainings as child processes

def run_jobs(script, args, run_ids, folds):
    """Train the (run, fold) pairs as args.jobs child processes at once: `script --run R --folds K` with the
    other flags of args, each one's output in runs/run{r}/fold{k}.log. Every job runs to its end; then a
    DataError names each failed (run, fold) and its log.

    The runs are started here (settings.json, and --restart), once, before the children. The children run a
    snapshot of the code and of the experiment (experiment.snapshot), so that an edit made while they wait changes
    none of them. On the CPU each child gets cpu_count // jobs math threads (the arithmetic of a sequential run
    with as many) and spins less while waiting for its threads: side by side, the default spinning made two
    processes on two cores wait on each other (many times slower per step).
    """
    record = run_record(extract_features.read_manifest(args.workdir), args.epochs, args.loss)
    for r in run_ids:
        start_run(Path(args.workdir) / config.RUNS_DIR / f'run{r}', record, args.seed + r, args.restart)
    snapshot = experiment.snapshot(args.workdir)
    child_args = ['--config', str(snapshot / experiment.SNAPSHOT_SETTINGS), '--workdir', str(args.workdir), '--seed', str(args.seed), '--epochs', str(args.epochs),
                  '--loss', args.loss] + (['--device', args.device] if args.device else []) + \
                 (['--resume'] if args.resume else [])
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // args.jobs)))
    env.setdefault('GOMP_SPINCOUNT', '1000')

    def job(pair):
        r, k = pair
        log = Path(args.workdir) / config.RUNS_DIR / f'run{r}' / f'fold{k}.log'
        command = [sys.executable, str(snapshot / Path(script).name), '--run', str(r), '--folds', str(k), *child_args]
        with open(log, 'w') as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        print(f'run {r} fold {k}: exit status {code}, log {log}', flush=True)
        return (r, k, log) if code else None

    with ThreadPoolExecutor(args.jobs) as pool:
        failed = [f for f in pool.map(job, [(r, k) for r in run_ids for k in folds]) if f]
    if failed:
        raise DataError(f'{len(failed)} trainings failed: ' + '; '.join(
            f'run {r} fold {k} (log {log})' for r, k, log in failed) + '; the others finished. Fix the cause, '
            'then run the same command with --resume')
