"""Augmentations of training batches, each off by default (the published protocol trains on none): frame shift,
FilterAugment, frequency MixStyle, mixup and SpecAugment's masks, applied in that order (AUGMENTATIONS at the end;
docs/method.md, Training).

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
    """FilterAugment (Nam et al., 2022): a random filter over the mel bands, one per batch in its bands and one per
    sequence in its gains, as the authors' code draws them. The band count is drawn from [FILTER_AUGMENT_MIN_BANDS,
    FILTER_AUGMENT_BANDS] and the cut points by filter_bands; the gains in dB by filter_gains_db. The gain scales
    the mel energies (by its MEL_POWER-th power: magnitudes or powers), or shifts them in the log domain (LOG_MEL)."""
    rng, mean, scale = augmenter.rng, augmenter.mean.to(x), augmenter.scale.to(x)
    edges = filter_bands(rng, x.shape[2])                                                # (n + 1,)
    gain_db = filter_gains_db(rng, edges, len(x))                                        # (b, bands)
    factor = _tensor(10 ** (gain_db * config.MEL_POWER / 20), x)[:, None, :]             # (b, 1, bands)
    energies = x * scale + mean                                                          # as extracted
    energies = energies + torch.log(factor) if config.LOG_MEL else energies * factor
    return (energies - mean) / scale, y


def filter_bands(rng, bins):
    """The edges of FilterAugment's bands, 0 < cut points < bins, for a band count n drawn uniformly from
    [FILTER_AUGMENT_MIN_BANDS, FILTER_AUGMENT_BANDS] -> (n + 1,) increasing, first 0, last bins. Every band is at
    least FILTER_AUGMENT_MIN_WIDTH mel bins wide: n - 1 sorted draws from the bins left over once each band has
    its width, then the widths added back, so the cut points never repeat. Where n bands of that width do not fit
    (utils.augmentation_problem lets it happen only above the fewest bands), the width shrinks to bins // n, as in
    the authors' code."""
    n = int(rng.integers(config.FILTER_AUGMENT_MIN_BANDS, config.FILTER_AUGMENT_BANDS + 1))
    width = min(config.FILTER_AUGMENT_MIN_WIDTH, bins // n)
    cuts = np.sort(rng.integers(0, bins - n * width + 1, n - 1)) + np.arange(1, n) * width   # (n - 1,)
    return np.concatenate(([0], cuts, [bins]))


def filter_gains_db(rng, edges, sequences):
    """Per sequence, FilterAugment's gain in dB of each mel bin, drawn uniformly from +/-FILTER_AUGMENT_DB ->
    (sequences, bins). 'step': one draw per band, the whole band at that gain. 'linear': one draw per band edge,
    each band a straight line in dB from the draw at its lower edge (its first bin) to that at its upper edge (its
    last bin), so a filter with one band is a tilt. One band of the step form is a plain random gain."""
    n, bins, limit = len(edges) - 1, edges[-1], config.FILTER_AUGMENT_DB
    band = np.searchsorted(edges, np.arange(bins), side='right') - 1                     # (bins,): 0 .. n-1
    if config.FILTER_AUGMENT_FORM == 'step':
        return rng.uniform(-limit, limit, (sequences, n))[:, band]
    at_edges = rng.uniform(-limit, limit, (sequences, n + 1))                            # (b, n + 1)
    widths = np.diff(edges)[band]
    along = (np.arange(bins) - edges[band]) / np.maximum(widths - 1, 1)                  # 0 at a band's first bin,
    return at_edges[:, band] + (at_edges[:, band + 1] - at_edges[:, band]) * along       # 1 at its last


def frequency_mixstyle(x, y, augmenter):
    """Frequency MixStyle (Zhou et al., 2021, frequency-wise as Kim et al., 2022), with probability MIXSTYLE per
    batch: each sequence's per-band mean and deviation over time replaced by a mix, weight ~ Beta(MIXSTYLE_ALPHA,
    MIXSTYLE_ALPHA), of its own and another sequence's of the batch; the targets stay."""
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
    """mixup (Zhang et al., 2018), with probability MIXUP per batch: lambda ~ Beta(MIXUP_ALPHA, MIXUP_ALPHA), each
    sequence mixed with another of the batch, x' = lambda x1 + (1 - lambda) x2, and its targets (soft or hard, as
    TARGETS makes them) with the same lambda and the same pair."""
    rng = augmenter.rng
    if rng.random() >= config.MIXUP:
        return x, y
    weight = float(rng.beta(config.MIXUP_ALPHA, config.MIXUP_ALPHA))
    other = torch.as_tensor(rng.permutation(len(x))).to(x.device)
    return weight * x + (1 - weight) * x[other], weight * y + (1 - weight) * y[other]


def spec_masks(x, y, augmenter):
    """SpecAugment's masks (Park et al., 2019): per sequence, TIME_MASKS spans of up to TIME_MASK_WIDTH frames and
    FREQ_MASKS spans of up to FREQ_MASK_WIDTH mel bands set to 0, the mean of the normalised features."""
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


# The augmentations in the order they are applied: (the settings that turn it on, the function that does it,
# (x, y, augmenter) -> (x, y)). A new augmentation is one entry here and its settings in config.py's augmentation
# section, which every run records (docs/extending.md)
AUGMENTATIONS = [
    (('FRAME_SHIFT',), frame_shift),
    (('FILTER_AUGMENT_BANDS',), filter_augment),
    (('MIXSTYLE',), frequency_mixstyle),
    (('MIXUP',), mixup),
    (('TIME_MASKS', 'FREQ_MASKS'), spec_masks),
]
