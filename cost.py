"""What a result costs, as DCASE asks it reported: the energy (kWh) and time of training and of inference, and the
model's parameters and multiply-accumulates (MACs).

    python task4b.py --workdir WD                             # every fold's metrics.json and the table show them
    python task4b.py --workdir WD --set TRACK_ENERGY=False    # times only: no tracker (scores the same)
    python benchmark.py --workdir WD --skip-extraction --energy --precision float32 bfloat16   # 10 epochs' kWh

Energy: CodeCarbon's offline tracker (tracked) around each fold's training and test scoring (task4b.py) and around
infer.py, in its 'process' mode (this process and its children, not whatever else the machine runs, where the
figure is an estimate), its log at errors only, its file `emissions.csv` (one row per tracked step) in the fold's
folder or infer.py's --out. It never reaches the network: the offline tracker looks up no location, and its outputs
to CodeCarbon's API, an HTTP endpoint, Prometheus and Logfire, and Electricity Maps' carbon data, are off whatever a
.codecarbon.config or a CODECARBON_* variable says. Every figure says how it was obtained (sources, kind): measured
by a counter (RAPL for the CPU, NVML for NVIDIA GPUs) or estimated by CodeCarbon's model (the CPU's TDP times its
load, the RAM's power from the memory in use); an estimate is never called a measurement. A resumed training adds
the figures its checkpoint carried (so_far, carry). docs/method.md, What a result costs, says what each counts.
"""
import contextlib
import functools
import logging
import sys
import time
from pathlib import Path

import config
import runs
from utils import DataError

TRACKER_FILE = 'emissions.csv'          # CodeCarbon's CSV in the tracked folder
PARTS = ('cpu', 'gpu', 'ram')
# CodeCarbon's CPU modes that read a counter; its others ('cpu_load', 'constant') are its model of the CPU's power
CPU_COUNTERS = {'intel_rapl': 'RAPL', 'windows_emi': 'Windows Energy Meter (RAPL)',
                'intel_power_gadget': 'Intel Power Gadget'}
_open = []                              # the blocks being tracked in this process, innermost last
_warned = set()


def warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        print(f'warning: {message}', file=sys.stderr)


# -----------------------------------------------------------------------------
# The tracker

def _tracker(folder, task):
    """A started CodeCarbon OfflineEmissionsTracker writing folder/emissions.csv, or None (a warning says why)."""
    try:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.input import DataSource
        from codecarbon.output_methods.base_output import OutputMethod
    except ImportError as error:
        warn_once('import', f'energy not tracked: CodeCarbon does not import ({error}); pip install -r '
                            'requirements.txt, or --set TRACK_ENERGY=False')
        return None
    if config.ENERGY_COUNTRY not in DataSource().get_global_energy_mix_data():
        raise DataError(f'config.ENERGY_COUNTRY = {config.ENERGY_COUNTRY!r}: not a country of CodeCarbon\'s energy '
                        f"data; give another 3-letter ISO code (e.g. 'FIN', 'DEU', 'USA'), or --set TRACK_ENERGY=False")
    # its module sets its logger to INFO on import, and the tracker logs before it applies log_level
    logging.getLogger('codecarbon').setLevel(logging.ERROR)
    Path(folder).mkdir(parents=True, exist_ok=True)
    # every network path given explicitly, as a .codecarbon.config or a CODECARBON_* variable would set the others:
    # the CSV only (no API, Prometheus, Logfire), no HTTP endpoint, no Electricity Maps token ('' is none, where None
    # would let an old co2_signal_api_token of the config through), no live output between measurements
    tracker = OfflineEmissionsTracker(
        country_iso_code=config.ENERGY_COUNTRY, project_name=task, output_dir=str(folder), output_file=TRACKER_FILE,
        output_methods=[OutputMethod.CSV], emissions_endpoint=None, electricitymaps_api_token='',
        api_call_interval=-1, tracking_mode='process', log_level='error', allow_multiple_runs=True)
    tracker.start()          # CodeCarbon swallows its own failures: _read finds no figures then
    energy = _read(tracker, final=False)
    if energy is not None and kind_of(energy['sources']) == 'estimated':
        warn_once('estimated', 'energy estimated, not measured: no power counter readable here (RAPL in '
                               '/sys/class/powercap, NVML of an NVIDIA GPU); CodeCarbon models it from the '
                               "CPU's TDP and load and the memory in use, and the records say so")
    return tracker


def _read(tracker, final):
    """{'cpu_kWh', 'gpu_kWh', 'ram_kWh', 'sources'} CodeCarbon counted so far (final: after stop), or None."""
    try:
        if final:
            data = tracker.final_emissions_data
            kwh = {'cpu': data.cpu_energy, 'gpu': data.gpu_energy, 'ram': data.ram_energy}
        else:      # a measurement now: CodeCarbon 3.3 has no public reading between start and stop
            tracker._measure_power_and_energy()
            kwh = {part: getattr(tracker, f'_total_{part}_energy').kWh for part in PARTS}
        sources = _sources(tracker)
    except Exception:        # a third-party tracker's failure of any kind must never stop a training
        return None
    return {**{f'{part}_kWh': float(kwh[part]) for part in PARTS}, 'sources': sources}


