"""The ``ms_norm`` ops in plain torch (the specification): the memory-sharing norms.

MS norms (no affine): forward ``y = (x - mean) * rstd`` (LayerNorm) or ``y = x * rstd`` (RMSNorm)
over the last dimension, ``rstd = 1 / sqrt(var + eps)`` (biased variance) or ``1 / sqrt(mean(x^2) +
eps)``, computed in float32 (float64 for float64 x); ``y`` is returned in ``out_dtype`` (default
x's dtype) and saved with ``rstd`` (float32 [rows]; float64 for float64 x). Backward from the
output only: ``dx = rstd * (g - mean(g) - y * mean(g * y))`` (LayerNorm) or
``dx = rstd * (g - y * mean(g * y))`` (RMSNorm), returned in x's dtype.
"""

import torch

from ffops.ops._common import stat_dtype


def ms_norm_fwd(x: torch.Tensor, eps: float, center: bool, out_dtype: torch.dtype | None = None):
    """``(y, rstd)`` over the last dimension (see the module doc); y in ``out_dtype`` or x's dtype."""
    acc = x.to(stat_dtype(x.dtype))
    if center:
        acc = acc - acc.mean(-1, keepdim=True)
    rstd = torch.rsqrt(acc.square().mean(-1) + eps)
    y = (acc * rstd[..., None]).to(out_dtype or x.dtype)
    return y, rstd


def ms_norm_bwd(grad_y: torch.Tensor, y: torch.Tensor, rstd: torch.Tensor, center: bool, dx_dtype: torch.dtype):
    """``dx`` from the output ``y`` and ``rstd`` (see the module doc), in ``dx_dtype``."""
    acc = rstd.dtype
    g, yy = grad_y.to(acc), y.to(acc)
    inner = g - yy * (g * yy).mean(-1, keepdim=True)
    if center:
        inner = inner - g.mean(-1, keepdim=True)
    return (rstd[..., None] * inner).to(dx_dtype)


class _MSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps, center, out_dtype):
        y, rstd = ms_norm_fwd(x, eps, center, out_dtype)
        ctx.save_for_backward(y, rstd)
        ctx.center, ctx.x_dtype = center, x.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        y, rstd = ctx.saved_tensors
        return ms_norm_bwd(grad_y, y, rstd, ctx.center, ctx.x_dtype), None, None, None


def ms_norm(x: torch.Tensor, eps: float, center: bool, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """MS-LayerNorm (``center=True``) or MS-RMSNorm over the last dimension, saving only ``y`` and ``rstd``."""
    return _MSNorm.apply(x, eps, center, out_dtype)


def rms_eps(eps: float | None, dtype: torch.dtype) -> float:
    """``eps``, or torch.nn.RMSNorm's default for ``eps=None``: the machine epsilon of ``dtype``."""
    return torch.finfo(dtype).eps if eps is None else eps
