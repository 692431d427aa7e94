"""evaluate.py: the challenge metrics (computed by hand here), score files, bad input, the table."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import sed_scores_eval

import config
import evaluate
import score_io
import tables
import utils
from helpers import frame_scores, write_run
from utils import DataError

A, B, C = config.HARD_CLASSES[:3]            # birds_singing, car, people talking
N_HARD = len(config.HARD_CLASSES)


def n_frames(duration):
    """Frames of a file of `duration` s (1 + N // hop)."""
    return 1 + int(round(duration * config.SAMPLE_RATE)) // config.HOP_LENGTH


def write_metadata(workdir, durations, gt_rows):
    """metadata/development_metadata.csv and gt_dev.csv (rows (stem, onset, offset, label)) under workdir."""
    metadata = workdir / config.METADATA_DIR
    metadata.mkdir(parents=True, exist_ok=True)
    (metadata / config.DURATIONS_FILE).write_text(
        'filename\tduration\n' + ''.join(f'{stem}\t{d}\n' for stem, d in durations.items()))
    (metadata / config.GT_FILE).write_text(
        'filename\tonset\toffset\tevent_label\n' + ''.join(f'{s}.wav\t{on}\t{off}\t{lab}\n' for s, on, off, lab in gt_rows))


def write_targets(workdir, stem, n, active):
    """features/files/<stem>.npz with soft targets (n, 17): value v on frames [i, j) of class c for (c, i, j, v)."""
    targets = np.zeros((n, len(config.CLASSES)))
    for label, i, j, value in active:
        targets[i:j, config.CLASSES.index(label)] = value
    path = utils.file_features_path(workdir, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, targets=targets)


def write_folds(folds_dir, test_lists):
    """fold{k}_{train,val,test}.csv with the given test ids for fold 1.. (the rest empty)."""
    folds_dir.mkdir(parents=True, exist_ok=True)
    for fold in range(1, config.N_FOLDS + 1):
        for part in ('train', 'val', 'test'):
            ids = test_lists[fold - 1] if part == 'test' and fold <= len(test_lists) else []
            (folds_dir / f'fold{fold}_{part}.csv').write_text('filename\n' + ''.join(f'{i}\n' for i in ids))


# -----------------------------------------------------------------------------
# sed_eval metrics, computed by hand

@pytest.fixture
def two_files(tmp_path):
    """Two files; their reference and system events, with the segment counts worked out below.

    f1 (5 s, 26 frames): reference A [0,3), B [2,4); system A frames [0,10) -> [0,2), B frames [15,25) -> [3,5).
        segment 0: A|A TP.  1: A|A TP.  2: AB|- 2 FN (D=2).  3: B|B TP.  4: -|B FP (I=1).
    f2 (4 s, 21 frames): reference A [1,2); system A frames [4,6) = 0.8..1.2 s -> [0,1).
        segment 0: -|A FP (I=1).  1: A|- FN (D=1).
    """
    write_metadata(tmp_path, {'cafe_restaurant_00': 5.0, 'cafe_restaurant_04': 4.0},
                   [('cafe_restaurant_00', 0.0, 3.0, A), ('cafe_restaurant_00', 2.0, 4.0, B),
                    ('cafe_restaurant_04', 1.0, 2.0, A)])
    scores = tmp_path / 'scores'
    score_io.write_score_file(scores / 'cafe_restaurant_00.tsv', frame_scores(n_frames(5.0), [(A, 0, 10, 0.9), (B, 15, 25, 0.7)]))
    score_io.write_score_file(scores / 'cafe_restaurant_04.tsv', frame_scores(n_frames(4.0), [(A, 4, 6, 0.6)], low=0.1))
    write_folds(tmp_path / 'folds', [['cafe_restaurant/cafe_restaurant_00', 'cafe_restaurant/cafe_restaurant_04']])
    write_targets(tmp_path, 'cafe_restaurant_00', n_frames(5.0), [(A, 0, 15, 0.8), (B, 10, 20, 0.6)])
    write_targets(tmp_path, 'cafe_restaurant_04', n_frames(4.0), [(A, 5, 10, 1.0), (C, 0, 21, 0.5)])
    return tmp_path


def f_score(tp, fp, fn):
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


def test_segment_metrics_per_file_match_hand_counts(two_files):
    m = evaluate.evaluate_scores(two_files / 'scores', two_files, timeline='file')
    # overall: TP 3, FP 1 + 1, FN 2 + 1; Nref 6; S 0, D 2 + 1, I 1 + 1
    assert m['ER_m'] == pytest.approx((0 + 3 + 2) / 6)
    assert m['F1_m'] == pytest.approx(100 * f_score(3, 2, 3))
    # class-wise: A TP 2, FP 1, FN 2; B TP 1, FP 1, FN 1; the other 9 classes have no F and count 0
    f_a, f_b = f_score(2, 1, 2), f_score(1, 1, 1)
    assert m['class_wise'][A]['F'] == pytest.approx(100 * f_a)
    assert m['class_wise'][B]['F'] == pytest.approx(100 * f_b)
    assert m['class_wise'][C]['F'] is None
    assert m['F1_M'] == pytest.approx(100 * (f_a + f_b) / N_HARD)
    assert (m['n_files'], m['n_files_total']) == (2, 2)
    assert 'Class-wise metrics' in m['report'] and '2 of 2 files' in m['report']
    assert f"F1_M counts them as 0, F1_M = {m['F1_M']:.2f}%" in m['report']


def test_concatenated_timeline_differs_from_per_file(two_files):
    # One timeline: f2 starts at frame 26 (5.2 s). Its system run, frames 26+4..26+6 = 6.0..6.4 s, floors to
    # [6, 6) and is dropped; its reference, frames 31..36, is [6, 7). f2 now gives one FN and no FP.
    m = evaluate.evaluate_scores(two_files / 'scores', two_files, timeline='fold', folds_dir=two_files / 'folds')
    assert m['ER_m'] == pytest.approx((0 + 3 + 1) / 6)
    assert m['F1_m'] == pytest.approx(100 * f_score(3, 1, 3))
    f_a, f_b = f_score(2, 0, 2), f_score(1, 1, 1)
    assert m['F1_M'] == pytest.approx(100 * (f_a + f_b) / N_HARD)
    assert m['scoring']['TIMELINE'] == 'fold' and 'one timeline per fold' in m['report']


def test_one_row_per_second_ground_truth_gives_the_same_metrics(two_files, tmp_path_factory):
    merged = evaluate.evaluate_scores(two_files / 'scores', two_files, timeline='file')
    per_second = tmp_path_factory.mktemp('per_second')
    rows = [('cafe_restaurant_00', float(t), float(t + 1), A) for t in range(3)] + \
           [('cafe_restaurant_00', float(t), float(t + 1), B) for t in (2, 3)] + [('cafe_restaurant_04', 1.0, 2.0, A)]
    write_metadata(per_second, {'cafe_restaurant_00': 5.0, 'cafe_restaurant_04': 4.0}, rows)
    assert score_io.read_ground_truth(per_second / config.METADATA_DIR / config.GT_FILE) == {
        'cafe_restaurant_00': [(0.0, 3.0, A), (2.0, 4.0, B)], 'cafe_restaurant_04': [(1.0, 2.0, A)]}
    again = evaluate.evaluate_scores(two_files / 'scores', per_second, timeline='file')
    for key in ('ER_m', 'F1_m', 'F1_M', 'F1_thop', 'pAUC', 'class_wise', 'thresholds'):
        assert again[key] == merged[key]


def test_a_system_that_detects_nothing_has_f1_m_0_not_an_undefined_value(two_files):
    for stem, duration in (('cafe_restaurant_00', 5.0), ('cafe_restaurant_04', 4.0)):
        score_io.write_score_file(two_files / 'scores' / f'{stem}.tsv', frame_scores(n_frames(duration), []))
    m = evaluate.evaluate_scores(two_files / 'scores', two_files, timeline='file')
    assert m['F1_m'] == 0.0 and 'F1_m counts it as 0' in m['report']
    json.dumps(m, allow_nan=False)                                     # strict JSON: sed_eval's F was NaN


def test_partial_scores_say_how_many_files(two_files):
    (two_files / 'scores' / 'cafe_restaurant_04.tsv').unlink()
    m = evaluate.evaluate_scores(two_files / 'scores', two_files)
    assert (m['n_files'], m['n_files_total'], m['files']) == (1, 2, ['cafe_restaurant_00'])
    assert '1 of 2 files' in m['report'] and '(1 of 2 files)' in tables.format_headline(m)
    assert m['ER_m'] == pytest.approx(3 / 5)           # f1 alone: S 0, D 2, I 1 over Nref 5


# -----------------------------------------------------------------------------
# sed_scores_eval: F1_thop and pAUC on a toy case with known optimal thresholds

def test_f1_thop_finds_each_class_optimal_threshold(tmp_path):
    """One 10 s file, scores constant per second (5 frames), the segment scores of each class:

    A: reference segments 0, 1, 2 score 0.8, 0.7, 0.6; the 7 others one 0.65, six 0.3.
       Sweep: > 0.6 TP 2 FP 1 (F 2/3); > 0.65 TP 2 FP 0 (F 0.8); > 0.3 TP 3 FP 1 (F 6/7, best); else F 6/13.
       Best threshold: halfway between 0.6 and 0.3 = 0.45.  Up to FPR 0.1 (< 1/7): TPR 2/3 -> pAUC 2/3.
    B: reference segments 5, 6 score 0.9, 0.2; the 8 others one 0.5, seven 0.1.
       > 0.5: F 2/3; > 0.2: F 1/2; > 0.1: TP 2 FP 1 (F 0.8, best) -> threshold 0.15.  pAUC (FPR < 1/8): 1/2.
    The 9 classes without reference events count 0.
    """
    a = [0.8, 0.7, 0.6, 0.65, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    b = [0.1, 0.5, 0.1, 0.1, 0.1, 0.9, 0.2, 0.1, 0.1, 0.1]
    scores = np.zeros((n_frames(10.0), N_HARD))
    scores[:50, 0] = np.repeat(a, 5)
    scores[:50, 1] = np.repeat(b, 5)
    write_metadata(tmp_path, {'city_center_02': 10.0}, [('city_center_02', 0.0, 3.0, A), ('city_center_02', 5.0, 7.0, B)])
    score_io.write_score_file(tmp_path / 'scores' / 'city_center_02.tsv', scores)
    m = evaluate.evaluate_scores(tmp_path / 'scores', tmp_path, timeline='file')
    assert m['thresholds'][A] == pytest.approx(0.45)
    assert m['thresholds'][B] == pytest.approx(0.15)
    assert m['thresholds'][C] is None
    assert m['class_wise'][A]['F1_thop'] == pytest.approx(100 * 6 / 7)
    assert m['class_wise'][B]['F1_thop'] == pytest.approx(100 * 0.8)
    assert m['F1_thop'] == pytest.approx(100 * (6 / 7 + 0.8) / N_HARD)
    assert m['pAUC'] == pytest.approx((2 / 3 + 1 / 2) / N_HARD)


# -----------------------------------------------------------------------------
# Score files

def test_score_file_is_read_back_unchanged_by_sed_scores_eval(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.random((123, N_HARD)).astype(np.float32)        # float32 model outputs
    score_io.write_score_file(tmp_path / 'x.tsv', scores)
    back = sed_scores_eval.io.read_sed_scores(tmp_path / 'x.tsv')
    assert list(back.columns) == ['onset', 'offset'] + config.HARD_CLASSES
    assert np.array_equal(back[config.HARD_CLASSES].to_numpy(), scores.astype(np.float64))
    assert back['onset'][3] == 0.6 and back['offset'].iloc[-1] == 123 * config.FRAME_SECONDS
    assert np.array_equal(back['onset'].to_numpy(), np.arange(123) * config.HOP_LENGTH / config.SAMPLE_RATE)


def _bad_score_file(tmp_path, mutate):
    write_metadata(tmp_path, {'cafe_restaurant_00': 2.0}, [])
    scores = tmp_path / 'scores'
    score_io.write_score_file(scores / 'cafe_restaurant_00.tsv', np.full((n_frames(2.0), N_HARD), 0.2))
    path = scores / 'cafe_restaurant_00.tsv'
    df = pd.read_csv(path, sep='\t')
    df = mutate(df)
    if isinstance(df, pd.DataFrame):
        df.to_csv(path, sep='\t', index=False)
    return path


def _expect_error(tmp_path, path, *parts):
    with pytest.raises(DataError) as error:
        evaluate.evaluate_scores(tmp_path / 'scores', tmp_path)
    for part in (str(path),) + parts:
        assert part in str(error.value)


def test_score_file_with_a_missing_class_column_is_rejected(tmp_path):
    path = _bad_score_file(tmp_path, lambda df: df.drop(columns=[B]))
    _expect_error(tmp_path, path, 'missing', repr(B))


def test_score_file_with_an_extra_class_column_is_rejected(tmp_path):
    path = _bad_score_file(tmp_path, lambda df: df.assign(**{'coffee machine': 0.1}))
    _expect_error(tmp_path, path, 'extra', "'coffee machine'")


def test_score_file_with_non_increasing_timestamps_is_rejected(tmp_path):
    def swap(df):
        df.loc[3, 'offset'] = df.loc[3, 'onset'] = df.loc[2, 'onset']     # zero-length row
        df.loc[2, 'offset'] = df.loc[2, 'onset']
        return df
    _expect_error(tmp_path, _bad_score_file(tmp_path, swap), 'non-increasing timestamps')


def test_score_file_with_decreasing_timestamps_is_rejected(tmp_path):
    def reverse(df):
        df[['onset', 'offset']] = df[['offset', 'onset']].to_numpy()[::-1]
        return df
    _expect_error(tmp_path, _bad_score_file(tmp_path, reverse), 'non-increasing timestamps')


def test_score_file_with_nan_is_rejected(tmp_path):
    def nan(df):
        df.loc[4, C] = float('nan')
        return df
    _expect_error(tmp_path, _bad_score_file(tmp_path, nan), 'NaN', 'row 5', repr(C))


def test_score_file_of_an_unknown_file_id_is_rejected(tmp_path):
    path = _bad_score_file(tmp_path, lambda df: df)
    other = path.with_name('city_center_99.tsv')
    path.rename(other)
    _expect_error(tmp_path, other, "'city_center_99' is not in the ground truth")


def test_score_folder_without_score_files_is_rejected(tmp_path):
    write_metadata(tmp_path, {'cafe_restaurant_00': 2.0}, [])
    (tmp_path / 'scores').mkdir()
    with pytest.raises(DataError, match='no score files.*task4b.py'):
        evaluate.evaluate_scores(tmp_path / 'scores', tmp_path)


def test_missing_metadata_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match='development_metadata.csv: not found; run: python extract_features.py'):
        evaluate.evaluate_scores(tmp_path / 'scores', tmp_path)


def test_ground_truth_row_with_unknown_label_names_the_line(tmp_path):
    write_metadata(tmp_path, {'cafe_restaurant_00': 2.0}, [('cafe_restaurant_00', 0.0, 1.0, 'dog')])
    with pytest.raises(DataError, match=r'gt_dev.csv, line 2: unknown label'):
        score_io.read_ground_truth(tmp_path / config.METADATA_DIR / config.GT_FILE)


def test_ground_truth_line_of_only_spaces_or_tabs_names_the_line(tmp_path):
    # pandas, under sed_scores_eval's reader, would take it for a row (of a file named '  ', or of no name)
    write_metadata(tmp_path, {'cafe_restaurant_00': 2.0}, [('cafe_restaurant_00', 0.0, 1.0, A)])
    path = tmp_path / config.METADATA_DIR / config.GT_FILE
    for blank in ('  ', '\t\t\t'):
        path.write_text(f'filename\tonset\toffset\tevent_label\n\n{blank}\ncafe_restaurant_00.wav\t0.0\t1.0\t{A}\n')
        with pytest.raises(DataError, match=r'gt_dev.csv, line 3: a line of only spaces or tabs'):
            score_io.read_ground_truth(path)


def test_duration_that_is_not_a_positive_number_names_the_line(tmp_path):
    write_metadata(tmp_path, {'cafe_restaurant_00': 2.0, 'cafe_restaurant_04': 'abc'}, [])
    with pytest.raises(DataError, match=r"development_metadata.csv, line 3: duration 'abc' is not a positive number"):
        score_io.read_durations(tmp_path / config.METADATA_DIR / config.DURATIONS_FILE)


def test_a_stem_with_a_dot_is_refused_not_renamed(tmp_path):
    # sed_scores_eval's reader names a file by what precedes the last '.': 'city_center_02.v2' as 'city_center_02'
    write_metadata(tmp_path, {'city_center_02.v2': 2.0}, [])
    with pytest.raises(DataError, match=r"development_metadata.csv, line 2: file name 'city_center_02.v2'"):
        score_io.read_durations(tmp_path / config.METADATA_DIR / config.DURATIONS_FILE)


# -----------------------------------------------------------------------------
# Runs, the table, the command

def summary_of_two_runs(protocol):
    runs = [{'ER_m': 0.5, 'F1_m': 70.0, 'F1_M': 30.0, 'F1_thop': 40.0, 'pAUC': 0.6, 'n_files': 49,
             'n_files_total': 49, 'class_wise': {c: {'F': 1.0} for c in config.HARD_CLASSES},
             'thresholds': {c: 0.5 for c in config.HARD_CLASSES}, 'report': 'long'},
            {'ER_m': 0.4, 'F1_m': 72.0, 'F1_M': 34.0, 'F1_thop': 44.0, 'pAUC': 0.7, 'n_files': 49,
             'n_files_total': 49, 'class_wise': {c: {'F': 2.0} for c in config.HARD_CLASSES},
             'thresholds': {c: 0.3 for c in config.HARD_CLASSES}, 'report': 'long'}]
    summary = evaluate.summarize_runs(runs)
    summary['protocol'] = protocol
    return summary


PUBLISHED_PROTOCOL = {**config.PUBLISHED_PROTOCOL, 'PRECISION': 'float32', 'TARGETS': 'soft', 'TIMELINE': 'fold',
                      'F1_THOP_TIME_DECIMALS': 30}


def test_summary_is_mean_and_population_std_over_runs():
    summary = summary_of_two_runs(PUBLISHED_PROTOCOL)
    assert summary['mean']['F1_m'] == pytest.approx(71.0) and summary['std']['F1_m'] == pytest.approx(1.0)
    assert summary['std']['ER_m'] == pytest.approx(0.05)
    assert [r['class_wise'][A]['F'] for r in summary['runs']] == [1.0, 2.0]
    assert all('report' not in r for r in summary['runs'])
    table = tables.results_table_markdown(summary)
    assert '2 runs (mean +/-std), 49 of 49 files | 0.450 (+/-0.050) | 71.00% (+/-1.000) | 32.00% (+/-2.000) |' in table
    assert f'| {A} | 1.50 | - | - | - | 0.400 |' in table                     # per class: means over runs


def test_a_table_of_one_run_shows_no_spread():
    summary = summary_of_two_runs(PUBLISHED_PROTOCOL)
    one = evaluate.summarize_runs(summary['runs'][:1])
    one['protocol'] = summary['protocol']
    table = tables.results_table_markdown(one)
    row = [line for line in table.splitlines() if line.startswith('| This baseline')][0]
    assert '1 run (n = 1), 49 of 49 files | 0.500 | 70.00% | 30.00% |' in row and '+/-' not in row
    assert '| 0.487 (+/-0.009) |' in table                        # the published row keeps its spread


def test_table_row_label_names_the_protocol():
    table = tables.results_table_markdown(summary_of_two_runs(PUBLISHED_PROTOCOL))
    assert ('| This baseline: MAESTRO Real data, loss mse, soft targets, float32, 150 epochs, official folds, '
            'timeline per fold, F1_thop time_decimals 30; 2 runs (mean +/-std), 49 of 49 files |') in table
    table = tables.results_table_markdown(summary_of_two_runs({**PUBLISHED_PROTOCOL, 'data set': 'demo',
                                                                'LOSS': 'bce', 'TARGETS': 'hard',
                                                                'PRECISION': 'bfloat16', 'MAX_EPOCHS': 80}))
    assert ('| This baseline: demo data, loss bce, hard targets, bfloat16, 80 epochs, official folds, timeline per '
            'fold,') in table


def test_published_row_says_same_protocol_only_when_it_is():
    table = tables.results_table_markdown(summary_of_two_runs(PUBLISHED_PROTOCOL))
    assert '| Published baseline (MAESTRO Real, 10 runs, 49 files; same protocol) | 0.487 (+/-0.009) | ' \
           '70.34% (+/-0.766) | 35.83% (+/-0.660) | 42.87% (+/-0.840) | - |' in table
    table = tables.results_table_markdown(summary_of_two_runs({**PUBLISHED_PROTOCOL, 'LOSS': 'bce',
                                                                'TIMELINE': 'file'}))
    assert 'protocol differs: LOSS bce (published: mse), TIMELINE file (published: fold)' in table
    assert 'same protocol' not in table


def test_published_row_appears_only_for_maestro_real():
    table = tables.results_table_markdown(summary_of_two_runs({**PUBLISHED_PROTOCOL, 'data set': 'demo'}))
    assert 'Published' not in table and 'This baseline: demo data' in table


def test_default_metrics_are_the_challenge_computation_on_generated_data(demo_workdir, tmp_path):
    """ER_m, F1_m, F1_M computed here as the challenge did, from the annotation files and the score files: per
    fold, the test files' soft targets (soft > 0.5) and scores concatenated in the fold's order, post-processed,
    one sed_eval SegmentBasedMetrics over all folds; F1_thop is best_fscore(time_decimals=30)."""
    import dcase_util
    import sed_eval
    manifest = json.loads((demo_workdir / config.FEATURES_DIR / 'manifest.json').read_text())
    data_root = manifest['data_root']
    rng = np.random.default_rng(0)
    targets = {}
    for file_id in utils.development_file_ids():                # soft targets, rasterised here in float64
        n = 1 + int(manifest['files'][file_id]['duration'] * config.SAMPLE_RATE + 1e-6) // config.HOP_LENGTH
        rows = pd.read_csv(utils.annotation_path(data_root, file_id), sep='\t', header=None)
        soft = np.zeros((n, len(config.CLASSES)))
        for onset, offset, label, value in rows.itertuples(index=False):
            soft[int(np.floor(onset / 0.2 + 1e-6)):int(np.ceil(offset / 0.2 - 1e-6)), config.CLASSES.index(label)] = min(value, 1.0)
        targets[file_id] = soft[:, [config.CLASSES.index(c) for c in config.HARD_CLASSES]]
        noisy = np.clip(targets[file_id] + rng.normal(0, 0.3, targets[file_id].shape), 0, 1)
        score_io.write_score_file(tmp_path / 'scores' / f'{utils.file_stem(file_id)}.tsv', noisy)

    def events(frames, name):                                    # the challenge's post-processing
        items = []
        for c, label in enumerate(config.HARD_CLASSES):
            active = np.concatenate(([0], (frames[:, c] > 0.5).astype(int), [0]))
            starts, stops = np.flatnonzero(np.diff(active) == 1), np.flatnonzero(np.diff(active) == -1)
            items += [{'filename': name, 'onset': np.floor(i * 0.2), 'offset': np.floor(j * 0.2),
                       'event_label': label} for i, j in zip(starts, stops)]
        container = dcase_util.containers.MetaDataContainer(items)
        return container.process_events(minimum_event_gap=0.1).process_events(minimum_event_length=0.1)

    metrics = sed_eval.sound_event.SegmentBasedMetrics(config.HARD_CLASSES, time_resolution=1.0)
    for fold in range(1, 6):
        ids = pd.read_csv(config.FOLDS_DIR / f'fold{fold}_test.csv')['filename']
        scores = np.concatenate([sed_scores_eval.io.read_sed_scores(tmp_path / 'scores' / f'{utils.file_stem(i)}.tsv')
                                 [config.HARD_CLASSES].to_numpy() for i in ids])
        reference = np.concatenate([targets[i] for i in ids])
        metrics.evaluate(events(reference, f'fold{fold}'), events(scores, f'fold{fold}'))
    ours = evaluate.evaluate_scores(tmp_path / 'scores', demo_workdir)
    assert ours['ER_m'] == pytest.approx(metrics.overall_error_rate()['error_rate'], abs=1e-9)
    assert ours['F1_m'] == pytest.approx(100 * metrics.overall_f_measure()['f_measure'], abs=1e-9)
    class_f = [np.nan_to_num(metrics.class_wise_f_measure(c)['f_measure']) for c in config.HARD_CLASSES]
    assert ours['F1_M'] == pytest.approx(100 * np.mean(class_f), abs=1e-9)
    f_best = sed_scores_eval.segment_based.best_fscore(
        str(tmp_path / 'scores'), str(demo_workdir / config.METADATA_DIR / config.GT_FILE),
        str(demo_workdir / config.METADATA_DIR / config.DURATIONS_FILE), segment_length=1., time_decimals=30)[0]
    assert ours['F1_thop'] == pytest.approx(100 * np.mean([f_best[c] for c in config.HARD_CLASSES]), abs=1e-9)
    assert ours['scoring']['TIMELINE'] == 'fold' and ours['scoring']['F1_THOP_TIME_DECIMALS'] == 30


def test_command_gathers_every_run(two_files, capsys):
    runs = two_files / 'runs'
    runs.mkdir()
    (runs / 'run0').mkdir()
    (two_files / 'scores').rename(runs / 'run0' / 'scores')
    (runs / 'run1' / 'scores').mkdir(parents=True)                      # run1: only f1 scored so far
    name = 'cafe_restaurant_00.tsv'
    (runs / 'run1' / 'scores' / name).write_bytes((runs / 'run0' / 'scores' / name).read_bytes())
    write_run(runs / 'run0', ['cafe_restaurant_00', 'cafe_restaurant_04'])
    write_run(runs / 'run1', ['cafe_restaurant_00'], seed=43)
    assert evaluate.main(['--workdir', str(two_files), '--timeline', 'file']) == 0
    out = capsys.readouterr().out
    assert 'Class-wise metrics' in out and 'ER_m 0.833' in out and '(1 of 2 files)' in out
    results = json.loads((two_files / 'results.json').read_text())
    assert results['n_runs'] == 2 and results['n_files'] == [1, 2]
    assert results['runs'][0]['F1_m'] == pytest.approx(100 * f_score(3, 2, 3))
    assert '1/2 of 2 files' in (two_files / 'results.md').read_text()


def test_command_on_one_score_folder_writes_beside_it(two_files, capsys):
    assert evaluate.main(['--workdir', str(two_files), '--scores', str(two_files / 'scores')]) == 0
    saved = json.loads((two_files / 'evaluation.json').read_text())
    assert saved['runs'][0]['ER_m'] == pytest.approx(5 / 6) and (two_files / 'evaluation.md').is_file()
    assert not math.isnan(saved['mean']['F1_thop'])


def test_command_reports_bad_input_without_traceback(tmp_path, capsys):
    assert evaluate.main(['--workdir', str(tmp_path)]) == 2
    assert 'no run*/scores folder' in capsys.readouterr().err