def _sources(tracker):
    """How CodeCarbon gets each part here -> {'cpu': 'estimated from ...', 'gpu': 'measured (NVML)', ...}, read from
    its hardware objects (CodeCarbon 3.3's fields: the mode it chose for each)."""
    sources = {}
    for hardware in tracker._hardware:
        kind = type(hardware).__name__
        if kind == 'CPU' and hardware._mode in CPU_COUNTERS:
            sources['cpu'] = f'measured ({CPU_COUNTERS[hardware._mode]})'
        elif kind == 'CPU':
            generic = ', its generic value: model not in its table' if hardware._is_generic_tdp else ''
            how = 'and the load of this process' if hardware._mode == 'cpu_load' else 'x 0.5 (no load reading)'
            sources['cpu'] = f'estimated from its TDP ({hardware._tdp:g} W{generic}) {how}'
        elif kind == 'GPU':
            from codecarbon.core.gpu_nvidia import is_nvidia_system
            sources['gpu'] = f"measured ({'NVML' if is_nvidia_system() else 'AMD SMI'})"
        elif kind == 'RAM':
            force = hardware._force_ram_power
            sources['ram'] = (f'estimated: the {force:g} W given to CodeCarbon' if force is not None else
                              "estimated from the memory this process uses (CodeCarbon's model: 5 W per DIMM it "
                              'would fill, at least 10 W)')
        elif kind in ('AppleSiliconChip', 'Raspberry'):
            counter = 'powermetrics' if kind == 'AppleSiliconChip' else 'its power management chip'
            sources[hardware.chip_part.lower()] = f'measured ({counter})'
    return sources


def kind_of(sources):
    """'measured' when a counter gave every part, 'estimated' when none did, else 'partly measured' (a part's
    sources of several processes or folds are joined by ' + ')."""
    measured = [way.startswith('measured') for how in sources.values() for way in how.split(' + ')]
    return 'measured' if measured and all(measured) else 'partly measured' if any(measured) else 'estimated'


def _block(seconds, energy, processes=1):
    """The figures of a tracked step, as metrics.json holds them."""
    block = {'seconds': round(seconds, 3), 'kWh': None, 'processes': processes}
    if energy:
        block.update(kWh=sum(energy[f'{part}_kWh'] for part in PARTS), **energy, kind=kind_of(energy['sources']),
                     tracker=_tracker_name())
    return block


@functools.cache
def _tracker_name():
    from importlib.metadata import version
    return f"CodeCarbon {version('codecarbon')}, offline, process mode"


def joined_sources(blocks):
    """How each part of several blocks was obtained, the different ways joined by ' + ' in their order."""
    return {part: ' + '.join(dict.fromkeys(b['sources'][part] for b in blocks if part in b['sources']))
            for part in PARTS if any(part in b['sources'] for b in blocks)}


def add(a, b):
    """Two blocks of one step (a checkpoint's and this process's) -> one: times, processes and energy summed; the
    energy None unless both have it; sources of each part joined where they differ."""
    if not a:
        return b
    if not b:
        return a
    energy = None
    if a.get('kWh') is not None and b.get('kWh') is not None:
        energy = {**{f'{part}_kWh': a[f'{part}_kWh'] + b[f'{part}_kWh'] for part in PARTS},
                  'sources': joined_sources([a, b])}
    return _block(a['seconds'] + b['seconds'], energy, a.get('processes', 1) + b.get('processes', 1))


@contextlib.contextmanager
def tracked(folder, task):
    """Time and, with config.TRACK_ENERGY, energy of the block -> a dict filled when the block ends (_block: seconds,
    kWh and its cpu, gpu and ram parts, their sources and kind), CodeCarbon's row in folder/emissions.csv. A figure a
    checkpoint carried (carry) is added. Where no counter is readable, one warning line, and the figures are
    marked estimated."""
    meter = {'tracker': _tracker(folder, task) if config.TRACK_ENERGY else None, 'carried': None,
             'start': time.perf_counter()}      # after the tracker's start: its first one in a process takes 1.5 s
    _open.append(meter)
    figures = {}
    try:
        yield figures
    finally:
        _open.remove(meter)
        tracker, energy = meter['tracker'], None
        if tracker is not None:
            tracker.stop()
            energy = _read(tracker, final=True)
            if energy is None:
                warn_once('failed', f'energy not tracked: CodeCarbon measured nothing here ({task}); times only')
        figures.update(add(meter['carried'], _block(time.perf_counter() - meter['start'], energy)))


def so_far():
    """The figures of the innermost tracked block until now (what a checkpoint carries), or None outside one."""
    if not _open:
        return None
    meter = _open[-1]
    energy = _read(meter['tracker'], final=False) if meter['tracker'] is not None else None
    return add(meter['carried'], _block(time.perf_counter() - meter['start'], energy))


def carry(figures):
    """The figures a checkpoint carried, added to the innermost tracked block's (a resumed training)."""
    if _open and figures:
        _open[-1]['carried'] = figures


# -----------------------------------------------------------------------------
# A run's cost, the cost over runs, as the table and compare.py show them

