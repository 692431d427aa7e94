"""Frames -> event lists (docs/method.md, Evaluation): the post-processing of frame scores, and the hard labels
(soft > 0.5) of the soft targets, from which the references are built the same way (without the median filter).

    events = post_process_events(scores, config.HARD_CLASSES, stem)    # scores (frames, 11) -> dcase_util events
    events = post_process_events(scores, config.HARD_CLASSES, stem, thresholds, filter_lengths)   # (11,) each
    reference = events_from_activity(hard_labels(targets), config.HARD_CLASSES, stem)   # targets (frames, 17)
"""
import warnings

import numpy as np
import scipy.ndimage

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # dcase_util imports pkg_resources
import dcase_util  # noqa: E402

import config  # noqa: E402


def seconds_floor(frame_index):
    """floor(frame_index x FRAME_SECONDS) from integers: 15 x 0.2 in floats is 3.0000000000000004."""
    return float(int(frame_index) * config.HOP_LENGTH // config.SAMPLE_RATE)


def find_contiguous_regions(active):
    """(frames,) bool -> (n, 2) int array of runs [i, j) of True, a run reaching the last frame included."""
    padded = np.concatenate(([0], np.asarray(active, dtype=np.int8), [0]))
    changes = np.flatnonzero(np.diff(padded))    # starts (0 -> 1) and ends (1 -> 0), alternating
    return changes.reshape(-1, 2)


def events_from_activity(active, class_labels, filename, merge_gap=None, min_length=None):
    """Frame activity (frames, len(class_labels)) bool -> dcase_util MetaDataContainer of events: per class, a run
    of active frames [i, j) -> event [floor(i x 0.2), floor(j x 0.2)) in whole seconds, then clean_events."""
    active = np.asarray(active)
    if active.ndim != 2 or active.shape[1] != len(class_labels):
        raise ValueError(f'{filename}: frames of shape {active.shape}, expected (frames, {len(class_labels)})')
    # filename None must not reach dcase_util: process_events looks files up by str(filename), 'None', finds no
    # event of 'None' and silently returns an empty list.
    file_field = {} if filename is None else {'filename': str(filename)}
    items = []
    for c, label in enumerate(class_labels):
        for i, j in find_contiguous_regions(active[:, c]):
            items.append(dcase_util.containers.MetaDataItem({
                **file_field, 'onset': seconds_floor(i), 'offset': seconds_floor(j), 'event_label': label}))
    return clean_events(dcase_util.containers.MetaDataContainer(items), class_labels, merge_gap, min_length)


def clean_events(events, class_labels, merge_gap=None, min_length=None):
    """Events of a class closer than merge_gap merged, then events shorter than min_length dropped (default:
    config.MERGE_GAP, config.MIN_EVENT_LENGTH), sorted by onset and class."""
    merge_gap = config.MERGE_GAP if merge_gap is None else merge_gap
    min_length = config.MIN_EVENT_LENGTH if min_length is None else min_length
    # Two calls, merge first: in one call dcase_util drops short events BEFORE merging, the reverse of the
    # reference code. (dcase_util merges when gap <= minimum_event_gap and keeps length >= minimum.)
    events = events.process_events(minimum_event_gap=merge_gap).process_events(minimum_event_length=min_length)
    order = {label: k for k, label in enumerate(class_labels)}
    return dcase_util.containers.MetaDataContainer(
        sorted(events, key=lambda e: (e.onset, order[e.event_label], e.offset)))


def median_filter_lengths(class_labels):
    """Each class's median filter in frames: config.MEDIAN_FILTER_BY_CLASS's where it names the class, else
    config.MEDIAN_FILTER (1: no filter)."""
    return [config.MEDIAN_FILTER_BY_CLASS.get(label, config.MEDIAN_FILTER) for label in class_labels]


def median_filter(frame_scores, lengths):
    """Frame scores (frames, classes) -> a copy, each class's column median-filtered over its length in frames
    (lengths: one, or one per class; odd, 1: none), the file's edges reflected (as DESED_task filters)."""
    scores = np.array(frame_scores)
    for c, length in enumerate(np.broadcast_to(lengths, scores.shape[1:])):
        scores[:, c] = scipy.ndimage.median_filter(scores[:, c], size=int(length))
    return scores


def post_process_events(frame_scores, class_labels, filename, thresholds=None, filter_lengths=None):
    """Frame scores (frames, len(class_labels)) -> events: each class's scores median-filtered (filter_lengths in
    frames, one or one per class; default median_filter_lengths, from config), then frames with score > the
    class's threshold (one or one per class; default config.THRESHOLD) are active."""
    filter_lengths = median_filter_lengths(class_labels) if filter_lengths is None else filter_lengths
    thresholds = config.THRESHOLD if thresholds is None else np.asarray(thresholds, dtype=np.float64)   # (classes,)
    return events_from_activity(median_filter(frame_scores, filter_lengths) > thresholds, class_labels, filename)


def hard_labels(soft_targets):
    """Soft targets (..., 17) float64 -> hard labels (..., 11) bool of the evaluated classes: soft > 0.5, on the
    float64 values (in float32, 0.5000000000000001 rounds to 0.5 and would be lost)."""
    return np.asarray(soft_targets)[..., config.HARD_INDEX] > config.HARD_LABEL_THRESHOLD
