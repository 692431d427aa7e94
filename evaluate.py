"""Evaluation of the DCASE2023 Task 4B baseline: the challenge metrics of score files, the results table.

    python evaluate.py --workdir DIR                      # re-score every DIR/runs/run*/scores -> DIR/results.json, .md
    python evaluate.py --workdir DIR --scores DIR/runs/run0/scores   # one folder -> DIR/runs/run0/evaluation.json, .md
    python evaluate.py --workdir DIR --json OUT.json       # write the JSON (and OUT.md) elsewhere
    python evaluate.py --workdir DIR --timeline file       # ER_m, F1_m, F1_M with each file on its own timeline
    python evaluate.py --workdir DIR --time-decimals 6     # F1_thop with sed_scores_eval's default rounding
    python evaluate.py --workdir DIR --tune --ensemble     # rows more: thresholds and median filters chosen on
                                                           # validation; the runs' scores averaged, one system
    python evaluate.py --workdir DIR --set MEDIAN_FILTER=5 # every class's scores median-filtered over 5 frames

Inputs: score files `<stem>.tsv` in sed_scores_eval's format (onset, offset, one column per evaluated class,
rows of config.FRAME_SECONDS), written by task4b.py or infer.py with `write_score_file`; the ground truth
`<workdir>/metadata/gt_dev.csv`, the durations `<workdir>/metadata/development_metadata.csv` and, for the
per-fold timeline, the soft targets in `<workdir>/features/files/` (all from extract_features.py). Scores and
hard labels become events by post_processing.py.

Metrics (over the files that have scores; the report says how many of the ground truth's files that is), as
docs/method.md, Evaluation, describes them:
- ER_m, F1_m: sed_eval segment-based (1 s segments), micro over the 11 evaluated classes; by default each fold's
  test files concatenated in its list order into one timeline (scores and hard labels), as the challenge did;
  `--timeline file`: each file on its own timeline of its duration, against gt_dev.csv; F1_m is 0 when the system
  detects no segment at all (sed_eval leaves it undefined);
- F1_M: sed_eval class-wise F averaged over the 11 classes, an undefined F counted as 0;
- F1_thop: sed_scores_eval segment-based best F-score, each class at its own optimal threshold, macro average
  (per file, time_decimals=30 as the challenge called it), with each class's precision, recall and threshold;
- pAUC: sed_scores_eval segment-based partial AUROC up to config.PAUC_MAX_FPR, divided by it (0..1, as DCASE
  2024's mpAUC for MAESTRO), macro average.
A class with no defined value (no reference and no system segment; for F1_thop and pAUC: no reference event among
the scored files) counts 0 in the macro averages. F-scores in percent, ER and pAUC as fractions. With a median filter
(config.MEDIAN_FILTER, MEDIAN_FILTER_BY_CLASS; none by default) every metric is of the filtered scores, each file
filtered on its own.

Beside the protocol's row (docs/method.md, Evaluation): --tune chooses, per fold and class, the threshold and median
filter with the best segment F-score (sed_scores_eval's best_fscore, as F1_thop) on the fold's validation files
(`runs/run{r}/validation_scores/fold{k}/`, written by task4b.py), and applies them to the fold's test files: what
F1_thop promises without the test labels. --ensemble averages the runs' frame scores per file and scores them as one
system. Neither writes a run's metrics.json; the chosen values go into the JSON (each row's 'scoring': THRESHOLD and
MEDIAN_FILTER per fold and class) and the table. A threshold below every validation score (the best F detects every
segment) is recorded as null with its 'why' and cuts every frame as active.

A run's metrics.json is reused (compare.py, plot_results.py) only while scoring the run now would give it: the same
scoring (settings, SCORING_CODE, the versions of SCORING_LIBRARIES), the run's record, and the same finished score
files, by the hash of their names and contents; otherwise the run is scored again. Every JSON written is strict (no
NaN or Infinity).

Which runs are combined, which of their files are finished and the protocol the table names are runs.py's
answers; this file computes the metrics and the table.
"""
import argparse
import json
import math
import shlex
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # dcase_util imports pkg_resources
import dcase_util  # noqa: E402
import sed_eval  # noqa: E402
import sed_scores_eval  # noqa: E402
from sed_scores_eval.base_modules.scores import create_score_dataframe, validate_score_dataframe  # noqa: E402

import config  # noqa: E402
import cost  # noqa: E402
import experiment  # noqa: E402
import extract_features  # noqa: E402
import utils  # noqa: E402
from post_processing import (clean_events, events_from_activity, hard_labels, median_filter,  # noqa: E402
                             median_filter_lengths, post_process_events)
from runs import (TRAIN_HINT, check_scores_folder, finished_files, finished_folds,  # noqa: E402
                  missing_validation_scores, protocol_differences, protocol_label, read_protocol, read_settings,
                  scores_sha256, select_runs, validation_files, validation_scores_dir)
from utils import DataError  # noqa: E402

EXTRACT_HINT = 'run: python extract_features.py --data-root DIR --workdir DIR'
# How a metrics file was scored, recorded in it: the settings and the code its numbers depend on besides the scores
SCORING = ('HARD_CLASSES', 'THRESHOLD', 'MEDIAN_FILTER', 'MEDIAN_FILTER_BY_CLASS', 'MERGE_GAP', 'MIN_EVENT_LENGTH',
           'SEGMENT_LENGTH', 'TIMELINE', 'F1_THOP_TIME_DECIMALS', 'PAUC_MAX_FPR')
SCORING_CODE = ('evaluate.py', 'post_processing.py')
# ... and the libraries that compute the metrics: another version of one may give other F1_thop or pAUC
SCORING_LIBRARIES = ('sed_eval', 'sed_scores_eval', 'dcase_util', 'scipy', 'numpy', 'pandas')


