"""What a result costs (cost.py): the time and energy of training and inference in the records and the table, measured
or estimated as the machine's counters say; CodeCarbon's settings that change the kWh fixed or recorded; a CPU step
without the GPUs; no energy per run where folds were not tracked; the model's size; tracking changes no score,
reaches no network, and can be switched off."""
import csv
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import config
import cost
import compare
import evaluate
import experiment
import model
from helpers import SMALL, SMALL_NETWORK, copy_workdir, energy_kind, score_files
from utils import DataError

REPO = Path(__file__).resolve().parent.parent
TRAIN = ['--folds', '1', '--epochs', '1', '--device', 'cpu', *SMALL]     # what is measured, not what it learns


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def counters_here():
    """What this machine lets CodeCarbon read, looked at here apart from cost.py -> {'rapl': a RAPL energy file of
    the CPU reads, 'nvml': pynvml talks to a driver that sees a GPU}."""
    rapl = False
    for path in glob.glob('/sys/class/powercap/intel-rapl*/energy_uj'):
        try:
            rapl = rapl or Path(path).read_text().strip().isdigit()
        except OSError:
            pass
    try:
        import pynvml
        pynvml.nvmlInit()
        nvml = pynvml.nvmlDeviceGetCount() > 0
        pynvml.nvmlShutdown()
    except Exception:
        nvml = False
    return {'rapl': rapl, 'nvml': nvml}


def expected_kind_on_the_cpu():
    """The kind a CPU step's energy must have here: its CPU from RAPL where that reads, its RAM always from
    CodeCarbon's model, no GPU; on another OS than Linux, not known."""
    if sys.platform != 'linux':
        return 'unknown'
    return 'partly measured' if counters_here()['rapl'] else 'estimated'


def csv_rows(folder):
    with open(Path(folder) / cost.TRACKER_FILE) as f:
        return list(csv.DictReader(f))


def summary_of(*blocks, device='a CPU'):
    """cost.over_runs of runs whose folds spent `blocks` (a list of blocks per run): their training and test each
    that block."""
    return cost.over_runs([{'complexity': None, 'device': device, 'training': cost.total(run), 'test': cost.total(run)}
                           for run in blocks])


@pytest.fixture(scope='module')
def trainings(demo_workdir, tmp_path_factory):
    """Fold 1, 1 epoch, from one seed, trained by task4b.py in a fresh process each: with the tracker (the default)
    and with --set TRACK_ENERGY=False. -> {'on': workdir, 'off': workdir, 'stderr': the tracked one's stderr}"""
    found = {}
    for name, extra in (('on', []), ('off', ['--set', 'TRACK_ENERGY=False'])):
        workdir = copy_workdir(demo_workdir, tmp_path_factory.mktemp(name))
        done = subprocess.run([sys.executable, str(REPO / 'task4b.py'), '--workdir', str(workdir), *TRAIN, *extra],
                              capture_output=True, text=True, env={**plain_environment(), 'OMP_NUM_THREADS': '1'})
        assert done.returncode == 0, done.stderr[-2000:]
        found[name], found[f'{name}_stderr'] = workdir, done.stderr
    return found


def plain_environment():
    """This process's environment without CodeCarbon's variables (a developer's CODECARBON_PUE, say)."""
    return {k: v for k, v in os.environ.items() if not k.lower().startswith('codecarbon_')}


def fold_cost(workdir):
    return json.loads((workdir / config.RUNS_DIR / 'run0' / 'fold1' / 'metrics.json').read_text())['cost']


# -----------------------------------------------------------------------------
# A short real training

