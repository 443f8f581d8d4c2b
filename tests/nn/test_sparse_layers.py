"""SparseLinear and SparseConv2d: equal to the dense masked layers in outputs and gradients, the
gradient reaches only the nonzeros, and state_dict / optimizer state round trip."""

import io

import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import ffops
from ffops.nn import SparseConv2d, SparseLinear


def _masked_grad(dense_layer, x):
    out = dense_layer(x)
    out.square().sum().backward()
    return out


def test_sparse_linear_equals_masked_dense(backend_device):
    _, device = backend_device
    linear = nn.Linear(40, 24).to(device)
    sparse = SparseLinear.from_dense(linear, sparsity=0.8)
    assert sparse.nnz == round(0.2 * 40 * 24) and abs(sparse.sparsity - 0.8) < 1e-3
    dense = sparse.to_dense()
    x = torch.randn(3, 7, 40, device=device)
    xs, xd = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ys, yd = sparse(xs), _masked_grad(dense, xd)
    ys.square().sum().backward()
    assert torch.allclose(ys, yd, atol=1e-5)
    assert torch.allclose(xs.grad, xd.grad, atol=1e-4)
    keep = dense.weight.detach() != 0
    assert torch.allclose(sparse.values.grad, dense.weight.grad[keep], atol=1e-4)
    assert torch.allclose(sparse.bias.grad, dense.bias.grad, atol=1e-4)
    # the kept weights are the largest magnitudes of the original
    assert linear.weight.abs()[keep].min() >= linear.weight.abs()[~keep].max()


def test_from_dense_with_mask_and_existing_zeros():
    linear = nn.Linear(10, 6, bias=False)
    mask = torch.rand(6, 10) < 0.3
    s = SparseLinear.from_dense(linear, mask=mask)
    assert s.nnz == mask.sum() and s.bias is None
    assert torch.equal(s.dense_weight().detach(), linear.weight.detach() * mask)
    with torch.no_grad():
        linear.weight.mul_(mask)
    assert SparseLinear.from_dense(linear).nnz == mask.sum()  # neither given: the weight's nonzeros
    with pytest.raises(ValueError, match="not both"):
        SparseLinear.from_dense(linear, sparsity=0.5, mask=mask)
    with pytest.raises(ValueError, match="mask must be a tensor of the weight's shape"):
        SparseLinear.from_dense(linear, mask=mask.t())
    with pytest.raises(ValueError, match="sparsity must be a number in"):
        SparseLinear.from_dense(linear, sparsity=2)


def test_wrong_input_width_is_named():
    s = SparseLinear.from_dense(nn.Linear(10, 6), sparsity=0.5)
    with pytest.raises(ValueError, match="x must have 10 features"):
        s(torch.randn(3, 11))


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 0, 1, 1), (1, 2, 2, 2), (2, 1, 1, 4)])
def test_sparse_conv_equals_masked_dense(backend_device, stride, padding, dilation, groups):
    _, device = backend_device
    conv = nn.Conv2d(8, 12, 3, stride=stride, padding=padding, dilation=dilation, groups=groups).to(device)
    sparse = SparseConv2d.from_dense(conv, sparsity=0.8)
    assert abs(sparse.sparsity - 0.8) < 0.01
    dense = sparse.to_dense()
    x = torch.randn(2, 8, 11, 9, device=device)
    xs, xd = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ys, yd = sparse(xs), _masked_grad(dense, xd)
    ys.square().sum().backward()
    assert ys.shape == yd.shape and ys.is_contiguous()
    assert torch.allclose(ys, yd, atol=1e-4)
    assert torch.allclose(xs.grad, xd.grad, atol=1e-3)
    assert torch.allclose(sparse.dense_conv_weight().detach(), dense.weight.detach())
    # the values' gradient is the dense weight's gradient at the pattern, in the layer's own order
    mask = sparse.dense_conv_weight().detach() != 0
    with torch.no_grad():
        dense.weight.copy_(dense.weight.grad)
    assert torch.allclose(sparse.values.grad, SparseConv2d.from_dense(dense, mask=mask).values, atol=1e-3)
    assert torch.allclose(sparse.bias.grad, dense.bias.grad, atol=1e-3)


def test_sparse_conv_padding_modes():
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        SparseConv2d.from_dense(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), sparsity=0.5)
    same = SparseConv2d.from_dense(nn.Conv2d(2, 3, 3, padding="same"), sparsity=0.5)
    assert same(torch.randn(1, 2, 5, 6)).shape == (1, 3, 5, 6)


