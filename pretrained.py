"""Pretrained audio embeddings: BEATs (microsoft/unilm) and PANNs CNN14, our own definitions of both networks,
loading the published checkpoints unchanged (strictly: every tensor of the file, no more, no less).

    net = pretrained.load_beats('BEATs_iter3_plus_AS2M.pt')      # 16 kHz
    emb, step = pretrained.beats_embeddings(net, waveform)        # (62, 768) per 10 s, step 0.16 s
    net = pretrained.load_cnn14('Cnn14_mAP=0.431.pth')            # 32 kHz
    emb, step = pretrained.cnn14_embeddings(net, waveform)        # (31, 2048) per 10 s, step 0.32 s

    python -m pytest tests/test_pretrained.py    # formats and outputs checked against the official code

Nothing downloads: checkpoints are given by path; tests/data/README.md says how the reference outputs were made.
A checkpoint that cannot be used raises utils.DataError, one line naming the file and what was expected.
"""
import math
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils import DataError

# BEATs: the front end the checkpoints were trained on (Kaldi filterbanks of 16-bit-scaled audio, normalised with
# the training set's mean and twice its standard deviation, the values of the official code)
BEATS_SAMPLE_RATE = 16000
BEATS_MEL_BINS = 128
BEATS_FRAME_LENGTH = 400            # samples: 25 ms
BEATS_FRAME_SHIFT = 160             # samples: 10 ms
BEATS_FFT_SIZE = 512                # the frame zero-padded to the next power of two
BEATS_LOW_FREQ = 20.0               # Hz, lowest edge of the mel filters; the highest is Nyquist
BEATS_PREEMPHASIS = 0.97
BEATS_FBANK_MEAN = 15.41663
BEATS_FBANK_STD = 6.55582
BEATS_WHAT = "a BEATs checkpoint of microsoft/unilm: a dict with 'cfg' and 'model'"
# the official configuration's defaults, used for any key a checkpoint's 'cfg' leaves out
BEATS_DEFAULTS = {
    'input_patch_size': 16, 'embed_dim': 512, 'conv_bias': False, 'encoder_layers': 12, 'encoder_embed_dim': 768,
    'encoder_ffn_embed_dim': 3072, 'encoder_attention_heads': 12, 'activation_fn': 'gelu', 'layer_norm_first': False,
    'deep_norm': False, 'conv_pos': 128, 'conv_pos_groups': 16, 'relative_position_embedding': False,
    'num_buckets': 320, 'max_distance': 1280, 'gru_rel_pos': False, 'finetuned_model': False, 'predictor_class': 527,
}
ACTIVATIONS = {'gelu': F.gelu, 'relu': F.relu}

# CNN14 (PANNs): the settings of the AudioSet-trained 32 kHz checkpoints
CNN14_SAMPLE_RATE = 32000
CNN14_WINDOW = 1024
CNN14_HOP = 320
CNN14_MEL_BINS = 64
CNN14_FMIN = 50
CNN14_FMAX = 14000
CNN14_CLASSES = 527
CNN14_CHANNELS = (64, 128, 256, 512, 1024, 2048)
CNN14_TIME_POOLS = (2, 2, 2, 2, 2, 1)     # average pools of the six blocks (time and frequency alike)
CNN14_WHAT = "a PANNs CNN14 checkpoint (audioset_tagging_cnn, 32 kHz): a dict with 'model'"


