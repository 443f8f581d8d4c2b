"""The fused FF layer in plain torch (the specification of ffops.ff_linear)."""

import torch

from ffops.ops._common import stat_dtype


def ff_linear(x, weight, bias=None, *, x_scale=None, n_pos=0):
    """``h = relu(x_scale * (x @ weight^T) + bias)``, with ``sumsq = sum_j h^2`` per row and
    ``pos_mean = mean of h over the first n_pos rows`` per column.

    The GEMM runs in the input dtype (as torch's linear does); the epilogue in float32 (float64 for
    float64 input). ``h`` is returned detached: it is the next layer's input, and gradient never
    crosses FF layers. ``sumsq`` and ``pos_mean`` carry the gradient to ``weight`` and ``bias``.
    """
    acc_dtype = stat_dtype(x.dtype)
    pre = (x.detach() @ weight.t()).to(acc_dtype)
    if x_scale is not None:
        pre = pre * x_scale.detach().to(acc_dtype)[:, None]
    if bias is not None:
        pre = pre + bias.to(acc_dtype)
    h = torch.relu(pre)
    return h.detach().to(x.dtype), h.square().sum(1), h[:n_pos].mean(0)


def ff_label_rows(pre, on, label_weight, bias=None, *, scale=None):
    """The first FF layer on every (sample, label) overlay, from the GEMM on the label-free input.

    ``pre = x0 @ W^T`` ``[B, out]`` with ``x0`` the input with its first ``C`` (label) features zeroed,
    ``on [B]`` the value written at the label's feature, ``label_weight = W[:, :C]`` ``[out, C]``:
    ``h[b * C + c, j] = relu(scale[b] * (pre[b, j] + on[b] * label_weight[j, c]) + bias[j])``, computed
    in float32 (float64 for float64 ``pre``) and returned in ``pre``'s dtype ``[B * C, out]``, with
    ``sumsq[b * C + c] = sum_j h[b * C + c, j]^2`` (of the unrounded ``h``). ``scale`` / ``bias``:
    None for 1 / 0.
    """
    acc_dtype = stat_dtype(pre.dtype)
    rows = pre.shape[0] * label_weight.shape[1]
    z = pre.to(acc_dtype)[:, None, :] + on.to(acc_dtype)[:, None, None] * label_weight.t().to(acc_dtype)  # [B, C, out]
    if scale is not None:
        z = z * scale.to(acc_dtype)[:, None, None]
    if bias is not None:
        z = z + bias.to(acc_dtype)
    h = torch.relu(z).reshape(rows, pre.shape[1])
    return h.to(pre.dtype), h.square().sum(1)


def overlay_rows(base, labels, on, num_classes):
    """The ``R = k * B`` input rows of ``ff_linear_overlay``: row ``r`` is ``base[r % B]`` with its first
    ``num_classes`` features replaced by ``on[r % B] * one_hot(labels[r])``."""
    b = base.shape[0]
    rows = base.detach().repeat(labels.shape[0] // max(b, 1), 1)
    rows[:, :num_classes] = 0
    idx = torch.arange(rows.shape[0], device=base.device)
    rows[idx, labels] = on.detach().to(base.dtype).repeat(labels.shape[0] // max(b, 1))
    return rows


def ff_linear_overlay(base, labels, on, weight, bias=None, *, num_classes, x_scale=None, n_pos=0):
    """``ff_linear`` on the label-overlaid rows of :func:`overlay_rows` (materialized here; the kernels
    run the GEMM on the ``B`` shared rows only)."""
    return ff_linear(overlay_rows(base, labels, on, num_classes), weight, bias, x_scale=x_scale, n_pos=n_pos)