@pytest.mark.slow
def test_a_short_training_records_positive_energy_and_its_kind_in_metrics_json(trainings):
    fold_dir = trainings['on'] / config.RUNS_DIR / 'run0' / 'fold1'
    spent = fold_cost(trainings['on'])
    for step in ('training', 'test'):
        block = spent[step]
        assert block['kWh'] > 0 and block['seconds'] > 0 and block['processes'] == 1
        assert block['kWh'] == pytest.approx(block['cpu_kWh'] + block['gpu_kWh'] + block['ram_kWh'])
        # --device cpu: the machine's GPUs, if any, are no part of it
        assert set(block['sources']) == {'cpu', 'ram'} and block['gpu_kWh'] == 0
        assert block['kind'] == expected_kind_on_the_cpu() == energy_kind(block['sources'])
        assert block['settings'] == {'pue': 1.0}
        assert block['tracker'].startswith('CodeCarbon ')
    # CodeCarbon's own file in the fold's folder, a row per stretch between checkpoints, with the same energy
    rows = csv_rows(fold_dir)
    assert {row['project_name'] for row in rows} == {'run 0 fold 1 training', 'run 0 fold 1 test'}
    for step in ('training', 'test'):
        assert sum(float(row['energy_consumed']) for row in rows if row['project_name'] == f'run 0 fold 1 {step}') \
            == pytest.approx(spent[step]['kWh'])
    assert {row['country_iso_code'] for row in rows} == {config.ENERGY_COUNTRY}


@pytest.mark.slow
def test_the_table_shows_the_energy_its_kind_the_time_and_the_model(trainings):
    spent = fold_cost(trainings['on'])['training']
    table = (trainings['on'] / 'results.md').read_text()
    assert f"training {cost.format_kwh(spent['kWh'])} in {cost.format_seconds(spent['seconds'])}" in table
    assert f"- Energy {spent['kind']} (CodeCarbon " in table
    size = json.loads((trainings['on'] / 'runs' / 'run0' / 'settings.json').read_text())['complexity']   # recorded
    with experiment.applied(SMALL_NETWORK):
        assert size == model.complexity()                                                # the network it trained
    assert (f"- Model: {size['parameters']:,} parameters; {size['macs_per_sequence'] / 1e6:.1f} M MACs per 40-s sequence "
            f"(200 frames), {size['macs_per_10s_clip'] / 1e6:.1f} M per 10-s clip") in table
    run = json.loads((trainings['on'] / config.RUNS_DIR / 'run0' / 'metrics.json').read_text())
    assert run['cost']['training']['kWh'] == spent['kWh'] and run['cost']['training']['folds'] == 1


@pytest.mark.slow
@pytest.mark.skipif(expected_kind_on_the_cpu() != 'estimated', reason='a power counter is readable here')
def test_where_no_counter_is_readable_the_energy_is_estimated_and_training_runs_on_with_one_warning(trainings):
    assert fold_cost(trainings['on'])['training']['kind'] == 'estimated'
    warnings = [line for line in trainings['on_stderr'].splitlines() if line.startswith('warning: energy')]
    assert len(warnings) == 1 and 'estimated, not measured' in warnings[0]
    assert 'Energy estimated' in (trainings['on'] / 'results.md').read_text()


@pytest.mark.slow
def test_with_the_switch_off_nothing_is_tracked_and_the_scores_are_the_same(trainings):
    on, off = trainings['on'], trainings['off']
    assert score_files(off) == score_files(on)
    assert not list(off.rglob(cost.TRACKER_FILE)) and list(on.rglob(cost.TRACKER_FILE))
    for step in ('training', 'test'):
        assert fold_cost(off)[step]['kWh'] is None and fold_cost(off)[step]['seconds'] > 0
    assert 'warning: energy' not in trainings['off_stderr']
    assert '- Energy: not tracked' in (off / 'results.md').read_text()
    means = [json.loads((w / 'results.json').read_text())['mean'] for w in (on, off)]
    assert means[0] == means[1]