def kaldi_mel_banks(n_bins=BEATS_MEL_BINS, fft_size=BEATS_FFT_SIZE, sample_rate=BEATS_SAMPLE_RATE,
                    low_freq=BEATS_LOW_FREQ):
    """Kaldi's triangular filters -> (n_bins, fft_size // 2 + 1), equally spaced on the mel scale 1127 ln(1 + f / 700)
    from low_freq to Nyquist (the Nyquist bin gets no weight). In float32 with ln(1 + x), as Kaldi: the filterbanks
    then equal torchaudio's bit for bit, where float64 weights moved the log energies by up to 7e-5."""
    low, high = (1127.0 * math.log(1 + f / 700.0) for f in (low_freq, sample_rate / 2))
    delta = (high - low) / (n_bins + 1)
    i = torch.arange(n_bins, dtype=torch.float32)[:, None]                          # (n_bins, 1)
    left, centre, right = low + i * delta, low + (i + 1) * delta, low + (i + 2) * delta
    bins = 1127.0 * torch.log(1 + torch.arange(fft_size // 2) * (sample_rate / fft_size) / 700.0)[None]   # (1, fft / 2)
    weights = torch.minimum((bins - left) / (centre - left), (right - bins) / (right - centre)).clamp(min=0)
    return F.pad(weights, (0, 1))                                                    # (n_bins, fft / 2 + 1)


def kaldi_fbank(waveform):
    """Log mel filterbanks of Kaldi's compute-fbank-feats with BEATs' settings (no dither, snip edges, floor at
    float32's epsilon): (batch, samples) float32 at 16 kHz, scaled to 16-bit range -> (batch, 1 + (samples - 400)
    // 160, 128). Equal to torchaudio.compliance.kaldi.fbank, which the official code calls (tests/test_pretrained.py),
    batched and on any device; kaldi-native-fbank 1.22.4 differed from torchaudio by up to 7.5e-4."""
    frames = waveform.unfold(-1, BEATS_FRAME_LENGTH, BEATS_FRAME_SHIFT)             # (batch, frames, 400)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)               # x[n - 1], x[-1] := x[0]
    frames = frames - BEATS_PREEMPHASIS * previous
    window = torch.hann_window(BEATS_FRAME_LENGTH, periodic=False, dtype=frames.dtype, device=frames.device)
    frames = frames * window.pow(0.85)                                               # Povey's window
    power = torch.fft.rfft(frames, n=BEATS_FFT_SIZE).abs().pow(2)                   # (batch, frames, 257)
    energies = power @ kaldi_mel_banks().to(frames.device).T                         # (batch, frames, 128)
    return energies.clamp(min=torch.finfo(torch.float32).eps).log()


def beats_input(waveform):
    """(batch, samples) float32 in [-1, 1] at 16 kHz -> the normalised filterbanks BEATs reads, (batch, frames, 128)."""
    fbank = kaldi_fbank(waveform * 2 ** 15)
    return (fbank - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)


# BEATs: a ViT over 16 x 16 patches of the filterbank image, with a convolutional positional embedding and
# (iter3+) gated relative position biases; post-LayerNorm blocks scaled by DeepNorm
class WeightNormConv1d(nn.Module):
    """Conv1d whose kernel is weight_g * weight_v / ||weight_v||, the norm per kernel tap (weight normalisation along
    dimension 2): the checkpoints' names of torch's old nn.utils.weight_norm, which its replacement does not keep."""

    def __init__(self, channels, kernel, groups):
        super().__init__()
        self.groups = groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):                                            # (batch, channels, tokens)
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        x = F.conv1d(x, weight, self.bias, padding=weight.shape[-1] // 2, groups=self.groups)
        # an even kernel padded on both sides gives one token too many
        return x[..., :-1] if weight.shape[-1] % 2 == 0 else x     # (batch, channels, tokens)


class BEATsAttention(nn.Module):
    """Multi-head self-attention with an optional relative position bias per head, scaled per query by a learnt
    gate (gru_rel_pos): gate = a (b g - 1) + 2, a and b sigmoids of sums of a linear map of the query, g per head."""

    def __init__(self, dim, heads, gated):
        super().__init__()
        self.heads = heads
        self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.gated = gated
        if gated:
            self.grep_linear = nn.Linear(dim // heads, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def forward(self, x, position_bias=None):                        # (batch, tokens, dim); (heads, tokens, tokens)
        b, t, d = x.shape

        def split(y):
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)     # (batch, heads, tokens, dim / heads)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        bias = None
        if position_bias is not None:
            bias = position_bias[None]                                # (1, heads, tokens, tokens)
            if self.gated:
                gates = torch.sigmoid(self.grep_linear(q).view(b, self.heads, t, 2, 4).sum(-1))   # (b, h, t, 2)
                a, g = gates[..., :1], gates[..., 1:]
                bias = (a * (g * self.grep_a - 1.0) + 2.0) * bias   # (batch, heads, tokens, tokens)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # softmax(q k / sqrt(dim / heads) + bias) v
        return self.out_proj(x.transpose(1, 2).reshape(b, t, d))     # (batch, tokens, dim)


class BEATsLayer(nn.Module):
    """A transformer block: pre-LayerNorm (layer_norm_first) or post-LayerNorm, whose residual is multiplied by
    DeepNorm's (2 layers)^(1/4) when deep_norm is set."""

    def __init__(self, cfg, gated):
        super().__init__()
        dim = cfg['encoder_embed_dim']
        self.self_attn = BEATsAttention(dim, cfg['encoder_attention_heads'], gated)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg['encoder_ffn_embed_dim'])
        self.fc2 = nn.Linear(cfg['encoder_ffn_embed_dim'], dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = ACTIVATIONS[cfg['activation_fn']]
        self.layer_norm_first = cfg['layer_norm_first']
        self.alpha = (2 * cfg['encoder_layers']) ** 0.25 if cfg['deep_norm'] else 1.0

    def forward(self, x, position_bias=None):                        # (batch, tokens, dim)
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), position_bias)
            return x + self.fc2(self.activation(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, position_bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(self.activation(self.fc1(x))))


class BEATsEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        dim = cfg['encoder_embed_dim']
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, cfg['conv_pos'], cfg['conv_pos_groups']))
        self.relative = cfg['relative_position_embedding']
        self.layers = nn.ModuleList(BEATsLayer(cfg, self.relative and cfg['gru_rel_pos'])
                                    for _ in range(cfg['encoder_layers']))
        self.num_buckets, self.max_distance = cfg['num_buckets'], cfg['max_distance']
        if self.relative:
            # one table for all layers, registered in each: the checkpoints hold it once per layer
            table = nn.Embedding(cfg['num_buckets'], cfg['encoder_attention_heads'])
            for layer in self.layers:
                layer.self_attn.relative_attention_bias = table
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = cfg['layer_norm_first']

    def position_buckets(self, offset):
        """Bucket of each key - query offset (int64 tensor), T5's scheme: half the buckets per sign, the smallest
        offsets one each, larger ones log-spaced buckets up to max_distance, beyond which all fall in the last."""
        half = self.num_buckets // 2
        exact = half // 2
        distance = offset.abs()
        far = (exact + (torch.log(distance.clamp(min=1).float() / exact) / math.log(self.max_distance / exact)
                        * (half - exact)).long()).clamp(max=half - 1)
        return (offset > 0).long() * half + torch.where(distance < exact, distance, far)

    def forward(self, x):                                            # (batch, tokens, dim)
        x = x + F.gelu(self.pos_conv(x.transpose(1, 2))).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        position_bias = None
        if self.relative:
            tokens = torch.arange(x.shape[1], device=x.device)
            buckets = self.position_buckets(tokens[None, :] - tokens[:, None])     # (tokens, tokens)
            position_bias = self.layers[0].self_attn.relative_attention_bias(buckets).permute(2, 0, 1)  # (h, t, t)
        for layer in self.layers:
            x = layer(x, position_bias)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x                                                     # (batch, tokens, dim)