def total(blocks):
    """Blocks of the folds -> their sum, with how many folds it covers ('folds') and have energy ('tracked')."""
    blocks = [b for b in blocks if b]
    summed = {'seconds': sum(b['seconds'] for b in blocks), 'kWh': None, 'folds': len(blocks),
              'tracked': sum(b.get('kWh') is not None for b in blocks)}
    with_energy = [b for b in blocks if b.get('kWh') is not None]
    if with_energy:
        summed.update({f'{part}_kWh': sum(b[f'{part}_kWh'] for b in with_energy) for part in PARTS})
        summed['kWh'] = sum(summed[f'{part}_kWh'] for part in PARTS)
        summed['sources'] = joined_sources(with_energy)
        summed['kind'] = kind_of(summed['sources'])
        summed['tracker'] = ' + '.join(dict.fromkeys(b['tracker'] for b in with_energy))
    return summed


def run_cost(run_dir):
    """A run's cost: its model's size (settings.json) and device, and the times and energy of the training and test
    of its finished folds (fold*/metrics.json of its current record), summed; None where a run of an older version
    recorded none of them. Read from those files each time, so that re-scoring a run keeps them."""
    settings = runs.read_settings(run_dir)
    folds = [m['cost'] for m in runs.finished_fold_metrics(run_dir).values() if m.get('cost')]
    if not folds and not settings.get('complexity'):
        return None
    return {'complexity': settings.get('complexity'), 'device': (settings.get('device') or {}).get('name'),
            **{step: total([f.get(step) for f in folds]) for step in ('training', 'test')}}


def over_runs(costs):
    """Runs' costs -> {'runs', 'mean': {step: {'seconds', 'kWh'}}, 'total_kWh', each step's summed figures over
    every run, 'complexity', 'devices'}, or None without any."""
    costs = [c for c in costs if c]
    if not costs:
        return None
    summary = {'runs': len(costs), 'complexity': costs[0]['complexity'],
               'devices': sorted({c['device'] for c in costs if c['device']})}
    for step in ('training', 'test'):
        summed = total([c[step] for c in costs if c[step]['folds']])
        summed['folds'] = sum(c[step]['folds'] for c in costs)
        summed['tracked'] = sum(c[step]['tracked'] for c in costs)
        summary[step] = summed
        summary[f'{step}_per_run'] = {'seconds': summed['seconds'] / len(costs),
                                      'kWh': None if summed['kWh'] is None else summed['kWh'] / len(costs)}
    return summary


def format_kwh(value):
    return '-' if value is None else f'{value:.3g} kWh'


def format_seconds(seconds):
    if seconds < 60:
        return f'{seconds:.1f} s'
    minutes, seconds = divmod(round(seconds), 60)
    return f'{minutes} min {seconds} s' if minutes < 60 else f'{minutes // 60} h {minutes % 60} min'


def describe(block):
    """`0.00012 kWh in 12.3 s (estimated)`, or `12.3 s (energy not tracked)`."""
    if block.get('kWh') is None:
        return f"{format_seconds(block['seconds'])} (energy not tracked)"
    return f"{format_kwh(block['kWh'])} in {format_seconds(block['seconds'])} ({block['kind']})"


def sources_text(block):
    return '; '.join(f'{part.upper()} {how}' for part, how in block['sources'].items())


def complexity_line(found):
    if not found:
        return 'Model: its size was not recorded (settings.json of an older version).'
    return (f"Model: {found['parameters']:,} parameters; {found['macs_per_sequence'] / 1e6:.1f} M MACs per "
            f"{config.SEQUENCE_LENGTH * config.FRAME_SECONDS:g}-s sequence ({found['sequence_frames']} frames), "
            f"{found['macs_per_10s_clip'] / 1e6:.1f} M per 10-s clip ({found['10s_clip_frames']} "
            f"frames), counted by {found['counted_by']}.")


def table_lines(summary):
    """The lines under the results table: the time and energy per run, measured or estimated, and the model."""
    if not summary:
        return []
    runs_text = f"mean of {summary['runs']} runs" if summary['runs'] > 1 else '1 run'
    steps = []
    for step, name in (('training', 'training'), ('test', 'test inference')):
        per_run, summed = summary[f'{step}_per_run'], summary[step]
        energy = (format_kwh(per_run['kWh']) + ' in ' if per_run['kWh'] is not None else '')
        partly = (f" (energy of {summed['tracked']} of {summed['folds']} folds)"
                  if per_run['kWh'] is not None and summed['tracked'] < summed['folds'] else '')
        steps.append(f"{name} {energy}{format_seconds(per_run['seconds'])}{partly}")
    lines = [f"Cost per run ({runs_text}, {', '.join(summary['devices']) or 'device not recorded'}): "
             + ', '.join(steps) + '.']
    training = summary['training']
    if training['kWh'] is None:
        lines.append('Energy: not tracked (config.TRACK_ENERGY = False, or CodeCarbon failed: see the training log).')
    else:
        lines.append(f"Energy {training['kind']} ({training['tracker']}): {sources_text(training)}.")
    return lines + [complexity_line(summary['complexity'])]
