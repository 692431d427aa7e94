"""The CRNN and the soft-label losses (model.py; docs/method.md, Model and Training)."""
import math

import pytest
import torch
from torch import nn

import config
import model

PER_LAYER_PARAMETERS = [1280, 256, 147584, 256, 147584, 256, 80256, 2080, 561]   # docs/method.md, Model


def layers_with_parameters(net):
    return [m for m in net.modules() if list(m.parameters(recurse=False))]


def test_crnn_has_380113_trainable_parameters():
    net = model.CRNN()
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 380_113


def test_crnn_per_layer_parameter_counts_match_the_spec():
    layers = layers_with_parameters(model.CRNN())
    assert [type(m) for m in layers] == [nn.Conv2d, nn.BatchNorm2d] * 3 + [nn.GRU, nn.Linear, nn.Linear]
    assert [sum(p.numel() for p in m.parameters(recurse=False)) for m in layers] == PER_LAYER_PARAMETERS


@pytest.mark.parametrize('frames', [config.SEQUENCE_LENGTH, 1500, 7])
def test_crnn_gives_frame_logits_for_any_number_of_frames(frames):
    net = model.CRNN().eval()
    with torch.inference_mode():
        out = net(torch.randn(2, frames, config.N_MELS))
    assert out.shape == (2, frames, len(config.CLASSES))


def test_reshape_merges_channels_and_bands_per_frame_channel_major():
    net = model.CRNN().eval()
    seen = {}
    net.conv_blocks.register_forward_hook(lambda m, i, o: seen.__setitem__('conv', o))
    net.gru.register_forward_hook(lambda m, i, o: seen.__setitem__('gru_in', i[0]))
    with torch.inference_mode():
        net(torch.randn(1, 10, config.N_MELS))
    conv, gru_in = seen['conv'], seen['gru_in']       # (1, 128, 10, 3), (1, 10, 384)
    assert conv.shape == (1, config.CONV_CHANNELS, 10, 3) and gru_in.shape == (1, 10, config.CONV_CHANNELS * 3)
    for c, t, b in [(0, 0, 1), (5, 7, 2), (127, 9, 0)]:
        assert gru_in[0, t, c * 3 + b] == conv[0, c, t, b]          # feature c * 3 + b of frame t


def test_relu_after_pool_is_the_spec_order_bit_for_bit():
    """ConvBlock pools before its ReLU (faster); forward and gradients equal conv-BN-ReLU-pool exactly."""
    torch.manual_seed(0)
    block = model.ConvBlock(1, 8, 5).train()
    block.dropout.p = 0.0
    x = torch.randn(4, 1, 20, config.N_MELS, requires_grad=True)

    def spec_order(x):
        return block.pool(torch.relu(block.bn(block.conv(x))))

    out_fast = block(x)
    grads_fast = torch.autograd.grad(out_fast.square().sum(), [x, *block.parameters()])
    out_spec = spec_order(x)
    grads_spec = torch.autograd.grad(out_spec.square().sum(), [x, *block.parameters()])
    assert torch.equal(out_fast, out_spec)
    for fast, spec in zip(grads_fast, grads_spec):
        assert torch.equal(fast, spec)


