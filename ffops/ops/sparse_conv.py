"""The direct sparse convolution (CPU): the path ``ffops.nn.SparseConv2d`` takes on the CPU.

A convolution whose weight ``[O, C, kh, kw]`` is one CSR matrix ``[O, C * kh * kw]`` runs as the
sparse linear kernels over a padded, flat copy of the input in which every kernel tap is a shift
(strided: of one of the input's stride phases; csrc/cpu/sparse_conv.cpp explains the layout): no
im2col, whose ``kh * kw / (sh * sw)``-fold copy of the input costs more than the sparse arithmetic at
high sparsity. Forward, backward (dx and the weight gradient at the nonzeros in one pass) and
autograd are C++ (csrc/sparse_conv.cpp). Other devices and backends use im2col + ``sparse_linear``;
the specification of both is ``F.conv2d`` with the dense weight.
"""

import torch

from ffops import _backend
from ffops.ops.sparse_linear import CPU_DTYPES
from ffops.ops.sparse_linear_pattern import TransposedPattern

DIRECT_OK = _backend.CPP_LOADED and _backend.CPP_CPU


def _out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


if DIRECT_OK:

    @torch.library.register_fake("ffops::sparse_conv2d_fwd")
    def _fake_fwd(x, values, crow, col, t_ptr, t_row, t_perm, bias, kernel_size, stride, padding, dilation):
        oh, ow = (_out_size(x.shape[2 + d], kernel_size[d], stride[d], padding[d], dilation[d]) for d in range(2))
        return x.new_empty((x.shape[0], crow.shape[0] - 1, oh, ow))

    @torch.library.register_fake("ffops::sparse_conv2d_bwd")
    def _fake_bwd(
        grad_y, x, values, t_ptr, t_row, t_perm, kernel_size, stride, padding, dilation, need_dx, need_dvalues
    ):
        dx = x.new_empty(x.shape if need_dx else (0,))
        dvalues = values.new_empty(values.shape if need_dvalues else (0,))
        return dx, dvalues


def direct_conv_applies(x: torch.Tensor, kernel_size, stride) -> bool:
    """Whether the direct path runs this convolution of ``x``: a CPU tensor of a C++ kernel dtype, the
    C++ backend chosen for the CPU, and a kernel with more taps than the stride skips (``kh kw > sh
    sw``). Otherwise, e.g. a 1 x 1 stride-2 shortcut, im2col copies no more than the input (a strided
    gather) and is measured faster than the direct path's phase split."""
    (kh, kw), (sh, sw) = kernel_size, stride
    return (
        DIRECT_OK
        and kh * kw > sh * sw
        and x.device.type == "cpu"
        and x.dtype in CPU_DTYPES
        and _backend.resolve(x.device) == "cpp"
    )


def sparse_conv2d_direct(
    x: torch.Tensor,
    values: torch.Tensor,
    crow: torch.Tensor,
    col: torch.Tensor,
    transposed: TransposedPattern,
    bias: torch.Tensor | None,
    kernel_size,
    stride,
    padding,
    dilation,
) -> torch.Tensor:
    """``y [N, O, OH, OW]`` of ``x [N, C, H, W]`` (zero padding) for the CSR weight ``(crow,
    col, values)`` over columns ``(c, i, j)``. Arguments are trusted: the caller (``SparseConv2d``)
    validated the pattern and checked :func:`direct_conv_applies`."""
    return torch.ops.ffops.sparse_conv2d_fwd(
        x, values.contiguous(), crow, col, *transposed, bias, [*kernel_size], [*stride], [*padding], [*dilation]
    )
