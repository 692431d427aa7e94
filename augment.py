"""Augmentations of training batches, each off by default (the published protocol trains on none): frame shift,
FilterAugment, frequency MixStyle, mixup and SpecAugment's masks, applied in that order (docs/method.md, Training).

    augmenter = Augmenter(seed, mean, scale)          # one per fold: its own random stream, saved in the checkpoint
    x, y = augmenter(x, y)                            # a training batch (b, 200, 64), (b, 200, 17); untouched when off

task4b.py calls it on training batches only, never on validation, test or inference. Every random draw comes from
the augmenter's generator, seeded from the run's seed and checkpointed like the shuffling order, so that a resumed
run draws what the uninterrupted run drew; the arithmetic runs on the batch's device.
"""
import numpy as np
import torch

import config

STREAM = 1           # the generator's stream beside the run's seed: other numbers than the shuffling order's
EPS = 1e-6           # added to MixStyle's variances (a band constant over a sequence has none)


class Augmenter:
    """The fold's augmentations: their generator and the fold's normalisation (FilterAugment scales energies, and
    the batches hold normalised features)."""

    def __init__(self, seed, mean, scale):
        self.rng = np.random.default_rng([seed, STREAM])
        self.mean, self.scale = torch.as_tensor(mean), torch.as_tensor(scale)       # (64,), (64,)

    def __call__(self, x, y):
        if config.FRAME_SHIFT:
            x, y = frame_shift(x, y, self.rng)
        if config.FILTER_AUGMENT_BANDS:
            x = filter_augment(x, self.rng, self.mean.to(x), self.scale.to(x))
        if config.MIXSTYLE:
            x = frequency_mixstyle(x, self.rng)
        if config.MIXUP:
            x, y = mixup(x, y, self.rng)
        if config.TIME_MASKS or config.FREQ_MASKS:
            x = spec_masks(x, self.rng)
        return x, y

    def state_dict(self):
        return self.rng.bit_generator.state

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state


def _tensor(array, like):
    return torch.as_tensor(array).to(device=like.device, dtype=like.dtype)


def frame_shift(x, y, rng):
    """Each sequence and its targets rolled together in time by up to FRAME_SHIFT frames either way."""
    frames = x.shape[1]
    shifts = rng.integers(-config.FRAME_SHIFT, config.FRAME_SHIFT + 1, len(x))              # (b,)
    index = torch.as_tensor((np.arange(frames)[None, :] - shifts[:, None]) % frames).to(x.device)   # (b, frames)
    rows = torch.arange(len(x), device=x.device)[:, None]
    return x[rows, index], y[rows, index]


def filter_augment(x, rng, mean, scale):
    """FilterAugment (Nam et al., 2022), its step form: per sequence, the mel bands cut at random into
    FILTER_AUGMENT_BANDS contiguous bands, each given a gain drawn from +/-FILTER_AUGMENT_DB dB. The gain scales the
    mel energies (by its MEL_POWER-th power: magnitudes or powers), or shifts them in the log domain (LOG_MEL)."""
    n, bands = config.FILTER_AUGMENT_BANDS, x.shape[2]
    cuts = np.sort(rng.integers(1, bands, (len(x), n - 1)), axis=1)                      # (b, n - 1)
    band = (np.arange(bands)[None, None, :] >= cuts[:, :, None]).sum(axis=1)             # (b, bands): 0 .. n-1
    gain_db = np.take_along_axis(rng.uniform(-config.FILTER_AUGMENT_DB, config.FILTER_AUGMENT_DB, (len(x), n)),
                                 band, axis=1)                                           # (b, bands)
    factor = _tensor(10 ** (gain_db * config.MEL_POWER / 20), x)[:, None, :]             # (b, 1, bands)
    energies = x * scale + mean                                                          # as extracted
    energies = energies + torch.log(factor) if config.LOG_MEL else energies * factor
    return (energies - mean) / scale


def frequency_mixstyle(x, rng):
    """Frequency MixStyle (Zhou et al., 2021, frequency-wise as Kim et al., 2022), with probability MIXSTYLE per
    batch: each sequence's per-band mean and deviation over time replaced by a mix, weight ~ Beta(MIXSTYLE_ALPHA,
    MIXSTYLE_ALPHA), of its own and another sequence's of the batch; the targets stay."""
    if rng.random() >= config.MIXSTYLE:
        return x
    mu = x.mean(dim=1, keepdim=True)                                                     # (b, 1, bands)
    sigma = (x.var(dim=1, keepdim=True) + EPS).sqrt()
    weight = _tensor(rng.beta(config.MIXSTYLE_ALPHA, config.MIXSTYLE_ALPHA, (len(x), 1, 1)), x)
    other = torch.as_tensor(rng.permutation(len(x))).to(x.device)
    return ((x - mu) / sigma * (weight * sigma + (1 - weight) * sigma[other])
            + weight * mu + (1 - weight) * mu[other])


def mixup(x, y, rng):
    """mixup (Zhang et al., 2018), with probability MIXUP per batch: lambda ~ Beta(MIXUP_ALPHA, MIXUP_ALPHA), each
    sequence mixed with another of the batch, x' = lambda x1 + (1 - lambda) x2, and its targets (soft or hard, as
    TARGETS makes them) with the same lambda and the same pair."""
    if rng.random() >= config.MIXUP:
        return x, y
    weight = float(rng.beta(config.MIXUP_ALPHA, config.MIXUP_ALPHA))
    other = torch.as_tensor(rng.permutation(len(x))).to(x.device)
    return weight * x + (1 - weight) * x[other], weight * y + (1 - weight) * y[other]


def spec_masks(x, rng):
    """SpecAugment's masks (Park et al., 2019): per sequence, TIME_MASKS spans of up to TIME_MASK_WIDTH frames and
    FREQ_MASKS spans of up to FREQ_MASK_WIDTH mel bands set to 0, the mean of the normalised features."""
    keep = torch.ones(x.shape[0], x.shape[1], x.shape[2], dtype=torch.bool)              # (b, frames, bands)
    for axis, count, width in ((1, config.TIME_MASKS, config.TIME_MASK_WIDTH),
                               (2, config.FREQ_MASKS, config.FREQ_MASK_WIDTH)):
        size = x.shape[axis]
        widths = rng.integers(0, width + 1, (len(x), count))                             # (b, count)
        starts = rng.integers(0, size - widths + 1)
        position = np.arange(size)[None, None, :]
        masked = ((position >= starts[..., None]) & (position < (starts + widths)[..., None])).any(axis=1)
        keep &= torch.as_tensor(~masked).unsqueeze(3 - axis)                             # (b, size) -> its axis
    return x * keep.to(x.device)
