"""What training needs besides the method: the device and its precision, memory settings, checkpoints to resume
from, snapshots of the code for jobs that start later, parallel jobs.

    python runtime.py --workdir WD [--config FILE] [--set NAME=VALUE]     # a snapshot (slurm/submit.sh): its folder

task4b.py calls each of these in a line; none of them changes a number the method computes. What a run is and
its record are runs.py's; here the checkpoints are checked against them.
"""
import argparse
import contextlib
import ctypes
import hashlib
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

import config
import cost
import experiment
import extract_features
import utils
from runs import complete_config, defining_settings, run_record, start_run
from utils import DataError

SNAPSHOTS_DIR, SNAPSHOT_SETTINGS = 'snapshots', 'settings.py'   # WD/snapshots/<id>/settings.py: its experiment


def keep_freed_memory():
    """Tell glibc's malloc to keep freed memory for reuse (config.KEEP_FREED_MEMORY; no change with another C
    library): every step frees and allocates again the 210 MB activations of conv 1, which glibc would otherwise
    serve by mmap, unmap when freed and fault in again; with both thresholds at 1 GiB they stay in the heap."""
    if not config.KEEP_FREED_MEMORY:
        return False
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3          # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30))


# -----------------------------------------------------------------------------
# The device and its arithmetic

def cpu_model():
    with contextlib.suppress(OSError):
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or platform.machine()