@pytest.mark.slow
def test_re_scoring_a_run_keeps_the_energy_its_folds_recorded(trainings, tmp_path):
    workdir = copy_workdir(trainings['on'], tmp_path / 'wd')
    shutil.copytree(trainings['on'] / config.RUNS_DIR, workdir / config.RUNS_DIR)
    shutil.copy(trainings['on'] / 'experiment.json', workdir)
    before = json.loads((workdir / config.RUNS_DIR / 'run0' / 'metrics.json').read_text())['cost']
    assert evaluate.main(['--workdir', str(workdir), '--set', 'THRESHOLD=0.3']) == 0
    after = json.loads((workdir / config.RUNS_DIR / 'run0' / 'metrics.json').read_text())
    assert after['scoring']['THRESHOLD'] == 0.3 and after['cost'] == before
    assert cost.format_kwh(before['training']['kWh']) in (workdir / 'results.md').read_text()


# -----------------------------------------------------------------------------
# The tracker alone

def test_the_tracker_makes_no_network_call_whatever_codecarbon_is_configured_with(tmp_path, monkeypatch):
    # every way CodeCarbon's own configuration would send data or look it up, as a user's file and variables
    monkeypatch.chdir(tmp_path)
    (tmp_path / '.codecarbon.config').write_text('[codecarbon]\nsave_to_api = True\napi_endpoint = http://10.1.2.3\n'
                                                 'emissions_endpoint = http://10.1.2.3:8000/emissions\n'
                                                 'co2_signal_api_token = abc\n')
    for name, value in {'CODECARBON_OUTPUT_METHODS': 'csv,api,prometheus,logfire',
                        'CODECARBON_ELECTRICITYMAPS_API_TOKEN': 'abc', 'CODECARBON_SAVE_TO_PROMETHEUS': 'True',
                        'CODECARBON_API_CALL_INTERVAL': '1', 'CODECARBON_MEASURE_POWER_SECS': '0.1'}.items():
        monkeypatch.setenv(name, value)
    attempts = []

    def refused(*args, **kwargs):
        attempts.append(args)
        raise OSError('network refused by the test')
    for name in ('connect', 'connect_ex', 'sendto', 'sendall', 'send'):
        monkeypatch.setattr(socket.socket, name, refused)
    monkeypatch.setattr(socket, 'create_connection', refused)
    monkeypatch.setattr(socket, 'getaddrinfo', refused)
    from codecarbon.core.hardware_cache import clear_cache
    clear_cache()                          # the whole hardware detection runs here, under the guard
    with cost.tracked(tmp_path / 'out', 'no network', 'cpu') as spent:
        busy(0.5)
        so_far = cost.so_far()
    assert attempts == []
    assert spent['kWh'] > 0 and so_far['kWh'] > 0 and spent['seconds'] >= 0.5
    assert (tmp_path / 'out' / cost.TRACKER_FILE).is_file()


def test_a_resumed_step_adds_what_its_checkpoint_carried_once(tmp_path):
    with cost.tracked(tmp_path / 'first', 'killed', 'cpu'):
        busy(0.3)
        carried = cost.so_far()                       # what a checkpoint saves
        busy(0.3)                                     # work after the last checkpoint: done again after a kill
    with cost.tracked(tmp_path / 'second', 'resumed', 'cpu') as resumed:
        cost.carry(carried)                           # what loading that checkpoint does
        busy(0.3)
    first, second = csv_rows(tmp_path / 'first'), csv_rows(tmp_path / 'second')
    assert len(first) == 2 and len(second) == 1                  # the first: a stretch before the checkpoint, one after
    # the checkpoint carried the stretch before it; the resumed step is that and its own, nothing twice, and not the
    # killed process's work after its checkpoint
    assert carried['kWh'] == pytest.approx(float(first[0]['energy_consumed'])) and carried['kWh'] > 0
    assert resumed['kWh'] == pytest.approx(float(first[0]['energy_consumed']) + float(second[0]['energy_consumed']))
    for part in cost.PARTS:
        assert resumed[f'{part}_kWh'] == pytest.approx(float(first[0][f'{part}_energy'])
                                                       + float(second[0][f'{part}_energy']))
    assert resumed['processes'] == 2
    assert resumed['seconds'] >= carried['seconds'] + 0.3