class BEATs(nn.Module):
    """BEATs from a checkpoint's 'cfg' (missing keys take the official defaults). forward: normalised filterbanks
    (batch, frames, 128) -> the last layer's tokens (batch, steps * 8, dim): token s * 8 + f is time step s (frames
    16 s to 16 s + 15), frequency patch f. The predictor is there for fine-tuned checkpoints to load strictly."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg = {**BEATS_DEFAULTS, **cfg}
        patch, embed, dim = cfg['input_patch_size'], cfg['embed_dim'], cfg['encoder_embed_dim']
        self.patch_embedding = nn.Conv2d(1, embed, patch, stride=patch, bias=cfg['conv_bias'])
        self.layer_norm = nn.LayerNorm(embed)
        if embed != dim:
            self.post_extract_proj = nn.Linear(embed, dim)
        self.encoder = BEATsEncoder(cfg)
        if cfg['finetuned_model']:
            self.predictor = nn.Linear(dim, cfg['predictor_class'])

    def forward(self, fbank):                                        # (batch, frames, 128)
        x = self.patch_embedding(fbank.unsqueeze(1))                 # (batch, embed, frames // 16, 8)
        x = self.layer_norm(x.flatten(2).transpose(1, 2))            # (batch, steps * 8, embed), time-major
        if hasattr(self, 'post_extract_proj'):
            x = self.post_extract_proj(x)                            # (batch, steps * 8, dim)
        return self.encoder(x)                                       # (batch, steps * 8, dim)


def beats_embeddings(net, waveform):
    """Frame embeddings of BEATs, the last layer's 8 frequency patches of each time step averaged: waveform
    (samples,) or (batch, samples) float32 at 16 kHz -> ((steps, dim) or (batch, steps, dim) float32 numpy, step in
    seconds 0.16); 62 steps per 10 s (998 frames of 10 ms, the last ones under a patch dropped)."""
    tokens = _run(net, beats_input, waveform)                        # (batch, steps * 8, dim)
    steps = tokens.shape[1] // (BEATS_MEL_BINS // net.cfg['input_patch_size'])
    emb = tokens.reshape(tokens.shape[0], steps, -1, tokens.shape[-1]).mean(dim=2)   # (batch, steps, dim)
    step = net.cfg['input_patch_size'] * BEATS_FRAME_SHIFT / BEATS_SAMPLE_RATE
    return _numpy(emb, waveform), step


# CNN14 (PANNs): log mel spectrogram by convolution with DFT kernels, six VGG-like blocks
class Spectrogram(nn.Module):
    """Power spectrum of centred frames by convolution with the real and imaginary parts of the Hann-windowed DFT as
    two Conv1d kernels: the checkpoint's (spectrogram_extractor.stft.*), as the official code uses them; a new model
    starts with the exact ones."""

    def __init__(self, n_fft=CNN14_WINDOW, hop=CNN14_HOP):
        super().__init__()
        bins = n_fft // 2 + 1
        self.stft = nn.ModuleDict({name: nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
                                   for name in ('conv_real', 'conv_imag')})
        n, k = np.arange(n_fft), np.arange(bins)
        angle = 2 * np.pi * (np.outer(k, n) % n_fft) / n_fft                    # (bins, n_fft), reduced exactly
        window = librosa.filters.get_window('hann', n_fft, fftbins=True)       # periodic
        for name, part in (('conv_real', np.cos(angle)), ('conv_imag', -np.sin(angle))):
            self.stft[name].weight.requires_grad_(False).copy_(torch.from_numpy(part * window)[:, None])

    def forward(self, x):                                            # (batch, samples)
        pad = self.stft['conv_real'].kernel_size[0] // 2
        x = F.pad(x[:, None], (pad, pad), mode='reflect')            # centred frames, as librosa
        real, imag = self.stft['conv_real'](x), self.stft['conv_imag'](x)   # (batch, 513, frames)
        return (real ** 2 + imag ** 2).transpose(1, 2)               # (batch, frames, 513) power


class LogMel(nn.Module):
    """Power spectrum -> 10 log10(max(mel power, 1e-10)) dB, with the checkpoint's mel matrix melW."""

    def __init__(self):
        super().__init__()
        mel = librosa.filters.mel(sr=CNN14_SAMPLE_RATE, n_fft=CNN14_WINDOW, n_mels=CNN14_MEL_BINS,
                                  fmin=CNN14_FMIN, fmax=CNN14_FMAX).T                # (513, 64)
        self.melW = nn.Parameter(torch.tensor(mel), requires_grad=False)          # torch.tensor: follows torch.device

    def forward(self, power):                                        # (batch, frames, 513)
        return 10 * torch.log10((power @ self.melW).clamp(min=1e-10))  # (batch, frames, 64)


