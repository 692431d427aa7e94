"""evaluate.py --tune and --ensemble (docs/method.md, Evaluation): thresholds and median filters chosen on each fold's
validation files, and the runs' frame scores averaged into one system, beside the protocol's row.

Test data built here (no training): the demo workdir's features and metadata, and two runs of the 5 official folds
whose test and validation scores are the hard labels blurred with noise (one draw per run, fold and file, as a
fold's model scores its validation files and another fold's model the same file as a test file).
"""
import functools
import json
import shutil
import zlib

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage
import sed_scores_eval

import config
import evaluate
import experiment
import plot_results
import post_processing
import runs
import score_io
import tables
import tuning
import utils
from helpers import copy_workdir, write_run

HEADLINE = tables.HEADLINE


def noisy_scores(workdir, stem, *seed):
    """(frames, 11): 0.7 where the file's hard labels are active, 0.3 elsewhere, plus noise drawn from seed."""
    with np.load(utils.file_features_path(workdir, stem)) as data:
        hard = post_processing.hard_labels(data['targets']).astype(np.float64)
    rng = np.random.default_rng([*seed, zlib.crc32(stem.encode())])
    return np.clip(0.3 + 0.4 * hard + rng.normal(0, 0.2, hard.shape), 0, 1)


@pytest.fixture(scope='module')
def tuned(demo_workdir, tmp_path_factory):
    workdir = copy_workdir(demo_workdir, tmp_path_factory.mktemp('tune') / 'work')
    for run in (0, 1):
        run_dir = workdir / config.RUNS_DIR / f'run{run}'
        folds = {}
        for fold in range(1, config.N_FOLDS + 1):
            parts = utils.read_fold(fold)
            folds[fold] = [utils.file_stem(i) for i in parts['test']]
            for stem in folds[fold]:
                score_io.write_score_file(run_dir / 'scores' / f'{stem}.tsv', noisy_scores(workdir, stem, run, fold))
            for stem in map(utils.file_stem, parts['val']):
                score_io.write_score_file(runs.validation_scores_dir(run_dir, fold) / f'{stem}.tsv',
                                          noisy_scores(workdir, stem, run, fold))
        write_run(run_dir, None, seed=42 + run, folds=folds)
    return workdir


def run_dir(workdir, run=0):
    return workdir / config.RUNS_DIR / f'run{run}'


def folds_of(workdir, run=0):
    ground_truth, _ = score_io.read_references(workdir)
    return tuning.run_folds(workdir, run_dir(workdir, run), ground_truth)


@pytest.fixture(scope='module')
def tuned_metrics_of(tuned):
    """run -> evaluate.tuned_metrics of that run of `tuned`, computed once for the tests that only read it."""
    return functools.cache(lambda run: evaluate.tuned_metrics(tuned, folds_of(tuned, run)))


def chosen_of(metrics):
    return metrics['scoring']['chosen on validation']['values']


def read_strict_json(path):
    """A JSON file read as strict JSON readers read it: NaN and Infinity refused."""
    def refuse(constant):
        raise ValueError(f'{path}: {constant} is not JSON')
    return json.loads(path.read_text(), parse_constant=refuse)


def test_chosen_thresholds_and_filters_depend_on_validation_data_only(tuned, tuned_metrics_of, tmp_path):
    workdir = tmp_path / 'work'
    shutil.copytree(tuned, workdir)
    before = tuned_metrics_of(0)                                  # of the files copied here, before the change
    # other test labels for fold 1: its test files lose every event, in gt_dev.csv and in the stored targets
    test_stems = [utils.file_stem(i) for i in utils.read_fold(1)['test']]
    gt_path = workdir / config.METADATA_DIR / config.GT_FILE
    gt = pd.read_csv(gt_path, sep='\t')
    gt[~gt.filename.isin([f'{s}.wav' for s in test_stems])].to_csv(gt_path, sep='\t', index=False)
    for stem in test_stems:
        path = utils.file_features_path(workdir, stem)
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        np.savez(path, **{**arrays, 'targets': np.zeros_like(arrays['targets'])})
    after = evaluate.tuned_metrics(workdir, folds_of(workdir))
    assert chosen_of(after)['fold1'] == chosen_of(before)['fold1']
    assert after['F1_m'] != before['F1_m']                        # the test labels score the choice, nothing more


