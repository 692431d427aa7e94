"""Evaluation of the DCASE2023 Task 4B baseline (SPEC 6): post-processing, the challenge metrics, the results table.

    python evaluate.py --workdir DIR                      # re-score every DIR/runs/run*/scores -> DIR/results.json, .md
    python evaluate.py --workdir DIR --scores DIR/runs/run0/scores   # one folder -> DIR/runs/run0/evaluation.json, .md
    python evaluate.py --workdir DIR --json OUT.json       # write the JSON (and OUT.md) elsewhere
    python evaluate.py --workdir DIR --concatenate         # ER_m, F1_m, F1_M on one timeline per fold (reference code)

Inputs: score files `<stem>.tsv` in sed_scores_eval's format (onset, offset, one column per hard class, rows of
config.FRAME_SECONDS), written by task4b.py or infer.py with `write_score_file`; the ground truth
`<workdir>/metadata/gt_dev.csv` and durations `<workdir>/metadata/development_metadata.csv` (extract_features.py).

Metrics (over the files that have scores; the report says how many of the ground truth's files that is):
- ER_m, F1_m: sed_eval segment-based (1 s segments), micro over the 11 hard classes; every file is evaluated on
  its own timeline of its duration (config.CONCATENATE_FILES = True or --concatenate: the frame scores of a fold's
  test files, in its list order, concatenated into one timeline before post-processing, as the reference code did;
  the reference frames are each file's gt events put back on its 0.2 s grid);
- F1_M: sed_eval class-wise F averaged over the 11 hard classes, an undefined F counted as 0;
- F1_thop: sed_scores_eval segment-based best F-score, each class at its own optimal threshold, macro average
  (always per file);
- pAUC: sed_scores_eval segment-based partial AUROC up to config.PAUC_MAX_FPR, divided by it (0..1, as DCASE
  2024's mpAUC for MAESTRO), macro average.
A class with no defined value (no reference and no system segment; for F1_thop and pAUC: no reference event among
the scored files) counts 0 in the macro averages. F-scores in percent, ER and pAUC as fractions.
"""
import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # dcase_util imports pkg_resources
import dcase_util  # noqa: E402
import sed_eval  # noqa: E402
import sed_scores_eval  # noqa: E402
from sed_scores_eval.base_modules.scores import create_score_dataframe, validate_score_dataframe  # noqa: E402

import config  # noqa: E402
import utils  # noqa: E402
from utils import DataError  # noqa: E402

EXTRACT_HINT = 'run: python extract_features.py --data-root DIR --workdir DIR'
TRAIN_HINT = 'run: python task4b.py --workdir DIR'


# -----------------------------------------------------------------------------
# Post-processing: frame scores -> event lists

