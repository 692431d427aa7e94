"""BEATs and CNN14 (pretrained.py) against the official code: the checkpoint formats, strict loading, the frame
embeddings of seeded random checkpoints and BEATs' filterbanks, all compared with values the official code computed
(tests/data/README.md: how they were made)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import pretrained
from utils import DataError

DATA = Path(__file__).parent / 'data'
TOLERANCE = 1e-4

# the configurations and inputs of tests/data (the reference script imports them from here)
BEATS_AS2M_CONFIG = {          # BEATs iter3+ (AS2M), the pre-trained checkpoint: 250 tensors
    'input_patch_size': 16, 'embed_dim': 512, 'conv_bias': False,
    'encoder_layers': 12, 'encoder_embed_dim': 768, 'encoder_ffn_embed_dim': 3072, 'encoder_attention_heads': 12,
    'activation_fn': 'gelu', 'layer_norm_first': False, 'deep_norm': True, 'conv_pos': 128, 'conv_pos_groups': 16,
    'relative_position_embedding': True, 'num_buckets': 320, 'max_distance': 800, 'gru_rel_pos': True,
    'finetuned_model': False, 'predictor_class': 527,
    'dropout': 0.0, 'attention_dropout': 0.0, 'activation_dropout': 0.0, 'encoder_layerdrop': 0.0, 'dropout_input': 0.0,
}
TINY = {'encoder_layers': 2, 'encoder_embed_dim': 64, 'encoder_ffn_embed_dim': 128, 'encoder_attention_heads': 4,
        'conv_pos': 16, 'conv_pos_groups': 4}
BEATS_TINY_CONFIGS = {
    # the iter3+ architecture, small: DeepNorm, gated relative position bias, a projection 32 -> 64, a predictor
    'beats_tiny_deepnorm': {**BEATS_AS2M_CONFIG, **TINY, 'embed_dim': 32, 'finetuned_model': True,
                            'predictor_class': 10},
    # the other branches: pre-LayerNorm, no relative position, no projection
    'beats_tiny_prenorm': {**BEATS_AS2M_CONFIG, **TINY, 'embed_dim': 64, 'layer_norm_first': True, 'deep_norm': False,
                           'relative_position_embedding': False, 'gru_rel_pos': False},
}
CNN14_ARGS = {'sample_rate': 32000, 'window_size': 1024, 'hop_size': 320, 'mel_bins': 64, 'fmin': 50, 'fmax': 14000,
              'classes_num': 527}
BEATS_SECONDS = 3.0            # 298 frames: 18 time steps of 8 patches, offsets to 143 tokens (log buckets reached)
CNN14_SECONDS = 2.0            # 201 frames: 6 steps
FBANK_SECONDS = 0.5            # 48 frames
CNN14_FRONT_END = ('spectrogram_extractor.', 'logmel_extractor.')


def seeded_noise(seconds, rate, seed=0):
    """White noise of standard deviation 0.1, (samples,) float32."""
    return (np.random.default_rng(seed).standard_normal(round(seconds * rate)) * 0.1).astype(np.float32)


def seeded_state(template, keep=(), seed=0):
    """Random weights for every tensor of `template` (a state dict), in its key order, from torch.Generator(seed):
    with r standard normal of the tensor's shape, 1-D weights (LayerNorm, BatchNorm) 1 + 0.1 r, running_var
    1 + 0.1 |r|, other 1-D tensors (biases, running_mean) 0.1 r, tensors of 2 or more dimensions r sqrt(2 / fan in)
    (fan in = values / first dimension; He's scale for ReLU networks), so the embeddings stay near 1 (CNN14's
    standard deviation 1.26, BEATs' 0.9) and a 1e-4 difference means something; integer
    tensors (num_batches_tracked) 0. Tensors whose name starts with one of `keep` are kept as they are (CNN14's
    STFT kernels and mel matrix). BEATs' relative position table is drawn once, at its first key, and repeated
    for every layer, as the checkpoints hold one shared table."""
    generator = torch.Generator().manual_seed(seed)
    state, shared = {}, None
    for name, tensor in template.items():
        if name.startswith(keep):
            state[name] = tensor.detach().clone()
        elif not tensor.is_floating_point():
            state[name] = torch.zeros_like(tensor)
        elif name.endswith('relative_attention_bias.weight') and shared is not None:
            state[name] = shared.clone()
        else:
            r = torch.randn(tensor.shape, generator=generator)
            if name.endswith('running_var'):
                state[name] = 1 + 0.1 * r.abs()
            elif tensor.dim() == 1:
                state[name] = 1 + 0.1 * r if name.endswith('weight') else 0.1 * r
            else:
                state[name] = r * math.sqrt(2 / (tensor.numel() / tensor.shape[0]))
            if name.endswith('relative_attention_bias.weight'):
                shared = state[name]
    return state


def summary(emb):
    """What tests/data keeps of an embedding matrix (steps, dim): all of it up to 2,000 values, else every 8th
    column with the mean of every column and of every step; rounded to 1e-6."""
    def rounded(a):
        return np.round(np.asarray(a, dtype=np.float64), 6).tolist()
    if emb.size <= 2000:
        return {'shape': list(emb.shape), 'values': rounded(emb)}
    return {'shape': list(emb.shape), 'every_8th_column': rounded(emb[:, ::8]),
            'column_means': rounded(emb.mean(0)), 'step_means': rounded(emb.mean(1))}


FORMATS = json.loads((DATA / 'checkpoint_formats.json').read_text())
OFFICIAL = json.loads((DATA / 'official_outputs.json').read_text())


def official_random_state(name, ours=None, keep=()):
    """seeded_state over the official format `name` of tests/data, in the official key order (the order of the
    random draws); the tensors of `keep` taken from our model `ours`."""
    template = {k: ours.state_dict()[k] if k.startswith(keep) else torch.empty(shape, dtype=getattr(torch, dtype))
                for k, shape, dtype in FORMATS[name]['keys']}
    return seeded_state(template, keep)


def beats_checkpoint(folder, name):
    """The seeded random checkpoint of the official format `name`, saved as microsoft/unilm saves its own."""
    path = Path(folder) / f'{name}.pt'
    torch.save({'cfg': FORMATS[name]['cfg'], 'model': official_random_state(name)}, path)
    return path


@pytest.fixture(scope='module')
def cnn14_checkpoint(tmp_path_factory):
    """The seeded random CNN14 checkpoint at full size (330 MB), saved as PANNs saves its own."""
    path = tmp_path_factory.mktemp('cnn14') / 'cnn14.pth'
    torch.save({'model': official_random_state('cnn14', pretrained.CNN14(), CNN14_FRONT_END)}, path)
    return path


@pytest.fixture(scope='module')
def cnn14_net(cnn14_checkpoint):
    return pretrained.load_cnn14(cnn14_checkpoint)                  # strict


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def official_shapes(name):
    return {k: tuple(shape) for k, shape, _ in FORMATS[name]['keys']}


def compare(emb, reference):
    """Max abs difference between an embedding matrix and the summary tests/data keeps of the official one."""
    assert list(emb.shape) == reference['shape']
    if 'values' in reference:
        return np.abs(emb - np.array(reference['values'])).max()
    return max(np.abs(emb[:, ::8] - np.array(reference['every_8th_column'])).max(),
               np.abs(emb.mean(0) - np.array(reference['column_means'])).max(),
               np.abs(emb.mean(1) - np.array(reference['step_means'])).max())


# -----------------------------------------------------------------------------
# the formats

@pytest.mark.parametrize('name, tensors, values', [('beats_iter3plus_as2m', 250, 90_354_032),
                                                   ('beats_iter3plus_as2m_finetuned', 252, 90_759_295)])
def test_beats_has_the_keys_and_shapes_of_the_iter3plus_checkpoints(name, tensors, values):
    with torch.device('meta'):                     # the full size, no memory and no time
        state = pretrained.BEATs(FORMATS[name]['cfg']).state_dict()
    assert shapes(state) == official_shapes(name)
    assert (len(state), sum(v.numel() for v in state.values())) == (tensors, values)
    assert (FORMATS[name]['tensors'], FORMATS[name]['values']) == (tensors, values)
    assert state['encoder.pos_conv.0.weight_g'].shape == (1, 1, 128)   # the old weight_norm names


def test_cnn14_has_the_keys_and_shapes_of_the_panns_checkpoint():
    with torch.device('meta'):
        state = pretrained.CNN14().state_dict()
    assert shapes(state) == official_shapes('cnn14')
    assert (len(state), sum(v.numel() for v in state.values())) == (84, 81_853_340)
    assert {'spectrogram_extractor.stft.conv_real.weight', 'logmel_extractor.melW'} <= set(state)


@pytest.mark.parametrize('name', BEATS_TINY_CONFIGS)
def test_beats_built_from_a_small_cfg_has_its_official_keys(name):
    assert shapes(pretrained.BEATs(FORMATS[name]['cfg']).state_dict()) == official_shapes(name)


# -----------------------------------------------------------------------------
# the outputs of the official code

@pytest.mark.parametrize('name', BEATS_TINY_CONFIGS)
def test_beats_embeddings_equal_the_official_tokens_averaged_over_frequency(name, tmp_path):
    net = pretrained.load_beats(beats_checkpoint(tmp_path, name))   # strict
    emb, step = pretrained.beats_embeddings(net, seeded_noise(BEATS_SECONDS, 16000))
    assert emb.dtype == np.float32 and step == pytest.approx(0.16)
    assert compare(emb, OFFICIAL[name]) < TOLERANCE                 # measured: 3.7e-6 at most


def test_the_beats_reference_tells_a_wrong_layer_or_pooling_apart(tmp_path):
    name = 'beats_tiny_deepnorm'
    net = pretrained.load_beats(beats_checkpoint(tmp_path, name))
    x = pretrained.beats_input(torch.from_numpy(seeded_noise(BEATS_SECONDS, 16000))[None])
    with torch.no_grad():
        tokens = net(x)[0]                                           # (18 * 8, 64)
        net.encoder.layers = net.encoder.layers[:-1]
        earlier = net(x)[0]
    assert compare(earlier.reshape(18, 8, -1).mean(1).numpy(), OFFICIAL[name]) > 100 * TOLERANCE
    assert compare(tokens.reshape(8, 18, -1).mean(0).numpy(), OFFICIAL[name]) > 100 * TOLERANCE   # frequency-major


def test_cnn14_embeddings_equal_the_official_last_conv_map_averaged_over_frequency(cnn14_net):
    emb, step = pretrained.cnn14_embeddings(cnn14_net, seeded_noise(CNN14_SECONDS, 32000))
    assert emb.dtype == np.float32 and step == pytest.approx(0.32)
    assert compare(emb, OFFICIAL['cnn14']) < TOLERANCE              # measured: 5.3e-7


def test_fbank_equals_torchaudios_kaldi_fbank():
    reference = np.array(json.loads((DATA / 'fbank_torchaudio.json').read_text())['fbank'])   # (48, 128)
    wave = torch.from_numpy(seeded_noise(FBANK_SECONDS, 16000))[None] * 2 ** 15
    ours = pretrained.kaldi_fbank(wave)[0].numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 6e-6                   # bit for bit before the 1e-5 rounding


# -----------------------------------------------------------------------------
# time steps and batches

def test_beats_gives_62_time_steps_per_10_s_and_batches_alike(tmp_path):
    net = pretrained.load_beats(beats_checkpoint(tmp_path, 'beats_tiny_prenorm'))
    waves = np.stack([seeded_noise(10.0, 16000, seed) for seed in (1, 2)])
    emb, step = pretrained.beats_embeddings(net, waves)
    assert emb.shape == (2, 62, 64) and step == pytest.approx(0.16)
    np.testing.assert_allclose(emb[1], pretrained.beats_embeddings(net, waves[1])[0], atol=TOLERANCE)


def test_cnn14_gives_31_time_steps_per_10_s():
    with torch.device('meta'):
        assert pretrained.CNN14()(torch.empty(1, 320_000)).shape == (1, 31, 2048)


def test_cnn14_batches_alike(cnn14_net):
    net = cnn14_net
    waves = np.stack([seeded_noise(1.0, 32000, seed) for seed in (1, 2)])
    emb, _ = pretrained.cnn14_embeddings(net, waves)
    assert emb.shape == (2, 3, 2048)
    np.testing.assert_allclose(emb[1], pretrained.cnn14_embeddings(net, waves[1])[0], atol=TOLERANCE)


# -----------------------------------------------------------------------------
# checkpoints that cannot be used: one line naming the file and what was expected

def refused(load, path, *expected):
    with pytest.raises(DataError) as error:
        load(path)
    message = str(error.value)
    assert '\n' not in message and str(path) in message
    for text in expected:
        assert text in message
    return message


def test_a_missing_checkpoint_is_named(tmp_path):
    refused(pretrained.load_beats, tmp_path / 'BEATs_iter3_plus_AS2M.pt', 'no such file', "'cfg' and 'model'")
    refused(pretrained.load_cnn14, tmp_path / 'Cnn14.pth', 'no such file', "'model'")


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = beats_checkpoint(tmp_path, 'beats_tiny_prenorm')
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    refused(pretrained.load_beats, path, 'cannot be read by torch.load', 'microsoft/unilm')


def test_a_checkpoint_without_cfg_or_model_is_named(tmp_path):
    path = tmp_path / 'state_only.pt'
    torch.save({'model': official_random_state('beats_tiny_prenorm')}, path)
    refused(pretrained.load_beats, path, "found a dict with ['model']",
            "expected a BEATs checkpoint of microsoft/unilm")
    torch.save(torch.zeros(3), path)
    refused(pretrained.load_cnn14, path, 'found a Tensor', 'PANNs CNN14')


def test_wrong_missing_or_extra_tensors_are_named(tmp_path):
    name = 'beats_tiny_deepnorm'
    cfg, state = FORMATS[name]['cfg'], official_random_state(name)
    path = tmp_path / 'edited.pt'
    wrong = dict(state, **{'encoder.layers.1.fc1.weight': torch.zeros(64, 64)})
    torch.save({'cfg': cfg, 'model': wrong}, path)
    refused(pretrained.load_beats, path, '1 of the wrong shape',
            'encoder.layers.1.fc1.weight (64, 64) instead of (128, 64)')
    fewer = {k: v for k, v in state.items() if not k.startswith('predictor.')}
    torch.save({'cfg': cfg, 'model': dict(fewer, extra=torch.zeros(1))}, path)
    refused(pretrained.load_beats, path, '2 missing (predictor.weight, predictor.bias)', '1 unexpected (extra)')


def test_layers_with_different_relative_position_tables_are_refused(tmp_path):
    name = 'beats_tiny_deepnorm'
    state = official_random_state(name)
    state['encoder.layers.1.self_attn.relative_attention_bias.weight'] += 1
    path = tmp_path / 'tables.pt'
    torch.save({'cfg': FORMATS[name]['cfg'], 'model': state}, path)
    refused(pretrained.load_beats, path, 'relative position tables differ')


def test_relative_position_buckets_equal_the_official_ones_beyond_max_distance():
    reference = OFFICIAL['position_buckets']                        # num_buckets 320, max_distance 800
    encoder = pretrained.BEATs(BEATS_TINY_CONFIGS['beats_tiny_deepnorm']).encoder
    offsets = torch.arange(reference['offsets'][0], reference['offsets'][1] + 1)
    assert encoder.position_buckets(offsets).tolist() == reference['buckets']