def test_each_class_gets_the_filter_and_threshold_of_the_best_validation_fscore_of_sed_scores_eval(tuned):
    validation = folds_of(tuned)[2]['validation']
    ground_truth, durations = score_io.read_references(tuned)
    chosen = tuning.choose_on_validation(validation, ground_truth, durations)
    present = [c for c in config.HARD_CLASSES if any(e[2] == c for s in validation for e in ground_truth[s])]
    best = {}
    for length in config.TUNE_MEDIAN_FILTERS:                     # ascending: a tie keeps the shorter filter
        filtered = {}
        for stem, df in validation.items():
            df = df[['onset', 'offset'] + present].copy()
            df[present] = scipy.ndimage.median_filter(df[present].to_numpy(), size=(length, 1))
            filtered[stem] = df
        f, _, _, thresholds, _ = sed_scores_eval.segment_based.best_fscore(
            filtered, {s: ground_truth[s] for s in validation}, {s: durations[s] for s in validation},
            segment_length=1.0, time_decimals=config.F1_THOP_TIME_DECIMALS)
        for c in present:
            if c not in best or f[c] > best[c][0]:
                best[c] = (f[c], length, thresholds[c])
    for c in present:
        assert chosen[c]['F'] == pytest.approx(100 * best[c][0])
        assert (chosen[c]['median_filter'], chosen[c]['threshold']) == (best[c][1], pytest.approx(best[c][2]))
    assert {chosen[c]['median_filter'] for c in present} != {1}   # a filter helps the noisy scores somewhere


def test_each_folds_choice_cuts_that_folds_test_files_and_no_others(tuned, tuned_metrics_of):
    folds = folds_of(tuned)
    metrics = tuned_metrics_of(0)
    chosen = chosen_of(metrics)
    assert chosen['fold1'] != chosen['fold2']               # else a swap of the folds' choices would pass
    test = {stem: df for parts in folds.values() for stem, df in parts['test'].items()}
    post = {stem: ([chosen[f'fold{k}'][c]['threshold'] for c in config.HARD_CLASSES],
                   [chosen[f'fold{k}'][c]['median_filter'] for c in config.HARD_CLASSES])
            for k, parts in folds.items() for stem in parts['test']}
    again = evaluate.evaluate_scores(test, tuned, post=post)
    assert [again[k] for k in HEADLINE] == [metrics[k] for k in HEADLINE]
    swapped = {stem: post[next(iter(folds[2]['test']))] for stem in folds[1]['test']}   # fold 1 cut with fold 2's
    assert evaluate.evaluate_scores(test, tuned, post={**post, **swapped})['F1_m'] != metrics['F1_m']
    # and the thresholds are those given: no score (at most 1) lies above 1, so nothing is detected
    silent = evaluate.evaluate_scores(test, tuned, post=dict.fromkeys(test, ([1.0] * len(config.HARD_CLASSES), 1)))
    assert silent['ER_m'] == 1.0                            # every reference segment deleted, none inserted


def test_the_tuned_rows_record_the_thresholds_and_filters_that_cut_them(tuned):
    metrics = evaluate.tuned_metrics(tuned, folds_of(tuned))
    for fold, values in chosen_of(metrics).items():
        assert metrics['scoring']['THRESHOLD'][fold] == {c: values[c]['threshold'] for c in config.HARD_CLASSES}
        assert metrics['scoring']['MEDIAN_FILTER'][fold] == {c: values[c]['median_filter'] for c in config.HARD_CLASSES}
    assert 'MEDIAN_FILTER_BY_CLASS' not in metrics['scoring']              # the per-class filters are MEDIAN_FILTER's
    assert metrics['scoring']['THRESHOLD'] != config.THRESHOLD and metrics['scoring']['MEDIAN_FILTER'] != 1


