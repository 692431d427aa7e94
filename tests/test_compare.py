"""compare.py: the settings that differ, the two tests (Welch over runs, paired bootstrap over files), bad input."""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import compare
import config
import evaluate
import experiment
import score_io
import tables
import utils
from runs import record_id

DURATION = 12.0                                                    # s, every synthetic file
N_FRAMES = 1 + int(round(DURATION * config.SAMPLE_RATE)) // config.HOP_LENGTH
STEMS = ['cafe_restaurant_00', 'cafe_restaurant_04', 'city_center_02', 'city_center_04', 'grocery_store_00',
         'metro_station_00']
FILES = [(stem, k) for k, stem in enumerate(STEMS)]                # (stem, source of its content)
RECORD = {'training': {'epochs': 150, 'loss': 'bce', 'config': {'LEARNING_RATE': 0.001}},
          'features': {'dataset': 'demo', 'folds_sha256': 'abc'}}
OTHER_RECORD = {'training': {'epochs': 100, 'loss': 'mse', 'config': {'LEARNING_RATE': 0.001}},
                'features': {'dataset': 'demo', 'folds_sha256': 'abc'}}


def reference_of(k):
    """Events of synthetic file k: each class active for 1-3 whole seconds, drawn from k."""
    rng = np.random.default_rng(k)
    events = []
    for label in config.HARD_CLASSES:
        onset, length = int(rng.integers(0, 8)), int(rng.integers(1, 4))
        events.append((float(onset), float(onset + length), label))
    return events


def scores_of(k, seed, noise):
    """(frames, 11) scores of file k: 0.8 on its reference, 0.2 elsewhere, plus Gaussian noise of `noise`."""
    active = np.zeros((N_FRAMES, len(config.HARD_CLASSES)))
    for onset, offset, label in reference_of(k):
        active[round(onset / config.FRAME_SECONDS):round(offset / config.FRAME_SECONDS),
               config.HARD_CLASSES.index(label)] = 1
    noise = np.random.default_rng(1000 * seed + k).normal(0, noise, active.shape)
    return np.clip(0.2 + 0.6 * active + noise, 0, 1)


def write_workdir(workdir, runs, records=RECORD, files=FILES):
    """A workdir with metadata and runs: runs [(seed, noise)], each with score files, settings.json (records: one
    record, or one per run), a finished fold of them all and the metrics.json evaluate.py computes with each file on
    its own timeline (there are no features for the fold's: run_compare scores with TIMELINE file)."""
    metadata = workdir / config.METADATA_DIR
    metadata.mkdir(parents=True, exist_ok=True)
    (metadata / config.DURATIONS_FILE).write_text(
        'filename\tduration\n' + ''.join(f'{stem}.wav\t{DURATION}\n' for stem, _ in files))
    (metadata / config.GT_FILE).write_text('filename\tonset\toffset\tevent_label\n' + ''.join(
        f'{stem}.wav\t{on}\t{off}\t{label}\n' for stem, k in files for on, off, label in reference_of(k)))
    for r, (seed, noise) in enumerate(runs):
        run = workdir / config.RUNS_DIR / f'run{r}'
        record = records[r] if isinstance(records, list) else records
        for stem, k in files:
            score_io.write_score_file(run / 'scores' / f'{stem}.tsv', scores_of(k, seed, noise))
        settings = {'seed': 42 + r, 'record_id': record_id(record), 'record': record}
        utils.write_json_atomic(run / 'settings.json', settings)
        utils.write_json_atomic(run / 'fold1' / 'metrics.json', {'record_id': record_id(record),
                                                                 'files': [stem for stem, _ in files]})
        metrics = evaluate.evaluate_scores(run / 'scores', workdir, timeline='file')
        metrics.pop('report')
        utils.write_json_atomic(run / 'metrics.json', {**metrics, 'seed': settings['seed'],
                                                       'record_id': settings['record_id']})
    return workdir


