"""Convolution patches in the sparse kernels' feature-major layout, without ATen's unfold / fold.

``patches_feature_major(x, ...)`` returns ``[C * kh * kw, N * OH * OW]`` (row ``(c, i, j)``, column
``(n, oh, ow)``): the matrix whose product with a ``[out, C * kh * kw]`` weight is the convolution.
It is filled by ``kh * kw`` strided copies of the (zero-padded) input, and its backward adds the
gradient rows back with the same ``kh * kw`` strided views. On CPU this is about 3x faster forward and
backward than ``F.unfold`` + transpose + ``F.fold``, which dominate a sparse convolution's time.
"""

import torch
import torch.nn.functional as F


def _window(t: torch.Tensor, i: int, j: int, stride, dilation, out_hw) -> torch.Tensor:
    """The view of padded ``t [N, C, Hp, Wp]`` that kernel tap ``(i, j)`` reads: ``[N, C, OH, OW]``."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    return t[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]


class _PatchesFeatureMajor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, out_hw):
        (kh, kw), (ph, pw), (oh, ow) = kernel_size, padding, out_hw
        n, c = x.shape[:2]
        padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        cols = x.new_empty((c, kh, kw, n, oh, ow))
        for i in range(kh):
            for j in range(kw):
                cols[:, i, j].copy_(_window(padded, i, j, stride, dilation, out_hw).transpose(0, 1))
        ctx.geometry = (x.shape, kernel_size, stride, padding, dilation, out_hw)
        return cols.view(c * kh * kw, n * oh * ow)

    @staticmethod
    def backward(ctx, grad_cols):
        (n, c, h, w), (kh, kw), stride, (ph, pw), dilation, out_hw = ctx.geometry
        grad_padded = grad_cols.new_zeros((n, c, h + 2 * ph, w + 2 * pw))
        per_tap = grad_cols.reshape(c, kh, kw, n, *out_hw)
        for i in range(kh):
            for j in range(kw):
                _window(grad_padded, i, j, stride, dilation, out_hw).add_(per_tap[:, i, j].transpose(0, 1))
        return grad_padded[:, :, ph : ph + h, pw : pw + w], None, None, None, None, None


def patches_feature_major(x: torch.Tensor, kernel_size, stride, padding, dilation, out_hw) -> torch.Tensor:
    """``[C * kh * kw, N * OH * OW]`` patches of ``x [N, C, H, W]`` (zero padding); all geometry as pairs."""
    return _PatchesFeatureMajor.apply(x, kernel_size, stride, padding, dilation, out_hw)