def test_every_json_of_a_tuned_ensembled_workdir_is_strict_with_a_threshold_below_every_score(tuned, tmp_path):
    workdir = tmp_path / 'work'
    shutil.copytree(tuned, workdir)
    # one class scored 0.5 on every validation frame: its best F detects every segment, at best_fscore's -inf
    for run in (0, 1):
        for fold in range(1, config.N_FOLDS + 1):
            for path in runs.validation_scores_dir(run_dir(workdir, run), fold).glob('*.tsv'):
                df = pd.read_csv(path, sep='\t')
                df['people talking'] = 0.5
                score_io.write_score_file(path, df[config.HARD_CLASSES].to_numpy())
    assert evaluate.main(['--workdir', str(workdir), '--tune', '--ensemble']) == 0
    written = {path: read_strict_json(path) for path in sorted(workdir.rglob('*.json'))}
    assert workdir / 'results.json' in written and run_dir(workdir) / 'metrics.json' in written
    results = written[workdir / 'results.json']
    for row in results['tuned']['runs'] + results['ensemble_tuned']['runs']:
        for fold, values in chosen_of(row).items():
            assert values['people talking']['threshold'] is None and 'every frame' in values['people talking']['why']
            assert row['scoring']['THRESHOLD'][fold]['people talking'] is None
    # and cut so: every frame of the class active in every test file, whatever the filter
    test = {stem: df for parts in folds_of(workdir).values() for stem, df in parts['test'].items()}
    everything = evaluate.evaluate_scores(test, workdir, post=dict.fromkeys(test, ([-np.inf] * len(config.HARD_CLASSES), 1)))
    assert results['tuned']['runs'][0]['class_wise']['people talking'] == everything['class_wise']['people talking']
    assert 'none / ' in (workdir / 'results.md').read_text()


def test_a_class_without_reference_in_the_validation_files_keeps_the_threshold_and_filter_of_config(tuned):
    validation = folds_of(tuned)[1]['validation']
    ground_truth, durations = score_io.read_references(tuned)
    without_car = {s: [e for e in events if e[2] != 'car'] for s, events in ground_truth.items()}
    chosen = tuning.choose_on_validation(validation, without_car, durations)
    assert chosen['car'] == {'threshold': config.THRESHOLD, 'median_filter': config.MEDIAN_FILTER, 'F': None}
    assert chosen['people talking']['F'] is not None


