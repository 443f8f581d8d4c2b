"""FFLinear / FFConv2d: the fused layer equals the eager composition (normalize -> linear -> ReLU
-> FF loss) in loss and parameter gradients, and gradient never crosses layers."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import ffops
from ffops import ff
from ffops.nn import FFConv2d, FFLinear
from ffops.ops.ff_linear import ff_linear_known_output
from ffops.reference import goodness as reference
from tests.helpers import assert_matches_reference


def _normalize(x, norm, eps):
    flat = x.flatten(1)
    n = flat.norm(dim=1)
    if norm == "rms":
        n = n / math.sqrt(flat.shape[1])
    return x / (n + eps).view(-1, *([1] * (x.dim() - 1)))


def _eager_linear_loss(layer, x, n_pos):
    h = torch.relu(F.linear(_normalize(x, layer.norm, layer.eps), layer.weight, layer.bias))
    return reference.ff_loss(
        h[:n_pos],
        h[n_pos:],
        layer.threshold,
        goodness=layer.goodness_kind,
        loss=layer.loss_kind,
        alpha=layer.alpha,
        sign=layer.sign,
    ), h


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-300)).item()


@pytest.mark.parametrize("norm", ["l2", "rms"])
def test_fflinear_float64_is_float64_accurate(backend_device, norm):
    """float64 in, float64 throughout (the input's length scale included): loss, h, sumsq and the weight
    gradients within 1e-12 relative of the same math composed of torch's float64 ops."""
    _, device = backend_device
    layer = FFLinear(30, 40, threshold=2.0, norm=norm).to(device, torch.float64)
    assert layer.running_mean.dtype == torch.float64
    x = torch.randn(16, 30, device=device, dtype=torch.float64).relu()
    out = layer(x, 8)
    out.loss.backward()
    grads = [layer.weight.grad.clone(), layer.bias.grad.clone()]
    layer.zero_grad()
    expected, h = _eager_linear_loss(layer, x, 8)
    expected.backward()
    assert out.h.dtype == out.sumsq.dtype == out.loss.dtype == torch.float64
    assert _rel(out.loss, expected) <= 1e-12
    assert _rel(out.h, h.detach()) <= 1e-12
    assert _rel(out.sumsq, h.detach().square().sum(1)) <= 1e-12
    for got, want in zip(grads, [layer.weight.grad, layer.bias.grad], strict=True):
        assert _rel(got, want) <= 1e-12


@pytest.mark.parametrize("goodness", ["mean", "sum"])
@pytest.mark.parametrize("norm", ["l2", "rms"])
@pytest.mark.parametrize("loss,sign", [("softplus", 1), ("softplus", -1), ("symba", 1)])
def test_fflinear_equals_eager_composition(backend_device, goodness, norm, loss, sign):
    _, device = backend_device
    threshold = 2.0 if goodness == "mean" else 40.0
    layer = FFLinear(30, 40, threshold=threshold, goodness=goodness, norm=norm, loss=loss, sign=sign).to(device)
    x = torch.randn(16, 30, device=device).relu()
    out = layer(x, 8)
    out.loss.backward()
    grads = [layer.weight.grad.clone(), layer.bias.grad.clone()]
    layer.zero_grad()
    expected, h = _eager_linear_loss(layer, x, 8)
    expected.backward()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.h, h.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.sumsq, h.detach().square().sum(1), rtol=1e-5, atol=1e-5)
    # gradients: judged against float64 by the eager composition's own float32 error (with sum
    # goodness they are small differences of large terms, and GPU GEMMs sum in another order)
    layer64 = copy.deepcopy(layer).double()
    layer64.zero_grad()
    _eager_linear_loss(layer64, x.double(), 8)[0].backward()
    assert_matches_reference(grads[0], layer64.weight.grad, layer.weight.grad, "grad_weight")
    assert_matches_reference(grads[1], layer64.bias.grad, layer.bias.grad, "grad_bias")


