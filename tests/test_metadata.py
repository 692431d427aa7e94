"""metadata/gt_dev.csv and metadata/development_metadata.csv: read by sed_scores_eval, and in agreement
with the soft labels (soft > 0.5) and the audio lengths."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from sed_scores_eval.base_modules.io import read_audio_durations, read_ground_truth_events

import config
import demo_data
import extract_features as ef
import post_processing
import utils

IDS = ['cafe_restaurant/cafe_restaurant_07', 'city_center/city_center_02', 'grocery_store/grocery_store_01',
       'metro_station/metro_station_04', 'residential_area/residential_area_09']


def extract_five_files(tmp, annotation=None):
    """The demo generator's 5 files (4-6 s each; IDS[1]'s annotation replaced by `annotation` when given), 5 small
    folds (fold k tests IDS[k-1], validates on IDS[k % 5]), extracted -> (data root, workdir)."""
    root, folds_dir, workdir = tmp / 'data', tmp / 'folds', tmp / 'work'
    demo_data.generate_demo_dataset(root, scale=0.02, seed=1, file_ids=IDS, progress=False)
    if annotation is not None:
        utils.annotation_path(root, IDS[1]).write_text(annotation)
    (tmp / 'split.csv').write_text('filename\n' + ''.join(f'{i}\n' for i in IDS))
    for fold in range(1, config.N_FOLDS + 1):
        parts = {'test': [IDS[fold - 1]], 'val': [IDS[fold % 5]]}
        parts['train'] = [i for i in IDS if i not in parts['test'] + parts['val']]
        for part, ids in parts.items():
            utils.fold_file(fold, part, folds_dir).parent.mkdir(parents=True, exist_ok=True)
            utils.fold_file(fold, part, folds_dir).write_text('filename\n' + ''.join(f'{i}\n' for i in ids))
    ef.extract(root, workdir, folds_dir, jobs=1, split_file=tmp / 'split.csv')
    return root, workdir


@pytest.fixture(scope='module')
def extracted(tmp_path_factory):
    root, workdir = extract_five_files(tmp_path_factory.mktemp('metadata'))
    return root, workdir / config.METADATA_DIR


def active_seconds_from_soft_labels(root, file_id):
    """{(label, second)} of the hard classes with soft > 0.5, for the whole seconds inside the feature frames
    (an event's offset is floor(last frame end): a second the audio ends in is not a whole second)."""
    labels = ef.read_soft_labels(utils.annotation_path(root, file_id))
    info = sf.info(str(utils.audio_path(root, file_id)))
    n_frames = 1 + info.frames // config.HOP_LENGTH
    whole_seconds = int(n_frames * config.FRAME_SECONDS + 1e-9)
    return {(label, second) for onset, offset, label, soft in labels.itertuples(index=False)
            if label in config.HARD_CLASSES and soft > config.HARD_LABEL_THRESHOLD
            for second in range(int(round(onset)), int(round(offset))) if second < whole_seconds}


def test_files_are_read_by_sed_scores_eval_readers(extracted):
    root, metadata = extracted
    ground_truth = read_ground_truth_events(metadata / config.GT_FILE)
    durations = read_audio_durations(metadata / config.DURATIONS_FILE)
    assert sorted(durations) == sorted(utils.file_stem(i) for i in IDS)
    assert set(ground_truth) <= set(durations) and len(ground_truth) >= 3
    for events in ground_truth.values():
        assert all(label in config.HARD_CLASSES and 0 <= onset < offset for onset, offset, label in events)


def test_gt_events_are_the_seconds_with_soft_above_half(extracted):
    root, metadata = extracted
    ground_truth = read_ground_truth_events(metadata / config.GT_FILE)
    for file_id in IDS:
        events = ground_truth.get(utils.file_stem(file_id), [])
        seconds = [(label, s) for onset, offset, label in events for s in range(int(onset), int(offset))]
        assert all(float(v).is_integer() for e in events for v in e[:2])         # whole seconds
        assert len(seconds) == len(set(seconds))                                 # no overlapping events
        assert set(seconds) == active_seconds_from_soft_labels(root, file_id)


def test_gt_has_one_row_per_run_not_per_second(extracted):
    root, metadata = extracted
    gt = pd.read_csv(metadata / config.GT_FILE, sep='\t')
    assert list(gt.columns) == ['filename', 'onset', 'offset', 'event_label']
    assert gt['filename'].str.endswith('.wav').all() and not gt['filename'].str.contains('/').any()
    for (name, label), rows in gt.groupby(['filename', 'event_label']):
        rows = rows.sort_values('onset')
        assert (rows['onset'].to_numpy()[1:] > rows['offset'].to_numpy()[:-1]).all()   # touching rows are merged
    assert (gt['offset'] - gt['onset'] > 1).any()


def test_durations_are_the_audio_lengths(extracted):
    root, metadata = extracted
    durations = pd.read_csv(metadata / config.DURATIONS_FILE, sep='\t')
    assert list(durations.columns) == ['filename', 'duration']
    for file_id in IDS:
        info = sf.info(str(utils.audio_path(root, file_id)))
        row = durations[durations['filename'] == utils.file_stem(file_id)]
        assert row['duration'].item() == info.frames / info.samplerate


def test_gt_events_floor_merge_and_drop_as_the_evaluation_post_processing():
    targets = np.zeros((40, len(config.CLASSES)))
    car, cutlery, coffee = (config.CLASSES.index(c) for c in ('car', 'cutlery and dishes', 'coffee machine'))
    targets[5:10, car] = 0.8          # 1.0 .. 2.0
    targets[11:15, car] = 0.9         # floor(2.2) = 2 .. 3: touches the previous one, merged -> 1 .. 3
    targets[21:24, car] = 0.9         # floor(4.2) .. floor(4.8): zero length, dropped
    targets[30:40, car] = 0.5         # not above the threshold
    targets[35:40, cutlery] = 1.0     # a run reaching the last frame: 7 .. 8
    targets[0:40, coffee] = 1.0       # not a hard class
    events = post_processing.events_from_activity(post_processing.hard_labels(targets), config.HARD_CLASSES, 'a')
    assert [(e.onset, e.offset, e.event_label) for e in events] == [(1.0, 3.0, 'car'), (7.0, 8.0, 'cutlery and dishes')]


@pytest.fixture(scope='module')
def one_ulp_above_half(tmp_path_factory):
    """The module's 5 demo files, one annotation replaced: car at 0.5000000000000001 (1 ulp above 0.5) over
    seconds 1-3, footsteps at exactly 0.5 over seconds 2-3; extracted."""
    annotation = '1.0\t3.0\tcar\t0.5000000000000001\n2.0\t3.0\tfootsteps\t0.5\n'
    return extract_five_files(tmp_path_factory.mktemp('ulp'), annotation)[1]


def test_a_soft_value_one_ulp_above_half_is_a_hard_label_in_gt_dev(one_ulp_above_half):
    gt = pd.read_csv(one_ulp_above_half / config.METADATA_DIR / config.GT_FILE, sep='\t')
    rows = gt[gt['filename'] == f'{utils.file_stem(IDS[1])}.wav']
    assert rows[['onset', 'offset', 'event_label']].values.tolist() == [[1.0, 3.0, 'car']]


def test_a_soft_value_one_ulp_above_half_is_in_the_test_reference(one_ulp_above_half):
    import score_io
    stem = utils.file_stem(IDS[1])
    hard = score_io.read_reference_frames(one_ulp_above_half, [stem])[stem]      # (frames, 11)
    car, footsteps = config.HARD_CLASSES.index('car'), config.HARD_CLASSES.index('footsteps')
    assert np.flatnonzero(hard[:, car]).tolist() == list(range(5, 15))             # 1.0 .. 3.0 s
    assert not hard[:, footsteps].any()                                            # 0.5 is not above 0.5


def test_a_soft_value_one_ulp_above_half_is_in_the_validation_reference(one_ulp_above_half):
    import data_generator
    fold = ef.load_fold(one_ulp_above_half, 1)                     # IDS[1] is fold 1's validation file
    assert fold['Y_val'].dtype == np.float64
    fold['X_val'] = np.zeros((1, 20, config.N_MELS), np.float32)  # the 4-6 s files make no 200-frame sequence:
    fold['Y_val'] = np.zeros((1, 20, len(config.CLASSES)))        # put the file's targets into one of 20 frames
    targets = np.load(utils.file_features_path(one_ulp_above_half, IDS[1]))['targets']
    fold['Y_val'][0] = targets[:20]
    fold['X_train'], fold['Y_train'] = fold['X_val'], fold['Y_val']
    reference = data_generator.fold_tensors(fold)['val_reference']
    assert [(e.onset, e.offset, e.event_label) for e in reference] == [(1.0, 3.0, 'car')]
    assert float(np.float32(targets[5, config.CLASSES.index('car')])) == 0.5       # what a float32 cast would see