def test_state_dict_round_trip_takes_over_the_pattern():
    a = SparseLinear.from_dense(nn.Linear(30, 20), sparsity=0.9)
    b = SparseLinear.from_dense(nn.Linear(30, 20), sparsity=0.7)  # another pattern and nnz
    b.load_state_dict(a.state_dict())
    assert b.nnz == a.nnz and torch.equal(b.col_indices, a.col_indices)
    x = torch.randn(4, 30)
    assert torch.equal(a(x), b(x))
    assert set(a.state_dict()) == {"values", "bias", "crow_indices", "col_indices"}


def test_optimizer_state_round_trip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    ffops.sparse.sparsify(model, 0.85)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))

    def step(m, o):
        o.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        o.step()
        return loss.item()

    for _ in range(3):
        step(model, opt)
    buffer = io.BytesIO()  # through a file, as a checkpoint would (state_dict()s share live tensors)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    saved_model, saved_opt = saved["model"], saved["opt"]

    torch.manual_seed(1)
    clone = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    ffops.sparse.sparsify(clone, 0.85)  # its own (different) pattern, replaced on load
    clone.load_state_dict(saved_model)
    clone_opt = torch.optim.Adam(clone.parameters(), lr=1e-2)
    clone_opt.load_state_dict(saved_opt)
    for _ in range(2):
        assert step(model, opt) == pytest.approx(step(clone, clone_opt), abs=0)
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


def test_autocast_like_nn_linear():
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    sparse = SparseLinear.from_dense(linear, sparsity=0.8)
    conv = SparseConv2d.from_dense(nn.Conv2d(3, 4, 3), sparsity=0.8)
    x = torch.randn(5, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sparse(x)
        y_conv = conv(torch.randn(2, 3, 6, 6))
        y_dense = sparse.to_dense()(x)
    assert y.dtype == y_dense.dtype == y_conv.dtype == torch.bfloat16
    assert torch.allclose(y.float(), y_dense.float(), atol=0.05)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and sparse.values.grad.dtype == torch.float32


@pytest.mark.parametrize(
    "n,c,h,w,k,s,p,d",
    [
        (2, 3, 7, 9, 3, 1, 1, 1),
        (2, 4, 11, 9, 3, 2, 0, 1),
        (2, 4, 11, 9, 3, 1, 2, 2),
        (3, 2, 8, 8, 2, 2, 1, 1),
    ],
)
def test_feature_major_patches_equal_unfold(n, c, h, w, k, s, p, d):
    from ffops.nn._im2col import patches_feature_major

    x = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    oh, ow = ((size + 2 * p - d * (k - 1) - 1) // s + 1 for size in (h, w))
    unfolded = nn.functional.unfold(x, k, dilation=d, padding=p, stride=s)
    expected = unfolded.transpose(0, 1).reshape(unfolded.shape[1], -1)
    geometry = ((k, k), (s, s), (p, p), (d, d), (oh, ow))
    assert torch.equal(patches_feature_major(x, *geometry), expected)
    assert torch.autograd.gradcheck(lambda t: patches_feature_major(t, *geometry), (x,))


class _AllocatedBytes(TorchDispatchMode):
    """The bytes of every new storage created by the ops run under it (views of inputs not counted)."""

    def __init__(self):
        super().__init__()
        self.total = self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = pytree.tree_leaves((args, kwargs))
        inputs = {t.untyped_storage().data_ptr() for t in leaves if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.total += t.untyped_storage().nbytes()
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("groups", [256, 4])
def test_grouped_from_dense_memory_is_proportional_to_the_weight(groups):
    """Depthwise / grouped convs: the pattern is built per group, never the block-diagonal
    ``[out, in * kh * kw]`` matrix (``groups`` times the weight: 256 x for this depthwise conv)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 7, padding=3, groups=groups)
    with _AllocatedBytes() as allocated:
        sparse = SparseConv2d.from_dense(conv, sparsity=0.5)
    weight_bytes = conv.weight.nbytes
    # measured: 32 x the weight in all (mask, top-k, CSR and CSC patterns, values), 2 x at most at once,
    # whatever the groups; the block-diagonal build allocated 414 x (depthwise) in all, 256 x at once
    assert allocated.total <= 40 * weight_bytes, allocated.total / weight_bytes
    assert allocated.largest <= 3 * weight_bytes, allocated.largest / weight_bytes
    keep = ffops.sparse.magnitude_mask(conv.weight, 0.5)
    assert torch.equal(sparse.dense_conv_weight().detach(), conv.weight.detach() * keep)
    x = torch.randn(1, 256, 9, 9)
    want = nn.functional.conv2d(x, conv.weight.detach() * keep, conv.bias.detach(), padding=3, groups=groups)
    assert torch.allclose(sparse(x).detach(), want, atol=1e-4)
    with _AllocatedBytes() as allocated:
        sparse.dense_conv_weight()  # no block-diagonal matrix on the way back either (measured: 10 x in all)
    assert allocated.total <= 16 * weight_bytes, allocated.total / weight_bytes
