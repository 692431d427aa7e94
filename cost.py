"""What a result costs, as DCASE asks it reported: the energy (kWh) and time of training and of inference, and the
model's parameters and multiply-accumulates (MACs).

    python task4b.py --workdir WD                             # every fold's metrics.json and the table show them
    python task4b.py --workdir WD --set TRACK_ENERGY=False    # times only: no tracker (scores the same)
    python benchmark.py --workdir WD --skip-extraction --energy --precision float32 bfloat16   # 10 epochs' kWh

The kWh are CodeCarbon's (its offline tracker in process mode, which never reaches the network); whether each part
was measured by a counter or estimated is this module's own look at the machine. docs/method.md, What a result
costs, says what each figure counts and why each CodeCarbon setting is fixed (PINNED) or recorded (SCALING).
"""
import contextlib
import functools
import glob
import logging
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import config
import runs
from utils import DataError

TRACKER_FILE = 'emissions.csv'          # CodeCarbon's CSV in the tracked folder
PARTS = ('cpu', 'gpu', 'ram')
# CodeCarbon's settings that change the kWh: fixed whatever its configuration says (PINNED), or the user's (with
# CodeCarbon's defaults), recorded with every figure they change (SCALING)
PINNED = {'tracking_mode': 'process', 'rapl_include_dram': False, 'rapl_prefer_psys': False,
          'force_mode_cpu_load': False}
SCALING = {'pue': 1.0, 'force_cpu_power': None, 'force_ram_power': None}
RAPL_FILES = ('/sys/class/powercap/intel-rapl*/energy_uj', '/sys/class/powercap/intel-rapl/intel-rapl:*/energy_uj')
_open = []                              # the blocks being tracked in this process, innermost last
_warned = set()


def warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        print(f'warning: {message}', file=sys.stderr)


# -----------------------------------------------------------------------------
# What the tracker is told, and how each part is obtained here

def user_settings():
    """The SCALING settings of CodeCarbon's own configuration (CODECARBON_* variables, .codecarbon.config files) ->
    ({name: value}, the PUE always; {name: where it was set}; the PINNED settings and gpu_ids it sets, overridden)."""
    from codecarbon.core.config import get_hierarchical_config_with_sources
    found, where = get_hierarchical_config_with_sources()
    settings = {'pue': SCALING['pue']}
    for name in (name for name in SCALING if name in found):
        try:
            value = float(found[name])
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise DataError(f"{where[name]}: CodeCarbon's {name} = {found[name]!r}, not a positive number; give one "
                            f'or remove it, or --set TRACK_ENERGY=False')
        settings[name] = value
    overridden = [f'{name} ({where[name]})' for name in (*PINNED, 'gpu_ids') if name in found]
    return settings, {name: where[name] for name in settings if name in where}, overridden


def gpu_ids(device):
    """The GPUs a step on `device` uses, as CodeCarbon names them (NVML's indices, or the UUIDs CUDA_VISIBLE_DEVICES
    may give): none for the CPU, so that the idle GPUs of the machine are no part of a CPU step's energy."""
    import torch
    device = torch.device(device)
    if device.type != 'cuda':
        return []
    index = torch.cuda.current_device() if device.index is None else device.index
    visible = [gpu.strip() for gpu in os.environ.get('CUDA_VISIBLE_DEVICES', '').split(',') if gpu.strip()]
    return [visible[index]] if visible else [str(index)]


def rapl_readable():
    """Whether a RAPL energy counter of the CPU (Linux powercap files, Intel and AMD) reads here."""
    for pattern in RAPL_FILES:
        for path in sorted(glob.glob(pattern)):
            with contextlib.suppress(OSError, ValueError):
                int(Path(path).read_text())
                return True
    return False


