"""plot_results.py: the pictures are written, are valid PNGs of a sensible size, and show evaluate.py's numbers.

Test data built here (no training): 4 files of 30 s with random soft-label annotations in the MAESTRO Real layout,
their rasterised targets in features/files/<stem>.npz, gt_dev.csv as the post-processed hard events of the
targets, two runs of score files (noisy soft labels; in run0 one file scores all zero and one all one)
and each run's metrics.json from evaluate.evaluate_scores, as task4b.py writes it.
"""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import config
import evaluate
import experiment
import extract_features
import plot_results
import post_processing
import score_io
import utils
from helpers import write_run

STEMS = ['cafe_restaurant_00', 'city_center_02', 'metro_station_00', 'residential_area_01']
ZERO, ONE = STEMS[2], STEMS[3]               # their scores in run0: all 0, all 1
DURATION = 30.0                              # s
N_FRAMES = 1 + int(DURATION * config.SAMPLE_RATE) // config.HOP_LENGTH     # 151
HARD = [config.CLASSES.index(c) for c in config.HARD_CLASSES]
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def file_id(stem):
    return f'{plot_results.scene_of_stem(stem)}/{stem}'


def write_annotation(path, rng):
    """One row per (second, active class): a few runs of seconds per class with soft values in (0, 1]."""
    rows = []
    for label in config.CLASSES:
        for _ in range(rng.integers(0, 3)):
            start = int(rng.integers(0, DURATION - 3))
            for second in range(start, min(start + int(rng.integers(1, 8)), int(DURATION))):
                rows.append(f'{second}.0\t{second + 1}.0\t{label}\t{rng.choice([0.2, 0.4, 0.6, 0.8, 1.0])}')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(rows) + '\n')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp('plots')
    data_root, workdir = root / 'data', root / 'work'
    rng = np.random.default_rng(3)
    gt_lines, targets = ['filename\tonset\toffset\tevent_label'], {}
    for stem in STEMS:
        path = utils.annotation_path(data_root, file_id(stem))
        write_annotation(path, rng)
        targets[stem] = extract_features.rasterize_soft_labels(extract_features.read_soft_labels(path), N_FRAMES)
        (workdir / config.FEATURES_DIR / 'files').mkdir(parents=True, exist_ok=True)
        np.savez(workdir / config.FEATURES_DIR / 'files' / f'{stem}.npz', targets=targets[stem], duration=DURATION)
        for e in post_processing.post_process_events(targets[stem][:, HARD], config.HARD_CLASSES, f'{stem}.wav'):
            gt_lines.append(f'{stem}.wav\t{e.onset}\t{e.offset}\t{e.event_label}')
    metadata = workdir / config.METADATA_DIR
    metadata.mkdir(parents=True)
    (metadata / config.GT_FILE).write_text('\n'.join(gt_lines) + '\n')
    (metadata / config.DURATIONS_FILE).write_text('filename\tduration\n' + ''.join(f'{s}\t{DURATION}\n' for s in STEMS))
    for run in (0, 1):
        scores_dir = workdir / config.RUNS_DIR / f'run{run}' / 'scores'
        for stem in STEMS:
            scores = np.clip(targets[stem][:, HARD] + rng.normal(0, 0.25, (N_FRAMES, len(HARD))), 0, 1)
            if run == 0 and stem in (ZERO, ONE):
                scores = np.full_like(scores, 0.0 if stem == ZERO else 1.0)
            score_io.write_score_file(scores_dir / f'{stem}.tsv', scores)
        write_run(scores_dir.parent, STEMS, seed=42 + run)
        utils.write_json_atomic(scores_dir.parent / 'metrics.json', evaluate.evaluate_scores(scores_dir, workdir))
    return {'workdir': workdir, 'data_root': data_root, 'targets': targets, 'root': root}


def run0_scores(workdir):
    return score_io.read_score_files(workdir / config.RUNS_DIR / 'run0' / 'scores')


def picture_data(workdir, stem, **kwargs):
    scores = run0_scores(workdir)[stem]
    reference = score_io.read_ground_truth(workdir / config.METADATA_DIR / config.GT_FILE).get(stem, [])
    soft = plot_results.load_soft_targets(stem, len(scores), workdir)
    return plot_results.detection_picture_data(stem, scores, soft, reference, DURATION, **kwargs)


def assert_valid_png(path, n_rows=len(config.HARD_CLASSES)):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 1000 <= width <= 2000, (path, image.size)
    assert 300 + 25 * n_rows <= height <= 400 + 60 * n_rows, (path, image.size)