def native_bfloat16_cpu(cpuinfo='/proc/cpuinfo'):
    """Whether this CPU computes in bfloat16 itself (x86: avx512_bf16 or amx_bf16; Arm: bf16), read from its flags
    in /proc/cpuinfo -> bool, or None where there is none to read."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return None
    return bool(flags & {'avx512_bf16', 'amx_bf16', 'bf16'})


def check_precision(precision, device, training=True):
    """Refuse a precision the device cannot train in (DataError); warn once where bfloat16 would be emulated. A
    'tf32' model is float32 arithmetic elsewhere: only its training needs a GPU."""
    kind = torch.device(device).type
    if precision == 'tf32' and training and (kind != 'cuda' or torch.cuda.get_device_capability(device)[0] < 8):
        where = 'the CPU' if kind != 'cuda' else torch.cuda.get_device_name(device)
        raise DataError(f"precision 'tf32' is float32 with the matrix units of NVIDIA GPUs (Ampere and later); on "
                        f"{where} give 'float32' or 'bfloat16'")
    if precision == 'bfloat16' and kind == 'cuda' and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise DataError(f"precision 'bfloat16': {torch.cuda.get_device_name(device)} has no bfloat16 arithmetic "
                        f"(NVIDIA's Ampere and later have); give 'float32'")
    if precision == 'bfloat16' and kind == 'cpu' and not native_bfloat16_cpu():
        cost.warn_once('bfloat16 cpu', 'precision bfloat16 on a CPU without native bfloat16 (no avx512_bf16, amx_bf16 '
                       'or bf16 in /proc/cpuinfo): torch emulates it; on such a CPU an epoch of the full-scale fold 1 '
                       'took 9.1x as long as in float32 (63.7 s against 7.0 s, 2-core AMD EPYC Zen 3: docs/speed.md)')


def float32_arithmetic(device, precision):
    """On CUDA, float32 as float32 unless precision is 'tf32': torch lets cuDNN run float32 convolutions and the GRU
    in TF32 (10-bit inputs) on Ampere and later unless told. The CPU has no such mode."""
    if torch.device(device).type == 'cuda':
        for backend in (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn):
            backend.fp32_precision = 'tf32' if precision == 'tf32' else 'ieee'


def device_details(device):
    """What a run records of its device besides its kind: the CPU or GPU model and, on CUDA, the CUDA and cuDNN
    versions (never touching CUDA for a CPU training)."""
    if torch.device(device).type == 'cuda':
        major, minor = torch.cuda.get_device_capability(device)
        return {'type': 'cuda', 'name': torch.cuda.get_device_name(device), 'capability': f'{major}.{minor}',
                'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version()}
    return {'type': 'cpu', 'name': cpu_model(), 'isa': torch.backends.cpu.get_cpu_capability(),
            'native_bfloat16': native_bfloat16_cpu(), 'threads': torch.get_num_threads()}


def reset_gpu_peak(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak_bytes(device):
    """The most GPU memory torch held since reset_gpu_peak (None on the CPU): what sizes --jobs per GPU."""
    return torch.cuda.max_memory_allocated(device) if torch.device(device).type == 'cuda' else None


# -----------------------------------------------------------------------------
# Checkpoints: only what torch's safe loader reads (tensors, numbers, strings, lists, dicts)

def save_checkpoint(path, state, generator, device='cpu'):
    """state (model, optimizer, ... as state dicts), the random states (the CPU's, the shuffling generator's, the
    training GPU's only) and the time and energy so far (cost.so_far) -> path, atomically."""
    rng = {'torch': torch.get_rng_state(), 'shuffle': generator.get_state()}
    if torch.device(device).type == 'cuda':
        rng['cuda'] = torch.cuda.get_rng_state(device)
    spent = cost.so_far()
    utils.atomic_write(path, lambda tmp: torch.save({**state, 'rng': rng, 'cost': spent}, tmp))


def load_torch_file(path, what):
    """A .pt file read by torch's safe loader (no code runs), or a one-line DataError naming the file."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:        # a foreign pickle, a truncated or old-format file: torch raises several kinds
        reason = str(error).strip().splitlines()[0][:200]
        raise DataError(f'{path}: not a {what} that loads safely ({type(error).__name__}: {reason}); delete it and '
                        f'train again (python task4b.py)') from None


def load_checkpoint(path, settings, generator, device='cpu'):
    """The checkpoint at path, checked against settings (runs.training_settings), with the random states restored
    and the time and energy it carried added to this training's (cost.carry) -> dict, or None."""
    if not Path(path).is_file():
        return None
    checkpoint = load_torch_file(path, 'checkpoint of task4b.py')
    missing = [k for k in ('epoch', 'finished', 'model', 'optimizer', 'schedule', 'best_model', 'history', 'rng',
                           'settings', 'augment') if k not in checkpoint]
    if missing:
        raise DataError(f'{path}: not a checkpoint of this version of task4b.py (missing {missing}); '
                        f'run without --resume to start the fold over')
    for key in ('seed', 'epochs', 'loss', 'precision', 'device'):
        if checkpoint['settings'].get(key) != settings[key]:
            raise DataError(f'{path}: trained with {key} {checkpoint["settings"].get(key)}, asked now '
                            f'{settings[key]}; resume with the same flags, or run without --resume')
    for name, _, _ in utils.differences(checkpoint['settings'].get('code', {}), settings['code'])[:1]:
        raise DataError(f'{path}: trained with other code of {name} (comments and docstrings aside); '
                        f'restore it, or run without --resume to start over')
    for key, old, new in utils.differences(complete_config(checkpoint['settings']['config']),
                                           complete_config(settings['config']))[:1]:
        raise DataError(f'{path}: config.{key} was {old!r}, is now {new!r}; restore it, or run without --resume '
                        f'to start over')
    torch.set_rng_state(checkpoint['rng']['torch'])
    generator.set_state(checkpoint['rng']['shuffle'])
    cuda_state = checkpoint['rng'].get('cuda')
    if cuda_state is not None and torch.device(device).type == 'cuda':
        # one state; earlier versions kept one per visible GPU, the training's first (its device was cuda:0)
        torch.cuda.set_rng_state(cuda_state[0] if isinstance(cuda_state, list) else cuda_state, device)
    cost.carry(checkpoint.get('cost'))
    return checkpoint


def seed_everything(seed, device, precision='float32'):
    """One seed for torch, numpy and python random, and the device's arithmetic: on the CPU deterministic kernels
    (the same scores, bit for bit); on CUDA cuDNN's deterministic kernels without autotuning, but torch's
    deterministic mode off (it stops at the first kernel with no deterministic form): nearly the same scores."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if torch.device(device).type == 'cpu':
        torch.use_deterministic_algorithms(True)
        # no NaN fill of every new tensor (a debugging aid: 2.5% of an epoch; every kernel writes its whole output)
        torch.utils.deterministic.fill_uninitialized_memory = False
    else:                 # the mode is process-wide: a CPU training before this one in the process turned it on
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        float32_arithmetic(device, precision)


def save_best_model(path, model, data, loss_kind):
    """best_model.pt: the weights of the lowest validation loss and what inference needs with them, as tensors and
    plain values only (it loads with torch's safe loader)."""
    utils.atomic_write(path, lambda tmp: torch.save({
        'model': {k: v.detach().cpu() for k, v in model.state_dict().items()},
        'mean': torch.from_numpy(data['mean']), 'scale': torch.from_numpy(data['scale']),
        'feature_params': extract_features.feature_params(), 'settings': defining_settings(), 'loss': loss_kind,
        'precision': model.precision}, tmp))


def start_fold_over(fold_dir, test_files):
    """Remove what an earlier training of this fold left (its metrics, checkpoint, model, CodeCarbon's rows and the
    score files of its test files): nothing of it may pass for the new training's."""
    run_dir = Path(fold_dir).parent
    stale = [Path(fold_dir) / name for name in ('metrics.json', 'checkpoint.pt', 'best_model.pt', cost.TRACKER_FILE)]
    stale += [run_dir / d / f'{utils.file_stem(i)}.tsv' for i in test_files for d in ('scores', 'scores_all_classes')]
    for path in stale:
        path.unlink(missing_ok=True)


# -----------------------------------------------------------------------------
# Snapshots and --jobs: (run, fold) trainings as child processes

def snapshot(workdir):
    """The code of this checkout, the fold lists config names when they are the repository's, and this command's
    experiment (settings.py), copied once into WD/snapshots/<id>/ (id: a hash of all of it) -> that folder."""
    root = Path(config.REPO_ROOT).resolve()
    settings = '"""The experiment of a snapshot (runtime.py)."""\n' + ''.join(
        f'{name} = {str(value) if isinstance(value, Path) else value!r}\n'
        for name, value in sorted(experiment.current()['settings'].items()))
    paths = [*root.glob('*.py'), Path(config.DEVELOPMENT_SPLIT), *Path(config.FOLDS_DIR).glob('*.csv')]
    files = sorted({p.resolve().relative_to(root) for p in paths if p.resolve().is_relative_to(root)})
    digest = hashlib.sha256(settings.encode())
    for relative in files:
        digest.update(str(relative).encode() + b'\0' + (root / relative).read_bytes())
    target = Path(workdir) / SNAPSHOTS_DIR / digest.hexdigest()[:12]
    experiment.save()
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix='.tmp-'))
        for relative in files:
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / relative, tmp / relative)
        (tmp / SNAPSHOT_SETTINGS).write_text(settings)
        commit, dirty = utils.git_state(root)
        utils.write_json_atomic(tmp / utils.SNAPSHOT_RECORD, {'repository': str(root), 'git_commit': commit,
                                                              'git_dirty': dirty, 'experiment': experiment.current()})
        with contextlib.suppress(OSError):   # another process renamed its copy of the same id first: keep that
            os.replace(tmp, target)
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def visible_gpus():
    """The GPUs this process may use, as a child's CUDA_VISIBLE_DEVICES names them (indices or UUIDs)."""
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(',') if gpu.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def run_jobs(script, args, run_ids, folds):
    """Train the (run, fold) pairs as args.jobs child processes at once (`script --run R --folds K` and the other
    flags of args, logs in runs/run{r}/fold{k}.log), the runs started here once, the children running a snapshot of
    the code and the experiment (docs/cluster.md). Every job runs to its end; then a DataError names each failed
    (run, fold) and its log."""
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    record = run_record(extract_features.read_manifest(args.workdir), config.MAX_EPOCHS, config.LOSS,
                        config.PRECISION, device)
    for r in run_ids:
        start_run(Path(args.workdir) / config.RUNS_DIR / f'run{r}', record, config.SEED + r, args.restart,
                  device_details(device))
    folder = snapshot(args.workdir)
    child_args = ['--config', str(folder / SNAPSHOT_SETTINGS), '--workdir', str(args.workdir), '--device', device,
                  *(['--resume'] if args.resume else [])]
    gpus = visible_gpus() if device == 'cuda' else ['']
    # unless given: less spinning, as OpenMP's default made children side by side wait on each other
    env = {'OMP_NUM_THREADS': str(max(1, (os.cpu_count() or 1) // args.jobs)), 'GOMP_SPINCOUNT': '1000', **os.environ}

    def job(numbered):
        i, (r, k) = numbered
        log = Path(args.workdir) / config.RUNS_DIR / f'run{r}' / f'fold{k}.log'
        command = [sys.executable, str(folder / Path(script).name), '--run', str(r), '--folds', str(k), *child_args]
        gpu = gpus[i % len(gpus)]
        with open(log, 'w') as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                  env={**env, 'CUDA_VISIBLE_DEVICES': gpu}).returncode
        print(f'run {r} fold {k}: exit status {code}, log {log}' + (f', GPU {gpu}' if gpu else ''), flush=True)
        return (r, k, log) if code else None

    with ThreadPoolExecutor(args.jobs) as pool:
        failed = [f for f in pool.map(job, enumerate((r, k) for r in run_ids for k in folds)) if f]
    if failed:
        raise DataError(f'{len(failed)} trainings failed: ' + '; '.join(
            f'run {r} fold {k} (log {log})' for r, k, log in failed) + '; the others finished. Fix the cause, '
            'then run the same command with --resume')


@experiment.command(workdir=True)
def main(argv=None):
    parser = argparse.ArgumentParser(description='A snapshot of the code, the fold lists and the experiment of a '
                                     'workdir for jobs that start later (slurm/submit.sh): prints its folder.')
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR, help='the workdir (default: %(default)s)')
    print(snapshot(experiment.parse_args(parser, argv).workdir))


if __name__ == '__main__':
    import runtime          # one module: command() applies the experiment in `experiment`, not in `__main__`
    raise SystemExit(runtime.main())
