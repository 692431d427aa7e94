"""Benchmark of the pipeline: feature extraction, training epochs, validation, test inference, memory (issue 5).

    python demo_data.py --out /tmp/demo_full --scale 1.0                    # the real-size demo set (once)
    python benchmark.py --data-root /tmp/demo_full --workdir /tmp/wd_full --json benchmark.json
    python benchmark.py --data-root DIR --workdir WD --allocator glibc tcmalloc jemalloc   # compare allocators
    python benchmark.py --workdir WD --skip-extraction --device cuda

Each part runs in its own child process (this script with a hidden --phase flag), so that one part's memory
does not count for another and the allocator is preloaded before Python starts:
- extraction: extract_features.extract into a fresh temporary workdir (cold: no cached features; the audio
  files may sit in the page cache from earlier reads), its wall time, the multiple of real time (audio
  seconds / wall) and its peak memory, two ways: the resident set of the whole process tree (the child and
  its worker processes) summed from /proc every 20 ms, and the largest single process (getrusage ru_maxrss of
  the child and of its workers);
- training, per allocator: fold 1 of --workdir's features (extract_features.py must have run there): with
  task4b's own functions, seconds per training epoch (train_one_epoch), per validation pass
  (validation_loss_and_scores + validation_f1_er) and of both, the median over --epochs epochs; the floor:
  forward + backward + optimizer step alone over the same batches prepared beforehand, in the same process
  (median over as many passes); test inference seconds per hour of audio (fold 1's test files, whole, through
  the model in inference mode, and through task4b.write_test_scores with its score files); peak memory of the
  training process (ru_maxrss) and the /proc tree peak.
Prints a table and writes --json (atomically); records torch version, threads, allocator (LD_PRELOAD), CPU.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import config
import utils

ALLOCATORS = ('glibc', 'tcmalloc', 'jemalloc')


# -----------------------------------------------------------------------------
# Memory of a process tree

def tree_rss_bytes(pid):
    """Resident set of process `pid` and all its descendants (bytes), from /proc."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f'/proc/{p}/statm') as f:
                total += int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_child(args, env=None, interval=0.02):
    """Run this script with `args` as a child, sampling its tree's resident memory -> (result dict, peak bytes)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'result.json'
        process = subprocess.Popen([sys.executable, __file__, *args, '--result', str(out)], env=env)
        peak, done = [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_bytes(process.pid))
                done.wait(interval)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = process.wait()
        done.set()
        sampler.join()
        if rc != 0:
            sys.exit(f'error: benchmark part {args[:2]} failed (exit status {rc}); see its messages above')
        return json.loads(out.read_text()), peak[0]


def max_rss_bytes(who):
    return resource.getrusage(who).ru_maxrss * 1024           # Linux: kibibytes


# -----------------------------------------------------------------------------
# The parts (child processes)

def phase_extract(data_root, result):
    import evaluate
    import extract_features
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        extract_features.extract(data_root, workdir)
        seconds = time.perf_counter() - start
        durations = evaluate.read_durations(Path(workdir) / config.METADATA_DIR / config.DURATIONS_FILE)
    utils.write_json_atomic(result, {
        'seconds': seconds, 'audio_seconds': sum(durations.values()), 'files': len(durations),
        'jobs': config.FEATURE_JOBS, 'maxrss_self_bytes': max_rss_bytes(resource.RUSAGE_SELF),
        'maxrss_workers_bytes': max_rss_bytes(resource.RUSAGE_CHILDREN)})


def phase_train(workdir, device, epochs, fold, result):
    import torch
    import task4b
    from data_generator import load_fold_tensors, training_batches
    from model import build_model, soft_label_loss

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    loss_kind = config.LOSS
    data = load_fold_tensors(workdir, fold, device)
    task4b.seed_everything(config.SEED, device)
    model = build_model(device)
    optimizer = task4b.new_optimizer(model)
    generator = torch.Generator().manual_seed(config.SEED)
    reference = task4b.validation_reference(data['Y_val'])

    train_s, val_s = [], []
    for _ in range(epochs):                            # as task4b.train_fold does it, without the records
        start = time.perf_counter()
        losses = task4b.train_one_epoch(model, optimizer, data['X_train'], data['Y_train'], generator, loss_kind)
        float(losses.mean())
        sync()
        middle = time.perf_counter()
        _, scores = task4b.validation_loss_and_scores(model, data['X_val'], data['Y_val'], loss_kind)
        task4b.validation_f1_er(scores, reference)
        sync()
        train_s.append(middle - start)
        val_s.append(time.perf_counter() - middle)

    batches = list(training_batches(data['X_train'], data['Y_train'], config.BATCH_SIZE, generator))
    model.train()
    floor_s = []
    for _ in range(epochs):                            # the same batches, the arithmetic alone
        sync()
        start = time.perf_counter()
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = soft_label_loss(model(x), y, loss_kind)
            loss.backward()
            optimizer.step()
        float(loss.detach())
        sync()
        floor_s.append(time.perf_counter() - start)

    test_frames = sum(len(x) for x in data['X_test'])
    model_s, write_s = [], []
    for _ in range(3):
        start = time.perf_counter()
        with torch.inference_mode():
            model.eval()
            for x in data['X_test']:
                model(x.unsqueeze(0)).float().cpu()
        sync()
        model_s.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as scores_dir:
            start = time.perf_counter()
            task4b.write_test_scores(model, data, scores_dir, loss_kind)
            write_s.append(time.perf_counter() - start)
    test_hours = test_frames * config.FRAME_SECONDS / 3600
    out = {
        'fold': fold, 'train_sequences': len(data['X_train']), 'val_sequences': len(data['X_val']),
        'batches': len(batches), 'test_files': len(data['X_test']), 'test_audio_hours': test_hours,
        'train_epoch_s': train_s, 'val_pass_s': val_s, 'floor_s': floor_s,
        'train_epoch_median_s': statistics.median(train_s), 'val_pass_median_s': statistics.median(val_s),
        'epoch_median_s': statistics.median(t + v for t, v in zip(train_s, val_s)),
        'floor_median_s': statistics.median(floor_s),
        'test_model_s_per_hour': statistics.median(model_s) / test_hours,
        'test_with_scores_s_per_hour': statistics.median(write_s) / test_hours,
        'maxrss_bytes': max_rss_bytes(resource.RUSAGE_SELF),
        'torch_threads': torch.get_num_threads(), 'ld_preload': os.environ.get('LD_PRELOAD', ''),
    }
    if device == 'cuda':
        out['cuda_max_allocated_bytes'] = torch.cuda.max_memory_allocated()
        out['cuda_device'] = torch.cuda.get_device_name()
    utils.write_json_atomic(result, out)


# -----------------------------------------------------------------------------
# The whole benchmark

def cpu_model():
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device):
    import torch
    info = {'torch': torch.__version__, 'python': platform.python_version(), 'cpu': cpu_model(),
            'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads(), 'device': device,
            'load_average': os.getloadavg(), 'gomp_spincount': os.environ.get('GOMP_SPINCOUNT', '1000 (task4b)'),
            'ld_preload_outside': os.environ.get('LD_PRELOAD', '')}
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def gib(n):
    return f'{n / 2**30:.2f} GiB'


def table(report):
    rows = []
    if 'extraction' in report:
        e = report['extraction']
        rows += [('feature extraction (cold)', f'{e["seconds"]:.2f} s for {e["audio_seconds"] / 60:.0f} min of audio, '
                  f'{e["files"]} files, {e["jobs"]} processes'),
                 ('  multiple of real time', f'{e["audio_seconds"] / e["seconds"]:.0f}x'),
                 ('  peak memory', f'{gib(e["tree_peak_bytes"])} process tree (/proc), largest process '
                  f'{gib(max(e["maxrss_self_bytes"], e["maxrss_workers_bytes"]))} (ru_maxrss)')]
    for name, t in report.get('training', {}).items():
        rows += [(f'training [{name}] fold {t["fold"]}', f'{t["train_sequences"]} sequences, {t["batches"]} '
                  f'batches; median of {len(t["train_epoch_s"])} epochs'),
                 ('  epoch: train + validation', f'{t["epoch_median_s"]:.2f} s'),
                 ('  training epoch', f'{t["train_epoch_median_s"]:.2f} s  ({", ".join(f"{s:.2f}" for s in t["train_epoch_s"])})'),
                 ('  validation pass', f'{t["val_pass_median_s"]:.2f} s  ({t["val_sequences"]} sequences, loss + F1/ER)'),
                 ('  floor: fwd+bwd+opt alone', f'{t["floor_median_s"]:.2f} s  ({", ".join(f"{s:.2f}" for s in t["floor_s"])})'),
                 ('  test inference', f'{t["test_model_s_per_hour"]:.2f} s per hour of audio (model), '
                  f'{t["test_with_scores_s_per_hour"]:.2f} s with score files'),
                 ('  peak memory', f'{gib(t["maxrss_bytes"])} (ru_maxrss of the training process), '
                  f'{gib(t["tree_peak_bytes"])} (/proc)')]
    width = max(len(r[0]) for r in rows)
    m = report['machine']
    head = (f'torch {m["torch"]}, {m["torch_threads"]} threads, {m["cpu"]} ({m["cpu_count"]} CPUs), device '
            f'{m["device"]}, load average before {", ".join(f"{x:.2f}" for x in m["load_average"])}')
    return '\n'.join([head] + [f'{a:<{width}}  {b}' for a, b in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', type=Path, default=config.DATA_ROOT, help='audio and annotations (SPEC 1)')
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR,
                        help='holds the features the training part uses (extract_features.py --workdir)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--epochs', type=int, default=3, help='epochs timed (the median is reported); at least 3')
    parser.add_argument('--fold', type=int, default=1, choices=range(1, config.N_FOLDS + 1))
    parser.add_argument('--allocator', nargs='+', choices=ALLOCATORS, default=[config.ALLOCATOR or 'glibc'],
                        help=f'malloc of the training process, one part each (default config.ALLOCATOR = '
                             f'{config.ALLOCATOR}); tcmalloc/jemalloc with decay off, preloaded')
    parser.add_argument('--skip-extraction', action='store_true')
    parser.add_argument('--skip-training', action='store_true')
    parser.add_argument('--json', type=Path, help='write the results here (atomically)')
    parser.add_argument('--phase', choices=['extract', 'train'], help=argparse.SUPPRESS)
    parser.add_argument('--result', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == 'extract':
        return phase_extract(args.data_root, args.result)
    if args.phase == 'train':
        return phase_train(args.workdir, args.device, args.epochs, args.fold, args.result)
    if args.epochs < 3:
        parser.error('--epochs: at least 3 (a median)')

    os.environ.setdefault('GOMP_SPINCOUNT', '1000')       # as task4b.py sets it
    report = {'command': ' '.join(['python', *sys.argv]), 'machine': machine_info(args.device)}
    if not args.skip_extraction:
        result, peak = run_child(['--phase', 'extract', '--data-root', str(args.data_root)])
        report['extraction'] = dict(result, tree_peak_bytes=peak)
    if not args.skip_training:
        report['training'] = {}
        for name in args.allocator:
            env = dict(os.environ)
            env['LD_PRELOAD'] = ''
            if name != 'glibc':
                env, path = utils.allocator_env(name, env)
                if env is None:
                    print(f'note: {name} not installed (apt-get install -y {config.ALLOCATOR_PACKAGES[name]}), '
                          f'skipped', file=sys.stderr)
                    continue
            env[utils.ALLOCATOR_GUARD] = name
            result, peak = run_child(['--phase', 'train', '--workdir', str(args.workdir), '--device', args.device,
                                      '--epochs', str(args.epochs), '--fold', str(args.fold)], env=env)
            report['training'][name] = dict(result, tree_peak_bytes=peak)
    text = table(report)
    report['table'] = text
    print(text)
    if args.json:
        utils.write_json_atomic(args.json, report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