def seconds_floor(frame_index):
    """floor(frame_index x FRAME_SECONDS) from integers: 15 x 0.2 in floats is 3.0000000000000004."""
    return float(int(frame_index) * config.HOP_LENGTH // config.SAMPLE_RATE)


def find_contiguous_regions(active):
    """(frames,) bool -> (n, 2) int array of runs [i, j) of True, a run reaching the last frame included."""
    padded = np.concatenate(([0], np.asarray(active, dtype=np.int8), [0]))
    changes = np.flatnonzero(np.diff(padded))    # starts (0 -> 1) and ends (1 -> 0), alternating
    return changes.reshape(-1, 2)


def post_process_events(frame_scores, class_labels, filename):
    """Frame scores (frames, len(class_labels)) -> dcase_util MetaDataContainer of events (SPEC 6).

    Per class: frames with score > config.THRESHOLD; a run [i, j) -> event [floor(i x 0.2), floor(j x 0.2)) in
    whole seconds; then events of a class closer than config.MERGE_GAP are merged and events shorter than
    config.MIN_EVENT_LENGTH dropped (a run of 1-4 frames inside one second floors to a zero-length event).
    """
    frame_scores = np.asarray(frame_scores)
    if frame_scores.ndim != 2 or frame_scores.shape[1] != len(class_labels):
        raise ValueError(f'{filename}: frame scores of shape {frame_scores.shape}, expected (frames, {len(class_labels)})')
    # filename None must not reach dcase_util: process_events looks files up by str(filename), 'None', finds no
    # event of 'None' and silently returns an empty list.
    file_field = {} if filename is None else {'filename': str(filename)}
    items = []
    for c, label in enumerate(class_labels):
        for i, j in find_contiguous_regions(frame_scores[:, c] > config.THRESHOLD):
            items.append(dcase_util.containers.MetaDataItem({
                **file_field, 'onset': seconds_floor(i), 'offset': seconds_floor(j), 'event_label': label}))
    events = dcase_util.containers.MetaDataContainer(items)
    # Two calls, merge first: in one call dcase_util drops short events BEFORE merging, the reverse of SPEC 6 and
    # of the reference code. (dcase_util merges when gap <= minimum_event_gap and keeps length >= minimum.)
    events = events.process_events(minimum_event_gap=config.MERGE_GAP)
    events = events.process_events(minimum_event_length=config.MIN_EVENT_LENGTH)
    order = {label: k for k, label in enumerate(class_labels)}
    return dcase_util.containers.MetaDataContainer(
        sorted(events, key=lambda e: (e.onset, order[e.event_label], e.offset)))


def events_to_frames(events, n_frames, class_labels=None):
    """Whole-second events [(onset, offset, label)] -> (n_frames, classes) 0/1 frames (the inverse of the floor
    for events on whole seconds: [a, b) -> frames [a / 0.2, b / 0.2), cut at n_frames)."""
    class_labels = class_labels or config.HARD_CLASSES
    frames = np.zeros((n_frames, len(class_labels)), dtype=np.float32)
    for onset, offset, label in events:
        start = math.ceil(round(onset / config.FRAME_SECONDS, 6))
        stop = math.ceil(round(offset / config.FRAME_SECONDS, 6))
        frames[start:stop, class_labels.index(label)] = 1.0
    return frames


# -----------------------------------------------------------------------------
# Files: ground truth, durations, score files

def _read_tsv_rows(path, columns):
    """Rows of a tab-separated file with the header `columns` -> list of (line number, fields)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'{path}: not found; {EXTRACT_HINT}')
    lines = path.read_text().splitlines()
    header = lines[0].split('\t') if lines else []
    if header != columns:
        raise DataError(f'{path}, line 1: expected the tab-separated header {"<TAB>".join(columns)}, found {lines[:1]}')
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split('\t')
        if len(fields) != len(columns):
            raise DataError(f'{path}, line {number}: expected {len(columns)} tab-separated fields, found {len(fields)}')
        rows.append((number, fields))
    return rows


def stem_of(filename):
    """`cafe_restaurant_07.wav`, `cafe_restaurant/cafe_restaurant_07` -> `cafe_restaurant_07`."""
    name = utils.file_stem(filename.strip())
    return name[:-len('.wav')] if name.endswith('.wav') else name


def read_ground_truth(path):
    """gt_dev.csv -> {stem: [(onset, offset, label), ...]} sorted, with touching or overlapping rows of a class
    merged into one event (the original baseline shipped one row per second; sed_scores_eval rejects those as
    connected events). Files without events do not appear (the durations file lists every file)."""
    per_class = {}
    for number, (filename, onset, offset, label) in _read_tsv_rows(path, ['filename', 'onset', 'offset', 'event_label']):
        try:
            onset, offset = float(onset), float(offset)
        except ValueError:
            raise DataError(f'{path}, line {number}: onset/offset not numeric: {onset!r}, {offset!r}') from None
        if label not in config.HARD_CLASSES:
            raise DataError(f'{path}, line {number}: unknown label {label!r}; expected one of config.HARD_CLASSES')
        if not (0 <= onset < offset):
            raise DataError(f'{path}, line {number}: expected 0 <= onset < offset, found {onset}, {offset}')
        per_class.setdefault(stem_of(filename), {}).setdefault(label, []).append((onset, offset))
    ground_truth = {}
    for stem, classes in per_class.items():
        events = []
        for label, spans in classes.items():
            spans.sort()
            merged = [list(spans[0])]
            for onset, offset in spans[1:]:
                if onset <= merged[-1][1]:          # touching or overlapping: one event
                    merged[-1][1] = max(merged[-1][1], offset)
                else:
                    merged.append([onset, offset])
            events += [(onset, offset, label) for onset, offset in merged]
        ground_truth[stem] = sorted(events, key=lambda e: (e[0], config.HARD_CLASSES.index(e[2]), e[1]))
    return ground_truth


def read_durations(path):
    """development_metadata.csv -> {stem: duration in seconds}."""
    durations = {}
    for number, (filename, duration) in _read_tsv_rows(path, ['filename', 'duration']):
        try:
            value = float(duration)
        except ValueError:
            value = float('nan')
        if not value > 0:
            raise DataError(f'{path}, line {number}: duration {duration!r} is not a positive number')
        durations[stem_of(filename)] = value
    return durations


def frame_timestamps(n_frames):
    """Frame boundaries (n_frames + 1,) in seconds, from integers: 3 x 8820 / 44100 is exactly the float 0.6."""
    return np.arange(n_frames + 1) * config.HOP_LENGTH / config.SAMPLE_RATE


def write_score_file(path, frame_scores_hard):
    """Frame scores (frames, 11 hard classes) -> sed_scores_eval TSV (onset, offset, HARD_CLASSES), atomically."""
    frame_scores_hard = np.asarray(frame_scores_hard, dtype=np.float64)
    if frame_scores_hard.ndim != 2 or frame_scores_hard.shape[1] != len(config.HARD_CLASSES):
        raise ValueError(f'{path}: scores of shape {frame_scores_hard.shape}, expected (frames, {len(config.HARD_CLASSES)})')
    df = create_score_dataframe(frame_scores_hard, frame_timestamps(len(frame_scores_hard)), config.HARD_CLASSES)
    utils.atomic_write(path, lambda tmp: sed_scores_eval.io.write_sed_scores(df, tmp))


def read_score_files(scores_dir, ground_truth=None):
    """Score files `<stem>.tsv` of a folder -> {stem: DataFrame (onset, offset, HARD_CLASSES)}, validated.

    ground_truth: a dict whose keys are every known file (stem -> events, [] for files without events); a score
    file of another stem is an error. Missing or extra class columns, non-increasing timestamps, rows that are
    not config.FRAME_SECONDS from 0, NaN scores: DataError naming the file.
    """
    scores_dir = Path(scores_dir)
    paths = sorted(scores_dir.glob('*.tsv')) if scores_dir.is_dir() else []
    if not paths:
        raise DataError(f'{scores_dir}: no score files (<stem>.tsv); {TRAIN_HINT}')
    scores = {}
    for path in paths:
        # read as sed_scores_eval's reader does (pandas, tab-separated), with our checks before its validation:
        # it accepts decreasing timestamps and NaN, and says neither which file nor which row
        try:
            df = pd.read_csv(path, sep='\t')
        except Exception as error:      # pandas raises several kinds for a broken file
            raise DataError(f'{path}: not a tab-separated score file ({error})') from None
        if list(df.columns[:2]) != ['onset', 'offset']:
            raise DataError(f'{path}: expected the columns onset, offset, then one per class; found {list(df.columns[:3])}')
        classes = list(df.columns[2:])
        missing = [c for c in config.HARD_CLASSES if c not in classes]
        extra = [c for c in classes if c not in config.HARD_CLASSES]
        if missing or extra:
            raise DataError(f'{path}: class columns differ from config.HARD_CLASSES: missing {missing}, extra {extra}')
        if df.empty:
            raise DataError(f'{path}: no frames')
        df = df[['onset', 'offset'] + config.HARD_CLASSES]
        if not all(np.issubdtype(t, np.number) for t in df.dtypes):
            raise DataError(f'{path}: non-numeric values in columns {[c for c, t in df.dtypes.items() if not np.issubdtype(t, np.number)]}')
        nan = np.isnan(df.to_numpy())
        if nan.any():
            row, col = np.argwhere(nan)[0]
            what = 'timestamp' if col < 2 else 'score'
            raise DataError(f'{path}: NaN {what} at data row {row + 1}, column {df.columns[col]!r}')
        onsets, offsets = df['onset'].to_numpy(), df['offset'].to_numpy()
        timestamps = np.concatenate((onsets, offsets[-1:]))
        bad = np.flatnonzero((offsets <= onsets) | np.concatenate((onsets[1:] < offsets[:-1], [False])))
        if len(bad):
            row = int(bad[0])
            raise DataError(f'{path}: non-increasing timestamps at data row {row + 1} '
                            f'(onset {onsets[row]}, offset {offsets[row]})')
        if not np.allclose(timestamps, frame_timestamps(len(df)), atol=1e-4):
            raise DataError(f'{path}: expected rows of {config.FRAME_SECONDS} s starting at 0 '
                            f'(config.HOP_LENGTH / config.SAMPLE_RATE), found timestamps {timestamps[:3]}...')
        try:
            validate_score_dataframe(df, event_classes=config.HARD_CLASSES)
        except (ValueError, AssertionError) as error:
            raise DataError(f'{path}: not a sed_scores_eval score file ({error})') from None
        stem = path.stem
        if ground_truth is not None and stem not in ground_truth:
            raise DataError(f'{path}: file id {stem!r} is not in the ground truth '
                            f'({config.METADATA_DIR}/{config.DURATIONS_FILE}): scores of another data set?')
        scores[stem] = df.reset_index(drop=True)
    return scores


# -----------------------------------------------------------------------------
# Metrics

def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _timelines(stems, scores, ground_truth, durations, concatenate, folds_dir):
    """(name, reference events, estimated events, evaluated length s) per timeline sed_eval sees."""
    if not concatenate:
        for stem in stems:
            reference = dcase_util.containers.MetaDataContainer([
                {'filename': stem, 'onset': onset, 'offset': offset, 'event_label': label}
                for onset, offset, label in ground_truth[stem]])
            estimated = post_process_events(scores[stem][config.HARD_CLASSES].to_numpy(), config.HARD_CLASSES, stem)
            # the timeline is the file's duration; never shorter than an event (sed_eval would cut it off)
            length = max(durations[stem], reference.max_offset, estimated.max_offset)
            yield stem, reference, estimated, length
        return
    # The reference code: a fold's test files, in its list order, concatenated frame by frame (scores and
    # reference frames), then post-processed as one file. Each file's reference frames are its whole-second
    # gt events put back on its frame grid.
    groups, seen = [], set()
    for fold in range(1, config.N_FOLDS + 1):
        try:
            test_ids = utils.read_fold(fold, folds_dir)['test']
        except (FileNotFoundError, ValueError) as error:
            raise DataError(f'{error}; config.CONCATENATE_FILES needs the fold lists (run: python make_folds.py)') from None
        group = [utils.file_stem(i) for i in test_ids if utils.file_stem(i) in stems]
        groups.append((f'fold{fold}', group))
        seen.update(group)
    groups += [(stem, [stem]) for stem in stems if stem not in seen]   # files of no test fold: alone
    for name, group in groups:
        if not group:
            continue
        score_frames = [scores[s][config.HARD_CLASSES].to_numpy() for s in group]
        reference_frames = [events_to_frames(ground_truth[s], len(f)) for s, f in zip(group, score_frames)]
        reference = post_process_events(np.concatenate(reference_frames), config.HARD_CLASSES, name)
        estimated = post_process_events(np.concatenate(score_frames), config.HARD_CLASSES, name)
        length = max(sum(len(f) for f in score_frames) * config.FRAME_SECONDS, reference.max_offset, estimated.max_offset)
        yield name, reference, estimated, length


def folds_dir_of_features(workdir):
    """The fold lists the features (so the runs) of workdir were made with (its manifest), else config.FOLDS_DIR."""
    try:
        manifest = json.loads((Path(workdir) / config.FEATURES_DIR / 'manifest.json').read_text())
        return Path(manifest['folds_dir'])
    except (OSError, ValueError, KeyError, TypeError):
        return config.FOLDS_DIR


def evaluate_scores(scores_dir, workdir=config.WORKDIR, file_stems=None, concatenate=None, folds_dir=None):
    """Every metric of SPEC 6 for the score files of a folder -> dict (F1 in percent, ER and pAUC fractions).

    file_stems: evaluate only these files (each must have a score file). concatenate: default
    config.CONCATENATE_FILES. folds_dir: fold lists for the concatenated form (default: those recorded in
    <workdir>/features/manifest.json, else config.FOLDS_DIR).
    """
    concatenate = config.CONCATENATE_FILES if concatenate is None else concatenate
    if concatenate and folds_dir is None:
        folds_dir = folds_dir_of_features(workdir)
    metadata = Path(workdir) / config.METADATA_DIR
    durations = read_durations(metadata / config.DURATIONS_FILE)
    events = read_ground_truth(metadata / config.GT_FILE)
    unknown = sorted(set(events) - set(durations))
    if unknown:
        raise DataError(f'{metadata / config.GT_FILE}: files {unknown[:3]} are not in {config.DURATIONS_FILE}; {EXTRACT_HINT}')
    ground_truth = {stem: events.get(stem, []) for stem in durations}
    scores = read_score_files(scores_dir, ground_truth)
    if file_stems is not None:
        lacking = [s for s in file_stems if s not in scores]
        if lacking:
            raise DataError(f'{scores_dir}: no score files for {lacking[:3]} ({len(lacking)} files)')
        scores = {s: scores[s] for s in file_stems}
    stems = sorted(scores)

    # sed_eval: ER_m, F1_m, class-wise F and ER
    metrics = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=config.HARD_CLASSES, time_resolution=config.SEGMENT_LENGTH)
    for _, reference, estimated, length in _timelines(stems, scores, ground_truth, durations, concatenate, folds_dir):
        metrics.evaluate(reference_event_list=reference, estimated_event_list=estimated, evaluated_length_seconds=length)
    class_f = {c: metrics.class_wise_f_measure(c)['f_measure'] for c in config.HARD_CLASSES}
    class_er = {c: metrics.class_wise_error_rate(c)['error_rate'] for c in config.HARD_CLASSES}

    # sed_scores_eval: F1_thop and pAUC. It asserts that every class has a reference event; a class without any
    # among the scored files (a partial run, a small data set) has no F or AUROC: counted as 0, as in F1_M.
    subset_gt = {s: [list(e) for e in ground_truth[s]] for s in stems}
    present = [c for c in config.HARD_CLASSES if any(e[2] == c for s in stems for e in ground_truth[s])]
    f_thop, thresholds, pauc = {}, {}, {}
    if present:
        subset_scores = {s: scores[s][['onset', 'offset'] + present] for s in stems}
        subset_durations = {s: durations[s] for s in stems}
        f_best, _, _, thr_best, _ = sed_scores_eval.segment_based.best_fscore(
            subset_scores, subset_gt, subset_durations, segment_length=config.SEGMENT_LENGTH)
        auroc, _ = sed_scores_eval.segment_based.auroc(
            subset_scores, subset_gt, subset_durations, segment_length=config.SEGMENT_LENGTH,
            max_fpr=config.PAUC_MAX_FPR)
        f_thop = {c: f_best[c] for c in present}
        thresholds = {c: thr_best[c] for c in present}
        pauc = {c: auroc[c] for c in present}

    def macro(values):                   # mean over the 11 classes, an undefined value counted as 0
        return float(np.mean([_finite_or_none(values.get(c, float('nan'))) or 0.0 for c in config.HARD_CLASSES]))

    n_total = len(durations)
    mode = 'one timeline per fold (files concatenated)' if concatenate else 'each file on its own timeline'
    report = f'Segment-based metrics over {len(stems)} of {n_total} files, {mode}\n' + str(metrics)
    undefined = [c for c in config.HARD_CLASSES if _finite_or_none(class_f[c]) is None]
    if undefined:   # sed_eval's class-wise average (nanmean) skips them; F1_M counts them as 0
        report += (f'  No F for {undefined} (no reference and no system segment): F1_M counts them as 0, '
                   f'F1_M = {100 * macro(class_f):.2f}% (the class-wise average above leaves them out)\n')
    class_wise = {c: {'F': None if _finite_or_none(class_f[c]) is None else 100 * class_f[c],
                      'ER': _finite_or_none(class_er[c]),
                      'F1_thop': None if c not in f_thop else _finite_or_none(100 * f_thop[c]),
                      'pAUC': None if c not in pauc else _finite_or_none(pauc[c])}
                  for c in config.HARD_CLASSES}
    return {
        'ER_m': float(metrics.overall_error_rate()['error_rate']),
        'F1_m': 100 * float(metrics.overall_f_measure()['f_measure']),
        'F1_M': 100 * macro(class_f),
        'F1_thop': 100 * macro(f_thop),
        'pAUC': macro(pauc),
        'class_wise': class_wise,
        'thresholds': {c: _finite_or_none(thresholds[c]) if c in thresholds else None for c in config.HARD_CLASSES},
        'n_files': len(stems),
        'n_files_total': n_total,
        'files': stems,
        'concatenated': bool(concatenate),
        'report': report,
    }


HEADLINE = ['ER_m', 'F1_m', 'F1_M', 'F1_thop', 'pAUC']


def format_metric(name, value):
    return f'{value:.3f}' if name in ('ER_m', 'pAUC') else f'{value:.2f}%'


def format_headline(metrics):
    """One line: `ER_m 0.487  F1_m 70.34%  F1_M 35.83%  F1_thop 42.87%  pAUC 0.712  (49 of 49 files)`."""
    values = '  '.join(f'{k} {format_metric(k, metrics[k])}' for k in HEADLINE)
    return f"{values}  ({metrics['n_files']} of {metrics['n_files_total']} files)"


def format_thresholds(metrics):
    return 'F1_thop thresholds: ' + ', '.join(
        f'{c} {"-" if t is None else f"{t:.3f}"}' for c, t in metrics['thresholds'].items())


# -----------------------------------------------------------------------------
# Runs and the results table

def summarize_runs(run_metrics):
    """Per-run metric dicts -> {'n_runs', 'mean', 'std', 'runs'}: mean and standard deviation over runs of the
    headline metrics (np.std, ddof=0: nothing says which the published table used), every run kept (its
    class-wise F, thresholds, files; not its long report)."""
    if not run_metrics:
        raise DataError(f'no runs to summarise; {TRAIN_HINT}')
    summary = {'n_runs': len(run_metrics), 'mean': {}, 'std': {}}
    for key in HEADLINE:
        values = np.array([m[key] for m in run_metrics], dtype=float)
        summary['mean'][key] = float(values.mean())
        summary['std'][key] = float(values.std(ddof=0))
    summary['n_files'] = sorted({m['n_files'] for m in run_metrics})
    summary['n_files_total'] = max(m['n_files_total'] for m in run_metrics)
    summary['concatenated'] = any(m.get('concatenated', False) for m in run_metrics)
    summary['runs'] = [{k: v for k, v in m.items() if k != 'report'} for m in run_metrics]
    return summary


def results_table_markdown(summary):
    """The results table in the layout of the published one (SPEC 6), with the published baseline row."""
    def cell(key, mean, std):                   # `0.487 (+/-0.009)`, `70.34% (+/-0.766)` as SPEC 6
        return f'{format_metric(key, mean)} (+/-{std:.3f})'
    n_files = '/'.join(str(n) for n in summary['n_files'])
    runs = summary['n_runs']
    label = f"This baseline ({runs} run{'s' if runs != 1 else ''}, {n_files} of {summary['n_files_total']} files)"
    if summary.get('concatenated'):
        label += ', folds concatenated'
    lines = ['| System | ' + ' | '.join(HEADLINE) + ' |', '| --- |' + ' --- |' * len(HEADLINE),
             f'| {label} | ' + ' | '.join(cell(k, summary['mean'][k], summary['std'][k]) for k in HEADLINE) + ' |']
    published = [cell(k, *config.PUBLISHED[k]) if k in config.PUBLISHED else '-' for k in HEADLINE]
    lines.append('| Published baseline (10 runs, 49 files) | ' + ' | '.join(published) + ' |')
    return '\n'.join(lines) + '\n'


def write_results(json_path, summary):
    """summary -> JSON at json_path and the Markdown table beside it (same name, .md), both atomically."""
    json_path = Path(json_path)
    utils.write_json_atomic(json_path, summary)
    utils.write_text_atomic(json_path.with_suffix('.md'), results_table_markdown(summary))


def find_run_score_dirs(workdir):
    """`<workdir>/runs/run*/scores` folders that hold score files, in run order."""
    def run_number(path):
        digits = path.parent.name[len('run'):]
        return (int(digits) if digits.isdigit() else math.inf, path.parent.name)
    dirs = [p for p in (Path(workdir) / config.RUNS_DIR).glob('run*/scores') if any(p.glob('*.tsv'))]
    return sorted(dirs, key=run_number)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR,
                        help='holds metadata/ and runs/ (default: the repository)')
    parser.add_argument('--scores', type=Path, default=None,
                        help='evaluate this folder of score files alone (default: every <workdir>/runs/run*/scores)')
    parser.add_argument('--json', type=Path, default=None,
                        help='where to write the metrics (default: <workdir>/results.json, or with --scores '
                             '<scores>/../evaluation.json); the Markdown table goes beside it (.md)')
    parser.add_argument('--concatenate', action=argparse.BooleanOptionalAction, default=config.CONCATENATE_FILES,
                        help='one timeline per fold, as the reference code (default: config.CONCATENATE_FILES)')
    args = parser.parse_args(argv)
    try:
        if args.scores is not None:
            score_dirs = [args.scores]
            json_path = args.json or args.scores.resolve().parent / 'evaluation.json'
        else:
            score_dirs = find_run_score_dirs(args.workdir)
            if not score_dirs:
                raise DataError(f'{args.workdir / config.RUNS_DIR}: no run*/scores folder with score files; {TRAIN_HINT}')
            json_path = args.json or args.workdir / 'results.json'
        run_metrics = []
        for scores_dir in score_dirs:
            metrics = evaluate_scores(scores_dir, args.workdir, concatenate=args.concatenate)
            metrics['scores_dir'] = str(scores_dir)
            print(f'== {scores_dir}')
            print(metrics['report'])
            print(format_thresholds(metrics))
            print(format_headline(metrics))
            print()
            run_metrics.append(metrics)
        summary = summarize_runs(run_metrics)
        table = results_table_markdown(summary)
        print(table)
        write_results(json_path, summary)
        print(f'wrote {json_path} and {Path(json_path).with_suffix(".md")}')
    except DataError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
