"""The fused Forward-Forward layer op: ``h, sumsq, pos_mean = ffops.ff_linear(x, weight, bias, ...)``.

One GEMM for the whole (positive + negative) batch with bias, ReLU, the goodness' sum of squares
and the positive-row column means fused into its epilogue, and the input's length normalization
applied as a per-row scale after the GEMM (so the normalized input is never materialized). The
backward forms ``x_scale * dL/dpre`` in one pass over ``h`` and multiplies it into the weight
gradient. ffops.nn.FFLinear builds the FF loss on top of it.
"""

import torch

from ffops import _backend, reference
from ffops._validation import check_float_tensor
from ffops.ops._ff_library import stat_dtype
from ffops.ops._ff_linear_library import KERNELS


def ff_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
              x_scale: torch.Tensor | None = None, n_pos: int = 0):
    """Fused FF layer forward.

    Args:
        x: input activity ``[B, in]`` (positive rows first, then negative rows). It receives no
            gradient: FF layers learn from local losses only.
        weight: ``[out, in]``, same dtype and device as ``x``.
        bias: ``[out]`` or None.
        x_scale: per-row scale ``[B]`` of the input (e.g. ``1 / (||x|| + eps)``, its length
            normalization) or None. Receives no gradient.
        n_pos: how many leading rows are positive data (for ``pos_mean``).

    Returns:
        ``(h, sumsq, pos_mean)``: ``h = relu(x_scale * (x @ weight^T) + bias)`` ``[B, out]`` in x's
        dtype and non-differentiable (the next layer's input); ``sumsq [B]`` the per-row sum of
        ``h^2`` and ``pos_mean [out]`` the mean of ``h`` over the first ``n_pos`` rows, both float32
        (float64 for float64 input) and differentiable w.r.t. ``weight`` and ``bias``.
    """
    op = "ffops.ff_linear"
    check_float_tensor(op, "x", x, min_ndim=2)
    check_float_tensor(op, "weight", weight, min_ndim=2)
    if x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"{op}: x and weight must be 2-D, got {tuple(x.shape)} and {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: weight must be [out, {x.shape[1]}] for x of shape {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)}")
    tensors = {"weight": weight, "bias": bias, "x_scale": x_scale}
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{op}: {name} must be on the device of x ({x.device}), got {t.device}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: weight must have the dtype of x ({x.dtype}), got {weight.dtype}")
    if bias is not None:
        check_float_tensor(op, "bias", bias)
        if bias.shape != (weight.shape[0],) or bias.dtype != x.dtype:
            raise ValueError(f"{op}: bias must be a [{weight.shape[0]}] tensor of {x.dtype}, "
                             f"got {tuple(bias.shape)} {bias.dtype}")
    if x_scale is not None:
        check_float_tensor(op, "x_scale", x_scale)
        if x_scale.shape != (x.shape[0],):
            raise ValueError(f"{op}: x_scale must have shape ({x.shape[0]},), got {tuple(x_scale.shape)}")
    if isinstance(n_pos, bool) or not isinstance(n_pos, int) or not 0 <= n_pos <= x.shape[0]:
        raise ValueError(f"{op}: n_pos must be an int in [0, {x.shape[0]}], got {n_pos!r}")

    impl = _backend.resolve(x.device)
    if impl == "reference":
        return reference.ff_linear(x, weight, bias, x_scale=x_scale, n_pos=n_pos)
    if x_scale is not None:
        x_scale = x_scale.detach().to(stat_dtype(x.dtype)).contiguous()
    return KERNELS[impl].fwd(
        x.detach().contiguous(), x_scale, weight.contiguous(),
        None if bias is None else bias.contiguous(), n_pos,
    )
