"""What a result costs (cost.py): the time and energy of training and inference in the records and the table, measured
or estimated; the model's size; tracking changes no score, reaches no network, and can be switched off."""
import csv
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
import evaluate
import model
from helpers import copy_workdir, energy_kind, score_files
from utils import DataError

REPO = Path(__file__).resolve().parent.parent
TRAIN = ['--folds', '1', '--epochs', '1', '--device', 'cpu']


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def no_counter_here():
    """Whether CodeCarbon finds no power counter here: no readable RAPL files, no nvidia-smi."""
    rapl = Path('/sys/class/powercap/intel-rapl')
    readable = rapl.is_dir() and any(os.access(p, os.R_OK) for p in rapl.glob('intel-rapl:*/energy_uj'))
    nvidia = any((Path(d) / 'nvidia-smi').is_file() for d in os.environ.get('PATH', '').split(os.pathsep))
    return not readable and not nvidia


@pytest.fixture(scope='module')
def trainings(demo_workdir, tmp_path_factory):
    """Fold 1, 1 epoch, from one seed, trained by task4b.py in a fresh process each: with the tracker (the default)
    and with --set TRACK_ENERGY=False. -> {'on': workdir, 'off': workdir, 'stderr': the tracked one's stderr}"""
    found = {}
    for name, extra in (('on', []), ('off', ['--set', 'TRACK_ENERGY=False'])):
        workdir = copy_workdir(demo_workdir, tmp_path_factory.mktemp(name))
        done = subprocess.run([sys.executable, str(REPO / 'task4b.py'), '--workdir', str(workdir), *TRAIN, *extra],
                              capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        assert done.returncode == 0, done.stderr[-2000:]
        found[name], found[f'{name}_stderr'] = workdir, done.stderr
    return found


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
        assert {'cpu', 'ram'} <= set(block['sources'])
        assert block['kind'] == energy_kind(block['sources'])
        assert block['kind'] == 'estimated' or not no_counter_here()
        assert block['tracker'].startswith('CodeCarbon ')
    # CodeCarbon's own file in the fold's folder, one row per step, with the same energy
    with open(fold_dir / cost.TRACKER_FILE) as f:
        rows = {row['project_name']: row for row in csv.DictReader(f)}
    assert set(rows) == {'run 0 fold 1 training', 'run 0 fold 1 test'}
    assert float(rows['run 0 fold 1 training']['energy_consumed']) == pytest.approx(spent['training']['kWh'])
    assert rows['run 0 fold 1 training']['country_iso_code'] == config.ENERGY_COUNTRY


@pytest.mark.slow
def test_the_table_shows_the_energy_its_kind_the_time_and_the_model(trainings):
    spent = fold_cost(trainings['on'])['training']
    table = (trainings['on'] / 'results.md').read_text()
    assert f"training {cost.format_kwh(spent['kWh'])} in {cost.format_seconds(spent['seconds'])}" in table
    assert f"- Energy {spent['kind']} (CodeCarbon " in table
    assert '- Model: 380,113 parameters; 563.7 M MACs per 40-s sequence (200 frames), 143.8 M per 10-s clip' in table
    run = json.loads((trainings['on'] / config.RUNS_DIR / 'run0' / 'metrics.json').read_text())
    assert run['cost']['training']['kWh'] == spent['kWh'] and run['cost']['training']['folds'] == 1


@pytest.mark.slow
@pytest.mark.skipif(not no_counter_here(), reason='a power counter is readable here: the energy is measured')
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
    with cost.tracked(tmp_path / 'out', 'no network') as spent:
        busy(0.5)
        so_far = cost.so_far()
    assert attempts == []
    assert spent['kWh'] > 0 and so_far['kWh'] > 0 and spent['seconds'] >= 0.5
    assert (tmp_path / 'out' / cost.TRACKER_FILE).is_file()


def test_a_resumed_step_adds_what_its_checkpoint_carried(tmp_path):
    with cost.tracked(tmp_path / 'first', 'killed'):
        busy(0.3)
        carried = cost.so_far()                       # what a checkpoint saves
    with cost.tracked(tmp_path / 'second', 'resumed') as resumed:
        cost.carry(carried)                           # what loading that checkpoint does
        busy(0.3)
    assert resumed['processes'] == 2
    assert resumed['seconds'] >= carried['seconds'] + 0.3
    assert resumed['kWh'] > carried['kWh'] > 0
    assert resumed['kind'] == carried['kind']


def test_with_the_switch_off_no_tracker_starts_and_the_time_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(config, 'TRACK_ENERGY', False)
    with cost.tracked(tmp_path / 'off', 'off') as spent:
        busy(0.2)
    assert spent['kWh'] is None and spent['seconds'] >= 0.2
    assert not (tmp_path / 'off').exists()


def test_a_country_codecarbon_does_not_know_is_one_line_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(config, 'ENERGY_COUNTRY', 'XYZ')
    with pytest.raises(DataError, match=r"^config.ENERGY_COUNTRY = 'XYZ': not a country of CodeCarbon's"):
        with cost.tracked(tmp_path, 'x'):
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
