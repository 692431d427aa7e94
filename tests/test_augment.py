"""Augmentations of training batches (augment.py): off by default, each doing what it says on a batch, training
batches only, resumed exactly, and named in the record and the table."""
import json

import numpy as np
import pytest
import torch
from scipy import stats

import augment
import config
import experiment
import task4b
from augment import Augmenter
from helpers import SMALL, copy_workdir, score_files
from model import CRNN
from test_training import kill_after_checkpoints

EPOCHS = ['--folds', '1', '--epochs', '3', '--device', 'cpu', *SMALL]     # what reaches the network, not what it learns
ALL_ON = ['--set', 'FRAME_SHIFT=10', '--set', 'FILTER_AUGMENT_BANDS=4', '--set', 'MIXSTYLE=0.5', '--set', 'MIXUP=0.5',
          '--set', 'TIME_MASKS=2', '--set', 'FREQ_MASKS=2']
BANDS, CLASSES = config.N_MELS, len(config.CLASSES)


def batch(b=16, frames=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, frames, BANDS, generator=g), torch.rand(b, frames, CLASSES, generator=g)


def augmented(settings, x, y, seed=0, mean=None, scale=None):
    with experiment.for_command([a for name in settings for a in ('--set', name)]):
        augmenter = Augmenter(seed, torch.zeros(BANDS) if mean is None else mean,
                              torch.ones(BANDS) if scale is None else scale)
        return augmenter(x, y)


def test_off_a_batch_is_returned_as_it_is_and_nothing_is_drawn():
    x, y = batch()
    augmenter = Augmenter(0, torch.zeros(BANDS), torch.ones(BANDS))
    state = augmenter.state_dict()
    x2, y2 = augmenter(x, y)
    assert x2 is x and y2 is y and augmenter.state_dict() == state


def test_mixup_mixes_the_targets_with_the_lambda_and_pairs_of_the_features():
    levels = torch.linspace(0.1, 0.9, 16)                          # sequence i: features c_i, targets 0.5 c_i + 0.2
    x = levels[:, None, None].expand(16, 50, BANDS).clone()
    y = (0.5 * levels + 0.2)[:, None, None].expand(16, 50, CLASSES).clone()
    x2, y2 = augmented(['MIXUP=1.0'], x, y)
    assert not torch.equal(x2, x)
    torch.testing.assert_close(y2, 0.5 * x2[..., :1].expand_as(y2) + 0.2)     # same lambda, same pairs


def test_masks_cover_at_most_their_widths_and_leave_the_targets():
    x, y = torch.ones(64, 200, BANDS), torch.rand(64, 200, CLASSES)
    x2, y2 = augmented(['TIME_MASKS=2', 'TIME_MASK_WIDTH=20', 'FREQ_MASKS=1', 'FREQ_MASK_WIDTH=8'], x, y)
    masked_frames = (x2 == 0).all(dim=2).sum(dim=1)                 # (b,)
    masked_bands = (x2 == 0).all(dim=1).sum(dim=1)
    assert masked_frames.max() <= 2 * 20 and masked_bands.max() <= 8
    assert masked_frames.sum() > 0 and masked_bands.sum() > 0
    assert torch.equal(x2[x2 != 0], x[x2 != 0]) and y2 is y


