"""post_processing.py: frame scores and hard labels -> events in whole seconds (docs/method.md, Evaluation)."""
import numpy as np

import config
from helpers import frame_scores
from post_processing import median_filter, median_filter_lengths, post_process_events

A, B, C = config.HARD_CLASSES[:3]            # birds_singing, car, people talking


def events_of(container):
    return [(e.onset, e.offset, e.event_label) for e in container]


def test_run_becomes_event_floored_to_whole_seconds():
    # frames [7, 13) = 1.4 .. 2.6 s -> [1, 2); frames [24, 26) = 4.8 .. 5.2 s -> [4, 5): 0.4 s becomes a 1 s event
    events = post_process_events(frame_scores(40, [(A, 7, 13, 0.9), (A, 24, 26, 0.9)]), config.HARD_CLASSES, 'f')
    assert events_of(events) == [(1.0, 2.0, A), (4.0, 5.0, A)]
    assert all(e.filename == 'f' for e in events)


def test_threshold_is_strictly_greater_than_half():
    scores = frame_scores(20, [(A, 0, 10, config.THRESHOLD), (B, 0, 10, np.nextafter(config.THRESHOLD, 1))])
    assert events_of(post_process_events(scores, config.HARD_CLASSES, 'f')) == [(0.0, 2.0, B)]


def test_run_inside_one_second_is_dropped():
    # frames [21, 24) = 4.2 .. 4.8 s -> [4, 4): shorter than MIN_EVENT_LENGTH
    assert events_of(post_process_events(frame_scores(40, [(A, 21, 24, 1.0)]), config.HARD_CLASSES, 'f')) == []


def test_touching_events_of_a_class_are_merged():
    # frames [0, 7) -> [0, 1) and [8, 16) -> [1, 3): gap 0 < MERGE_GAP -> one event; another class is not merged
    scores = frame_scores(40, [(A, 0, 7, 0.8), (A, 8, 16, 0.8), (B, 16, 20, 0.8)])
    assert events_of(post_process_events(scores, config.HARD_CLASSES, 'f')) == [(0.0, 3.0, A), (3.0, 4.0, B)]


def test_events_a_second_apart_stay_separate():
    scores = frame_scores(40, [(A, 0, 5, 0.8), (A, 10, 15, 0.8)])
    assert events_of(post_process_events(scores, config.HARD_CLASSES, 'f')) == [(0.0, 1.0, A), (2.0, 3.0, A)]


def test_run_at_the_very_end_of_the_file_gives_its_event():
    # 26 frames (5.2 s), active from frame 17 (3.4 s) to the last one: [3, floor(26 x 0.2) = 5)
    assert events_of(post_process_events(frame_scores(26, [(C, 17, 26, 1.0)]), config.HARD_CLASSES, 'f')) \
        == [(3.0, 5.0, C)]


def test_floor_is_exact_at_whole_seconds():
    # 15 x 0.2 = 3.0000000000000004 and 35 x 0.2 = 7.000000000000001 in floats: the events are 3 and 7
    events = post_process_events(frame_scores(50, [(A, 15, 35, 1.0)]), config.HARD_CLASSES, 'f')
    assert events_of(events) == [(3.0, 7.0, A)]


def test_events_without_filename():
    # dcase_util would drop every event of filename None (it looks up files by str(filename)); infer.py uses None
    assert events_of(post_process_events(frame_scores(10, [(A, 0, 10, 1.0)]), config.HARD_CLASSES, None)) \
        == [(0.0, 2.0, A)]


# -----------------------------------------------------------------------------
# The median filter of the scores (off by default) and per-class thresholds

def test_a_median_filter_of_one_frame_is_the_identity():
    scores = np.random.default_rng(0).random((57, len(config.HARD_CLASSES))).astype(np.float32)
    filtered = median_filter(scores, 1)
    assert filtered.dtype == scores.dtype and np.array_equal(filtered, scores)
    assert events_of(post_process_events(scores, config.HARD_CLASSES, 'f', filter_lengths=1)) == \
        events_of(post_process_events(scores, config.HARD_CLASSES, 'f'))          # the default: no filter


def test_a_median_filter_of_three_frames_removes_a_one_frame_spike_and_fills_a_one_frame_gap():
    # A: frames [10, 20) active but frame 14 dips; B: one frame spikes at 30
    scores = frame_scores(40, [(A, 10, 14, 0.9), (A, 15, 20, 0.9), (B, 30, 31, 0.9)])
    filtered = median_filter(scores, 3)
    assert np.array_equal(filtered[:, 0] > 0.5, np.arange(40) // 10 == 1)
    assert not (filtered[:, 1] > 0.5).any()
    assert events_of(post_process_events(scores, config.HARD_CLASSES, 'f', filter_lengths=3)) == [(2.0, 4.0, A)]


def test_each_class_gets_its_own_median_filter_and_threshold(monkeypatch):
    # frame 29 = 5.8 .. 6.0 s -> the event [5, 6) where it stays active; C's 0.4 is active at C's threshold only
    scores = frame_scores(40, [(A, 29, 30, 0.9), (B, 29, 30, 0.9), (C, 0, 10, 0.4)])
    monkeypatch.setattr(config, 'MEDIAN_FILTER_BY_CLASS', {A: 3})          # B keeps MEDIAN_FILTER = 1
    assert median_filter_lengths(config.HARD_CLASSES)[:2] == [3, 1]
    thresholds = [0.5, 0.5, 0.3] + [0.5] * (len(config.HARD_CLASSES) - 3)
    assert events_of(post_process_events(scores, config.HARD_CLASSES, 'f', thresholds)) == [(0.0, 2.0, C),
                                                                                             (5.0, 6.0, B)]
