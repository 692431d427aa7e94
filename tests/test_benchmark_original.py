"""benchmark_original.py times the original baseline's way: it must compute what the original computed, or the
speed-up that benchmark.py prints compares unlike work."""
import numpy as np
import pandas as pd
import torch

import benchmark_original
import audio_io
import config
import extract_features
import front_end
import post_processing
import utils
from model import CRNN


def test_rebuilt_network_is_our_crnn_with_the_relu_before_the_pool():
    ours, original = CRNN(), benchmark_original.OriginalCRNN()
    assert sum(p.numel() for p in original.parameters()) == 380113
    with torch.no_grad():
        for k, block in enumerate(ours.conv_blocks):
            original.convs[k].load_state_dict(block.conv.state_dict())
            original.norms[k].load_state_dict(block.bn.state_dict())
        original.gru.load_state_dict(ours.gru.state_dict())
        original.linear1.load_state_dict(ours.dense1.state_dict())
        original.linear2.load_state_dict(ours.dense2.state_dict())
    x = torch.randn(3, config.SEQUENCE_LENGTH, config.N_MELS, generator=torch.Generator().manual_seed(0))
    ours.eval(), original.eval()
    with torch.no_grad():
        torch.testing.assert_close(original(x), ours(x), rtol=1e-5, atol=1e-6)


def test_rebuilt_events_are_the_post_processing_of_our_evaluation():
    rng = np.random.default_rng(0)
    frames = rng.random((400, len(config.CLASSES))) ** 3 * 1.4        # runs of every length, some scores above 1
    ours = post_processing.post_process_events(frames[:, config.HARD_INDEX], config.HARD_CLASSES, 'x')
    rebuilt = benchmark_original.event_list(frames)

    def key(events):
        return sorted((e.event_label, e.onset, e.offset) for e in events)
    assert len(ours) > 50
    assert key(rebuilt) == key(ours)


def test_rebuilt_extraction_gives_our_features_and_targets(demo_root, tmp_path):
    """On the demo data: the original's float64 mel features of each file equal ours (float32) to 1e-5 of the
    file's largest value, and its soft-label matrices equal our frame targets once clipped to 1 (the original
    did not clip the values a hair above 1)."""
    assert benchmark_original.extract(demo_root, config.FOLDS_DIR, tmp_path) == 49
    file_ids = pd.read_csv(config.DEVELOPMENT_SPLIT)['filename']
    for file_id in file_ids[:5]:
        name = utils.file_stem(file_id)
        mbe = np.load(tmp_path / f'{name}.npz')['arr_0']
        ours = front_end.compute_mel_features(audio_io.read_audio(utils.audio_path(demo_root, file_id)))
        assert mbe.shape == ours.shape
        np.testing.assert_allclose(mbe, ours, rtol=0, atol=1e-5 * np.abs(mbe).max())
        labels = np.load(tmp_path / f'{name}_soft.npz')['arr_0']
        targets = extract_features.rasterize_soft_labels(
            extract_features.read_soft_labels(utils.annotation_path(demo_root, file_id)), len(ours))
        assert (labels > 1).any()
        np.testing.assert_array_equal(np.minimum(labels, 1.0), targets)
    merged = np.load(tmp_path / 'merged_mbe_fold1.npz')
    train_ids = pd.read_csv(config.FOLDS_DIR / 'fold1_train.csv')['filename']
    assert merged['arr_0'].shape[0] == sum(len(np.load(tmp_path / f'{utils.file_stem(i)}.npz')['arr_0']) for i in train_ids)
    np.testing.assert_allclose(merged['arr_0'].mean(axis=0), 0, atol=1e-6)