def test_frame_shift_moves_features_and_targets_together_within_the_shift():
    frames = 50
    x = torch.arange(frames, dtype=torch.float32)[None, :, None].expand(16, frames, BANDS).clone()
    y = x[..., :CLASSES] / frames
    x2, y2 = augmented(['FRAME_SHIFT=5'], x, y)
    torch.testing.assert_close(y2, x2[..., :CLASSES] / frames)
    shifts = (x2[:, 0, 0] - x[:, 0, 0]).remainder(frames)          # where frame 0 came from
    shifts = torch.where(shifts > frames // 2, shifts - frames, shifts)
    assert shifts.abs().max() <= 5 and shifts.abs().sum() > 0
    for i, shift in enumerate(shifts.long().tolist()):
        assert torch.equal(x2[i], torch.roll(x[i], -shift, dims=0))


# -----------------------------------------------------------------------------
# FilterAugment: its properties over many draws

FILTER = ['FILTER_AUGMENT_MIN_BANDS=2', 'FILTER_AUGMENT_BANDS=5', 'FILTER_AUGMENT_MIN_WIDTH=6']


def settings_args(settings):
    return [a for name in settings for a in ('--set', name)]


def drawn_filter_bands(settings, draws=2000):
    rng = np.random.default_rng(0)
    with experiment.for_command(settings_args(settings)):
        return [augment.filter_bands(rng, BANDS) for _ in range(draws)]


def replay(augmenter):
    """A generator in the augmenter's state: it draws what the augmenter's next batch will."""
    rng = np.random.default_rng()
    rng.bit_generator.state = augmenter.state_dict()
    return rng


def measured_gains_db(settings, batches=500, b=4):
    """FilterAugment on batches of energies 1 (mean 0, scale 1: the features are the energies) -> per batch the
    gains it applied in dB (b, bands), and the band edges it drew for the batch (its generator's first draws)."""
    x = torch.ones(b, 2, BANDS, dtype=torch.float64)
    measured = []
    with experiment.for_command(settings_args(settings)):
        augmenter = Augmenter(0, torch.zeros(BANDS), torch.ones(BANDS))
        for _ in range(batches):
            edges = augment.filter_bands(replay(augmenter), BANDS)
            x2, _ = augmenter(x, None)
            assert torch.equal(x2[:, 0], x2[:, 1])                     # one filter at every frame
            measured.append((20 * np.log10(x2[:, 0].numpy()) / config.MEL_POWER, edges))
    return measured


def test_filter_augment_band_counts_take_every_value_of_the_range_and_no_other():
    counts = np.array([len(edges) - 1 for edges in drawn_filter_bands(FILTER)])
    assert set(counts) == {2, 3, 4, 5}
    assert all(abs(np.mean(counts == n) - 0.25) < 0.04 for n in range(2, 6))      # uniform: 4 sd of 2000 draws


def test_filter_augment_cut_points_are_distinct_and_every_band_at_least_the_min_width():
    drawn = drawn_filter_bands(FILTER)
    assert all(edges[0] == 0 and edges[-1] == BANDS for edges in drawn)
    widths = np.concatenate([np.diff(edges) for edges in drawn])   # all >= 1: the cut points never repeat
    assert widths.min() == 6 and widths.max() > 30               # a minimum, not a size


def test_filter_augment_shrinks_the_min_width_only_for_band_counts_it_does_not_fit():
    drawn = drawn_filter_bands(['FILTER_AUGMENT_MIN_BANDS=8', 'FILTER_AUGMENT_BANDS=20', 'FILTER_AUGMENT_MIN_WIDTH=6'])
    assert {len(edges) - 1 for edges in drawn} == set(range(8, 21))
    for edges in drawn:                                           # 64 bins: 6 fits up to 10 bands, 20 get 3
        assert np.diff(edges).min() >= min(6, BANDS // (len(edges) - 1))


def test_step_filter_augment_gives_each_band_of_each_sequence_one_gain_within_the_range():
    for gain_db, edges in measured_gains_db(FILTER + ['FILTER_AUGMENT_FORM=step']):
        assert np.abs(gain_db).max() <= 6 + 1e-9
        for low, high in zip(edges[:-1], edges[1:]):
            np.testing.assert_allclose(gain_db[:, low:high], gain_db[:, [low] * (high - low)], atol=1e-9)
        assert np.abs(np.diff(gain_db, axis=1)[:, edges[1:-1] - 1]).min() > 1e-9     # a new gain at each cut
        assert len(np.unique(gain_db[:, 0].round(9))) == len(gain_db)      # the batch shares bands, not gains


def test_linear_filter_augment_runs_straight_in_db_between_gains_drawn_at_the_band_edges():
    edge_gains = []
    for gain_db, edges in measured_gains_db(FILTER + ['FILTER_AUGMENT_FORM=linear']):
        assert np.abs(gain_db).max() <= 6 + 1e-9
        for low, high in zip(edges[:-1], edges[1:]):
            steps = np.diff(gain_db[:, low:high], axis=1)          # from the lower edge's draw to the upper's
            np.testing.assert_allclose(steps, steps[:, [0] * steps.shape[1]], atol=1e-9)   # straight, so monotone
        np.testing.assert_allclose(gain_db[:, edges[1:-1] - 1], gain_db[:, edges[1:-1]], atol=1e-9)  # one draw
        edge_gains.append(gain_db[:, [*edges[:-1], BANDS - 1]])       # the draws: first bins, and the last bin
    assert stats.kstest(np.concatenate(edge_gains, axis=None), stats.uniform(-6, 12).cdf).pvalue > 1e-3


def test_filter_augment_with_one_band_is_one_random_gain_over_every_bin():
    gains = np.concatenate([gain_db for gain_db, _ in measured_gains_db(['FILTER_AUGMENT_BANDS=1'], batches=200)])
    np.testing.assert_allclose(gains, gains[:, [0] * BANDS], atol=1e-9)
    assert np.abs(gains).max() <= 6 + 1e-9 and stats.kstest(gains[:, 0], stats.uniform(-6, 12).cdf).pvalue > 1e-3


@pytest.mark.parametrize('log_mel, power', [(False, 1.0), (False, 2.0), (True, 2.0)])
def test_filter_augment_scales_the_energies_as_extracted_by_the_gain_to_the_mel_power(log_mel, power):
    mean, scale = torch.full((BANDS,), 3.0, dtype=torch.float64), torch.full((BANDS,), 2.0, dtype=torch.float64)
    energies = torch.rand(16, 50, BANDS, dtype=torch.float64) + 1.0
    with experiment.for_command(settings_args(['FILTER_AUGMENT_BANDS=4', f'LOG_MEL={log_mel}', f'MEL_POWER={power}'])):
        augmenter = Augmenter(0, mean, scale)
        rng = replay(augmenter)
        gain_db = torch.as_tensor(augment.filter_gains_db(rng, augment.filter_bands(rng, BANDS), 16))
        x2, _ = augmenter((energies - mean) / scale, None)
    factor = (10 ** (gain_db * power / 20))[:, None, :]                            # (b, 1, bands)
    torch.testing.assert_close(x2 * scale + mean, energies + torch.log(factor) if log_mel else energies * factor)


def test_filter_augment_off_leaves_the_batch_and_draws_nothing():
    x, y = batch()
    with experiment.for_command(settings_args(['FILTER_AUGMENT_FORM=linear', 'FILTER_AUGMENT_MIN_WIDTH=6'])):
        augmenter = Augmenter(0, torch.zeros(BANDS), torch.ones(BANDS))
        state = augmenter.state_dict()
        x2, y2 = augmenter(x, y)
    assert x2 is x and y2 is y and augmenter.state_dict() == state


# -----------------------------------------------------------------------------
# Frequency MixStyle and mixup: what they mix, with which weights, how often

def test_frequency_mixstyle_gives_each_band_the_mixed_mean_and_deviation_and_leaves_the_targets():
    g = torch.Generator().manual_seed(0)
    b = 16
    spread = torch.linspace(0.2, 3.0, b, dtype=torch.float64)[:, None, None]     # a deviation of its own a sequence
    x = torch.randn(b, 50, BANDS, generator=g, dtype=torch.float64) * spread + torch.randn(b, 1, BANDS, generator=g,
                                                                                          dtype=torch.float64)
    y = torch.rand(b, 50, CLASSES)
    with experiment.for_command(['--set', 'MIXSTYLE=1.0']):
        augmenter = Augmenter(0, torch.zeros(BANDS), torch.ones(BANDS))
        rng = replay(augmenter)
        x2, y2 = augmenter(x, y)
    rng.random()                                                                 # whether to mix the batch
    w = torch.as_tensor(rng.beta(config.MIXSTYLE_ALPHA, config.MIXSTYLE_ALPHA, (b, 1)))          # (b, 1)
    other = rng.permutation(b)
    mu, sigma = x.mean(dim=1), (x.var(dim=1) + augment.EPS).sqrt()              # (b, bands)
    assert y2 is y and ((other != np.arange(b)) & ((w > 0.05) & (w < 0.95)).numpy()[:, 0]).sum() >= 4
    torch.testing.assert_close(x2.mean(dim=1), w * mu + (1 - w) * mu[other])
    mixed = w * sigma + (1 - w) * sigma[other]
    torch.testing.assert_close(x2.std(dim=1), mixed * x.std(dim=1) / sigma)        # EPS's share of sigma stays out


def one_hot_batches(count, b=16, frames=4):
    """Batches whose sequence i is 1 in mel band i and 0 in the others, the same in its targets: a mix of sequence i
    with j != i leaves its weight in band i and the rest in band j."""
    x = torch.eye(b, BANDS, dtype=torch.float64)[:, None, :].expand(b, frames, BANDS).contiguous()
    return [(x, x[..., :CLASSES].clone()) for _ in range(count)]


@pytest.mark.parametrize('kind', ['MIXUP', 'MIXSTYLE'])
def test_mixup_and_mixstyle_mix_a_batch_with_their_probability(kind):
    with experiment.for_command(settings_args([f'{kind}=0.3', f'{kind}_ALPHA=1.0'])):
        augmenter = Augmenter(0, torch.zeros(BANDS), torch.ones(BANDS))
        mixed = np.mean([not torch.equal(augmenter(x, y)[0], x) for x, y in one_hot_batches(2000)])
    assert abs(mixed - 0.3) < 4 * (0.3 * 0.7 / 2000) ** 0.5                      # 4 binomial sd


def measured_weights(kind, alpha, batches):
    """The weights mixup (one a batch) or MixStyle (one a sequence) mixed one-hot batches with, read from the
    output: band i of sequence i (mixup's value, MixStyle's mean over time), where i was mixed with another."""
    weights = []
    with experiment.for_command(settings_args([f'{kind}=1.0', f'{kind}_ALPHA={alpha}'])):
        augmenter = Augmenter(0, torch.zeros(BANDS), torch.ones(BANDS))
        for x, y in one_hot_batches(batches):
            means = augmenter(x, y)[0].mean(dim=1)[:, :len(x)]                   # (b, b): weight i, 1 - weight j
            own = means.diagonal()
            with_another = (means - torch.diag(own)).abs().sum(dim=1) > 1e-12
            weights.append(own[with_another][:1 if kind == 'MIXUP' else None].numpy())
    return np.concatenate(weights)


@pytest.mark.parametrize('alpha', [0.2, 1.0])
@pytest.mark.parametrize('kind', ['MIXUP', 'MIXSTYLE'])
def test_mixup_and_mixstyle_weights_follow_beta_alpha_alpha(kind, alpha):
    w = measured_weights(kind, alpha, batches=2000 if kind == 'MIXUP' else 150)
    assert len(w) > 1500
    assert stats.kstest(w, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    assert abs(w.var() - 1 / (4 * (2 * alpha + 1))) < 0.015                      # Beta(a, a)'s, 4 sd of 2000


@pytest.mark.parametrize('settings, message', [
    ('MIXUP=1.5', 'config.MIXUP = 1.5: expected a number in [0, 1]; set by --set MIXUP=1.5'),
    ('FREQ_MASK_WIDTH=100', 'config.FREQ_MASK_WIDTH = 100: expected at most the input bands = 64; set by --set '
                            'FREQ_MASK_WIDTH=100'),
    ('TIME_MASKS=-1', 'config.TIME_MASKS = -1: expected an integer of at least 0; set by --set TIME_MASKS=-1'),
    ('FILTER_AUGMENT_BANDS=3 FILTER_AUGMENT_MIN_BANDS=4', 'config.FILTER_AUGMENT_MIN_BANDS = 4: expected at most '
     'FILTER_AUGMENT_BANDS = 3; set by --set FILTER_AUGMENT_MIN_BANDS=4'),
    ('FILTER_AUGMENT_BANDS=8 FILTER_AUGMENT_MIN_BANDS=4 FILTER_AUGMENT_MIN_WIDTH=20',
     'config.FILTER_AUGMENT_MIN_WIDTH = 20: expected FILTER_AUGMENT_MIN_BANDS (4) bands of that width to fit in '
     'the 64 input bands; set by --set FILTER_AUGMENT_MIN_WIDTH=20'),
    ('FILTER_AUGMENT_FORM=ramp', "config.FILTER_AUGMENT_FORM = 'ramp': expected 'step' or 'linear'; set by --set "
                                 "FILTER_AUGMENT_FORM=ramp"),
])
def test_an_augmentation_no_training_can_use_is_one_line(settings, message, tmp_path, capsys):
    assert task4b.main(['--workdir', str(tmp_path), *settings_args(settings.split())] + EPOCHS) == 2
    assert capsys.readouterr().err == f'error: {message}\n'


# -----------------------------------------------------------------------------
# In training

@pytest.fixture(scope='module')
def augmented_run(demo_workdir, tmp_path_factory):
    """Fold 1 of the demo data, 3 epochs, every augmentation on, the CRNN's inputs recorded."""
    workdir = copy_workdir(demo_workdir, tmp_path_factory.mktemp('augmented'))
    inputs = []

    def record(module, args):
        if isinstance(module, CRNN):
            inputs.append((module, module.training, args[0].detach().clone()))
    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        assert task4b.main(['--workdir', str(workdir)] + EPOCHS + ALL_ON) == 0
    finally:
        hook.remove()
    trained = {id(module) for module, training, _ in inputs if training}    # not torchinfo's summaries' networks
    return workdir, [(training, x) for module, training, x in inputs if id(module) in trained]


@pytest.mark.slow
def test_validation_and_test_batches_reach_the_network_as_they_are(augmented_run, demo_workdir):
    import extract_features
    import runs
    import utils
    from data_generator import load_fold_tensors, sequence_batches
    _, inputs = augmented_run
    data = load_fold_tensors(demo_workdir, 1)
    evaluated = [x for training, x in inputs if not training]
    validation_files = []                                # whole, for the thresholds chosen on validation
    for file_id in runs.validation_files(demo_workdir, 1):
        with np.load(utils.file_features_path(demo_workdir, file_id)) as stored:
            features = extract_features.normalise(stored['features'], data['mean'], data['scale'])
        validation_files.append(torch.from_numpy(features).unsqueeze(0))
    expected = [*[x for _ in range(3) for x in sequence_batches(data['X_val'], config.BATCH_SIZE)],
                *[x.unsqueeze(0) for x in data['X_test']], *validation_files]
    assert len(evaluated) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(evaluated, expected))
    trained = [x for training, x in inputs if training]
    originals = {tuple(row.flatten()[:8].tolist()) for row in data['X_train']}
    assert any(tuple(row.flatten()[:8].tolist()) not in originals for x in trained for row in x)


@pytest.mark.slow
def test_an_augmented_run_killed_and_resumed_gives_the_scores_of_the_uninterrupted_one(augmented_run, demo_workdir,
                                                                                       tmp_path, monkeypatch):
    straight, _ = augmented_run
    workdir = copy_workdir(demo_workdir, tmp_path / 'resumed')
    with monkeypatch.context() as patch:
        kill_after_checkpoints(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            task4b.main(['--workdir', str(workdir)] + EPOCHS + ALL_ON)
    assert task4b.main(['--workdir', str(workdir), '--resume'] + EPOCHS + ALL_ON) == 0
    assert score_files(workdir) == score_files(straight) and score_files(straight)
    unaugmented = copy_workdir(demo_workdir, tmp_path / 'plain')
    assert task4b.main(['--workdir', str(unaugmented)] + EPOCHS) == 0
    assert score_files(unaugmented) != score_files(straight)


@pytest.mark.slow
def test_the_record_and_the_table_name_the_augmentations(augmented_run):
    workdir, _ = augmented_run
    recorded = json.loads((workdir / 'runs' / 'run0' / 'settings.json').read_text())['record']['training']
    assert {k: recorded['config'][k] for k in ('MIXUP', 'TIME_MASKS', 'FRAME_SHIFT')} == {
        'MIXUP': 0.5, 'TIME_MASKS': 2, 'FRAME_SHIFT': 10}
    assert 'augment.py' in recorded['code']
    label = (workdir / 'results.md').read_text().splitlines()[2]
    assert ('float32, 3 epochs, official folds, timeline per fold, F1_thop time_decimals 30, CONV_CHANNELS 16, '
            'GRU_UNITS 8, FRAME_SHIFT 10, FILTER_AUGMENT_BANDS 4, MIXSTYLE 0.5, MIXUP 0.5, TIME_MASKS 2, FREQ_MASKS 2;') in label