# -----------------------------------------------------------------------------
# Files: ground truth, durations, score files

def stem_of(filename):
    """`cafe_restaurant_07.wav`, `cafe_restaurant/cafe_restaurant_07` -> `cafe_restaurant_07`."""
    name = utils.file_stem(filename.strip())
    return name[:-len('.wav')] if name.endswith('.wav') else name


def check_table(path, columns, row_problem):
    """A metadata file checked line by line before sed_scores_eval's reader reads it (which says neither file nor
    line) -> DataError naming the file and line: the file missing, a header other than the tab-separated
    `columns`, a row of another field count, what the library would read otherwise than meant (a line of only
    spaces or tabs, which pandas takes for a row; a file name with a '.' in its stem, cut there), or the
    problem that row_problem(fields) returns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'{path}: not found; {EXTRACT_HINT}')
    lines = path.read_text().splitlines()
    header = lines[0].split('\t') if lines else []
    if header != columns:
        raise DataError(f'{path}, line 1: expected the tab-separated header {"<TAB>".join(columns)}, found {lines[:1]}')
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split('\t')
        if not line.strip():
            problem = 'a line of only spaces or tabs; delete it'
        elif len(fields) != len(columns):
            problem = f'expected {len(columns)} tab-separated fields, found {len(fields)}'
        elif stem_of(fields[0]) != stem_of(fields[0].rsplit('.', 1)[0]):
            problem = f"file name {fields[0]!r}: expected <stem>.wav or a stem without '.'"
        else:
            problem = row_problem(fields)
        if problem:
            raise DataError(f'{path}, line {number}: {problem}')


def ground_truth_row_problem(fields):
    filename, onset, offset, label = fields
    try:
        onset, offset = float(onset), float(offset)
    except ValueError:
        return f'onset/offset not numeric: {onset!r}, {offset!r}'
    if label not in config.HARD_CLASSES:
        return f'unknown label {label!r}; expected one of config.HARD_CLASSES'
    if not (0 <= onset < offset):
        return f'expected 0 <= onset < offset, found {onset}, {offset}'
    return None


def duration_row_problem(fields):
    try:
        value = float(fields[1])
    except ValueError:
        value = float('nan')
    return None if value > 0 else f'duration {fields[1]!r} is not a positive number'


def merge_connected(events):
    """[(onset, offset, label)] -> the same with touching or overlapping events of a class merged into one,
    sorted by onset, class and offset."""
    spans = {}
    for onset, offset, label in events:
        spans.setdefault(label, []).append((onset, offset))
    merged = []
    for label, label_spans in spans.items():
        label_spans.sort()
        runs = [list(label_spans[0])]
        for onset, offset in label_spans[1:]:
            if onset <= runs[-1][1]:          # touching or overlapping: one event
                runs[-1][1] = max(runs[-1][1], offset)
            else:
                runs.append([onset, offset])
        merged += [(onset, offset, label) for onset, offset in runs]
    return sorted(merged, key=lambda e: (e[0], config.HARD_CLASSES.index(e[2]), e[1]))


def read_ground_truth(path):
    """gt_dev.csv -> {stem: [(onset, offset, label), ...]}, checked, then read by sed_scores_eval, with touching
    or overlapping rows of a class merged into one event (the original baseline shipped one row per second;
    sed_scores_eval's metrics reject those as connected events). Files without events do not appear (the
    durations file lists every file)."""
    check_table(path, ['filename', 'onset', 'offset', 'event_label'], ground_truth_row_problem)
    events = {}
    for name, rows in sed_scores_eval.io.read_ground_truth_events(path).items():
        events.setdefault(stem_of(name), []).extend(rows)      # `x.wav` and `scene/x.wav` are one file
    return {stem: merge_connected(rows) for stem, rows in events.items()}


def read_durations(path):
    """development_metadata.csv -> {stem: duration in seconds}, checked, then read by sed_scores_eval."""
    check_table(path, ['filename', 'duration'], duration_row_problem)
    return {stem_of(name): duration for name, duration in sed_scores_eval.io.read_audio_durations(path).items()}


def frame_timestamps(n_frames):
    """Frame boundaries (n_frames + 1,) in seconds, from integers: 3 x 8820 / 44100 is exactly the float 0.6."""
    return np.arange(n_frames + 1) * config.HOP_LENGTH / config.SAMPLE_RATE


def write_score_file(path, frame_scores, classes=None):
    """Frame scores (frames, len(classes)) -> sed_scores_eval TSV (onset, offset, one column per class, default
    config.HARD_CLASSES), atomically."""
    classes = config.HARD_CLASSES if classes is None else classes
    frame_scores = np.asarray(frame_scores, dtype=np.float64)
    if frame_scores.ndim != 2 or frame_scores.shape[1] != len(classes):
        raise ValueError(f'{path}: scores of shape {frame_scores.shape}, expected (frames, {len(classes)})')
    df = create_score_dataframe(frame_scores, frame_timestamps(len(frame_scores)), list(classes))
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

TIMELINE_NAMES = {'fold': 'one timeline per fold (test files concatenated)', 'file': 'each file on its own timeline'}


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def read_reference_frames(workdir, stems):
    """{stem: hard labels (frames, 11) bool} from the float64 soft targets that extract_features.py stored."""
    frames = {}
    for stem in stems:
        path = utils.file_features_path(workdir, stem)
        try:
            with np.load(path) as data:
                frames[stem] = hard_labels(data['targets'])
        except (OSError, KeyError, ValueError) as error:
            raise DataError(f'{path}: no soft targets to build the per-fold reference from ({error}); '
                            f'{EXTRACT_HINT}, or evaluate with --timeline file') from None
    return frames


def fold_test_groups(stems, folds_dir):
    """[(name, stems)] of the timelines of the 'fold' form: each fold's test files in its list order; score
    files of no test fold each alone."""
    groups, seen = [], set()
    for fold in range(1, config.N_FOLDS + 1):
        try:
            test_ids = utils.read_fold(fold, folds_dir)['test']
        except (FileNotFoundError, ValueError) as error:
            raise DataError(f'{error}; the per-fold timeline needs the fold lists the runs were trained on') from None
        group = [utils.file_stem(i) for i in test_ids if utils.file_stem(i) in stems]
        groups.append((f'fold{fold}', group))
        seen.update(group)
    groups += [(stem, [stem]) for stem in stems if stem not in seen]
    return [(name, group) for name, group in groups if group]


def filtered_scores(scores, filter_lengths=None):
    """{stem: score DataFrame} -> the same with each class's frame scores median-filtered, each file on its own
    (post_processing.median_filter; filter_lengths {stem: (11,) frames}, default config's for every file): the
    scores the events are cut from, and what F1_thop and pAUC sweep."""
    filtered = {}
    for stem, df in scores.items():
        lengths = median_filter_lengths(config.HARD_CLASSES) if filter_lengths is None else filter_lengths[stem]
        df = df.copy()
        df[config.HARD_CLASSES] = median_filter(df[config.HARD_CLASSES].to_numpy(), lengths)
        filtered[stem] = df
    return filtered


def timelines(stems, scores, ground_truth, durations, timeline, workdir, folds_dir=None, thresholds=None):
    """(reference events, estimated events, evaluated length s) per timeline sed_eval sees, from scores already
    median-filtered (filtered_scores), each file's frames active above its thresholds ({stem: (11,)}, default
    config.THRESHOLD)."""
    def events(frames, name, stem):              # filtered before, file by file: no second filter here
        return post_process_events(frames, config.HARD_CLASSES, name, None if thresholds is None else
                                   thresholds[stem], filter_lengths=1)
    if timeline == 'file':
        for stem in stems:
            reference = clean_events(dcase_util.containers.MetaDataContainer([
                {'filename': stem, 'onset': onset, 'offset': offset, 'event_label': label}
                for onset, offset, label in ground_truth[stem]]), config.HARD_CLASSES)
            estimated = events(scores[stem][config.HARD_CLASSES].to_numpy(), stem, stem)
            # the timeline is the file's duration; never shorter than an event (sed_eval would cut it off)
            length = max(durations[stem], reference.max_offset, estimated.max_offset)
            yield reference, estimated, length
        return
    if timeline != 'fold':
        raise DataError(f"timeline {timeline!r}: expected 'fold' or 'file' (config.TIMELINE, --timeline)")
    # As the challenge computed it: a fold's test files, in its list order, concatenated frame by frame (the
    # scores, and the hard labels of the soft targets), then post-processed as one recording.
    groups = fold_test_groups(stems, folds_dir or extract_features.read_manifest(workdir, check=False).get(
        'folds_dir', config.FOLDS_DIR))
    reference_frames = read_reference_frames(workdir, stems)
    for name, group in groups:
        score_frames = np.concatenate([scores[s][config.HARD_CLASSES].to_numpy() for s in group])
        hard = np.concatenate([reference_frames[s] for s in group])
        if len(hard) != len(score_frames):
            raise DataError(f'{name}: {len(score_frames)} score frames but {len(hard)} target frames for '
                            f'{group}; scores of other features? {EXTRACT_HINT}')
        reference = events_from_activity(hard, config.HARD_CLASSES, name)
        estimated = events(score_frames, name, group[0])       # a fold's test files share its thresholds
        yield reference, estimated, len(score_frames) * config.FRAME_SECONDS


def segment_metrics(timelines):
    """One sed_eval SegmentBasedMetrics (1 s segments, the 11 classes) accumulating every (reference events,
    estimated events, length in s) of `timelines`."""
    metrics = sed_eval.sound_event.SegmentBasedMetrics(config.HARD_CLASSES, time_resolution=config.SEGMENT_LENGTH)
    for reference, estimated, length in timelines:
        metrics.evaluate(reference_event_list=reference, estimated_event_list=estimated, evaluated_length_seconds=length)
    return metrics


def f1_micro(metrics):
    """F1_m (%) of a sed_eval SegmentBasedMetrics: its overall F, 0 where sed_eval leaves it undefined (no system
    segment at all, so no precision), as F1_M counts an undefined class."""
    return 100 * (_finite_or_none(metrics.overall_f_measure()['f_measure']) or 0.0)


def scoring(timeline=None, time_decimals=None):
    """How metrics computed now are scored (SCORING's values, timeline and time_decimals as evaluate_scores takes
    them, the fingerprints of SCORING_CODE, the versions of SCORING_LIBRARIES), as a metrics file records it."""
    values = {name: getattr(config, name) for name in SCORING}
    values['TIMELINE'] = timeline or config.TIMELINE
    values['F1_THOP_TIME_DECIMALS'] = config.F1_THOP_TIME_DECIMALS if time_decimals is None else time_decimals
    values['code'] = utils.code_record(SCORING_CODE)
    values['versions'] = {name: version(name) for name in SCORING_LIBRARIES}
    return json.loads(json.dumps(values))              # as a metrics file reads back: tuples are lists


def read_references(workdir):
    """The workdir's ground truth -> ({stem: [(onset, offset, label)], [] for a file without events}, {stem:
    duration s}), gt_dev.csv rebuilt first when the event code changed since extraction."""
    extract_features.refresh_ground_truth(workdir)
    metadata = Path(workdir) / config.METADATA_DIR
    durations = read_durations(metadata / config.DURATIONS_FILE)
    events = read_ground_truth(metadata / config.GT_FILE)
    unknown = sorted(set(events) - set(durations))
    if unknown:
        raise DataError(f'{metadata / config.GT_FILE}: files {unknown[:3]} are not in {config.DURATIONS_FILE}; {EXTRACT_HINT}')
    return {stem: events.get(stem, []) for stem in durations}, durations


def reference_events(ground_truth, stems):
    """These files' reference events as sed_scores_eval takes them -> ({stem: [[onset, offset, label]]}, the
    evaluated classes with an event among them: sed_scores_eval asserts one per class it scores)."""
    reference = {s: [list(e) for e in ground_truth[s]] for s in stems}
    labels = {e[2] for events in reference.values() for e in events}
    return reference, [c for c in config.HARD_CLASSES if c in labels]


def evaluate_scores(scores_dir, workdir=None, file_stems=None, timeline=None, folds_dir=None,
                    time_decimals=None, post=None):
    """Every metric for the score files of a folder -> dict (F1 in percent, ER and pAUC fractions).

    scores_dir: a folder of score files, or {stem: score DataFrame} read already (an ensemble's averaged scores).
    file_stems: evaluate only these files (each must have a score file). timeline: 'fold' or 'file' (default
    config.TIMELINE). folds_dir: fold lists of the 'fold' timeline (default: those recorded in
    <workdir>/features/manifest.json, else config.FOLDS_DIR). time_decimals: of F1_thop's best_fscore
    (default config.F1_THOP_TIME_DECIMALS). post: each file's post-processing, {stem: (thresholds (11,), median
    filters (11,) in frames)} (default config's THRESHOLD and median filters for every file).
    """
    timeline = timeline or config.TIMELINE
    time_decimals = config.F1_THOP_TIME_DECIMALS if time_decimals is None else time_decimals
    workdir = config.WORKDIR if workdir is None else workdir
    ground_truth, durations = read_references(workdir)
    scores = scores_dir if isinstance(scores_dir, dict) else read_score_files(scores_dir, ground_truth)
    if file_stems is not None:
        lacking = [s for s in file_stems if s not in scores]
        if lacking:
            where = 'the scores given' if isinstance(scores_dir, dict) else scores_dir
            raise DataError(f'{where}: no score files for {lacking[:3]} ({len(lacking)} files)')
        scores = {s: scores[s] for s in file_stems}
    stems = sorted(scores)
    scores = filtered_scores(scores, None if post is None else {s: post[s][1] for s in stems})
    thresholds = None if post is None else {s: post[s][0] for s in stems}

    metrics = segment_metrics(timelines(stems, scores, ground_truth, durations, timeline, workdir, folds_dir,
                                        thresholds))
    class_f = {c: metrics.class_wise_f_measure(c)['f_measure'] for c in config.HARD_CLASSES}
    class_er = {c: metrics.class_wise_error_rate(c)['error_rate'] for c in config.HARD_CLASSES}

    # sed_scores_eval: F1_thop and pAUC. It asserts that every class has a reference event; a class without any
    # among the scored files (a partial run, a small data set) has no F or AUROC: counted as 0, as in F1_M.
    subset_gt, present = reference_events(ground_truth, stems)
    f_thop, precision, recall, thresholds, pauc = {}, {}, {}, {}, {}
    if present:
        subset_scores = {s: scores[s][['onset', 'offset'] + present] for s in stems}
        subset_durations = {s: durations[s] for s in stems}
        f_thop, precision, recall, thresholds, _ = sed_scores_eval.segment_based.best_fscore(
            subset_scores, subset_gt, subset_durations, segment_length=config.SEGMENT_LENGTH,
            time_decimals=time_decimals)
        auroc, _ = sed_scores_eval.segment_based.auroc(
            subset_scores, subset_gt, subset_durations, segment_length=config.SEGMENT_LENGTH,
            max_fpr=config.PAUC_MAX_FPR)
        pauc = {c: auroc[c] for c in present}

    def macro(values):                   # mean over the 11 classes, an undefined value counted as 0
        return float(np.mean([_finite_or_none(values.get(c, float('nan'))) or 0.0 for c in config.HARD_CLASSES]))

    n_total = len(durations)
    mode = TIMELINE_NAMES[timeline]
    report = f'Segment-based metrics over {len(stems)} of {n_total} files, {mode}\n' + str(metrics)
    if _finite_or_none(metrics.overall_f_measure()['f_measure']) is None:
        report += '  No overall F (no system segment in any file): F1_m counts it as 0\n'
    undefined = [c for c in config.HARD_CLASSES if _finite_or_none(class_f[c]) is None]
    if undefined:   # sed_eval's class-wise average (nanmean) skips them; F1_M counts them as 0
        report += (f'  No F for {undefined} (no reference and no system segment): F1_M counts them as 0, '
                   f'F1_M = {100 * macro(class_f):.2f}% (the class-wise average above leaves them out)\n')

    def percent(values, c):
        return None if c not in values or _finite_or_none(values[c]) is None else 100 * float(values[c])

    class_wise = {c: {'F': percent(class_f, c), 'ER': _finite_or_none(class_er[c]),
                      'F1_thop': percent(f_thop, c), 'P_thop': percent(precision, c), 'R_thop': percent(recall, c),
                      'threshold_thop': _finite_or_none(thresholds[c]) if c in thresholds else None,
                      'pAUC': None if c not in pauc else _finite_or_none(pauc[c])}
                  for c in config.HARD_CLASSES}
    return {
        'ER_m': float(metrics.overall_error_rate()['error_rate']),
        'F1_m': f1_micro(metrics),
        'F1_M': 100 * macro(class_f),
        'F1_thop': 100 * macro(f_thop),
        'pAUC': macro(pauc),
        'class_wise': class_wise,
        'thresholds': {c: _finite_or_none(thresholds[c]) if c in thresholds else None for c in config.HARD_CLASSES},
        'n_files': len(stems),
        'n_files_total': n_total,
        'files': stems,
        'timeline': timeline,
        'F1_thop_time_decimals': time_decimals,
        'scoring': scoring(timeline, time_decimals),
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
# The metrics of runs (runs.py chooses them) and the results table

def summarize_runs(run_metrics):
    """Per-run metric dicts -> {'n_runs', 'mean', 'std', 'runs', 'cost'}: mean and standard deviation over runs of
    the headline metrics (np.std, ddof=0: nothing says which the published table used), every run kept (its
    class-wise F, thresholds, files; not its long report), and the runs' time, energy and model size (cost.py; None
    for score files of no run)."""
    if not run_metrics:
        raise DataError(f'no runs to summarise; {TRAIN_HINT}')
    summary = {'n_runs': len(run_metrics), 'mean': {}, 'std': {}}
    for key in HEADLINE:
        values = np.array([m[key] for m in run_metrics], dtype=float)
        summary['mean'][key] = float(values.mean())
        summary['std'][key] = float(values.std(ddof=0))
    summary['n_files'] = sorted({m['n_files'] for m in run_metrics})
    summary['n_files_total'] = max(m['n_files_total'] for m in run_metrics)
    summary['runs'] = [{k: v for k, v in m.items() if k != 'report'} for m in run_metrics]
    summary['cost'] = cost.over_runs([m.get('cost') for m in run_metrics])
    return summary


def score_run(workdir, run_dir):
    """A run's metrics over the files of its finished folds, scored now, with its seed, record id, the digest of
    the score files scored (runs.scores_sha256) and cost (the time and energy its folds recorded when they trained,
    its model's size)."""
    stems = finished_files(run_dir)
    digest = scores_sha256(run_dir, stems)
    metrics = evaluate_scores(Path(run_dir) / 'scores', workdir, file_stems=stems)
    settings = read_settings(run_dir)
    return {**metrics, 'seed': settings['seed'], 'record_id': settings['record_id'], 'scores_sha256': digest,
            'cost': cost.run_cost(run_dir)}


def run_metrics(workdir, run_dir):
    """A run's metrics.json while it holds what scoring the run now would give: scored as config scores now (its
    settings, code and libraries), of the run's record, over exactly the finished score files it was computed from
    (a fold trained since as a job of its own, or trained again, makes other files); else the run scored again, in
    memory: what compare.py and plot_results.py show never mixes scorings or stale files."""
    path = Path(run_dir) / 'metrics.json'
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if (saved.get('scoring') == scoring() and saved.get('record_id') == read_settings(run_dir)['record_id']
            and saved.get('scores_sha256') == scores_sha256(run_dir, finished_files(run_dir))):
        return {**saved, 'cost': cost.run_cost(run_dir)}       # as its folds' files say now
    return score_run(workdir, run_dir)


def evaluate_runs(workdir, run_dirs, verbose=False, write=True):
    """Re-score each run folder's finished folds -> the summary (summarize_runs) with its 'protocol'.

    write: each run's metrics.json (how it was scored is recorded in it). verbose: print each run's sed_eval
    report and its headline.
    """
    run_metrics = []
    for run_dir in run_dirs:
        metrics = score_run(workdir, run_dir)
        if write:
            utils.write_json_atomic(Path(run_dir) / 'metrics.json', metrics)
        if verbose:
            print(f'== {run_dir}')
            print(metrics['report'])
            print(format_thresholds(metrics))
        print(f'{Path(run_dir).name}: {format_headline(metrics)}')
        run_metrics.append(metrics)
    summary = summarize_runs(run_metrics)
    summary['protocol'] = read_protocol(workdir, run_dirs, run_metrics[0]['scoring'])
    return summary


# -----------------------------------------------------------------------------
# Post-processing chosen on validation, and an ensemble of runs (evaluate.py --tune, --ensemble)

VALIDATION_HINT = 'run: python infer.py --workdir {workdir} --validation-scores'


def check_validation_scores(workdir, run_dir, fold):
    """A DataError saying how to write them from the fold's best_model.pt when the run lacks the validation scores
    of any of fold k's validation files (runs trained before task4b.py saved them)."""
    missing = missing_validation_scores(workdir, run_dir, fold)
    if missing:
        hint = VALIDATION_HINT.format(workdir=shlex.quote(str(workdir)))
        raise DataError(f'{validation_scores_dir(run_dir, fold)}: no validation scores of {missing[:2]}'
                        f'{"..." * (len(missing) > 2)} (a run trained before they were saved?); score them with the '
                        f'fold\'s best_model.pt, no retraining, {hint}')


def read_validation_scores(workdir, run_dir, fold, ground_truth):
    """{stem: score DataFrame} of fold k's validation files, the run's validation_scores/fold{k}/
    (check_validation_scores first)."""
    check_validation_scores(workdir, run_dir, fold)
    folder = validation_scores_dir(run_dir, fold)
    scores = read_score_files(folder, ground_truth)
    return {utils.file_stem(i): scores[utils.file_stem(i)] for i in validation_files(workdir, fold)}


def run_folds(workdir, run_dir, ground_truth, validation=True):
    """A run's finished folds -> {fold: {'test': {stem: scores}, 'validation': {stem: scores}}} (validation: the
    scores of the fold's validation files by its selected model, read_validation_scores)."""
    test = read_score_files(Path(run_dir) / 'scores', ground_truth)
    folds = {}
    for fold, stems in finished_folds(run_dir).items():
        lacking = [s for s in stems if s not in test]
        if lacking:
            raise DataError(f'{Path(run_dir) / "scores"}: no score files for {lacking[:3]} ({len(lacking)} files)')
        folds[fold] = {'test': {s: test[s] for s in stems}}
        if validation:
            folds[fold]['validation'] = read_validation_scores(workdir, run_dir, fold, ground_truth)
    if not folds:
        raise DataError(f'{run_dir}: no finished fold of its current settings (fold*/metrics.json); {TRAIN_HINT}')
    return folds


def average_scores(frames):
    """Score DataFrames of one file from several runs -> one: each class's frame scores averaged over the runs."""
    if len({len(df) for df in frames}) > 1:
        raise DataError(f'scores of one file with {sorted({len(df) for df in frames})} frames in different runs: '
                        f'runs of other features? {EXTRACT_HINT}')
    averaged = frames[0].copy()
    averaged[config.HARD_CLASSES] = np.mean([df[config.HARD_CLASSES].to_numpy(np.float64) for df in frames], axis=0)
    return averaged


def ensemble_folds(folds_of_runs):
    """[run_folds of each run] -> the folds every run finished, each file's test (and validation) scores averaged
    over the runs: the frame scores of the ensemble, as run_folds gives a run's."""
    common = sorted(set.intersection(*(set(folds) for folds in folds_of_runs)))
    if not common:
        raise DataError('the runs have no finished fold in common: an ensemble averages the scores of one file by '
                        'every run; choose runs with --runs')
    return {fold: {part: {stem: average_scores([folds[fold][part][stem] for folds in folds_of_runs])
                          for stem in folds_of_runs[0][fold][part]}
                   for part in folds_of_runs[0][fold]} for fold in common}


# sed_scores_eval's best_fscore gives the threshold -inf when the best F detects every segment (its lowest score)
BELOW_EVERY_SCORE = ('below every validation score (sed_scores_eval: -inf): the best F detects every segment, so '
                     'every frame is active')


def choose_on_validation(scores, ground_truth, durations):
    """Per class, the median filter (of config.TUNE_MEDIAN_FILTERS, in frames) and the threshold with the best
    segment-based F-score on validation score files {id: DataFrame}: sed_scores_eval's best_fscore (1 s segments,
    each file on its own, as F1_thop) of the files filtered with each length; ties go to the shorter filter
    -> {class: {'threshold', 'median_filter', 'F' (%)}}; a threshold below every score is None with its 'why'
    (cut_threshold). A class without reference events among the files keeps config's threshold and filter, 'F'
    None. ground_truth, durations: {id: ...} of these files."""
    ids = sorted(scores)
    reference, present = reference_events(ground_truth, ids)
    defaults = dict(zip(config.HARD_CLASSES, median_filter_lengths(config.HARD_CLASSES)))
    chosen = {c: {'threshold': config.THRESHOLD, 'median_filter': defaults[c], 'F': None} for c in config.HARD_CLASSES}
    if not present:
        return chosen
    for length in sorted(set(config.TUNE_MEDIAN_FILTERS)):
        filtered = filtered_scores(scores, dict.fromkeys(ids, length))
        f, _, _, thresholds, _ = sed_scores_eval.segment_based.best_fscore(
            {i: filtered[i][['onset', 'offset'] + present] for i in ids}, reference, {i: durations[i] for i in ids},
            segment_length=config.SEGMENT_LENGTH, time_decimals=config.F1_THOP_TIME_DECIMALS)
        for c in present:
            if chosen[c]['F'] is None or 100 * f[c] > chosen[c]['F']:
                threshold = _finite_or_none(thresholds[c])
                chosen[c] = {'threshold': threshold, 'median_filter': length, 'F': 100 * float(f[c]),
                             **({'why': BELOW_EVERY_SCORE} if threshold is None else {})}
    return chosen


def cut_threshold(value):
    """The threshold post-processing cuts a class with, of its value chosen on validation: None, below every score
    (BELOW_EVERY_SCORE), is -inf: every frame active."""
    return -math.inf if value['threshold'] is None else value['threshold']


def tuned_metrics(workdir, folds, name=''):
    """The metrics of test scores post-processed with each fold's thresholds and median filters chosen on its
    validation files (choose_on_validation; folds as run_folds gives them); the test labels are never read for the
    choice. The metrics' scoring records what cut the scores: THRESHOLD and MEDIAN_FILTER {fold: {class: value}},
    and the choice ('chosen on validation': {fold: {class}}) with its F-scores."""
    ground_truth, durations = read_references(workdir)
    chosen, post, test = {}, {}, {}
    for fold, parts in tqdm(list(folds.items()), desc=f'{name} chosen on validation', unit='fold', leave=False):
        values = choose_on_validation(parts['validation'], ground_truth, durations)
        chosen[f'fold{fold}'] = values
        setting = ([cut_threshold(values[c]) for c in config.HARD_CLASSES],
                   [values[c]['median_filter'] for c in config.HARD_CLASSES])
        post.update(dict.fromkeys(parts['test'], setting))
        test.update(parts['test'])
    metrics = evaluate_scores(test, workdir, post=post)
    used = {key: {fold: {c: v[c][key] for c in config.HARD_CLASSES} for fold, v in chosen.items()}
            for key in ('threshold', 'median_filter')}
    scoring = {k: v for k, v in metrics['scoring'].items() if k != 'MEDIAN_FILTER_BY_CLASS'}   # in MEDIAN_FILTER
    metrics['scoring'] = {**scoring, 'THRESHOLD': used['threshold'], 'MEDIAN_FILTER': used['median_filter'],
                          'chosen on validation': {'TUNE_MEDIAN_FILTERS': sorted(set(config.TUNE_MEDIAN_FILTERS)),
                                                   'values': chosen}}
    return metrics


def evaluate_variants(workdir, run_dirs, tune=False, ensemble=False):
    """The rows beside the protocol's -> {'tuned': summary of each run with post-processing chosen on validation,
    'ensemble': the runs' averaged scores as one system, 'ensemble_tuned': both}, those asked for. Nothing is
    written: a run's metrics.json holds the protocol's metrics only."""
    ground_truth, _ = read_references(workdir)
    folds_of_runs = [run_folds(workdir, d, ground_truth, validation=tune) for d in run_dirs]
    names = [Path(d).name for d in run_dirs]
    variants = {}
    if tune:
        runs = []
        for name, run_dir, folds in zip(names, run_dirs, folds_of_runs):
            runs.append({**tuned_metrics(workdir, folds, name),
                         'seed': read_settings(run_dir)['seed']})
            print(f'{name}, chosen on validation: {format_headline(runs[-1])}')
        variants['tuned'] = summarize_runs(runs)
    if ensemble:
        folds = ensemble_folds(folds_of_runs)
        test = {stem: df for parts in folds.values() for stem, df in parts['test'].items()}
        kinds = [('ensemble', lambda: evaluate_scores(test, workdir))]
        if tune:
            kinds.append(('ensemble_tuned', lambda: tuned_metrics(workdir, folds, 'ensemble')))
        for key, score in kinds:
            metrics = score()
            metrics['scoring'] = {**metrics['scoring'], 'ensemble of': names}
            print(f'ensemble of {len(names)} runs{", chosen on validation" * (key == "ensemble_tuned")}: '
                  f'{format_headline(metrics)}')
            variants[key] = {**summarize_runs([metrics]), 'ensemble of': names}
    return variants


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


VARIANTS = {'tuned': 'Thresholds and median filters chosen on validation (per fold and class)',
            'ensemble': 'Ensemble of {n} run{s} (frame scores averaged per file)',
            'ensemble_tuned': 'Ensemble of {n} run{s}, thresholds and median filters chosen on validation'}


def results_table_markdown(summary):
    """The results table in the layout of the published one, its protocol in the row label; the rows of --tune and
    --ensemble (evaluate_variants) below it when the summary has them; the published row for MAESTRO Real only,
    saying whether the protocol is the same; under it the time and energy per run and the model's size
    (cost.table_lines); then the per-class part (mean over runs), and the values chosen on validation. The standard
    deviation over runs beside each mean, as published; none for one run (n = 1: no spread was measured)."""
    runs = summary['n_runs']

    def cell(key, mean, std, n=runs):           # `0.487 (+/-0.009)`, `70.34% (+/-0.766)` as published
        return format_metric(key, mean) + (f' (+/-{std:.3f})' if n > 1 else '')
    protocol = summary.get('protocol', {})
    n_files = '/'.join(str(n) for n in summary['n_files'])
    label = (f"This baseline: {protocol_label(protocol)}; {runs} run{'s (mean +/-std)' if runs != 1 else ' (n = 1)'}, "
             f"{n_files} of {summary['n_files_total']} files")
    lines = ['| System | ' + ' | '.join(HEADLINE) + ' |', '| --- |' + ' --- |' * len(HEADLINE),
             f'| {label} | ' + ' | '.join(cell(k, summary['mean'][k], summary['std'][k]) for k in HEADLINE) + ' |']
    for key, name in VARIANTS.items():           # evaluate.py --tune, --ensemble: beside the protocol's row
        if key in summary:
            variant, n = summary[key], summary[key]['n_runs']
            ensemble = len(variant.get('ensemble of', []))           # one system: no spread over runs
            runs_part = '' if ensemble else f"{n} run{'s (mean +/-std)' if n != 1 else ' (n = 1)'}, "
            n_files = '/'.join(map(str, variant['n_files']))
            lines.append(f"| {name.format(n=ensemble, s='s' * (ensemble != 1))}; {runs_part}{n_files} of "
                         f"{variant['n_files_total']} files | "
                         + ' | '.join(cell(k, variant['mean'][k], variant['std'][k], n) for k in HEADLINE) + ' |')
    if protocol.get('data set') == config.PUBLISHED_PROTOCOL['data set']:
        differences = protocol_differences(protocol)
        note = 'same protocol' if not differences else 'protocol differs: ' + ', '.join(differences)
        published = [cell(k, *config.PUBLISHED[k], n=10) if k in config.PUBLISHED else '-' for k in HEADLINE]
        lines.append(f'| Published baseline (MAESTRO Real, 10 runs, 49 files; {note}) | ' + ' | '.join(published) + ' |')
    costs = cost.table_lines(summary.get('cost'))
    if costs:
        lines += [''] + [f'- {line}' for line in costs]

    def number(value, fmt):
        return '-' if value is None else format(value, fmt)

    lines += ['', '| Class | F (threshold 0.5) | F1_thop | precision at F1_thop | recall at F1_thop | threshold |',
              '| --- | --- | --- | --- | --- | --- |']
    for c in config.HARD_CLASSES:
        values = [_mean_or_none([m['class_wise'][c].get(key) for m in summary['runs']])
                  for key in ('F', 'F1_thop', 'P_thop', 'R_thop')]
        threshold = _mean_or_none([m['thresholds'][c] for m in summary['runs']])
        lines.append(f'| {c} | ' + ' | '.join(number(v, '.2f') for v in values) + f' | {number(threshold, ".3f")} |')
    for key in ('tuned', 'ensemble_tuned'):
        if key in summary:
            n = len(summary[key].get('ensemble of', []))
            lines += ['', *chosen_table(VARIANTS[key].format(n=n, s='s' * (n != 1)), summary[key]['runs'])]
    return '\n'.join(lines) + '\n'


def most_chosen(filters):
    """The median filter chosen most often, the shorter one on a tie."""
    return min(filters, key=lambda f: (-filters.count(f), f))


def chosen_table(name, runs):
    """The thresholds and median filters chosen on validation, per class and fold, as Markdown lines: the mean
    threshold over the runs and the filter most of them chose (the shorter one on a tie), and the F-score of the
    class with them (sed_eval, mean over the runs)."""
    chosen = [run['scoring']['chosen on validation']['values'] for run in runs]
    folds = list(chosen[0])
    lines = [f'{name}: threshold / median filter (frames) per fold, mean threshold over {len(runs)} '
             f'run{"s" * (len(runs) != 1)}, the filter most chose (kept: no reference event of the class among the '
             f"fold's validation files, config's threshold and filter kept; none: below every validation score, "
             f'every frame active; (none in n): so in n runs, the mean of the others)', '',
             '| Class | F (chosen on validation) | ' + ' | '.join(folds) + ' |',
             '| --- | --- |' + ' --- |' * len(folds)]
    for c in config.HARD_CLASSES:
        cells = []
        for fold in folds:
            values = [run[fold][c] for run in chosen if fold in run]
            common = most_chosen([v['median_filter'] for v in values])
            kept = ' (kept)' if all(v['F'] is None for v in values) else ''
            thresholds = [v['threshold'] for v in values if v['threshold'] is not None]
            none = len(values) - len(thresholds)
            mean = 'none' if not thresholds else f'{np.mean(thresholds):.3f}' + (f' (none in {none})' if none else '')
            cells.append(f'{mean} / {common}{kept}')
        f = _mean_or_none([run['class_wise'][c]['F'] for run in runs])
        lines.append(f'| {c} | {"-" if f is None else f"{f:.2f}"} | ' + ' | '.join(cells) + ' |')
    return lines


def write_results(json_path, summary):
    """summary -> JSON at json_path and the Markdown table beside it (same name, .md), both atomically."""
    json_path = Path(json_path)
    utils.write_json_atomic(json_path, summary)
    utils.write_text_atomic(json_path.with_suffix('.md'), results_table_markdown(summary))


@experiment.command(workdir=True, flags={'--timeline': 'TIMELINE', '--time-decimals': 'F1_THOP_TIME_DECIMALS'})
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR,
                        help='holds metadata/ and runs/ (default: the repository)')
    parser.add_argument('--scores', type=Path, default=None,
                        help='evaluate this folder of score files alone (default: every <workdir>/runs/run*/scores)')
    parser.add_argument('--json', type=Path, default=None,
                        help='write the metrics there and the table beside it (.md), nothing else (default: '
                             '<workdir>/results.json and each run\'s metrics.json, or with --scores '
                             '<scores>/../evaluation.json)')
    parser.add_argument('--runs', type=int, nargs='+', metavar='R',
                        help='combine these runs (default: every run; runs of other settings are refused)')
    parser.add_argument('--timeline', choices=['fold', 'file'], default=config.TIMELINE,
                        help="'fold': each fold's test files on one timeline, as the challenge; 'file': each file "
                             'on its own (--set TIMELINE; default: %(default)s)')
    parser.add_argument('--time-decimals', type=int, default=config.F1_THOP_TIME_DECIMALS,
                        help="F1_thop's best_fscore(time_decimals=...): 30 as the challenge called it, 6 the "
                             'library default (--set F1_THOP_TIME_DECIMALS; default: %(default)s)')
    parser.add_argument('--tune', action='store_true',
                        help='a row more: per fold and class, the threshold and median filter (of '
                             'TUNE_MEDIAN_FILTERS) with the best segment F-score on the fold\'s validation files, '
                             'applied to its test files')
    parser.add_argument('--ensemble', action='store_true',
                        help='a row more: the frame scores of the runs averaged per file, scored as one system '
                             '(with --tune: also chosen on validation)')
    args = experiment.parse_args(parser, argv)
    written = []
    if args.scores is not None and (args.tune or args.ensemble):
        parser.error('--tune and --ensemble score the runs of --workdir (their folds and validation scores), not '
                     'a folder of --scores')
    if args.scores is not None:
        check_scores_folder(args.workdir, args.scores)
        metrics = evaluate_scores(args.scores, args.workdir)
        print(metrics['report'])
        print(format_thresholds(metrics))
        print(format_headline(metrics))
        summary = summarize_runs([metrics])
        summary['protocol'] = read_protocol(args.workdir, [args.scores.resolve().parent], metrics['scoring'])
        json_path = args.json or args.scores.resolve().parent / 'evaluation.json'
    else:
        run_dirs, _ = select_runs(args.workdir, args.runs)
        for run_dir in run_dirs if args.tune else []:       # before anything is scored or written
            for fold in finished_folds(run_dir):
                check_validation_scores(args.workdir, run_dir, fold)
        summary = evaluate_runs(args.workdir, run_dirs, verbose=True, write=args.json is None)
        summary.update(evaluate_variants(args.workdir, run_dirs, args.tune, args.ensemble))
        json_path = args.json or args.workdir / 'results.json'
        written = [] if args.json else [f'the metrics.json of {len(run_dirs)} run{"s" * (len(run_dirs) > 1)}']
    print(results_table_markdown(summary))
    write_results(json_path, summary)
    print(f'wrote {", ".join([str(json_path), str(Path(json_path).with_suffix(".md")), *written])}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
