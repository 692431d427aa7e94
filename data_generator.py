"""Training data of one fold as tensors, built once, and the shuffled mini-batches of an epoch (docs/method.md, Features and Training).

    from data_generator import load_fold_tensors, training_batches
    data = load_fold_tensors(workdir, fold, device)          # X_train (n, 200, 64), Y_train (n, 200, 17), ...
    for x, y in training_batches(data['X_train'], data['Y_train'], config.BATCH_SIZE, generator):
        ...

A batch is one index_select of a shuffled permutation of tensors already on the device: no DataLoader worker
processes (forking one every epoch makes the parent pay a copy-on-write fault on every reused page).
"""
import numpy as np
import torch

import config
import extract_features
import post_processing
import utils


def training_targets(soft_targets):
    """A fold's soft targets (float64) as config.TARGETS says: themselves, or 'hard' (the labels the evaluation
    scores against), thresholded on the float64 values (in float32, 0.5000000000000001 would be 0.5)."""
    if config.TARGETS == 'hard':
        return (np.asarray(soft_targets) > config.HARD_LABEL_THRESHOLD).astype(np.float64)
    return soft_targets


def fold_tensors(fold_data, device='cpu'):
    """The arrays of a fold dict (extract_features.load_fold's keys) as float32 tensors on `device`: 'X_train'
    (n, 200, 64), 'Y_train' (n, 200, 17) (training_targets), 'X_val', 'Y_val' likewise; 'X_test' a list of
    (frames, 64), one per file of 'test_files'; 'val_reference' the validation sequences' events as one timeline,
    from the float64 soft targets; 'mean' and 'scale' (64,) stay numpy (best_model.pt keeps them for inference)."""
    def tensor(a):
        return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32)).to(device)

    out = {key: tensor(fold_data[key]) for key in ('X_train', 'X_val')}
    out.update({key: tensor(training_targets(fold_data[key])) for key in ('Y_train', 'Y_val')})
    out['X_test'] = [tensor(x) for x in fold_data['X_test']]
    val_hard = post_processing.hard_labels(fold_data['Y_val']).reshape(-1, len(config.HARD_CLASSES))  # (n x 200, 11)
    out['val_reference'] = post_processing.events_from_activity(val_hard, config.HARD_CLASSES, 'validation')
    out['test_files'] = list(fold_data['test_files'])
    out['mean'] = np.asarray(fold_data['mean'], dtype=np.float32)
    out['scale'] = np.asarray(fold_data['scale'], dtype=np.float32)
    for x_key, y_key in (('X_train', 'Y_train'), ('X_val', 'Y_val')):
        if len(out[x_key]) == 0:
            raise utils.DataError(f'fold has no {x_key[2:]} sequence of {config.SEQUENCE_LENGTH} frames: '
                                  f'its {x_key[2:]} files are shorter than {config.SEQUENCE_LENGTH} frames '
                                  f'together; put more files into that part of the fold')
        if out[x_key].shape[:2] != out[y_key].shape[:2]:
            raise utils.DataError(f'{x_key} {tuple(out[x_key].shape)} and {y_key} {tuple(out[y_key].shape)} '
                                  f'differ in sequences or frames; re-run extract_features.py')
    return out


def load_fold_tensors(workdir, fold, device='cpu'):
    """Fold `fold` of `<workdir>/features/` as tensors (fold_tensors); DataError if missing or extracted otherwise."""
    return fold_tensors(extract_features.load_fold(workdir, fold), device)


def training_batches(X, Y, batch_size, generator):
    """Mini-batches (x (b, 200, 64), y (b, 200, 17)) of one epoch, every sequence once, the last the remainder, in
    an order drawn on the CPU from the torch.Generator `generator` (its state goes into the checkpoint, so a resumed
    run draws the same orders)."""
    order = torch.randperm(len(X), generator=generator).to(X.device)  # (n,)
    for start in range(0, len(X), batch_size):
        index = order[start:start + batch_size]                        # (b,)
        yield X.index_select(0, index), Y.index_select(0, index)


def sequence_batches(X, batch_size):
    """Consecutive slices (views, no copy) of X (n, ...) in batches of batch_size, in order (for evaluation)."""
    for start in range(0, len(X), batch_size):
        yield X[start:start + batch_size]