def run_compare(capsys, *argv):
    code = compare.main([str(a) for a in argv] + ['--set', 'TIMELINE=file'])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    assert err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err
    assert all(w in err for w in words), err


def record_cost(workdir, training_kwh, seconds, kind='estimated'):
    """Each run's fold1/metrics.json with the cost a training records (cost.py): training_kwh in seconds, and a
    test of a tenth of both -> workdir."""
    way = 'measured (RAPL)' if kind == 'measured' else 'estimated from its TDP (85 W) and the load of this process'
    for path in Path(workdir).glob('runs/run*/fold1/metrics.json'):
        metrics = json.loads(path.read_text())
        metrics['cost'] = {step: {'seconds': seconds * share, 'kWh': training_kwh * share, 'processes': 1,
                                  'cpu_kWh': training_kwh * share, 'gpu_kWh': 0.0, 'ram_kWh': 0.0,
                                  'sources': {'cpu': way}, 'kind': kind, 'tracker': 'CodeCarbon 3.3.2'}
                           for step, share in (('training', 1.0), ('test', 0.1))}
        utils.write_json_atomic(path, metrics)
    return workdir


# -----------------------------------------------------------------------------
# End to end

def test_names_the_differing_settings_and_brackets_each_difference(tmp_path, capsys):
    a = write_workdir(tmp_path / 'a', [(s, 0.3) for s in (1, 2, 3)])
    b = write_workdir(tmp_path / 'b', [(s, 0.2) for s in (4, 5, 6)], records=OTHER_RECORD)
    code, out, _ = run_compare(capsys, a, b, '--out', tmp_path / 'out')
    assert code == 0
    result = json.loads((tmp_path / 'out' / 'comparison.json').read_text())
    assert [d['setting'] for d in result['settings_differ']] == ['training.epochs', 'training.loss']
    assert "training.loss: 'bce' vs 'mse'" in out and 'training.epochs: 150 vs 100' in out
    for key in tables.HEADLINE:
        row = result['metrics'][key]
        means = [np.mean([json.loads((w / 'runs' / f'run{r}' / 'metrics.json').read_text())[key] for r in range(3)])
                 for w in (a, b)]
        assert row['difference'] == pytest.approx(means[1] - means[0])
        assert row['low'] < row['difference'] < row['high']
        assert row['method'] == 'Welch t-test over runs (n=3 vs 3)'
        assert f'| {key} |' in out
    assert (tmp_path / 'out' / 'comparison.md').read_text() in out
    assert (tmp_path / 'out' / 'per_class.png').read_bytes()[:4] == b'\x89PNG'


def test_shows_the_time_and_energy_per_run_of_both_sides_and_their_difference(tmp_path, capsys):
    a = record_cost(write_workdir(tmp_path / 'a', [(s, 0.3) for s in (1, 2, 3)]), 0.002, 300.0)
    b = record_cost(write_workdir(tmp_path / 'b', [(s, 0.2) for s in (4, 5, 6)], records=OTHER_RECORD), 0.001,
                    150.0, kind='measured')
    code, out, _ = run_compare(capsys, a, b, '--out', tmp_path / 'out')
    assert code == 0
    assert '| training energy | 0.002 kWh | 0.001 kWh | -0.001 kWh (-50%) |' in out
    assert '| training time | 5 min 0 s | 2 min 30 s | -150.0 s (-50%) |' in out
    assert '| test inference energy | 0.0002 kWh | 0.0001 kWh | -0.0001 kWh (-50%) |' in out
    assert '| energy | estimated | measured | |' in out
    assert 'The energy of A is estimated, of B measured: their difference is no measurement.' in out
    result = json.loads((tmp_path / 'out' / 'comparison.json').read_text())
    assert result['cost']['a']['training_per_run'] == {'seconds': 300.0, 'kWh': pytest.approx(0.002)}