def test_channels_last_layout_computes_the_same_function():
    torch.manual_seed(0)
    plain = model.CRNN().eval()
    fast = model.CRNN().eval()
    fast.load_state_dict(plain.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    x = torch.randn(3, 50, config.N_MELS)
    with torch.inference_mode():
        a, b = plain(x), fast(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def layout_gradients(seed, dtype):
    """Loss and gradients of one training-mode step (batch statistics, dropout off: its mask follows the memory
    order) of the plain contiguous CRNN and of its channels-last copy -> [(loss, {name: grad})] x 2."""
    torch.manual_seed(seed)
    plain = model.CRNN().train().to(dtype)
    fast = model.CRNN().train().to(dtype)
    fast.load_state_dict(plain.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    x = torch.randn(4, 60, config.N_MELS, dtype=dtype)
    y = torch.rand(4, 60, len(config.CLASSES), dtype=dtype)
    out = []
    for net in (plain, fast):
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        loss = model.soft_label_loss(net(x), y, 'bce')
        loss.backward()
        out.append((loss.item(), {name: p.grad for name, p in net.named_parameters()}))
    return out


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_channels_last_layout_gives_the_gradients_of_plain_fp32_eager(seed):
    """Each gradient tensor within 1e-3 of its largest magnitude (measured: about 1e-5). Not for every
    input: where fp32 rounding moves a max-pool winner or a ReLU across 0 the gradient jumps (seed 0: 2e-2; plain
    fp32 against fp64 jumps the same way, 1.5e-2 at seed 1), so the function itself is checked in fp64 below.
    The conv biases are left out: BatchNorm subtracts the batch mean, their gradient is 0 up to rounding."""
    (loss_a, grads_a), (loss_b, grads_b) = layout_gradients(seed, torch.float32)
    assert loss_b == pytest.approx(loss_a, rel=1e-4)
    for name, a in grads_a.items():
        if not name.endswith('conv.bias'):
            assert (a - grads_b[name]).abs().max() <= 1e-3 * a.abs().max(), name


def test_channels_last_layout_gives_the_same_gradients_in_float64_for_any_input():
    for seed in (0, 1):
        (loss_a, grads_a), (loss_b, grads_b) = layout_gradients(seed, torch.float64)
        assert loss_b == pytest.approx(loss_a, rel=1e-12)
        scale = max(g.abs().max() for g in grads_a.values())
        for name, a in grads_a.items():
            assert (a - grads_b[name]).abs().max() <= 1e-10 * max(a.abs().max(), 1e-3 * scale), name   # conv biases: 0 + rounding


# -----------------------------------------------------------------------------
# Losses on soft targets, against the formulas written out by hand

LOGITS = [[0.0, 2.0], [-1.0, 3.0]]
TARGETS = [[0.5, 0.8], [0.2, 1.0]]          # soft: annotator agreement, not 0/1


def test_bce_loss_is_the_mean_binary_cross_entropy_of_sigmoid_outputs_and_soft_targets():
    def sigmoid(z):
        return 1 / (1 + math.exp(-z))
    terms = [-(t * math.log(sigmoid(z)) + (1 - t) * math.log(1 - sigmoid(z)))
             for zs, ts in zip(LOGITS, TARGETS) for z, t in zip(zs, ts)]
    expected = sum(terms) / len(terms)     # 0.6931 for z=0, t=0.5, ...
    loss = model.soft_label_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), 'bce')
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bce_loss_of_soft_targets_is_lowest_where_the_sigmoid_equals_the_target():
    target = torch.tensor([0.2, 0.6, 0.9])
    logits = torch.logit(target).requires_grad_()
    model.soft_label_loss(logits, target, 'bce').backward()
    assert torch.allclose(logits.grad, torch.zeros(3), atol=1e-7)


def test_mse_loss_is_the_mean_squared_error_of_raw_outputs_and_soft_targets():
    # (0 - 0.5)^2 + (2 - 0.8)^2 + (-1 - 0.2)^2 + (3 - 1)^2 = 0.25 + 1.44 + 1.44 + 4 = 7.13, over 4 values
    loss = model.soft_label_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), 'mse')
    assert loss.item() == pytest.approx(7.13 / 4, rel=1e-6)


def test_unknown_loss_is_refused_naming_every_loss_of_the_table():
    with pytest.raises(ValueError) as refused:
        model.soft_label_loss(torch.zeros(1), torch.zeros(1), 'hinge')
    assert 'hinge' in str(refused.value) and all(repr(name) in str(refused.value) for name in model.LOSSES)


def test_bce_scores_are_probabilities_in_the_order_of_the_logits_with_logit_0_at_the_threshold():
    scores = model.scores_from_outputs(torch.tensor([-30.0, -2.0, 0.0, 2.0, 30.0]), 'bce')
    assert ((scores >= 0) & (scores <= 1)).all() and (scores[1:] > scores[:-1]).all()
    assert scores[2] == config.THRESHOLD                       # a logit of 0 is not active (score > 0.5)


def test_mse_scores_are_the_raw_outputs_so_none_outside_0_1_tie():
    outputs = torch.tensor([-0.3, -0.1, 0.3, 1.2, 1.4])
    scores = model.scores_from_outputs(outputs, 'mse')
    assert torch.equal(scores, outputs) and len(set(scores.tolist())) == len(outputs)