def test_two_blocks_of_a_step_add_their_figures_and_join_their_ways(tmp_path):
    a = {'seconds': 10.0, 'kWh': 0.003, 'processes': 1, 'cpu_kWh': 0.001, 'gpu_kWh': 0.0, 'ram_kWh': 0.002,
         'sources': {'cpu': 'measured (RAPL)', 'ram': 'estimated from the memory'}, 'settings': {'pue': 1.0},
         'kind': 'partly measured', 'tracker': 'CodeCarbon 3.3.2, offline, process mode'}
    b = {**a, 'seconds': 5.0, 'kWh': 0.0015, 'cpu_kWh': 0.0005, 'ram_kWh': 0.001,
         'sources': {'cpu': 'estimated from its TDP', 'ram': 'estimated from the memory'}, 'kind': 'estimated'}
    both = cost.add(a, b)
    assert (both['seconds'], both['processes']) == (15.0, 2)
    assert (both['kWh'], both['cpu_kWh'], both['gpu_kWh'], both['ram_kWh']) == pytest.approx((0.0045, 0.0015, 0, 0.003))
    assert both['sources'] == {'cpu': 'measured (RAPL) + estimated from its TDP', 'ram': 'estimated from the memory'}
    assert both['kind'] == 'partly measured' and both['settings'] == {'pue': 1.0}
    assert cost.add(a, {**b, 'kWh': None})['kWh'] is None         # a part without energy: no sum that looks whole


def test_codecarbons_pue_scales_the_kwh_and_is_recorded_and_shown_where_they_are(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))            # no .codecarbon.config but the variables below
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('CODECARBON_PUE', '3')
    monkeypatch.setenv('CODECARBON_FORCE_RAM_POWER', '10')
    with cost.tracked(tmp_path / 'pue', 'pue', 'cpu') as spent:
        busy(1.0)
    assert spent['settings'] == {'pue': 3.0, 'force_ram_power': 10.0}
    assert spent['sources']['ram'] == 'estimated: the 10 W given to CodeCarbon (force_ram_power)'
    # the RAM's 10 W over the block, times 3: the PUE recorded is the one that scaled the kWh
    assert spent['ram_kWh'] == pytest.approx(3 * 10 * spent['seconds'] / 3.6e6, rel=0.1)
    assert cost.describe(spent).endswith("; PUE 3: the devices' energy times 3, CodeCarbon's pue setting)")
    unscaled = {**spent, 'settings': {'pue': 1.0}}
    table = '\n'.join(cost.table_lines(summary_of([spent])))
    assert "process mode; PUE 3: the devices' energy times 3, CodeCarbon's pue setting): CPU " in table
    assert 'PUE' not in '\n'.join(cost.table_lines(summary_of([unscaled])))
    lines = compare.cost_markdown(summary_of([unscaled]), summary_of([spent]))
    assert '| PUE (CodeCarbon) | 1 | 3 | |' in lines
    assert "CodeCarbon's PUE scaled the energy of A by 1, of B by 3: their difference is partly the PUE's." in lines


def test_without_a_pue_of_the_user_the_pue_is_1_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.lower().startswith('codecarbon_')]:
        monkeypatch.delenv(name)
    with cost.tracked(tmp_path / 'plain', 'plain', 'cpu') as spent:
        busy(0.2)
    assert spent['kWh'] > 0 and spent['settings'] == {'pue': 1.0}
    assert 'PUE' not in cost.describe(spent)


