"""The CRNN of the DCASE2023 Task 4B baseline and its soft-label losses (docs/method.md, Model and Training).

    python model.py            # prints the torchinfo summary: 380,113 trainable parameters

Input (batch, frames, 64 mel bands: the front end's width), with config.EMBEDDINGS (batch, frames, 64 + 768 or
2048: an embedding per frame, fused before the GRU); output frame-level logits (batch, frames, 17) for any number of
frames. Every size comes from config.py. The losses are one table, LOSSES: a new loss is one entry (docs/extending.md).
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchinfo
from torch import nn

import config
from front_end import input_width
from utils import DataError


class ConvBlock(nn.Module):
    """Conv2d 3x3 (same padding) -> BatchNorm -> ReLU -> MaxPool (1, pool) over frequency -> Dropout, the ReLU
    applied after the max-pool: the same numbers bit for bit (they commute), on a tensor `pool` times smaller."""

    def __init__(self, in_channels, out_channels, pool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, config.CONV_KERNEL, padding=config.CONV_KERNEL // 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d((1, pool))
        self.relu = nn.ReLU(inplace=True)        # in place on the pooled tensor: one allocation less
        self.dropout = nn.Dropout(config.DROPOUT)

    def forward(self, x):                        # (batch, in, frames, bands)
        x = self.bn(self.conv(x))                # (batch, out, frames, bands)
        return self.dropout(self.relu(self.pool(x)))   # (batch, out, frames, bands // pool): pool, then ReLU


class CRNN(nn.Module):
    """Three conv blocks, a bidirectional GRU and two linear layers (no activation after either). precision
    'bfloat16' runs the conv blocks under torch.autocast (weights, BatchNorm statistics, GRU, dense layers and outputs
    stay float32); 'float32' and 'tf32' run float32 (tf32: set by runtime.seed_everything; docs/method.md, Precision)."""

    def __init__(self, precision='float32'):
        super().__init__()
        self.precision, self.n_bands = precision, input_width()
        channels = [1] + [config.CONV_CHANNELS] * len(config.POOL_SIZES)
        self.conv_blocks = nn.Sequential(*[
            ConvBlock(channels[i], channels[i + 1], pool) for i, pool in enumerate(config.POOL_SIZES)])
        bands = self.n_bands
        for pool in config.POOL_SIZES:
            bands //= pool                        # 64 -> 12 -> 6 -> 3
        fused = 2 if embedding_width() else 1     # the embeddings' projection beside the conv features
        self.gru = nn.GRU(config.CONV_CHANNELS * bands * fused, config.GRU_UNITS, batch_first=True, bidirectional=True)
        self.dense1 = nn.Linear(2 * config.GRU_UNITS, config.DENSE_UNITS)
        self.dense2 = nn.Linear(config.DENSE_UNITS, len(config.CLASSES))
        if embedding_width():                     # built last: without embeddings, the network and its draws as before
            self.embedding_projection = nn.Linear(embedding_width(), config.CONV_CHANNELS * bands)
            self.embedding_dropout = nn.Dropout(config.DROPOUT)

    def forward(self, x):                         # (batch, frames, 64), or (batch, frames, 64 + 768) with embeddings
        x, embeddings = x[..., :self.n_bands], x[..., self.n_bands:]
        x = x.unsqueeze(1)                        # (batch, 1, frames, 64)
        if self.precision == 'bfloat16':
            with torch.autocast(x.device.type, torch.bfloat16):
                x = self.conv_blocks(x).float()   # (batch, 128, frames, 3): computed in bfloat16, float32 again
        else:
            x = self.conv_blocks(x)               # (batch, 128, frames, 3)
        # channels and bands merged per frame, channel-major: feature c * 3 + b
        x = x.permute(0, 2, 1, 3)                 # (batch, frames, 128, 3)
        x = x.reshape(x.shape[0], x.shape[1], -1)  # (batch, frames, 384)
        if hasattr(self, 'embedding_projection'):  # as DESED 2024's CRNN fuses BEATs per frame, concatenated here
            embeddings = self.embedding_dropout(self.embedding_projection(embeddings))   # (batch, frames, 384)
            x = torch.cat([x, embeddings], dim=-1)   # (batch, frames, 768)
        x, _ = self.gru(x)                        # (batch, frames, 64): forward and backward states
        x = self.dense1(x)                        # (batch, frames, 32)
        return self.dense2(x)                     # (batch, frames, 17) logits (raw outputs for 'mse')


def embedding_width():
    """Values per frame after the mel bands: config.EMBEDDINGS' width, 0 without (embeddings.py imported only then)."""
    if config.EMBEDDINGS == 'none':
        return 0
    import embeddings
    return embeddings.embedding_width()


def model_input_width():
    """Values per frame the CRNN reads: the mel bands, then the embeddings' (none by default)."""
    return input_width() + embedding_width()


def build_model(device='cpu', precision=None):
    """A new CRNN on `device` in `precision` (default config.PRECISION), in the memory layout of
    config.CHANNELS_LAST (the same function, faster on CPU)."""
    net = CRNN(precision or config.PRECISION).to(device)
    if config.CHANNELS_LAST:
        net = net.to(memory_format=torch.channels_last)
    return net