def test_a_picture_is_written_for_every_file_asked_and_nothing_else(workdir, tmp_path):
    wd, out = workdir['workdir'], tmp_path / 'pics'
    asked = [STEMS[0], file_id(STEMS[1])]       # a stem and a file id
    assert plot_results.main(['--workdir', str(wd), '--files', *asked, '--out', str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([f'{STEMS[0]}.png', f'{STEMS[1]}.png', 'per_class.png'])
    for path in out.iterdir():
        assert_valid_png(path)


def test_every_score_file_is_drawn_by_default(workdir, tmp_path):
    wd = workdir['workdir']
    assert plot_results.main(['--workdir', str(wd), '--out', str(tmp_path), '--only', 'files']) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f'{s}.png' for s in STEMS)


@pytest.mark.parametrize('stem, value', [(ZERO, 0.0), (ONE, 1.0)])
def test_scores_all_zero_or_all_one_draw(workdir, tmp_path, stem, value):
    data = picture_data(workdir['workdir'], stem)
    assert all(np.all(data['scores'][c] == value) for c in config.HARD_CLASSES)
    whole = [(0.0, float(np.floor(N_FRAMES * config.FRAME_SECONDS)))] if value else []
    assert data['events'] == {c: whole for c in config.HARD_CLASSES}
    plot_results.draw_detection_picture(data, tmp_path / f'{stem}.png')
    assert_valid_png(tmp_path / f'{stem}.png')


def test_the_events_passed_to_the_drawing_are_exactly_post_process_events(workdir, tmp_path, monkeypatch):
    wd, drawn = workdir['workdir'], {}
    monkeypatch.setattr(plot_results, 'draw_detection_picture', lambda data, path: drawn.setdefault(data['stem'], data))
    plot_results.plot_files(wd, wd / config.RUNS_DIR / 'run1' / 'scores', tmp_path)
    assert sorted(drawn) == sorted(STEMS)
    for stem, scores in score_io.read_score_files(wd / config.RUNS_DIR / 'run1' / 'scores').items():
        expected = post_processing.post_process_events(scores[config.HARD_CLASSES].to_numpy(), config.HARD_CLASSES, stem)
        drawn_events = sorted((on, off, c) for c, spans in drawn[stem]['events'].items() for on, off in spans)
        assert drawn_events == sorted((e.onset, e.offset, e.event_label) for e in expected)
        assert len(expected) > 0
        for c in config.HARD_CLASSES:
            assert np.array_equal(drawn[stem]['scores'][c], scores[c].to_numpy())


def test_reference_is_gt_dev_and_soft_labels_are_the_feature_targets(workdir):
    wd = workdir['workdir']
    gt = pd.read_csv(wd / config.METADATA_DIR / config.GT_FILE, sep='\t')
    for stem in STEMS[:2]:
        data = picture_data(wd, stem)
        rows = gt[gt.filename == f'{stem}.wav']
        drawn = sorted((on, off, c) for c, spans in data['reference'].items() for on, off in spans)
        assert drawn == sorted(zip(rows.onset, rows.offset, rows.event_label))
        for c in config.HARD_CLASSES:
            assert np.array_equal(data['soft'][c], workdir['targets'][stem][:, config.CLASSES.index(c)])
        assert np.allclose(data['edges'], np.arange(N_FRAMES + 1) * config.FRAME_SECONDS)


def test_title_metrics_are_evaluate_scores_of_the_file_alone(workdir):
    wd = workdir['workdir']
    for stem in (STEMS[0], ZERO):
        metrics = evaluate.evaluate_scores(wd / config.RUNS_DIR / 'run0' / 'scores', wd, file_stems=[stem])
        data = picture_data(wd, stem)
        assert data['metrics']['F1'] == pytest.approx(metrics['F1_m'], nan_ok=True)
        assert data['metrics']['ER'] == pytest.approx(metrics['ER_m'])


def test_all_classes_gives_one_row_per_class_with_scores_only_for_the_evaluated(workdir, tmp_path):
    data = picture_data(workdir['workdir'], STEMS[0], all_classes=True)
    assert data['classes'] == config.CLASSES
    assert data['scored'] == [c in config.HARD_CLASSES for c in config.CLASSES]
    assert set(data['soft']) == set(config.CLASSES)
    plot_results.draw_detection_picture(data, tmp_path / 'all.png')
    assert_valid_png(tmp_path / 'all.png', n_rows=len(config.CLASSES))


def test_soft_labels_from_the_annotation_files_equal_the_features(workdir):
    for stem in STEMS:
        from_annotation = plot_results.load_soft_targets(stem, N_FRAMES, data_root=workdir['data_root'])
        assert np.array_equal(from_annotation, workdir['targets'][stem])


def test_infer_output_draws_without_reference(workdir, tmp_path):
    infer_out = tmp_path / 'infer'
    shutil.copytree(workdir['workdir'] / config.RUNS_DIR / 'run1' / 'scores', infer_out / 'scores')
    assert plot_results.main(['--infer-out', str(infer_out), '--files', STEMS[1]]) == 0
    assert [p.name for p in (infer_out / plot_results.PICTURES_DIR).iterdir()] == [f'{STEMS[1]}.png']
    assert_valid_png(infer_out / plot_results.PICTURES_DIR / f'{STEMS[1]}.png')
    data = plot_results.detection_picture_data(STEMS[1], score_io.read_score_files(infer_out / 'scores')[STEMS[1]])
    assert data['reference'] is None and data['metrics'] is None and data['soft'] is None


def test_per_class_data_has_the_hard_classes_and_gt_dev_seconds(workdir):
    wd = workdir['workdir']
    data = plot_results.per_class_data(wd)
    assert data['classes'] == config.HARD_CLASSES
    assert data['runs'] == ['run0', 'run1']
    gt = pd.read_csv(wd / config.METADATA_DIR / config.GT_FILE, sep='\t')
    totals = (gt.offset - gt.onset).groupby(gt.event_label).sum()
    assert data['reference_seconds'] == pytest.approx({c: float(totals.get(c, 0.0)) for c in config.HARD_CLASSES})
    for r in (0, 1):
        metrics = json.loads((wd / config.RUNS_DIR / f'run{r}' / 'metrics.json').read_text())
        for c in config.HARD_CLASSES:
            assert data['f1'][c][r] == pytest.approx(metrics['class_wise'][c]['F'] or 0.0)
            assert data['f1_thop'][c][r] == pytest.approx(metrics['class_wise'][c]['F1_thop'] or 0.0)
            assert data['thresholds'][c][r] == metrics['thresholds'][c]


def test_per_class_bars_are_scored_at_the_threshold_they_name(workdir, tmp_path):
    wd = workdir['workdir']
    saved = json.loads((wd / config.RUNS_DIR / 'run0' / 'metrics.json').read_text())    # scored at 0.5
    with experiment.for_command(['--set', 'THRESHOLD=0.3']):
        expected = evaluate.evaluate_scores(wd / config.RUNS_DIR / 'run0' / 'scores', wd)
        data = plot_results.per_class_data(wd)
        plot_results.draw_per_class_picture(data, tmp_path / 'per_class.png')
    for c in config.HARD_CLASSES:
        assert data['f1'][c][0] == pytest.approx(expected['class_wise'][c]['F'] or 0.0)
    assert [data['f1'][c][0] for c in config.HARD_CLASSES] != pytest.approx(
        [saved['class_wise'][c]['F'] or 0.0 for c in config.HARD_CLASSES])
    assert_valid_png(tmp_path / 'per_class.png')


def test_per_class_reference_seconds_of_a_partial_run_count_only_its_files(workdir, tmp_path):
    wd, part = tmp_path / 'work', STEMS[:2]
    shutil.copytree(workdir['workdir'] / config.METADATA_DIR, wd / config.METADATA_DIR)
    shutil.copytree(workdir['workdir'] / config.FEATURES_DIR, wd / config.FEATURES_DIR)
    scores_dir = wd / config.RUNS_DIR / 'run0' / 'scores'
    scores_dir.mkdir(parents=True)
    for stem in part:
        shutil.copy(workdir['workdir'] / config.RUNS_DIR / 'run1' / 'scores' / f'{stem}.tsv', scores_dir)
    write_run(scores_dir.parent, part)
    utils.write_json_atomic(scores_dir.parent / 'metrics.json', evaluate.evaluate_scores(scores_dir, wd))
    data = plot_results.per_class_data(wd)
    gt = pd.read_csv(wd / config.METADATA_DIR / config.GT_FILE, sep='\t')
    gt = gt[gt.filename.isin([f'{s}.wav' for s in part])]
    totals = (gt.offset - gt.onset).groupby(gt.event_label).sum()
    assert data['reference_seconds'] == pytest.approx({c: float(totals.get(c, 0.0)) for c in config.HARD_CLASSES})
    assert data['n_files'] == [2] and data['n_files_total'] == len(STEMS)


def test_a_file_without_score_file_is_an_error_naming_it(workdir, tmp_path, capsys):
    args = ['--workdir', str(workdir['workdir']), '--files', 'grocery_store_00', '--out', str(tmp_path)]
    assert plot_results.main(args) == 2
    err = capsys.readouterr().err
    assert 'grocery_store_00' in err and 'no score file' in err
    assert not list(tmp_path.iterdir())


def test_a_workdir_without_runs_is_an_error_saying_what_to_run(tmp_path, capsys):
    assert plot_results.main(['--workdir', str(tmp_path), '--only', 'per-class']) == 2
    assert 'task4b.py' in capsys.readouterr().err
