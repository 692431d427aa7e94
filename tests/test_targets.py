"""Soft or hard training targets (config.TARGETS; docs/method.md, Training): the challenge's question, "do soft
labels help?", as one setting."""
import json
import shutil

import numpy as np
import pytest
import torch

import config
import data_generator
import extract_features
import task4b
from helpers import SMALL, copy_workdir, score_files
from test_training import synthetic_fold

EDGE_VALUES = [0.0, 0.2, 0.5, 0.5000000000000001, 0.6, 1.0]   # float32 rounds 0.5000000000000001 to 0.5


def fold_with_edge_values():
    fold = synthetic_fold()
    for key in ('Y_train', 'Y_val'):
        shape = fold[key].shape
        fold[key] = np.resize(np.array(EDGE_VALUES), shape).astype(np.float64)   # float64, as load_fold gives them
    return fold


def test_hard_targets_are_soft_above_the_threshold_of_the_float64_values_as_0_and_1(monkeypatch):
    fold = fold_with_edge_values()
    monkeypatch.setattr(config, 'TARGETS', 'hard')
    data = data_generator.fold_tensors(fold)
    for key in ('Y_train', 'Y_val'):
        expected = torch.from_numpy((fold[key] > config.HARD_LABEL_THRESHOLD).astype(np.float32))
        assert data[key].dtype == torch.float32 and torch.equal(data[key], expected), key
        assert set(data[key].unique().tolist()) == {0.0, 1.0}
    assert data['Y_train'].flatten()[:6].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]    # 0.5000000000000001 counts


def test_soft_targets_are_the_soft_values(monkeypatch):
    fold = fold_with_edge_values()
    data = data_generator.fold_tensors(fold)
    assert config.TARGETS == 'soft'
    assert torch.equal(data['Y_train'], torch.from_numpy(fold['Y_train'].astype(np.float32)))


def hard_label_copy(demo_root, path):
    """demo_root with annotation files of hard labels only: a row of 1.0 where soft > 0.5, no row elsewhere; the
    same audio (linked)."""
    (path / config.AUDIO_DIR).parent.mkdir(parents=True)
    (path / config.AUDIO_DIR).symlink_to(demo_root / config.AUDIO_DIR)
    shutil.copy(demo_root / config.DEMO_MARKER, path / config.DEMO_MARKER)
    rows_kept = 0
    for source in (demo_root / config.ANNOTATION_DIR).rglob('*.txt'):
        target = path / source.relative_to(demo_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        rows = [line.split('\t') for line in source.read_text().splitlines() if line.strip()]
        kept = [f'{onset}\t{offset}\t{label}\t1.0\n' for onset, offset, label, soft in rows
                if float(soft) > config.HARD_LABEL_THRESHOLD]
        target.write_text(''.join(kept))
        rows_kept += len(kept) < len(rows)
    assert rows_kept > 0                           # the demo's soft labels do have rows at or below 0.5
    return path


@pytest.mark.slow
def test_hard_targets_train_as_soft_targets_on_a_copy_of_the_data_holding_only_hard_labels(demo_root, demo_workdir,
                                                                                          tmp_path):
    train = ['--folds', '1', '--epochs', '1', '--device', 'cpu'] + SMALL
    hard = copy_workdir(demo_workdir, tmp_path / 'hard')
    assert task4b.main(['--workdir', str(hard), '--set', 'TARGETS=hard'] + train) == 0
    hard_data = tmp_path / 'hard_labels'
    extract_features.extract(hard_label_copy(demo_root, tmp_path / 'hard_data'), hard_data)
    assert task4b.main(['--workdir', str(hard_data)] + train) == 0
    soft = copy_workdir(demo_workdir, tmp_path / 'soft')
    assert task4b.main(['--workdir', str(soft)] + train) == 0

    assert score_files(hard) == score_files(hard_data) and score_files(hard)
    assert score_files(hard) != score_files(soft)
    settings = json.loads((hard / config.RUNS_DIR / 'run0' / 'settings.json').read_text())
    assert settings['record']['training']['config']['TARGETS'] == 'hard'
    assert '| This baseline: demo data, loss bce, hard targets, float32, 1 epoch,' in (hard / 'results.md').read_text()
