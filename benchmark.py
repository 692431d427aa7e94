"""Benchmark of the pipeline: feature extraction, training epochs, validation, test inference, memory.

    python demo_data.py --out /tmp/demo_full --scale 1.0                    # the real-size demo set (once)
    python benchmark.py --data-root /tmp/demo_full --workdir /tmp/wd_full --json benchmark.json
    python benchmark.py --workdir WD --skip-extraction --malloc kept plain   # task4b's malloc settings vs glibc's
    python benchmark.py --workdir WD --skip-extraction --precision float32 bfloat16   # both precisions, side by side
    python benchmark.py --workdir WD --skip-extraction --device cuda --precision float32 tf32 bfloat16
    python benchmark.py --workdir WD --skip-extraction --skip-original --energy --precision float32 bfloat16

Each part (extraction, training per malloc setting and precision, the original's way, the convolutions alone)
runs in its own child process, this script with a hidden --phase flag, so that one part's memory does not count
for another (docs/speed.md, What benchmark.py times). Prints a table and writes --json (atomically).
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# each part's child imports every part's modules, the original's too: about 30 MiB more beside the extraction's
# peak of 1.17 GiB (measured; the imports are not timed)
import benchmark_original
import config
import cost
import experiment
import extract_features
import front_end
import runtime
import score_io
import task4b
import utils
from augment import Augmenter
from data_generator import load_fold_tensors, sequence_batches
from model import build_model


def tree_rss_bytes(pid):
    """Resident set (bytes) of process `pid` and all its descendants, from /proc (one gone meanwhile counts 0)."""
    children = {}
    for entry in filter(str.isdigit, os.listdir('/proc')):
        with contextlib.suppress(OSError, IndexError, ValueError), open(f'/proc/{entry}/stat') as f:
            children.setdefault(int(f.read().rsplit(')', 1)[1].split()[1]), []).append(int(entry))   # parent's pid
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        with contextlib.suppress(OSError, IndexError, ValueError), open(f'/proc/{p}/statm') as f:
            total += int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    return total


def run_child(args, interval=0.02):
    """Run this script with `args` as a child, sampling its tree's resident memory every `interval` s -> its result
    dict with the peak ('tree_peak_bytes')."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'result.json'
        process = subprocess.Popen([sys.executable, __file__, *args, *experiment.command_args(), '--result', str(out)])
        peak = 0
        while (rc := process.poll()) is None:
            peak = max(peak, tree_rss_bytes(process.pid))
            time.sleep(interval)
        if rc != 0:
            sys.exit(f'error: benchmark part {args[:2]} failed (exit status {rc}); see its messages above')
        return dict(json.loads(out.read_text()), tree_peak_bytes=peak)


def max_rss_bytes(who):
    return resource.getrusage(who).ru_maxrss * 1024           # Linux: kibibytes


def timed(work, device):
    """Wall seconds of work(), the GPU's queue included."""
    start = time.perf_counter()
    work()
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - start


def phase_extract(data_root, result):
    with tempfile.TemporaryDirectory() as workdir:
        seconds = timed(lambda: extract_features.extract(data_root, workdir), 'cpu')
        durations = score_io.read_durations(Path(workdir) / config.METADATA_DIR / config.DURATIONS_FILE)
    utils.write_json_atomic(result, {
        'seconds': seconds, 'audio_seconds': sum(durations.values()), 'files': len(durations),
        'jobs': config.FEATURE_JOBS, 'maxrss_self_bytes': max_rss_bytes(resource.RUSAGE_SELF),
        'maxrss_workers_bytes': max_rss_bytes(resource.RUSAGE_CHILDREN)})


def epoch_times(train_s, val_s):
    """Seconds of each timed epoch (training, validation) and their medians."""
    return {'train_epoch_s': train_s, 'val_pass_s': val_s,
            'train_epoch_median_s': statistics.median(train_s), 'val_pass_median_s': statistics.median(val_s),
            'epoch_median_s': statistics.median(t + v for t, v in zip(train_s, val_s))}