@pytest.mark.parametrize("norm", ["l2", "rms"])
@pytest.mark.parametrize("loss", ["softplus", "symba"])
def test_fflinear_on_overlay_rows_equals_the_materialized_rows(backend_device, norm, loss):
    _, device = backend_device
    layer = FFLinear(30, 40, threshold=2.0, norm=norm, loss=loss, peer_weight=0.03).to(device)
    x = torch.rand(8, 30, device=device)
    rows = ff.overlay_rows(x, torch.randint(0, 10, (16,), device=device), 10, on_value="max")
    results = []
    for inp in (rows, rows.materialize()):
        layer.zero_grad()
        layer.running_mean.zero_()
        out = layer(inp, 8)
        out.loss.backward()
        results.append((out.loss, out.h, out.sumsq, layer.weight.grad.clone(), layer.bias.grad.clone()))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("overlay", [False, True])
@pytest.mark.parametrize("peer_weight", [0.0, 0.03])
def test_fflinear_on_a_known_output_equals_running_it(backend_device, overlay, peer_weight):
    # FFTrainer hands the layer its output from the hard-negative pass: same loss, same gradients
    _, device = backend_device
    layer = FFLinear(30, 40, threshold=2.0, peer_weight=peer_weight).to(device)
    rows = ff.overlay_rows(torch.rand(8, 30, device=device), torch.randint(0, 10, (16,), device=device), 10)
    x = rows if overlay else rows.materialize()
    with torch.no_grad():
        known = layer(x, None)
    results = []
    for output in (None, (known.h, known.sumsq)):
        layer.zero_grad()
        layer.running_mean.zero_()
        out = layer(x, 8, output=output)
        out.loss.backward()
        results.append(
            (
                out.loss,
                out.h,
                out.sumsq,
                layer.running_mean.clone(),
                layer.weight.grad.clone(),
                layer.bias.grad.clone(),
            )
        )
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    inference = layer(x, None, output=(known.h, known.sumsq))
    assert inference.loss is None and inference.h is known.h
    torch.testing.assert_close(inference.goodness, known.goodness)


def test_ff_linear_known_output_bad_input():
    layer = FFLinear(6, 4, threshold=1.0)
    x = torch.rand(4, 6)
    h, sumsq, _ = ffops.ff_linear(x, layer.weight.detach(), layer.bias.detach())
    with pytest.raises(ValueError, match="h must be"):
        ff_linear_known_output(x, layer.weight, layer.bias, h[:, :3], sumsq)
    with pytest.raises(ValueError, match="sumsq must be"):
        ff_linear_known_output(x, layer.weight, layer.bias, h, sumsq[:2])
    with pytest.raises(ValueError, match="x must be"):
        ff_linear_known_output(x[:2], layer.weight, layer.bias, h, sumsq)
    with pytest.raises(ValueError, match="n_pos"):
        ff_linear_known_output(x, layer.weight, layer.bias, h, sumsq, n_pos=5)
    with pytest.raises(ValueError, match="x_scale must have shape"):
        ff_linear_known_output(x, layer.weight, layer.bias, h, sumsq, x_scale=torch.ones(3))


def test_fflinear_uses_previous_sumsq_for_normalization(backend_device):
    _, device = backend_device
    first = FFLinear(20, 24, threshold=2.0).to(device)
    second = FFLinear(24, 12, threshold=2.0).to(device)
    x = torch.randn(10, 20, device=device)
    out1 = first(x, 5)
    with_sumsq = second(out1.h, 5, x_sumsq=out1.sumsq)
    without = second(out1.h, 5)
    torch.testing.assert_close(with_sumsq.loss, without.loss)
    torch.testing.assert_close(with_sumsq.h, without.h)