def clip_frames(seconds=10.0):
    """Frames of a clip of `seconds`, centred: 51 for 10 s, the clip DCASE reports MACs per."""
    return 1 + round(seconds * config.SAMPLE_RATE) // config.HOP_LENGTH


def complexity():
    """The model's size as DCASE reports it -> {'parameters', 'macs_per_sequence' (a 40-s training sequence),
    'macs_per_10s_clip', their frames, 'counted_by', with config.EMBEDDINGS 'embeddings'}: torchinfo's
    total_mult_adds of a batch of one (docs/method.md). Draws no random number of the training."""
    from importlib.metadata import version
    frames = {'sequence': config.SEQUENCE_LENGTH, '10s_clip': clip_frames()}
    with torch.random.fork_rng(devices=[]):          # the weights' initialisation and torchinfo's random input
        summaries = {name: torchinfo.summary(CRNN(), input_size=(1, n, model_input_width()), verbose=0, device='cpu')
                     for name, n in frames.items()}
    return {'parameters': summaries['sequence'].trainable_params,
            **{f'macs_per_{name}': summaries[name].total_mult_adds for name in frames},
            **{f'{name}_frames': n for name, n in frames.items()},
            'counted_by': f"torchinfo {version('torchinfo')} (total_mult_adds, batch of one)",
            **({'embeddings': embeddings_cost()} if embedding_width() else {})}


def embeddings_cost():
    """The frozen network of config.EMBEDDINGS in its published size -> {'model', 'parameters', 'macs_per_10s_clip'}:
    torchinfo's count on one 10-s window (BEATs' attention products, done by a function, are not among them)."""
    import embeddings
    import pretrained
    with torch.random.fork_rng(devices=[]):
        net = embeddings.published_network(config.EMBEDDINGS)
        rate = embeddings.EMBEDDERS[config.EMBEDDINGS].sample_rate
        audio = torch.zeros(1, round(embeddings.WINDOW_SECONDS * rate))
        x = pretrained.beats_input(audio) if config.EMBEDDINGS == 'beats' else audio
        summary = torchinfo.summary(net, input_data=[x], verbose=0, device='cpu')
    return {'model': config.EMBEDDINGS, 'parameters': summary.total_params,
            'macs_per_10s_clip': summary.total_mult_adds}


def output_bias_init(loss_kind=None):
    """How the output layer's bias starts: config.OUTPUT_BIAS_INIT for a loss of logits (bce); 'torch' for one whose
    raw outputs start near the mostly-zero targets already (mse, which also reproduces the published table)."""
    return config.OUTPUT_BIAS_INIT if loss_of(loss_kind).prior_bias else 'torch'


def init_output_bias(net, Y_train):
    """dense2.bias <- logit(p), p (17,) the mean soft target of each class over every training frame, clipped to
    [OUTPUT_BIAS_CLIP, 1 - OUTPUT_BIAS_CLIP]: every output starts at its class's prior, not at sigmoid(0) = 0.5
    against mostly-zero targets. No random number is drawn."""
    prior = Y_train.double().mean(dim=(0, 1))                       # (17,)
    prior = prior.clamp(config.OUTPUT_BIAS_CLIP, 1 - config.OUTPUT_BIAS_CLIP)
    with torch.no_grad():
        net.dense2.bias.copy_(torch.logit(prior))
    return net


@dataclass(frozen=True)
class Loss:
    loss: Callable          # (outputs, targets) (batch, frames, 17) each -> the mean loss over frames and classes
    scores: Callable        # outputs -> the system's frame scores
    prior_bias: bool        # OUTPUT_BIAS_INIT 'prior' applies: the outputs are logits of the targets


LOSSES = {
    # binary cross-entropy of sigmoid(outputs) and the soft targets in the logits form: stable where sigmoid saturates
    'bce': Loss(F.binary_cross_entropy_with_logits, torch.sigmoid, prior_bias=True),
    # mean squared error of the raw outputs and the soft targets, scores not clamped to [0, 1] (the reference code):
    # clamping would tie every output above 1 (and below 0), removing operating points from F1_thop's and pAUC's sweeps
    'mse': Loss(F.mse_loss, lambda outputs: outputs, prior_bias=False),
}


def loss_of(kind=None):
    """LOSSES' entry of `kind` (default config.LOSS); an unknown name is refused naming the ones there are."""
    kind = kind or config.LOSS
    if kind not in LOSSES:
        raise DataError(f'config.LOSS = {kind!r}: expected one of {", ".join(map(repr, LOSSES))} (model.LOSSES)')
    return LOSSES[kind]


def soft_label_loss(outputs, targets, kind=None):
    """Mean loss of frame outputs (batch, frames, 17) against soft targets in [0, 1] of the same shape."""
    return loss_of(kind).loss(outputs, targets)


def scores_from_outputs(outputs, kind=None):
    """Frame scores of the system from the model outputs: sigmoid(logits) for 'bce', the raw outputs for 'mse'."""
    return loss_of(kind).scores(outputs)


if __name__ == '__main__':
    torchinfo.summary(CRNN(), input_size=(config.BATCH_SIZE, config.SEQUENCE_LENGTH, model_input_width()))
