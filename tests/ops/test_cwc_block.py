"""ffops.cwc_block (fused ReLU, max-pool, batch norm and class-group goodness of a CwC conv block)
on every backend against the reference."""

import pytest
import torch

import ffops
from ffops.reference import cwc_block as reference
from tests.helpers import assert_compile_matches_eager, assert_matches_reference, grads_of

CASES = [  # (shape [N, C, H, W], num_classes, pool)
    ((3, 20, 6, 6), 10, True),
    ((2, 12, 7, 5), 4, True),  # odd sizes: the floor-pool drops a row and a column
    ((4, 6, 3, 4), 3, False),
    ((2, 10, 1, 3), 10, False),
]


def _params(c, dtype, device):
    stat = torch.float64 if dtype == torch.float64 else torch.float32
    weight = (torch.rand(c, dtype=stat, device=device) + 0.5).requires_grad_()
    bias = torch.randn(c, dtype=stat, device=device).requires_grad_()
    return weight, bias


@pytest.mark.parametrize("shape,num_classes,pool", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_matches_reference(backend_device, shape, num_classes, pool, dtype, training, layout):
    device = backend_device[1]
    z = torch.randn(shape, dtype=dtype, device=device)
    if layout == "channels_last":
        z = z.to(memory_format=torch.channels_last)
    weight, bias = _params(shape[1], dtype, device)
    stats = [torch.randn(shape[1], device=device).abs(), torch.rand(shape[1], device=device) + 0.5]
    ho, wo = (shape[2] // 2, shape[3] // 2) if pool else shape[2:]
    weights = [torch.randn(shape[0], shape[1], ho, wo), torch.randn(shape[0], num_classes)]

    def run(inputs):
        running = [s.clone() for s in stats]
        x = inputs[0]
        w, b = inputs[1:] if len(inputs) == 3 else (weight.detach().to(x.dtype), bias.detach().to(x.dtype))
        out = ffops.cwc_block(x, w, b, *running, num_classes=num_classes, pool=pool, training=training)
        return (*out, *running)

    def fn(x, w, b):
        return run([x, w, b])[:2]

    outs, grads = grads_of(fn, [z, weight, bias], weights)
    with ffops.use_backend("reference"):
        outs64, grads64 = grads_of(fn, [z.double(), weight.double(), bias.double()], weights)
        outs_d, grads_d = grads_of(fn, [z, weight, bias], weights)
        running_ref = run([z.detach(), weight.detach(), bias.detach()])[2:]
    assert outs[0].is_contiguous(memory_format=torch.channels_last)
    assert_matches_reference(outs[0], outs64[0], outs_d[0], "y")
    assert_matches_reference(outs[1], outs64[1], outs_d[1], "G")
    for name, g, g64, gd in zip(("dz", "dweight", "dbias"), grads, grads64, grads_d):
        assert_matches_reference(g, g64, gd, name)
    for name, got, expected in zip(("running_mean", "running_var"), run([z, weight, bias])[2:], running_ref):
        torch.testing.assert_close(got, expected, msg=name)


@pytest.mark.parametrize("pool", [True, False])
def test_gradcheck(backend_device, pool):
    device = backend_device[1]
    z = torch.randn(2, 4, 4, 3, dtype=torch.float64, device=device, requires_grad=True)
    w, b = (t.detach().requires_grad_() for t in _params(4, torch.float64, device))
    mean, var = torch.randn(4, dtype=torch.float64, device=device), torch.rand(4, dtype=torch.float64, device=device)
    for training in (True, False):

        def fn(z, w, b, training=training):
            return ffops.cwc_block(
                z, w, b, mean.clone(), var.clone() + 0.5, num_classes=2, pool=pool, training=training
            )

        assert torch.autograd.gradcheck(fn, (z, w, b))


def test_nan_propagates(backend_device):
    device = backend_device[1]
    z = torch.randn(2, 4, 4, 4, device=device)
    z[1, 0, 0, 0] = float("nan")
    w, b = _params(4, torch.float32, device)
    mean, var = torch.zeros(4, device=device), torch.ones(4, device=device)
    y, g = ffops.cwc_block(z, w, b, mean, var, num_classes=2, training=False)  # running stats: NaN stays local
    assert torch.isnan(y[1, 0, 0, 0]) and torch.isfinite(y[0]).all() and torch.isfinite(y[1, 1:]).all()
    assert torch.isnan(g[1, 0]) and torch.isfinite(g[0]).all() and torch.isfinite(g[1, 1])
    y, g = ffops.cwc_block(z, w, b, num_classes=2)  # batch statistics of channel 0 are NaN
    assert torch.isnan(y[:, 0]).all() and torch.isfinite(y[:, 1:]).all() and torch.isnan(g[:, 0]).all()


def test_compiles_without_graph_break():
    w, b = _params(6, torch.float32, "cpu")
    z = torch.randn(3, 6, 4, 4, requires_grad=True)
    assert_compile_matches_eager(
        lambda x: ffops.cwc_block(x, w.detach(), b.detach(), num_classes=3)[1].sum(), z, torch.tensor(1.0)
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"z": torch.randn(4, 6, 3)}, r"z must have at least 4 dimensions"),
        ({"z": torch.randn(2, 6, 2, 2, 1)}, r"z must be 4-D"),
        ({"z": torch.randn(2, 6, 2, 2).int()}, "z must be float32"),
        ({"num_classes": 4}, "num_classes must be an int >= 1 dividing the channels of z"),
        ({"weight": torch.ones(5)}, r"weight must be a float \[6\] tensor"),
        ({"bias": None}, "bias is required"),
        ({"running_mean": torch.zeros(6)}, "give both running_mean and running_var"),
        ({"eps": 0.0}, "eps"),
        ({"z": torch.randn(1, 6, 2, 3)}, "more than 1 value per channel"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"z": torch.randn(2, 6, 4, 4), "weight": torch.ones(6), "bias": torch.zeros(6), "running_mean": None,
            "running_var": None, "num_classes": 3, "eps": 1e-4}  # fmt: skip
    args.update(kwargs)
    z, weight, bias = args.pop("z"), args.pop("weight"), args.pop("bias")
    rm, rv = args.pop("running_mean"), args.pop("running_var")
    with pytest.raises((ValueError, TypeError), match=match):
        ffops.cwc_block(z, weight, bias, rm, rv, **args)


def test_reference_is_the_torch_modules():
    """The specification is nn.ReLU -> nn.MaxPool2d(2) -> nn.BatchNorm2d(eps=1e-4) and CwComp's goodness."""
    z = torch.randn(4, 20, 6, 6, dtype=torch.float64)
    bn = torch.nn.BatchNorm2d(20, eps=1e-4, dtype=torch.float64)
    expected = bn(torch.nn.MaxPool2d(2)(torch.relu(z)))
    rm, rv = torch.zeros(20, dtype=torch.float64), torch.ones(20, dtype=torch.float64)
    y, g = reference.cwc_block(z, bn.weight, bn.bias, rm, rv, 10, eps=1e-4)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(g, expected.reshape(4, 10, -1).square().mean(2))
    torch.testing.assert_close(rm, bn.running_mean)
    torch.testing.assert_close(rv, bn.running_var)