def nvml_energy(gpu):
    """Whether NVML reads the energy counter of GPU `gpu` (an index or a UUID) -> True, False (no counter: CodeCarbon
    sums its power samples), or None (no NVML to ask: no pynvml, no driver, no such GPU)."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:        # ImportError, or NVMLError of any kind: no library, no driver
        return None
    try:
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(gpu)) if gpu.isdigit() else
                  pynvml.nvmlDeviceGetHandleByUUID(gpu))
    except Exception:
        return None
    else:
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except Exception:
            return False
    finally:
        pynvml.nvmlShutdown()


@functools.cache
def how_obtained(gpus, force_cpu_power=None, force_ram_power=None):
    """How each part of a step on the GPUs `gpus` (a tuple) is obtained -> {'cpu': 'measured (RAPL)', ...}: from the
    machine's counters and CodeCarbon's settings, once per process, never from what CodeCarbon's objects say."""
    if force_cpu_power is not None:
        cpu = (f'estimated: the {force_cpu_power:g} W given to CodeCarbon (force_cpu_power) times the load of this '
               'process')
    elif platform.system() != 'Linux':
        cpu = f"unknown: CodeCarbon's own choice on {platform.system()} (a counter or its model)"
    elif rapl_readable():
        cpu = 'measured (RAPL)'
    else:
        cpu = "estimated from its TDP (CodeCarbon's table of CPU models) times the load of this process"
    sources = {'cpu': cpu}
    if gpus:
        counters = [nvml_energy(gpu) for gpu in gpus]
        sources['gpu'] = ('measured (NVML energy counter)' if all(c is True for c in counters) else
                          'measured (NVML power, sampled each second)' if None not in counters else
                          'unknown: no NVML here to tell (pynvml and an NVIDIA driver)')
    sources['ram'] = (f'estimated: the {force_ram_power:g} W given to CodeCarbon (force_ram_power)'
                      if force_ram_power is not None else
                      "estimated from the memory this process uses (CodeCarbon's model: 5 W per DIMM it would fill, "
                      'at least 10 W)')
    return sources


def kind_of(sources):
    """'measured' when a counter gave every part, 'estimated' when none did, 'partly measured' between, 'unknown'
    when the way of any part is not known (the sources of several processes or folds are joined by ' + ')."""
    ways = [way.split()[0].rstrip(':') for how in sources.values() for way in how.split(' + ')]
    if not ways or 'unknown' in ways or not set(ways) <= {'measured', 'estimated'}:
        return 'unknown'
    return 'measured' if set(ways) == {'measured'} else 'partly measured' if 'measured' in ways else 'estimated'


# -----------------------------------------------------------------------------
# The tracker

def _start(meter):
    """A started CodeCarbon tracker for the block of `meter`, writing folder/emissions.csv, or None (warned)."""
    try:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.base_output import OutputMethod
    except ImportError as error:
        warn_once('import', f'energy not tracked: CodeCarbon does not import ({error}); pip install -r '
                            'requirements.txt, or --set TRACK_ENERGY=False')
        return None
    # its module sets its logger to INFO on import, and the tracker logs before it applies log_level
    logging.getLogger('codecarbon').setLevel(logging.ERROR)
    # every network path (off) and every setting that changes the kWh given here, or a .codecarbon.config or a
    # CODECARBON_* variable would set it: '' is no Electricity Maps token, where None lets a config's old one through
    tracker = OfflineEmissionsTracker(
        country_iso_code=config.ENERGY_COUNTRY, project_name=meter['task'], output_dir=str(meter['folder']),
        output_file=TRACKER_FILE, output_methods=[OutputMethod.CSV], emissions_endpoint=None,
        electricitymaps_api_token='', api_call_interval=-1, log_level='error', allow_multiple_runs=True,
        gpu_ids=list(meter['gpus']), **PINNED, **{name: meter['settings'].get(name, default)
                                                  for name, default in SCALING.items()})
    tracker.start()          # CodeCarbon swallows its own failures: _stop finds no result then
    return tracker


