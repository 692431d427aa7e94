"""What the metrics are computed from, read and checked: score files `<stem>.tsv` in sed_scores_eval's format
(onset, offset, one column per evaluated class, rows of config.FRAME_SECONDS; task4b.py and infer.py write them with
write_score_file), the ground truth and durations in `<workdir>/metadata/` and the soft targets in
`<workdir>/features/files/` (all from extract_features.py). Bad input is a DataError naming the file and line.
"""
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # dcase_util imports pkg_resources
import sed_scores_eval  # noqa: E402
from sed_scores_eval.base_modules.scores import create_score_dataframe, validate_score_dataframe  # noqa: E402

import config  # noqa: E402
import extract_features  # noqa: E402
import utils  # noqa: E402
from post_processing import hard_labels, median_filter, median_filter_lengths  # noqa: E402
from runs import TRAIN_HINT  # noqa: E402
from utils import DataError  # noqa: E402

EXTRACT_HINT = 'run: python extract_features.py --data-root DIR --workdir DIR'


def stem_of(filename):
    """`cafe_restaurant_07.wav`, `cafe_restaurant/cafe_restaurant_07` -> `cafe_restaurant_07`."""
    name = utils.file_stem(filename.strip())
    return name[:-len('.wav')] if name.endswith('.wav') else name


def check_table(path, columns, row_problem):
    """A metadata file checked line by line before sed_scores_eval's reader, which names neither file nor line:
    the header (tab-separated `columns`), each row's field count, what the library would misread (a line of only
    spaces or tabs; a '.' in a file's stem) and row_problem(fields) -> DataError naming the file and line."""
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
    merged = []
    for onset, offset, label in sorted(events, key=lambda e: (e[2], e[0], e[1])):
        if merged and merged[-1][2] == label and onset <= merged[-1][1]:     # touching or overlapping: one event
            merged[-1][1] = max(merged[-1][1], offset)
        else:
            merged.append([onset, offset, label])
    return sorted(map(tuple, merged), key=lambda e: (e[0], config.HARD_CLASSES.index(e[2]), e[1]))


def read_ground_truth(path):
    """gt_dev.csv -> {stem: [(onset, offset, label), ...]} of the files with events, checked, then read by
    sed_scores_eval, touching or overlapping rows of a class merged into one event (the original baseline shipped
    one row per second; sed_scores_eval's metrics reject those as connected events)."""
    check_table(path, ['filename', 'onset', 'offset', 'event_label'], ground_truth_row_problem)
    events = {}
    for name, rows in sed_scores_eval.io.read_ground_truth_events(path).items():
        events.setdefault(stem_of(name), []).extend(rows)      # `x.wav` and `scene/x.wav` are one file
    return {stem: merge_connected(rows) for stem, rows in events.items()}


def read_durations(path):
    """development_metadata.csv -> {stem: duration in seconds}, checked, then read by sed_scores_eval."""
    check_table(path, ['filename', 'duration'], duration_row_problem)
    return {stem_of(name): duration for name, duration in sed_scores_eval.io.read_audio_durations(path).items()}


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
    """Score files `<stem>.tsv` of a folder -> {stem: DataFrame (onset, offset, HARD_CLASSES)}, validated; a
    DataError naming the file otherwise. ground_truth: {stem: events} of every known file; another stem is an error.
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
        non_numeric = [c for c, t in df.dtypes.items() if not np.issubdtype(t, np.number)]
        if non_numeric:
            raise DataError(f'{path}: non-numeric values in columns {non_numeric}')
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


def finite_or_none(value):
    """A number of the libraries as the JSON files keep it: a float, None where it is NaN or infinite (strict JSON)."""
    value = float(value)
    return value if math.isfinite(value) else None


def filtered_scores(scores, filter_lengths=None):
    """{stem: score DataFrame} -> the same with each class's frame scores median-filtered, each file on its own
    (filter_lengths {stem: (11,) frames}, default config's): what the events are cut from, F1_thop and pAUC sweep."""
    filtered = {}
    for stem, df in scores.items():
        lengths = median_filter_lengths(config.HARD_CLASSES) if filter_lengths is None else filter_lengths[stem]
        df = df.copy()
        df[config.HARD_CLASSES] = median_filter(df[config.HARD_CLASSES].to_numpy(), lengths)
        filtered[stem] = df
    return filtered