def test_an_ensemble_of_one_run_equals_that_runs_row(tuned, tmp_path):
    out = tmp_path / 'one.json'
    assert evaluate.main(['--workdir', str(tuned), '--runs', '0', '--ensemble', '--tune', '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    for ensemble, run in (('ensemble', result['runs'][0]), ('ensemble_tuned', result['tuned']['runs'][0])):
        one = result[ensemble]['runs'][0]
        assert result[ensemble]['ensemble of'] == ['run0']
        for key in HEADLINE + ['class_wise', 'thresholds', 'files']:
            assert one[key] == run[key], (ensemble, key)
    assert chosen_of(result['ensemble_tuned']['runs'][0]) == chosen_of(result['tuned']['runs'][0])
    table = out.with_suffix('.md').read_text()
    assert '| Ensemble of 1 run (frame scores averaged per file); 49 of 49 files |' in table


def test_an_ensemble_scores_the_runs_frame_scores_averaged_per_file(tuned, tmp_path):
    for path in sorted((run_dir(tuned, 0) / 'scores').glob('*.tsv')):
        frames = [pd.read_csv(run_dir(tuned, r) / 'scores' / path.name, sep='\t') for r in (0, 1)]
        score_io.write_score_file(tmp_path / 'averaged' / path.name,
                                  (frames[0][config.HARD_CLASSES] + frames[1][config.HARD_CLASSES]).to_numpy() / 2)
    expected = evaluate.evaluate_scores(tmp_path / 'averaged', tuned)
    ensemble = evaluate.evaluate_variants(tuned, [run_dir(tuned, 0), run_dir(tuned, 1)], ensemble=True)['ensemble']
    assert ensemble['n_runs'] == 1 and ensemble['ensemble of'] == ['run0', 'run1']
    for key in HEADLINE:
        assert ensemble['mean'][key] == pytest.approx(expected[key], abs=1e-9)
    assert ensemble['mean']['F1_m'] != pytest.approx(evaluate.evaluate_scores(run_dir(tuned) / 'scores', tuned)['F1_m'])


def test_the_default_table_and_the_runs_metrics_are_unchanged_when_neither_flag_is_given(tuned, tmp_path):
    workdir = tmp_path / 'work'
    shutil.copytree(tuned, workdir)
    assert evaluate.main(['--workdir', str(workdir)]) == 0
    default = (workdir / 'results.md').read_text()
    metrics = {r: (run_dir(workdir, r) / 'metrics.json').read_text() for r in (0, 1)}
    assert 'chosen on validation' not in default and 'Ensemble' not in default
    assert evaluate.main(['--workdir', str(workdir), '--tune', '--ensemble']) == 0
    flagged = (workdir / 'results.md').read_text().splitlines()
    rows = [line for line in flagged if line.startswith(('| Thresholds and median', '| Ensemble of'))]
    assert [row.split(';')[0] for row in rows] == ['| Thresholds and median filters chosen on validation (per fold '
                                                   'and class)', '| Ensemble of 2 runs (frame scores averaged per '
                                                   'file)', '| Ensemble of 2 runs, thresholds and median filters '
                                                   'chosen on validation']
    assert flagged.index(rows[0]) == 3                                      # right below the protocol's row
    kept = [line for line in flagged if line not in rows]
    assert kept[:len(default.splitlines())] == default.splitlines()
    assert {r: (run_dir(workdir, r) / 'metrics.json').read_text() for r in (0, 1)} == metrics   # protocol only
    results = json.loads((workdir / 'results.json').read_text())
    for run in results['tuned']['runs']:
        values = chosen_of(run)
        assert list(values) == [f'fold{k}' for k in range(1, config.N_FOLDS + 1)]
        assert all(set(v) == set(config.HARD_CLASSES) for v in values.values())


def test_runs_without_validation_scores_are_refused_in_one_line_naming_the_command(tuned, tmp_path, capsys):
    workdir = tmp_path / 'work'
    shutil.copytree(tuned, workdir)
    shutil.rmtree(runs.validation_scores_dir(run_dir(workdir), 2))
    assert evaluate.main(['--workdir', str(workdir), '--tune']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'validation_scores/fold2' in err
    assert f'python infer.py --workdir {workdir} --validation-scores' in err
    assert not (workdir / 'results.json').exists() and not (run_dir(workdir) / 'metrics.json').exists()
    assert evaluate.main(['--workdir', str(workdir), '--ensemble', '--json', str(tmp_path / 'x.json')]) == 0


def test_a_median_filter_setting_scores_the_filtered_scores_and_is_recorded(tuned):
    scores_dir = run_dir(tuned) / 'scores'
    with experiment.for_command(['--set', 'MEDIAN_FILTER=5']):
        metrics = evaluate.evaluate_scores(scores_dir, tuned)
        assert evaluate.run_metrics(tuned, run_dir(tuned))['scoring']['MEDIAN_FILTER'] == 5   # scored again
    assert metrics['scoring']['MEDIAN_FILTER'] == 5
    ground_truth, durations = score_io.read_references(tuned)
    filtered = {}
    for stem, df in score_io.read_score_files(scores_dir).items():
        df[config.HARD_CLASSES] = scipy.ndimage.median_filter(df[config.HARD_CLASSES].to_numpy(), size=(5, 1))
        filtered[stem] = df
    f = sed_scores_eval.segment_based.best_fscore(filtered, ground_truth, durations, segment_length=1.0,
                                                  time_decimals=config.F1_THOP_TIME_DECIMALS)[0]
    assert metrics['F1_thop'] == pytest.approx(100 * np.mean([f[c] for c in config.HARD_CLASSES]))
    assert metrics['F1_m'] != pytest.approx(evaluate.evaluate_scores(scores_dir, tuned)['F1_m'])


def test_the_per_class_picture_shows_the_f_chosen_on_validation(tuned, tuned_metrics_of, tmp_path):
    data = plot_results.per_class_data(tuned, tune=True)
    for r in (0, 1):
        metrics = tuned_metrics_of(r)
        assert [data['f1_tuned'][c][r] for c in config.HARD_CLASSES] == \
            pytest.approx([metrics['class_wise'][c]['F'] or 0.0 for c in config.HARD_CLASSES])
    assert len(data['chosen']['car']) == 2 * config.N_FOLDS                  # (threshold, filter) per run and fold
    plot_results.draw_per_class_picture(data, tmp_path / 'per_class.png')
    assert (tmp_path / 'per_class.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