def test_a_pue_that_is_no_number_is_one_line_naming_where_it_was_set(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('CODECARBON_PUE', raising=False)
    (tmp_path / '.codecarbon.config').write_text('[codecarbon]\npue = high\n')
    with pytest.raises(DataError, match=r"\.codecarbon\.config: CodeCarbon's pue = 'high', not a positive number"):
        with cost.tracked(tmp_path / 'x', 'x', 'cpu'):
            pass


def test_every_codecarbon_setting_that_changes_the_kwh_is_given_to_the_tracker(tmp_path, monkeypatch, capsys):
    # a user's configuration asking for each of them: the pinned ones are overridden, the others passed and recorded
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / '.codecarbon.config').write_text('[codecarbon]\nrapl_include_dram = True\nrapl_prefer_psys = True\n'
                                                 'force_mode_cpu_load = True\ntracking_mode = machine\n'
                                                 'gpu_ids = 0,1\nforce_cpu_power = 120\npue = 1.5\n')
    import codecarbon
    given = []
    real = codecarbon.OfflineEmissionsTracker

    def spy(**kwargs):
        given.append(kwargs)
        return real(**kwargs)
    monkeypatch.setattr(codecarbon, 'OfflineEmissionsTracker', spy)
    monkeypatch.setattr(cost, '_warned', set())
    with cost.tracked(tmp_path / 'x', 'x', 'cpu') as spent:
        busy(0.2)
    assert given and all(kwargs[name] == value for kwargs in given for name, value in cost.PINNED.items())
    assert all(kwargs['gpu_ids'] == [] for kwargs in given)
    assert all((kwargs['pue'], kwargs['force_cpu_power'], kwargs['force_ram_power']) == (1.5, 120.0, None)
               for kwargs in given)
    assert spent['settings'] == {'pue': 1.5, 'force_cpu_power': 120.0}
    assert spent['sources']['cpu'].startswith('estimated: the 120 W given to CodeCarbon (force_cpu_power)')
    warned = [line for line in capsys.readouterr().err.splitlines() if 'not applied' in line]
    assert len(warned) == 1 and all(f'{name} (' in warned[0] for name in [*cost.PINNED, 'gpu_ids'])


def test_a_cpu_step_leaves_every_gpu_out_whatever_cuda_visible_devices_says(monkeypatch):
    for visible in (None, '', '0,1'):
        if visible is None:
            monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
        else:
            monkeypatch.setenv('CUDA_VISIBLE_DEVICES', visible)
        assert cost.gpu_ids('cpu') == []
    # a GPU step: its own GPU, as NVML names it (CUDA_VISIBLE_DEVICES maps torch's indices to the machine's)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,GPU-8f2c')
    assert cost.gpu_ids('cuda:0') == ['3'] and cost.gpu_ids('cuda:1') == ['GPU-8f2c']
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    assert cost.gpu_ids('cuda:2') == ['2']


@pytest.mark.skipif(not torch.cuda.is_available() or not counters_here()['nvml'], reason='no NVIDIA GPU here')
def test_on_a_gpu_machine_a_cuda_step_counts_its_gpu_and_a_cpu_step_none(tmp_path):
    with cost.tracked(tmp_path / 'cpu', 'cpu', 'cpu') as on_cpu:
        busy(2.0)
    with cost.tracked(tmp_path / 'gpu', 'gpu', 'cuda') as on_gpu:
        x = torch.randn(4096, 4096, device='cuda')
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end:
            x = (x @ x).tanh()
        torch.cuda.synchronize()
    assert on_cpu['gpu_kWh'] == 0 and 'gpu' not in on_cpu['sources']
    assert on_gpu['gpu_kWh'] > 0 and on_gpu['sources']['gpu'].startswith('measured (NVML')


def test_the_kind_says_unknown_where_the_way_of_a_part_is_not_known():
    assert cost.kind_of({}) == 'unknown' and energy_kind({}) == 'unknown'
    for sources, kind in (({'cpu': 'measured (RAPL)', 'gpu': 'measured (NVML energy counter)'}, 'measured'),
                          ({'cpu': 'measured (RAPL)', 'ram': 'estimated from the memory'}, 'partly measured'),
                          ({'cpu': 'estimated from its TDP', 'ram': 'estimated from the memory'}, 'estimated'),
                          ({'cpu': 'measured (RAPL)', 'gpu': 'unknown: no NVML here'}, 'unknown'),
                          ({'cpu': 'measured (RAPL) + estimated from its TDP'}, 'partly measured')):
        assert cost.kind_of(sources) == energy_kind(sources) == kind