def test_a_workdir_against_itself_shows_no_change(tmp_path, capsys):
    a = write_workdir(tmp_path / 'a', [(1, 0.3), (2, 0.3)])        # 2 runs: the paired bootstrap over files
    code, out, _ = run_compare(capsys, a, a, '--out', tmp_path / 'out', '--bootstrap', 20)
    assert code == 0
    result = json.loads((tmp_path / 'out' / 'comparison.json').read_text())
    assert result['settings_differ'] == [] and 'no setting differs' in out
    assert 'fewer than 3 runs on a side' in out
    rows = list(result['metrics'].values()) + [t for kinds in result['per_class'].values() for t in kinds.values()]
    for row in rows:
        assert (row['difference'], row['low'], row['high'], row['p'], row['marked']) == (0, 0, 0, 1, False)
        assert row['method'] == f'paired bootstrap over {len(STEMS)} files, 20 resamples (seed 0)'


def test_a_set_of_the_command_scores_both_sides_with_it_on_every_path(tmp_path, capsys):
    a = write_workdir(tmp_path / 'a', [(s, 0.3) for s in (1, 2, 3)])
    b = write_workdir(tmp_path / 'b', [(s, 0.2) for s in (4, 5, 6)], records=OTHER_RECORD)
    saved = {p: p.read_bytes() for p in tmp_path.glob('*/runs/run*/metrics.json')}
    for runs in ([], ['--runs-a', '0', '--runs-b', '0']):              # Welch over runs; the paired bootstrap
        out = tmp_path / f'out{len(runs)}'
        assert run_compare(capsys, a, b, '--out', out, '--set', 'THRESHOLD=0.3', '--bootstrap', 20, *runs)[0] == 0
        result = json.loads((out / 'comparison.json').read_text())
        assert result['scoring']['THRESHOLD'] == 0.3
        for side, workdir in (('mean_a', a), ('mean_b', b)):
            at_03 = []
            for run in ['run0'] if runs else ['run0', 'run1', 'run2']:
                with experiment.for_command(['--set', 'THRESHOLD=0.3']):
                    at_03.append(evaluate.evaluate_scores(workdir / 'runs' / run / 'scores', workdir,
                                                          timeline='file'))
            for key in ('F1_m', 'F1_M'):                       # the threshold's metrics (F1_thop has none)
                assert result['metrics'][key][side] == pytest.approx(np.mean([m[key] for m in at_03]))
                assert result['metrics'][key][side] != pytest.approx(np.mean(
                    [json.loads(p.read_bytes())[key] for p in saved if p.parent.parent.parent == workdir]))
    assert {p: p.read_bytes() for p in saved} == saved                   # the runs' metrics as they were


def test_evaluate_into_another_file_leaves_the_runs_metrics_as_they_were(tmp_path, capsys):
    a = write_workdir(tmp_path / 'a', [(1, 0.3), (2, 0.3)])
    saved = {p: p.read_bytes() for p in a.glob('runs/run*/metrics.json')}
    assert evaluate.main(['--workdir', str(a), '--set', 'THRESHOLD=0.3', '--timeline', 'file', '--json',
                          str(tmp_path / 'elsewhere.json')]) == 0
    assert f"wrote {tmp_path / 'elsewhere.json'}, {tmp_path / 'elsewhere.md'}\n" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in saved} == saved and len(saved) == 2 and not (a / 'results.json').exists()
    assert json.loads((tmp_path / 'elsewhere.json').read_text())['runs'][0]['scoring']['THRESHOLD'] == 0.3
    assert '| Class | F (threshold 0.3) |' in (tmp_path / 'elsewhere.md').read_text()   # the threshold that cut


# -----------------------------------------------------------------------------
# The statistics

def test_welch_test_detects_a_large_shift_and_not_none():
    rng = np.random.default_rng(0)
    a, shifted, same = (rng.normal(mean, 1.0, 5) for mean in (50.0, 55.0, 50.0))
    assert compare.welch_test(a, shifted)['p'] < 0.01
    assert compare.welch_test(a, same)['p'] > 0.05