class CNN14Block(nn.Module):
    """Two 3 x 3 convolutions (no bias), each followed by BatchNorm and ReLU, then an average pool."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(out_channels), nn.BatchNorm2d(out_channels)

    def forward(self, x, pool):                                      # (batch, in, frames, bands)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool)                                 # (batch, out, frames // pool, bands // pool)


class CNN14(nn.Module):
    """PANNs' CNN14. forward: waveform (batch, samples) at 32 kHz -> the last convolutional map averaged over
    frequency, (batch, frames // 32, 2048): the last layer with time steps (0.32 s apart). fc1 and fc_audioset (the
    clip head, unused) are there for the checkpoints to load strictly."""

    def __init__(self, classes=CNN14_CLASSES):
        super().__init__()
        self.spectrogram_extractor = Spectrogram()
        self.logmel_extractor = LogMel()
        self.bn0 = nn.BatchNorm2d(CNN14_MEL_BINS)
        for i, (inputs, outputs) in enumerate(zip((1,) + CNN14_CHANNELS, CNN14_CHANNELS), start=1):
            setattr(self, f'conv_block{i}', CNN14Block(inputs, outputs))
        self.fc1 = nn.Linear(CNN14_CHANNELS[-1], CNN14_CHANNELS[-1])
        self.fc_audioset = nn.Linear(CNN14_CHANNELS[-1], classes)

    def forward(self, waveform):                                     # (batch, samples)
        x = self.logmel_extractor(self.spectrogram_extractor(waveform))   # (batch, frames, 64)
        x = self.bn0(x.transpose(1, 2)[..., None])[..., 0]          # normalised per mel bin
        x = x.transpose(1, 2)[:, None]                               # (batch, 1, frames, 64)
        for i, pool in enumerate(CNN14_TIME_POOLS):
            x = getattr(self, f'conv_block{i + 1}')(x, pool)        # ... -> (batch, 2048, frames // 32, 2)
        return x.mean(dim=3).transpose(1, 2)                         # (batch, frames // 32, 2048)


def cnn14_embeddings(net, waveform):
    """Frame embeddings of CNN14: waveform (samples,) or (batch, samples) float32 at 32 kHz -> ((steps, 2048) or
    (batch, steps, 2048) float32 numpy, step in seconds 0.32): 31 steps per 10 s."""
    emb = _run(net, lambda x: x, waveform)
    step = CNN14_HOP * math.prod(CNN14_TIME_POOLS) / CNN14_SAMPLE_RATE
    return _numpy(emb, waveform), step


# Loading: one clear line for a file that cannot be used, before any work
def load_beats(path, device='cpu'):
    """BEATs of a checkpoint of microsoft/unilm ({'cfg': dict, 'model': state dict}), in eval mode on `device`."""
    checkpoint = _read_checkpoint(path, ('cfg', 'model'), BEATS_WHAT)
    if not isinstance(checkpoint['cfg'], dict):
        raise DataError(f"{path}: 'cfg' is a {type(checkpoint['cfg']).__name__}; expected {BEATS_WHAT}")
    activation = checkpoint['cfg'].get('activation_fn', BEATS_DEFAULTS['activation_fn'])
    if activation not in ACTIVATIONS:
        raise DataError(f"{path}: activation_fn {activation!r} in 'cfg'; expected one of {sorted(ACTIVATIONS)}")
    net = BEATs(checkpoint['cfg'])
    state = checkpoint['model']
    _load_strict(net, state, path, BEATS_WHAT)
    tables = [v for k, v in state.items() if k.endswith('relative_attention_bias.weight')]
    if any(not torch.equal(t, tables[0]) for t in tables[1:]):
        raise DataError(f"{path}: the relative position tables differ between layers; expected one table shared "
                        f"by all layers ({BEATS_WHAT})")
    return net.to(device).eval()


def load_cnn14(path, device='cpu'):
    """CNN14 of a PANNs checkpoint ({'model': state dict, ...}), in eval mode on `device`."""
    checkpoint = _read_checkpoint(path, ('model',), CNN14_WHAT)
    state = checkpoint['model']
    classes = state.get('fc_audioset.bias') if isinstance(state, dict) else None
    net = CNN14(classes.shape[0] if isinstance(classes, torch.Tensor) and classes.dim() == 1 else CNN14_CLASSES)
    _load_strict(net, state, path, CNN14_WHAT)
    return net.to(device).eval()


def _read_checkpoint(path, keys, what):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected {what}")
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:                   # truncated, not a torch file, or objects beyond tensors and dicts
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: cannot be read by torch.load, truncated or not a checkpoint ({reason[:160]}); "
                        f"expected {what}") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in keys):
        found = f"a dict with {sorted(map(str, checkpoint))[:6]}" if isinstance(checkpoint, dict) \
            else f"a {type(checkpoint).__name__}"
        raise DataError(f"{path}: found {found}; expected {what}")
    return checkpoint


def _load_strict(net, state, path, what):
    """load_state_dict(strict=True), its refusals in one line naming the first tensors missing, unexpected or wrong."""
    if not isinstance(state, dict):
        raise DataError(f"{path}: 'model' is a {type(state).__name__}, not a state dict; expected {what}")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(getattr(state[k], 'shape', ()))} instead of {tuple(v.shape)}" for k, v in expected.items()
              if k in state and getattr(state[k], 'shape', None) != v.shape]
    problems = [f"{len(items)} {kind} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
                for kind, items in (('missing', missing), ('unexpected', unexpected), ('of the wrong shape', shapes))
                if items]
    if problems:
        raise DataError(f"{path}: tensors do not match the model of its configuration: {'; '.join(problems)}; "
                        f"expected {what}")
    net.load_state_dict(state, strict=True)


def _run(net, prepare, waveform):
    """net(prepare(waveform)) without gradients, on the network's device, for (samples,) or (batch, samples)."""
    x = waveform.float() if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.asarray(waveform, np.float32))
    x = x.to(next(net.parameters()).device)
    if x.dim() not in (1, 2):
        raise ValueError(f"waveform of shape {tuple(x.shape)}: expected (samples,) or (batch, samples)")
    with torch.inference_mode():
        return net(prepare(x.reshape(-1, x.shape[-1])))


def _numpy(emb, waveform):
    emb = emb.float().cpu().numpy()
    return emb[0] if np.ndim(waveform) == 1 else emb