def phase_train(workdir, device, epochs, fold, malloc, precision, energy, result):
    tuned = runtime.keep_freed_memory() if malloc == 'kept' else False
    runtime.check_precision(precision, device)
    data = load_fold_tensors(workdir, fold, device)
    runtime.seed_everything(config.SEED, device, precision)
    model = build_model(device, precision)
    optimizer = task4b.new_optimizer(model)
    generator = torch.Generator().manual_seed(config.SEED)
    augmenter = Augmenter(config.SEED, data['mean'], data['scale'])       # as --set augmentations ask

    train_s, val_s = [], []
    tracking = cost.tracked if energy else lambda *_: contextlib.nullcontext()   # no tracker thread beside the timing
    with tempfile.TemporaryDirectory() as folder, tracking(folder, f'benchmark {precision}', device) as spent:
        for _ in range(epochs):                        # task4b's own epoch and validation, without the records
            train_s.append(timed(lambda: float(task4b.train_one_epoch(
                model, optimizer, data['X_train'], data['Y_train'], generator, config.LOSS, augmenter).mean()), device))
            val_s.append(timed(lambda: task4b.validate(
                model, data['X_val'], data['Y_val'], data['val_reference'], config.LOSS), device))

    test_s = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as run_dir:
            test_s.append(timed(lambda: task4b.write_test_scores(model, data, run_dir, config.LOSS), device))
    test_hours = sum(len(x) for x in data['X_test']) * config.FRAME_SECONDS / 3600
    out = {'fold': fold, 'malloc': malloc, 'malloc_tuned': tuned, 'precision': precision,
           'train_sequences': len(data['X_train']), 'val_sequences': len(data['X_val']),
           'batches': -(-len(data['X_train']) // config.BATCH_SIZE), 'test_files': len(data['X_test']),
           'test_audio_hours': test_hours, **epoch_times(train_s, val_s),
           'test_s_per_hour': statistics.median(test_s) / test_hours,
           'maxrss_bytes': max_rss_bytes(resource.RUSAGE_SELF), 'torch_threads': torch.get_num_threads(),
           'ld_preload': os.environ.get('LD_PRELOAD', '')}
    if energy:
        out['energy'] = spent
    if device == 'cuda':
        out['cuda_max_allocated_bytes'] = torch.cuda.max_memory_allocated()
        out['cuda_device'] = torch.cuda.get_device_name()
    utils.write_json_atomic(result, out)


def phase_convs(workdir, device, epochs, fold, result):
    runtime.keep_freed_memory()
    runtime.seed_everything(config.SEED, device)
    data = load_fold_tensors(workdir, fold, device)
    convs = [block.conv for block in build_model(device).conv_blocks]
    frames, bands = data['X_train'].shape[1], [front_end.input_width()]
    for pool in config.POOL_SIZES[:-1]:
        bands.append(bands[-1] // pool)             # each conv's input bands: 64, 12, 6
    train_sizes = [len(x) for x in sequence_batches(data['X_train'], config.BATCH_SIZE)]
    val_sizes = [len(x) for x in sequence_batches(data['X_val'], config.BATCH_SIZE)]
    del data
    layouts = {'channels_last': torch.channels_last, 'contiguous': torch.contiguous_format}

    def tensors(size, layout, training):
        """(conv, input, output gradient) of each conv for `size` sequences; conv 1's input (features) needs none."""
        def randn(channels, n):
            return torch.randn(size, channels, frames, n, device=device).contiguous(memory_format=layout)
        return [(conv, randn(conv.in_channels, n).requires_grad_(training and i > 0),
                 randn(conv.out_channels, n) if training else None) for i, (conv, n) in enumerate(zip(convs, bands))]

    # one set per batch size and layout, made before the timing (sizes repeat: 32, ..., the remainder)
    made = {(size, name, training): tensors(size, layout, training) for name, layout in layouts.items()
            for training, sizes in ((True, train_sizes), (False, val_sizes)) for size in set(sizes)}

    def train(layout):
        for size in train_sizes:
            for conv, x, grad in made[size, layout, True]:
                conv.zero_grad(set_to_none=True)
                conv(x).backward(grad)

    @torch.inference_mode()
    def validate(layout):
        for size in val_sizes:
            for conv, x, _ in made[size, layout, False]:
                conv(x)

    times = {layout: ([], []) for layout in layouts}
    for _ in range(epochs):
        for layout, (train_s, val_s) in times.items():      # the layouts alternate: the same load for both
            for conv in convs:
                conv.to(memory_format=layouts[layout])
            train_s.append(timed(lambda: train(layout), device))
            val_s.append(timed(lambda: validate(layout), device))
    utils.write_json_atomic(result, {'fold': fold, **{layout: epoch_times(*t) for layout, t in times.items()}})


def phase_original_extract(data_root, result):
    with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        files = benchmark_original.extract(data_root, config.FOLDS_DIR, out_dir)
        seconds = time.perf_counter() - start
    utils.write_json_atomic(result, {'seconds': seconds, 'files': files,
                                     'maxrss_self_bytes': max_rss_bytes(resource.RUSAGE_SELF)})


def phase_original_train(workdir, epochs, fold, result):
    train_s, val_s = benchmark_original.time_epochs(extract_features.load_fold(workdir, fold), epochs)
    utils.write_json_atomic(result, {
        'fold': fold, **epoch_times(train_s, val_s),
        'maxrss_bytes': max_rss_bytes(resource.RUSAGE_SELF), 'torch_threads': torch.get_num_threads()})


def machine_info(device):
    info = {'torch': torch.__version__, 'python': platform.python_version(), 'cpu': runtime.cpu_model(),
            'cpu_native_bfloat16': runtime.native_bfloat16_cpu(),
            'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads(), 'device': device,
            'load_average': os.getloadavg(), 'gomp_spincount': os.environ.get('GOMP_SPINCOUNT'),
            'ld_preload_outside': os.environ.get('LD_PRELOAD', '')}
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def gib(n):
    return f'{n / 2**30:.2f} GiB'


def epoch_rows(t, validation_note=''):
    return [('  epoch: train + validation', f'{t["epoch_median_s"]:.2f} s'),
            ('  training epoch', f'{t["train_epoch_median_s"]:.2f} s  ({", ".join(f"{s:.2f}" for s in t["train_epoch_s"])})'),
            ('  validation pass', f'{t["val_pass_median_s"]:.2f} s{validation_note}')]


def precision_rows(training):
    """Each other precision's epoch, validation and test scoring against float32's of the same malloc setting."""
    rows = []
    for name, t in training.items():
        base = training.get(f'{t["malloc"]}, float32')
        if base is not None and t['precision'] != 'float32':
            rows.append((f'  {t["precision"]} [{t["malloc"]}] vs float32',
                         f'{base["epoch_median_s"] / t["epoch_median_s"]:.2f}x per epoch (training '
                         f'{base["train_epoch_median_s"] / t["train_epoch_median_s"]:.2f}x, validation '
                         f'{base["val_pass_median_s"] / t["val_pass_median_s"]:.2f}x, test scoring '
                         f'{base["test_s_per_hour"] / t["test_s_per_hour"]:.2f}x)'))
            if epoch_kwh(base) and epoch_kwh(t):
                rows.append((f'  {t["precision"]} [{t["malloc"]}] energy', f'{epoch_kwh(t) / epoch_kwh(base):.2f}x '
                             f"float32's per epoch ({t['energy']['kind']}, float32's {base['energy']['kind']})"))
    return rows


def epoch_kwh(t):
    """kWh per epoch (training and validation) of a training part timed with --energy, or None."""
    kwh = (t.get('energy') or {}).get('kWh')
    return None if kwh is None else kwh / len(t['train_epoch_s'])


def energy_rows(t):
    """The energy of the timed epochs, per epoch and for 10 (DCASE's normalisation), measured or estimated."""
    if 'energy' not in t:
        return []
    spent, n = t['energy'], len(t['train_epoch_s'])
    if spent.get('kWh') is None:
        return [('  energy', 'not tracked (CodeCarbon failed: see the warning above)')]
    ten = f'{spent["kWh"]:.3g} kWh over them' if n == 10 else f'{10 * epoch_kwh(t):.3g} kWh (from {n} epochs)'
    return [('  energy of 10 epochs', f'{ten}, {spent["kind"]}; {epoch_kwh(t):.3g} kWh per epoch'),
            ('    how', cost.sources_text(spent))]


def table(report):
    rows, training = [], report.get('training', {})
    if 'extraction' in report:
        e = report['extraction']
        rows += [('feature extraction (cold)', f'{e["seconds"]:.2f} s for {e["audio_seconds"] / 60:.0f} min of audio, '
                  f'{e["files"]} files, {e["jobs"]} processes'),
                 ('  multiple of real time', f'{e["audio_seconds"] / e["seconds"]:.0f}x'),
                 ('  peak memory', f'{gib(e["tree_peak_bytes"])} process tree (/proc), largest process '
                  f'{gib(max(e["maxrss_self_bytes"], e["maxrss_workers_bytes"]))} (ru_maxrss)')]
    for name, t in training.items():
        rows += [(f'training [{name}] fold {t["fold"]}', f'{t["train_sequences"]} sequences, {t["batches"]} '
                  f'batches; median of {len(t["train_epoch_s"])} epochs')]
        rows += epoch_rows(t, f'  ({t["val_sequences"]} sequences, loss + F1/ER)')
        rows += [('  test inference', f'{t["test_s_per_hour"]:.2f} s per hour of audio, with the score files'),
                 ('  peak memory', f'{gib(t["maxrss_bytes"])} (ru_maxrss of the training process), '
                  f'{gib(t["tree_peak_bytes"])} (/proc)')]
        if 'cuda_max_allocated_bytes' in t:
            rows.append(('  peak GPU memory', f'{gib(t["cuda_max_allocated_bytes"])} (torch.cuda.max_memory_allocated, '
                         f'{t["cuda_device"]})'))
        rows += energy_rows(t)
    rows += precision_rows(training)
    original = report.get('original', {})
    if 'extraction' in original:
        o = original['extraction']
        rows += [('original: feature extraction', f'{o["seconds"]:.2f} s, {o["files"]} files, one process'),
                 ('  peak memory', f'{gib(o["tree_peak_bytes"])} process tree (/proc)')]
        if 'extraction' in report:
            rows.append(('  ours is faster by', f'{o["seconds"] / report["extraction"]["seconds"]:.1f}x'))
    if 'training' in original:
        o = original['training']
        rows += [(f'original: training fold {o["fold"]}', f'median of {len(o["train_epoch_s"])} epochs')]
        rows += epoch_rows(o)
        rows += [('  peak memory', f'{gib(o["maxrss_bytes"])} (ru_maxrss), {gib(o["tree_peak_bytes"])} (/proc)')]
        for name, t in training.items():
            rows.append((f'  ours [{name}] is faster by', f'{o["epoch_median_s"] / t["epoch_median_s"]:.2f}x per '
                         f'epoch (training {o["train_epoch_median_s"] / t["train_epoch_median_s"]:.2f}x, '
                         f'validation {o["val_pass_median_s"] / t["val_pass_median_s"]:.2f}x)'))
    if 'convs' in report:
        c = report['convs']
        rows.append((f'convolutions alone fold {c["fold"]}', 'the 3 convolutions of the epoch, forward and backward'))
        for layout in ('channels_last', 'contiguous'):
            t = c[layout]
            rows.append((f'  {layout}', f'{t["epoch_median_s"]:.2f} s per epoch (training '
                         f'{t["train_epoch_median_s"]:.2f} s, validation {t["val_pass_median_s"]:.2f} s)'))
        fastest = min(c['channels_last']['epoch_median_s'], c['contiguous']['epoch_median_s'])
        # the part times the convolutions in float32
        rows += [(f'  share of ours [{name}]', f'{100 * fastest / t["epoch_median_s"]:.0f}% of the epoch (the faster '
                  'layout)') for name, t in training.items() if t.get('precision', 'float32') == 'float32']
        if 'training' in original:
            rows.append(('  ceiling on these kernels', f'{original["training"]["epoch_median_s"] / fastest:.2f}x the '
                         f'original per epoch (it runs the same convolutions, and all the rest)'))
    width = max(len(r[0]) for r in rows)
    m = report['machine']
    head = (f'torch {m["torch"]}, {m["torch_threads"]} threads, {m["cpu"]} ({m["cpu_count"]} CPUs), device '
            f'{m["device"]}, load average before {", ".join(f"{x:.2f}" for x in m["load_average"])}')
    return '\n'.join([head] + [f'{a:<{width}}  {b}' for a, b in rows])


@experiment.command(workdir=True)
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', type=Path, default=config.DATA_ROOT, help='audio and annotations')
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR,
                        help='holds the features the training part uses (extract_features.py --workdir)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--epochs', type=int, help='epochs timed (the median is reported); at least 3 (default: '
                                                   '3, with --energy 10)')
    parser.add_argument('--energy', action='store_true', help="the energy of the training part's epochs too "
                        "(CodeCarbon): per epoch and for 10 epochs, as DCASE asks it for normalising a system's energy")
    parser.add_argument('--fold', type=int, default=1, choices=range(1, config.N_FOLDS + 1))
    parser.add_argument('--malloc', nargs='+', choices=['kept', 'plain'], default=['kept'],
                        help="glibc malloc of the training part, one part each: 'kept' as task4b.py sets it "
                             "(freed memory kept for reuse, the default), 'plain' glibc's defaults")
    parser.add_argument('--precision', nargs='+', choices=['float32', 'bfloat16', 'tf32'], default=['float32'],
                        help='precision of the training part, one part each (task4b.py --precision)')
    parser.add_argument('--skip-extraction', action='store_true')
    parser.add_argument('--skip-training', action='store_true')
    parser.add_argument('--skip-original', action='store_true', help="don't time the original's way")
    parser.add_argument('--json', type=Path, help='write the results here (atomically)')
    parser.add_argument('--phase', choices=['extract', 'train', 'convs', 'original-extract', 'original-train'],
                        help=argparse.SUPPRESS)
    parser.add_argument('--result', type=Path, help=argparse.SUPPRESS)
    args = experiment.parse_args(parser, argv)
    if args.epochs is None:
        args.epochs = 10 if args.energy else 3
    phases = {'extract': lambda: phase_extract(args.data_root, args.result),
              'train': lambda: phase_train(args.workdir, args.device, args.epochs, args.fold, args.malloc[0],
                                           args.precision[0], args.energy, args.result),
              'convs': lambda: phase_convs(args.workdir, args.device, args.epochs, args.fold, args.result),
              'original-extract': lambda: phase_original_extract(args.data_root, args.result),
              'original-train': lambda: phase_original_train(args.workdir, args.epochs, args.fold, args.result)}
    if args.phase:
        return phases[args.phase]()
    if args.epochs < 3:
        parser.error('--epochs: at least 3 (a median)')
    if args.energy and (args.skip_training or not config.TRACK_ENERGY):
        parser.error('--energy: the energy of the training part; give it without --skip-training and with '
                     'TRACK_ENERGY = True')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise utils.DataError('--device cuda: no CUDA device visible to torch (a CPU-only build of torch, or no GPU)')

    report = {'command': ' '.join(['python', *sys.argv]), 'machine': machine_info(args.device)}
    fold_args = ['--workdir', str(args.workdir), '--epochs', str(args.epochs), '--fold', str(args.fold)]
    if not args.skip_extraction:
        report['extraction'] = run_child(['--phase', 'extract', '--data-root', str(args.data_root)])
    if not args.skip_training:
        report['training'] = {}
        for malloc in args.malloc:
            for precision in args.precision:
                report['training'][f'{malloc}, {precision}'] = run_child(
                    ['--phase', 'train', *fold_args, '--device', args.device, '--malloc', malloc,
                     '--precision', precision, *(['--energy'] if args.energy else [])])
        report['convs'] = run_child(['--phase', 'convs', *fold_args, '--device', args.device])
        del report['convs']['tree_peak_bytes']              # the table reports no memory of this part
    if not args.skip_original and args.device == 'cpu':
        report['original'] = {}
        if not args.skip_extraction:
            report['original']['extraction'] = run_child(['--phase', 'original-extract', '--data-root',
                                                          str(args.data_root)])
        if not args.skip_training:
            report['original']['training'] = run_child(['--phase', 'original-train', *fold_args])
    report['table'] = table(report)
    print(report['table'])
    if args.json:
        utils.write_json_atomic(args.json, report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