def test_welch_interval_is_the_welch_t_interval():
    a, b = np.array([1.0, 2.0, 4.0, 3.0]), np.array([5.0, 9.0, 6.0])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))     # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    test = compare.welch_test(a, b)
    assert test['difference'] == pytest.approx(b.mean() - a.mean())
    assert (test['low'], test['high']) == pytest.approx((b.mean() - a.mean() - half, b.mean() - a.mean() + half))


def test_paired_bootstrap_sees_a_better_system_on_the_same_files(tmp_path, capsys):
    a = write_workdir(tmp_path / 'a', [(1, 0.45)])
    b = write_workdir(tmp_path / 'b', [(2, 0.05)])
    assert run_compare(capsys, a, b, '--out', tmp_path / 'out', '--bootstrap', 50)[0] == 0
    row = json.loads((tmp_path / 'out' / 'comparison.json').read_text())['metrics']['F1_thop']
    recorded = [json.loads((w / 'runs' / 'run0' / 'metrics.json').read_text())['F1_thop'] for w in (a, b)]
    assert row['difference'] == pytest.approx(recorded[1] - recorded[0])
    assert 0 < row['low'] < row['high'] and row['p'] < 0.05


def test_bootstrap_test_takes_percentiles_and_two_sided_p():
    test = compare.bootstrap_test(2.0, np.concatenate([np.full(90, 3.0), np.full(10, -1.0)]))
    assert (test['low'], test['high']) == (-1.0, 3.0)
    assert test['p'] == pytest.approx(2 * 11 / 101)                # 2 (k + 1) / (n + 1), k = 10 differences <= 0


def test_a_file_drawn_twice_counts_as_two_copies(tmp_path):
    # the draw (0, 2, 1) of files 0, 1, 2 against a workdir that holds file 1 twice (as another stem) and file 2
    drawn = write_workdir(tmp_path / 'drawn', [(1, 0.3)], files=FILES[:3])
    copies = write_workdir(tmp_path / 'copies', [(1, 0.3)], files=[FILES[1], ('residential_area_00', 1), FILES[2]])
    run = compare.file_statistics(drawn, drawn / 'runs' / 'run0', STEMS[:3], config.F1_THOP_TIME_DECIMALS)
    values = compare.resampled_metrics(run, np.array([0, 2, 1]))
    expected = evaluate.evaluate_scores(copies / 'runs' / 'run0' / 'scores', copies, timeline='file')
    for key in tables.HEADLINE:
        assert values[key] == pytest.approx(expected[key], abs=1e-9), key
    for c in config.HARD_CLASSES:
        assert values['F', c] == pytest.approx(expected['class_wise'][c]['F'], abs=1e-9)
        assert values['F1_thop', c] == pytest.approx(expected['class_wise'][c]['F1_thop'], abs=1e-9)


# -----------------------------------------------------------------------------
# Bad input: one line, exit status 2

def test_workdir_without_runs_is_refused(tmp_path, capsys):
    a = write_workdir(tmp_path / 'a', [(1, 0.3)])
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert_one_line_error(*run_compare(capsys, a, empty)[::2], 'no run')


def test_runs_of_mixed_settings_are_refused(tmp_path, capsys):
    mixed = write_workdir(tmp_path / 'mixed', [(1, 0.3), (2, 0.3)], records=[RECORD, OTHER_RECORD])
    b = write_workdir(tmp_path / 'b', [(3, 0.3)])
    assert_one_line_error(*run_compare(capsys, mixed, b)[::2], 'training.epochs')


def test_different_files_are_refused_for_the_paired_test(tmp_path, capsys):
    a = write_workdir(tmp_path / 'a', [(1, 0.3)])
    b = write_workdir(tmp_path / 'b', [(2, 0.3)], files=FILES[:-1])
    assert_one_line_error(*run_compare(capsys, a, b, '--out', tmp_path / 'out')[::2], 'different files', STEMS[-1])


def test_unknown_run_number_is_refused(tmp_path, capsys):
    a = write_workdir(tmp_path / 'a', [(1, 0.3)])
    assert_one_line_error(*run_compare(capsys, a, a, '--runs-b', 7)[::2], 'run7')
