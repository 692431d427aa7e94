"""Augmentations of training batches, each off by default (the published protocol has none), applied in the order of
AUGMENTATIONS (docs/method.md, Training); every random draw comes from the augmenter's generator.

    augmenter = Augmenter(seed, mean, scale)          # one per fold: its own random stream, saved in the checkpoint
    x, y = augmenter(x, y)                            # a training batch (b, 200, 64), (b, 200, 17); untouched when off
"""
import numpy as np
import torch

import config

STREAM = 1           # the generator's stream beside the run's seed: other numbers than the shuffling order's
EPS = 1e-6           # added to MixStyle's variances (a band constant over a sequence has none)


class Augmenter:
    """The fold's augmentations: their generator and the fold's normalisation (FilterAugment scales energies)."""

    def __init__(self, seed, mean, scale):
        self.rng = np.random.default_rng([seed, STREAM])
        self.mean, self.scale = torch.as_tensor(mean), torch.as_tensor(scale)       # (64,), (64,)

    def __call__(self, x, y):
        for settings, augment in AUGMENTATIONS:
            if any(getattr(config, name) for name in settings):
                x, y = augment(x, y, self)
        return x, y

    def state_dict(self):
        return self.rng.bit_generator.state

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state


def _tensor(array, like):
    return torch.as_tensor(array).to(device=like.device, dtype=like.dtype)


def frame_shift(x, y, augmenter):
    """Each sequence and its targets rolled together in time by up to FRAME_SHIFT frames either way."""
    frames = x.shape[1]
    shifts = augmenter.rng.integers(-config.FRAME_SHIFT, config.FRAME_SHIFT + 1, len(x))              # (b,)
    index = torch.as_tensor((np.arange(frames)[None, :] - shifts[:, None]) % frames).to(x.device)   # (b, frames)
    rows = torch.arange(len(x), device=x.device)[:, None]
    return x[rows, index], y[rows, index]


def filter_augment(x, y, augmenter):
    """FilterAugment (Nam et al., 2022), as the authors' code draws it: a random filter over the mel bands, its bands
    drawn per batch and its gains per sequence, scaling the energies as extracted (shifting their log with LOG_MEL)."""
    rng, mean, scale = augmenter.rng, augmenter.mean.to(x), augmenter.scale.to(x)
    edges = filter_bands(rng, x.shape[2])                                                # (n + 1,)
    gain_db = filter_gains_db(rng, edges, len(x))                                        # (b, bands)
    factor = _tensor(10 ** (gain_db * config.MEL_POWER / 20), x)[:, None, :]             # (b, 1, bands)
    energies = x * scale + mean                                                          # as extracted
    energies = energies + torch.log(factor) if config.LOG_MEL else energies * factor
    return (energies - mean) / scale, y


def filter_bands(rng, bins):
    """The edges of FilterAugment's n bands, n drawn from [FILTER_AUGMENT_MIN_BANDS, FILTER_AUGMENT_BANDS] -> (n + 1,)
    increasing from 0 to bins. Each band is FILTER_AUGMENT_MIN_WIDTH bins wide or more (draws from the bins left
    over, the widths added back), or bins // n where n such bands do not fit, as in the authors' code."""
    n = int(rng.integers(config.FILTER_AUGMENT_MIN_BANDS, config.FILTER_AUGMENT_BANDS + 1))
    width = min(config.FILTER_AUGMENT_MIN_WIDTH, bins // n)
    cuts = np.sort(rng.integers(0, bins - n * width + 1, n - 1)) + np.arange(1, n) * width   # (n - 1,)
    return np.concatenate(([0], cuts, [bins]))


def filter_gains_db(rng, edges, sequences):
    """Per sequence, FilterAugment's gain in dB of each mel bin, drawn from +/-FILTER_AUGMENT_DB -> (sequences, bins):
    'step', one draw per band; 'linear', one per band edge, each band a line in dB from its first bin to its last."""
    n, bins, limit = len(edges) - 1, edges[-1], config.FILTER_AUGMENT_DB
    band = np.searchsorted(edges, np.arange(bins), side='right') - 1                     # (bins,): 0 .. n-1
    if config.FILTER_AUGMENT_FORM == 'step':
        return rng.uniform(-limit, limit, (sequences, n))[:, band]
    at_edges = rng.uniform(-limit, limit, (sequences, n + 1))                            # (b, n + 1)
    widths = np.diff(edges)[band]
    along = (np.arange(bins) - edges[band]) / np.maximum(widths - 1, 1)                  # 0 at a band's first bin,
    return at_edges[:, band] + (at_edges[:, band + 1] - at_edges[:, band]) * along       # 1 at its last


def frequency_mixstyle(x, y, augmenter):
    """Frequency MixStyle (Zhou et al., 2021, frequency-wise as Kim et al., 2022), with probability MIXSTYLE per batch:
    each sequence's per-band mean and deviation over time mixed with another's, weight ~ Beta(alpha, alpha)."""
    rng = augmenter.rng
    if rng.random() >= config.MIXSTYLE:
        return x, y
    mu = x.mean(dim=1, keepdim=True)                                                     # (b, 1, bands)
    sigma = (x.var(dim=1, keepdim=True) + EPS).sqrt()
    weight = _tensor(rng.beta(config.MIXSTYLE_ALPHA, config.MIXSTYLE_ALPHA, (len(x), 1, 1)), x)
    other = torch.as_tensor(rng.permutation(len(x))).to(x.device)
    return ((x - mu) / sigma * (weight * sigma + (1 - weight) * sigma[other])
            + weight * mu + (1 - weight) * mu[other]), y


def mixup(x, y, augmenter):
    """mixup (Zhang et al., 2018), with probability MIXUP per batch: a sequence and its targets mixed with another."""
    rng = augmenter.rng
    if rng.random() >= config.MIXUP:
        return x, y
    weight = float(rng.beta(config.MIXUP_ALPHA, config.MIXUP_ALPHA))
    other = torch.as_tensor(rng.permutation(len(x))).to(x.device)
    return weight * x + (1 - weight) * x[other], weight * y + (1 - weight) * y[other]


def spec_masks(x, y, augmenter):
    """SpecAugment's masks (Park et al., 2019): per sequence, spans of frames and bands set to 0, the features' mean."""
    keep = torch.ones(x.shape[0], x.shape[1], x.shape[2], dtype=torch.bool)              # (b, frames, bands)
    for axis, count, width in ((1, config.TIME_MASKS, config.TIME_MASK_WIDTH),
                               (2, config.FREQ_MASKS, config.FREQ_MASK_WIDTH)):
        size = x.shape[axis]
        widths = augmenter.rng.integers(0, width + 1, (len(x), count))                   # (b, count)
        starts = augmenter.rng.integers(0, size - widths + 1)
        position = np.arange(size)[None, None, :]
        masked = ((position >= starts[..., None]) & (position < (starts + widths)[..., None])).any(axis=1)
        keep &= torch.as_tensor(~masked).unsqueeze(3 - axis)                             # (b, size) -> its axis
    return x * keep.to(x.device), y


# In the order applied: (the settings that turn it on, (x, y, augmenter) -> (x, y)); docs/extending.md adds one
AUGMENTATIONS = [
    (('FRAME_SHIFT',), frame_shift),
    (('FILTER_AUGMENT_BANDS',), filter_augment),
    (('MIXSTYLE',), frequency_mixstyle),
    (('MIXUP',), mixup),
    (('TIME_MASKS', 'FREQ_MASKS'), spec_masks),
]