def test_gradient_never_crosses_layers(backend_device):
    _, device = backend_device
    first = FFLinear(20, 24, threshold=2.0).to(device)
    second = FFLinear(24, 12, threshold=2.0).to(device)
    out1 = first(torch.randn(10, 20, device=device), 5)
    assert not out1.h.requires_grad and not out1.sumsq.requires_grad
    second(out1.h, 5, x_sumsq=out1.sumsq).loss.backward()
    assert first.weight.grad is None and first.bias.grad is None
    assert second.weight.grad is not None and second.weight.grad.abs().sum() > 0


def test_collaborative_offset_shifts_the_logit(backend_device):
    _, device = backend_device
    layer = FFLinear(12, 16, threshold=2.0, loss="softplus").to(device)
    x = torch.randn(8, 12, device=device)
    offset = torch.randn(8, device=device)
    shifted = layer(x, 4, goodness_offset=offset)
    g = layer(x, None).goodness
    logit = g + offset - 2.0
    expected = torch.cat([F.softplus(-logit[:4]), F.softplus(logit[4:])]).mean()
    torch.testing.assert_close(shifted.loss, expected)
    torch.testing.assert_close(shifted.goodness, g + offset)


def test_peer_normalization_updates_running_mean_and_adds_penalty():
    layer = FFLinear(12, 16, threshold=2.0, peer_weight=0.03)
    x = torch.randn(8, 12)
    plain = FFLinear(12, 16, threshold=2.0)
    plain.load_state_dict(layer.state_dict())
    out = layer(x, 4)
    base = plain(x, 4).loss
    mu = 0.1 * out.h[:4].mean(0)
    torch.testing.assert_close(layer.running_mean, mu)
    torch.testing.assert_close(out.loss, base + 0.03 * (mu.mean() - mu).square().mean())


def test_inference_call_has_no_loss():
    layer = FFLinear(12, 16, threshold=2.0)
    out = layer(torch.randn(5, 12))
    assert out.loss is None and out.goodness.shape == (5,)


@pytest.mark.parametrize("loss", ["softplus", "symba"])
def test_nan_input_row_propagates_to_its_goodness_and_the_loss(loss):
    layer = FFLinear(12, 16, threshold=2.0, loss=loss)
    x = torch.rand(6, 12)
    x[1, 4] = float("nan")
    out = layer(x, 3)
    assert torch.isnan(out.loss)
    assert torch.isnan(out.goodness).tolist() == [False, True, False, False, False, False]


def test_fflinear_bad_input():
    layer = FFLinear(12, 16, threshold=2.0, loss="symba")
    with pytest.raises(ValueError, match=r"x must be \[batch, 12\], got \(4, 13\)"):
        layer(torch.randn(4, 13), 2)
    with pytest.raises(ValueError, match="need a batch of 2 \\* n_pos rows, got 5 rows and n_pos=2"):
        layer(torch.randn(5, 12), 2)
    with pytest.raises(ValueError, match="goodness must be one of"):
        FFLinear(12, 16, threshold=2.0, goodness="max")
    with pytest.raises(ValueError, match="threshold must be finite"):
        FFLinear(12, 16, threshold=float("inf"))


@pytest.mark.parametrize("goodness_over", ["sample", "channel"])
def test_ffconv2d_equals_eager_composition(backend_device, goodness_over):
    _, device = backend_device
    layer = FFConv2d(3, 6, 3, padding=1, threshold=0.5, goodness_over=goodness_over).to(device)
    x = torch.randn(6, 3, 8, 8, device=device)
    out = layer(x, 3)
    out.loss.backward()
    grad = layer.weight.grad.clone()
    layer.zero_grad()
    h = torch.relu(layer.bias[:, None, None] + F.conv2d(_normalize(x, "l2", layer.eps), layer.weight, padding=1))
    g = h.square().mean((1, 2, 3)) if goodness_over == "sample" else h.square().mean((2, 3))
    logit = g - 0.5
    expected = torch.cat([F.softplus(-logit[:3]).flatten(), F.softplus(logit[3:]).flatten()]).mean()
    expected.backward()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.goodness, g.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, layer.weight.grad, rtol=1e-4, atol=1e-6)
    assert out.sumsq.shape == (6,)