def _stop(meter):
    """The block's tracker stopped, its result read -> the energy of the block's stretches so far {'cpu_kWh', ...,
    'sources', 'settings'}, or None unless CodeCarbon gave a result for every one."""
    meter['tracker'].stop()
    try:
        data = meter['tracker'].final_emissions_data
        stretch = {'cpu': float(data.cpu_energy), 'gpu': float(data.gpu_energy), 'ram': float(data.ram_energy),
                   'pue': float(data.pue), 'gpu_found': bool(data.gpu_model)}
    except Exception:        # a third-party tracker's failure of any kind must never stop a training
        stretch = None
    stretches = meter['stretches']
    stretches.append(stretch)
    if None in stretches:
        return None
    energy = {f'{part}_kWh': sum(s[part] for s in stretches) for part in PARTS}
    try:
        settings = {**meter['settings'], 'pue': stretches[0]['pue']}        # the PUE that scaled them
        sources = dict(how_obtained(tuple(meter['gpus']), settings.get('force_cpu_power'),
                                    settings.get('force_ram_power')))
        if meter['gpus'] and not all(s['gpu_found'] for s in stretches):
            sources['gpu'] = 'unknown: CodeCarbon read no GPU here (it finds NVIDIA GPUs by nvidia-smi)'
    except Exception:        # the words only: a reading is never lost for want of them
        settings, sources = meter['settings'], {part: 'unknown' for part in PARTS}
    return {**energy, 'sources': sources, 'settings': settings}


def _block(seconds, energy, processes=1):
    """The figures of a tracked step, as metrics.json holds them."""
    block = {'seconds': round(seconds, 3), 'kWh': None, 'processes': processes}
    if energy:
        block.update(kWh=sum(energy[f'{part}_kWh'] for part in PARTS), **energy, kind=kind_of(energy['sources']),
                     tracker=f"CodeCarbon {version('codecarbon')}, offline, process mode")
    return block


def _joined(blocks):
    """The energy of blocks that all have one, summed (the 'energy' of _block): each part's sources joined by ' + '
    where they differ; each setting's value where the blocks agree, the list of their values where they differ
    (blocks of versions that recorded none left out)."""
    sources = {part: ' + '.join(dict.fromkeys(b['sources'][part] for b in blocks if part in b['sources']))
               for part in PARTS if any(part in b['sources'] for b in blocks)}
    recorded = [b['settings'] for b in blocks if 'settings' in b]
    settings = {name: list(dict.fromkeys(s.get(name, SCALING.get(name)) for s in recorded))
                for name in dict.fromkeys(name for s in recorded for name in s)}
    return {**{f'{part}_kWh': sum(b[f'{part}_kWh'] for b in blocks) for part in PARTS}, 'sources': sources,
            'settings': {name: values[0] if len(values) == 1 else values for name, values in settings.items()}}


def add(a, b):
    """Two blocks of one step (a checkpoint's and this process's) -> one: times, processes and energy summed; the
    energy None unless both have it; sources of each part joined where they differ."""
    if not a or not b:
        return a or b
    both = a.get('kWh') is not None and b.get('kWh') is not None
    return _block(a['seconds'] + b['seconds'], _joined([a, b]) if both else None,
                  a.get('processes', 1) + b.get('processes', 1))


@contextlib.contextmanager
def tracked(folder, task, device):
    """Time and, with config.TRACK_ENERGY, energy of the block on `device` ('cpu', 'cuda', 'cuda:1': the GPU whose
    energy counts) -> a dict filled when the block ends (_block), with what a checkpoint carried (carry) added;
    CodeCarbon's rows in folder/emissions.csv."""
    meter = {'folder': Path(folder), 'task': task, 'tracker': None, 'stretches': [], 'carried': None}
    if config.TRACK_ENERGY:
        _begin(meter, device)
    meter['start'] = time.perf_counter()      # after the tracker's start: its first one in a process takes 1.5 s
    _open.append(meter)
    figures = {}
    try:
        yield figures
    finally:
        figures.update(so_far(restart=False))           # this block is the innermost
        _open.remove(meter)
        if None in meter['stretches']:
            warn_once('failed', f'energy not tracked: CodeCarbon measured nothing here ({task}); times only')