def test_a_failure_to_tell_how_the_energy_was_obtained_keeps_the_reading(tmp_path, monkeypatch):
    def fails(*args):
        raise RuntimeError('no way to tell')
    monkeypatch.setattr(cost, 'how_obtained', fails)
    with cost.tracked(tmp_path / 'y', 'y', 'cpu') as spent:
        busy(0.2)
    assert spent['kWh'] > 0 and spent['kind'] == 'unknown'


def test_the_ways_of_a_process_are_the_same_words_in_every_step(tmp_path):
    # CodeCarbon rebuilds its objects for a second tracker from a cache: the words must not follow them
    from codecarbon.core.hardware_cache import clear_cache
    clear_cache()                          # the first of them detects the hardware itself
    blocks = []
    for name in ('one', 'two', 'three'):
        with cost.tracked(tmp_path / name, name, 'cpu') as spent:
            busy(0.1)
            cost.so_far()
        blocks.append(spent)
    assert all(b['sources'] == blocks[0]['sources'] for b in blocks)
    assert ' + ' not in cost.sources_text(cost.total(blocks))


def test_energy_over_runs_with_untracked_folds_says_so_and_gives_no_figure_per_run():
    tracked_fold = {'seconds': 100.0, 'kWh': 0.05, 'processes': 1, 'cpu_kWh': 0.05, 'gpu_kWh': 0.0, 'ram_kWh': 0.0,
                    'sources': {'cpu': 'estimated from its TDP'}, 'settings': {'pue': 1.0}, 'kind': 'estimated',
                    'tracker': 'CodeCarbon 3.3.2, offline, process mode'}
    untracked_fold = {'seconds': 100.0, 'kWh': None, 'processes': 1}
    partly = summary_of([tracked_fold], [untracked_fold])
    assert partly['training_per_run'] == {'seconds': 100.0, 'kWh': None}
    assert (partly['training']['kWh'], partly['training']['tracked'], partly['training']['folds']) == (0.05, 1, 2)
    line = cost.table_lines(partly)[0]
    assert 'training 1 min 40 s (energy: 0.05 kWh over 1 of 2 folds tracked; per run not comparable)' in line
    assert '0.025' not in line
    whole = summary_of([tracked_fold], [tracked_fold])
    assert whole['training_per_run']['kWh'] == pytest.approx(0.05)
    assert 'training 0.05 kWh in 1 min 40 s' in cost.table_lines(whole)[0]
    lines = compare.cost_markdown(whole, partly)
    assert '| training energy | 0.05 kWh | 0.05 kWh over 1 of 2 folds tracked; per run not comparable | - |' in lines
    assert any(line.startswith('Some folds of B recorded no energy') for line in lines)


def test_with_the_switch_off_no_tracker_starts_and_the_time_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(config, 'TRACK_ENERGY', False)
    with cost.tracked(tmp_path / 'off', 'off', 'cpu') as spent:
        busy(0.2)
    assert spent['kWh'] is None and spent['seconds'] >= 0.2
    assert not (tmp_path / 'off').exists()


def test_a_country_codecarbon_does_not_know_is_one_line_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(config, 'ENERGY_COUNTRY', 'XYZ')
    with pytest.raises(DataError, match=r"^config.ENERGY_COUNTRY = 'XYZ': not a country of CodeCarbon's"):
        with cost.tracked(tmp_path, 'x', 'cpu'):
            pass


# -----------------------------------------------------------------------------
# The model's size

def test_the_model_has_380113_parameters_and_the_macs_the_original_readme_gives():
    state = torch.get_rng_state()
    found = model.complexity()
    assert torch.equal(torch.get_rng_state(), state)              # no random number of the training drawn
    assert found['parameters'] == 380_113
    # torchinfo's count of one 40-s sequence: the original README's "MACCs (M): 563.741"
    assert found['macs_per_sequence'] == 563_741_009 and found['sequence_frames'] == 200
    assert found['10s_clip_frames'] == 51 and found['macs_per_10s_clip'] == 143_756_497
