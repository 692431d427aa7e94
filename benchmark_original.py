"""The original DCASE2023 Task 4B baseline's feature extraction and training epoch, rebuilt for timing only.

benchmark.py times these as its 'original' parts beside ours, in one run. They do what the original code does, step
for step (docs/speed.md, The original's way); nothing here trains or scores: the method's numbers are task4b.py's.
"""
import time
import warnings
import wave
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import torch
from sklearn import preprocessing
from torch import nn
from torch.utils.data import DataLoader, Dataset

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # dcase_util imports pkg_resources
import sed_eval  # noqa: E402
from dcase_util.containers import metadata  # noqa: E402

import config  # noqa: E402
import utils  # noqa: E402


def read_wav(path):
    """The original's WAV reader: bytes -> float64 mono, divided by 2^(bits - 1) + 1."""
    with wave.open(str(path)) as f:
        width, channels = f.getsampwidth(), f.getnchannels()
        data = f.readframes(f.getnframes())
    if width == 3:
        a = np.empty((len(data) // (width * channels), channels, 4), dtype=np.uint8)
        a[:, :, :3] = np.frombuffer(data, dtype=np.uint8).reshape(-1, channels, 3)
        a[:, :, 3:] = (a[:, :, 2:3] >> 7) * 255
        audio = a.view('<i4').reshape(a.shape[:-1]).T
    else:
        audio = np.frombuffer(data, dtype=f'<i{width}').reshape(-1, channels).T
    return np.mean(audio, axis=0) / float(2 ** (width * 8 - 1) + 1)


def label_matrix(path, frames):
    """Soft values per frame (frames, 17), float64: each annotation line fills floor(onset) .. ceil(offset)."""
    labels = np.zeros((frames, len(config.CLASSES)))
    with open(path) as f:
        for line in f:
            onset, offset, label, value = line.strip().split('\t')
            start = int(np.floor(float(onset) * config.SAMPLE_RATE / config.HOP_LENGTH))
            end = int(np.ceil(float(offset) * config.SAMPLE_RATE / config.HOP_LENGTH))
            labels[start:end, config.CLASSES.index(label)] = float(value)
    return labels


def extract(data_root, folds_dir, out_dir):
    """Every file of the development split, then the per-fold scaling and merging -> number of files."""
    out_dir = Path(out_dir)
    files = pd.read_csv(config.DEVELOPMENT_SPLIT)['filename']
    mel_basis = librosa.filters.mel(sr=config.SAMPLE_RATE, n_fft=config.N_FFT, n_mels=config.N_MELS,
                                    fmin=config.FMIN, fmax=config.FMAX)
    for file_id in files:
        name = utils.file_stem(file_id)
        y = read_wav(utils.audio_path(data_root, file_id))
        spectrum = np.abs(librosa.stft(y, n_fft=config.N_FFT, hop_length=config.HOP_LENGTH, pad_mode='constant'))
        mbe = np.dot(mel_basis, spectrum).T
        np.savez(out_dir / f'{name}.npz', mbe)
        np.savez(out_dir / f'{name}_soft.npz', label_matrix(utils.annotation_path(data_root, file_id), len(mbe)))

    def stacked(ids, suffix):
        return np.concatenate([np.load(out_dir / f'{utils.file_stem(i)}{suffix}.npz')['arr_0'] for i in ids], 0)

    for fold in range(1, config.N_FOLDS + 1):
        part = {p: pd.read_csv(Path(folds_dir) / f'fold{fold}_{p}.csv')['filename'].tolist()
                for p in ('train', 'val', 'test')}
        scaler = preprocessing.StandardScaler()
        X_train = scaler.fit_transform(stacked(part['train'], ''))
        X_val = scaler.transform(stacked(part['val'], ''))
        np.savez(out_dir / f'merged_mbe_fold{fold}.npz', X_train, X_val)
        for name in map(utils.file_stem, part['test']):
            x = scaler.transform(np.load(out_dir / f'{name}.npz')['arr_0'])
            np.savez(out_dir / f'test_{name}_fold{fold}.npz', x)
        np.savez(out_dir / f'merged_lab_soft_fold{fold}.npz', stacked(part['train'], '_soft'),
                 stacked(part['val'], '_soft'))
        for name in map(utils.file_stem, part['test']):
            np.savez(out_dir / f'lab_soft_{name}_fold{fold}.npz', np.load(out_dir / f'{name}_soft.npz')['arr_0'])
    return len(files)


class SequenceDataset(Dataset):
    def __init__(self, X, Y):
        self.X, self.Y = X, Y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i].astype(np.float32), self.Y[i].astype(np.float32)


class OriginalCRNN(nn.Module):
    """conv -> batch norm -> ReLU -> max-pool -> dropout, three times; GRU; two linear layers."""

    def __init__(self):
        super().__init__()
        c, k = config.CONV_CHANNELS, config.CONV_KERNEL
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else c, c, k, padding='same') for i in range(3)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(c) for _ in range(3)])
        self.pools = nn.ModuleList([nn.MaxPool2d((1, p)) for p in config.POOL_SIZES])
        self.dropout = nn.Dropout(config.DROPOUT)
        self.gru = nn.GRU(3 * c, config.GRU_UNITS, bidirectional=True, batch_first=True)
        self.linear1 = nn.Linear(2 * config.GRU_UNITS, config.DENSE_UNITS)
        self.linear2 = nn.Linear(config.DENSE_UNITS, len(config.CLASSES))

    def forward(self, x):
        x = x[:, None, :, :]
        for conv, norm, pool in zip(self.convs, self.norms, self.pools):
            x = self.dropout(pool(torch.relu(norm(conv(x)))))
        x = x.permute(0, 2, 1, 3).flatten(2)              # (batch, frames, channels x bands)
        x, _ = self.gru(x)
        return self.linear2(self.linear1(x))