def _begin(meter, device):
    """The block's tracker started, after the checks of what it will be told."""
    from codecarbon.input import DataSource            # it reads its energy mix data once per process
    if config.ENERGY_COUNTRY not in DataSource().get_global_energy_mix_data():
        raise DataError(f'config.ENERGY_COUNTRY = {config.ENERGY_COUNTRY!r}: not a country of CodeCarbon\'s energy '
                        f"data; give another 3-letter ISO code (e.g. 'FIN', 'DEU', 'USA'), or --set TRACK_ENERGY=False")
    meter['folder'].mkdir(parents=True, exist_ok=True)
    meter['settings'], where, overridden = user_settings()
    meter['gpus'] = gpu_ids(device)
    meter['tracker'] = _start(meter)
    if meter['tracker'] is None:
        return
    if meter['settings']['pue'] != SCALING['pue']:
        warn_once('pue', f"energy times {meter['settings']['pue']:g}: CodeCarbon's pue is set ({where['pue']}), "
                         'a data centre\'s overhead on the devices\' energy; the records and the table say so')
    if overridden:
        warn_once('pinned', f"CodeCarbon's {', '.join(overridden)} not applied: cost.py fixes the settings that would "
                            "change what the kWh count (PINNED), and tracks the GPU of the step's device only")
    try:
        kind = kind_of(how_obtained(tuple(meter['gpus']), meter['settings'].get('force_cpu_power'),
                                    meter['settings'].get('force_ram_power')))
    except Exception:        # the words only, as in _stop
        kind = 'unknown'
    if kind == 'estimated':
        warn_once('estimated', 'energy estimated, not measured: no power counter readable here (RAPL in '
                               '/sys/class/powercap, NVML of an NVIDIA GPU); CodeCarbon models it from the '
                               "CPU's TDP and load and the memory in use, and the records say so")
    elif kind == 'unknown':
        warn_once('unknown', 'energy of unknown kind: whether CodeCarbon measures or estimates a part cannot be told '
                             'here (see its sources in metrics.json); the records say so')


def so_far(restart=True):
    """The figures of the innermost tracked block until now (what a checkpoint carries), or None outside one: its
    tracker stopped and read, and with restart a new one started for the rest of the block (nothing counted twice)."""
    if not _open:
        return None
    meter = _open[-1]
    energy = None
    if meter['tracker'] is not None:
        energy = _stop(meter)
        meter['tracker'] = _start(meter) if restart else None
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
    with_energy = [b for b in blocks if b.get('kWh') is not None]
    summed = {'seconds': sum(b['seconds'] for b in blocks), 'kWh': None, 'folds': len(blocks),
              'tracked': len(with_energy)}
    if with_energy:
        summed.update(_joined(with_energy))
        summed.update(kWh=sum(summed[f'{part}_kWh'] for part in PARTS), kind=kind_of(summed['sources']),
                      tracker=' + '.join(dict.fromkeys(b['tracker'] for b in with_energy)))
    return summed


def run_cost(run_dir):
    """A run's cost: its model's size and device (settings.json) and the summed times and energy of its finished
    folds' training and test (their metrics.json, read each time: a re-scoring keeps them); None if none recorded."""
    settings = runs.read_settings(run_dir)
    folds = [m['cost'] for m in runs.finished_fold_metrics(run_dir).values() if m.get('cost')]
    if not folds and not settings.get('complexity'):
        return None
    return {'complexity': settings.get('complexity'), 'device': (settings.get('device') or {}).get('name'),
            **{step: total([f.get(step) for f in folds]) for step in ('training', 'test')}}


def over_runs(costs):
    """Runs' costs -> {'runs', 'complexity', 'devices', each step's total over every run, and per run
    ('training_per_run': {'seconds', 'kWh'}, 'test_per_run')}, or None without any. The energy per run only where
    every fold of every run has one: a mean of some folds' energy would understate it (energy_text says so)."""
    costs = [c for c in costs if c]
    if not costs:
        return None
    summary = {'runs': len(costs), 'complexity': costs[0]['complexity'],
               'devices': sorted({c['device'] for c in costs if c['device']})}
    for step in ('training', 'test'):
        summary[step] = summed = total([c[step] for c in costs if c[step]['folds']])
        summed.update({key: sum(c[step][key] for c in costs) for key in ('folds', 'tracked')})
        every = summed['kWh'] is not None and summed['tracked'] == summed['folds']
        summary[f'{step}_per_run'] = {'seconds': summed['seconds'] / len(costs),
                                      'kWh': summed['kWh'] / len(costs) if every else None}
    return summary


def format_kwh(value):
    return '-' if value is None else f'{value:.3g} kWh'


def format_seconds(seconds):
    if seconds < 60:
        return f'{seconds:.1f} s'
    minutes, seconds = divmod(round(seconds), 60)
    return f'{minutes} min {seconds} s' if minutes < 60 else f'{minutes // 60} h {minutes % 60} min'


def energy_text(summary, step):
    """The energy per run of a step of over_runs, as the table and compare.py show it: `0.05 kWh`, or where some
    folds have none `0.05 kWh over 5 of 10 folds tracked; per run not comparable`, or '-'."""
    per_run, summed = summary[f'{step}_per_run'], summary[step]
    if per_run['kWh'] is not None:
        return format_kwh(per_run['kWh'])
    if summed['kWh'] is None:
        return '-'
    return (f"{format_kwh(summed['kWh'])} over {summed['tracked']} of {summed['folds']} folds tracked; per run not "
            f'comparable')


def pue_value(settings):
    """The PUE that scaled the kWh of a block or a sum, as text: '1', '1.5', '1 and 1.5' where folds differ."""
    pue = (settings or {}).get('pue', SCALING['pue'])
    return ' and '.join(f'{p:g}' for p in (pue if isinstance(pue, list) else [pue]))


def pue_text(settings):
    """`PUE 1.5: the devices' energy times 1.5, CodeCarbon's pue setting` where a PUE other than 1 scaled the
    figures, naming each PUE where folds differ; '' otherwise."""
    pue = pue_value(settings)
    if pue == f"{SCALING['pue']:g}":
        return ''
    if ' and ' in pue:
        return f"PUE {pue}: CodeCarbon's pue setting differed between the folds, their sum mixes scalings"
    return f"PUE {pue}: the devices' energy times {pue}, CodeCarbon's pue setting"


def describe(block):
    """`0.00012 kWh in 12.3 s (estimated)`, `... (estimated; PUE 1.5: ...)`, or `12.3 s (energy not tracked)`."""
    if block.get('kWh') is None:
        return f"{format_seconds(block['seconds'])} (energy not tracked)"
    kind = '; '.join(filter(None, [block['kind'], pue_text(block.get('settings'))]))
    return f"{format_kwh(block['kWh'])} in {format_seconds(block['seconds'])} ({kind})"


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
        seconds = format_seconds(summary[f'{step}_per_run']['seconds'])
        energy = energy_text(summary, step)
        steps.append(f'{name} {seconds}' if energy == '-' else
                     f'{name} {energy} in {seconds}' if summary[f'{step}_per_run']['kWh'] is not None else
                     f'{name} {seconds} (energy: {energy})')
    lines = [f"Cost per run ({runs_text}, {', '.join(summary['devices']) or 'device not recorded'}): "
             + ', '.join(steps) + '.']
    training = summary['training']
    if training['kWh'] is None:
        lines.append('Energy: not tracked (config.TRACK_ENERGY = False, or CodeCarbon failed: see the training log).')
    else:
        how = '; '.join(filter(None, [training['tracker'], pue_text(training.get('settings'))]))
        lines.append(f"Energy {training['kind']} ({how}): {sources_text(training)}.")
    return lines + [complexity_line(summary['complexity'])]