def event_list(frames):
    """Frame values (frames, 17) -> dcase_util events of the hard classes, gap- then length-processed."""
    events = []
    for c, label in enumerate(config.CLASSES):
        if label not in config.HARD_CLASSES:
            continue
        active = frames[:, c] > config.THRESHOLD
        changes = np.logical_xor(active[1:], active[:-1]).nonzero()[0] + 1
        if active[0]:
            changes = np.r_[0, changes]
        if active[-1]:
            changes = np.r_[changes, len(active)]
        for onset, offset in np.floor(changes.reshape(-1, 2) * config.FRAME_SECONDS):
            events.append(metadata.MetaDataItem({'event_onset': onset, 'event_offset': offset, 'event_label': label}))
    events = metadata.MetaDataContainer(events).process_events(minimum_event_length=None, minimum_event_gap=0.1)
    return events.process_events(minimum_event_length=0.1, minimum_event_gap=None)


def train_epoch(model, optimizer, loader):
    model.train()
    losses = []
    for x, y in loader:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(torch.Tensor(x)), torch.Tensor(y))
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    return float(np.mean(losses))


def validate(model, loader):
    model.eval()
    metrics = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=config.HARD_CLASSES, time_resolution=1.0)
    with torch.no_grad():
        total = 0.0
        for x, y in loader:
            out = model(torch.Tensor(x))
            total += nn.functional.mse_loss(out, torch.Tensor(y))
            metrics.evaluate(reference_event_list=event_list(y.reshape(-1, len(config.CLASSES)).numpy()),
                             estimated_event_list=event_list(out.reshape(-1, len(config.CLASSES)).numpy()))
        loss = float(total / len(loader))
    metrics.overall_error_rate()                  # the original computes both for its log line
    metrics.overall_f_measure()
    return loss


def time_epochs(fold_data, epochs):
    """fold_data: extract_features.load_fold's arrays -> (training seconds, validation seconds) per epoch."""
    torch.manual_seed(config.SEED)

    def loader(part):
        # the original's float64 arrays; pin_memory without a GPU only warns, the original asked for it
        dataset = SequenceDataset(fold_data[f'X_{part}'].astype(np.float64), fold_data[f'Y_{part}'].astype(np.float64))
        return DataLoader(dataset, batch_size=config.BATCH_SIZE, shuffle=True, num_workers=1,
                          pin_memory=torch.cuda.is_available())

    train_loader, val_loader = loader('train'), loader('val')
    model = OriginalCRNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.)
    train_s, val_s = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        train_epoch(model, optimizer, train_loader)
        middle = time.perf_counter()
        validate(model, val_loader)
        train_s.append(middle - start)
        val_s.append(time.perf_counter() - middle)
    return train_s, val_s


if __name__ == '__main__':
    raise SystemExit('run through benchmark.py (its original parts): python benchmark.py --help')
