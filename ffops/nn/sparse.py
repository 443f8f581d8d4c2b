"""Sparse layers: ``SparseLinear`` and ``SparseConv2d`` whose forward and backward touch only the
nonzeros of a fixed, unstructured weight pattern (``ffops.sparse_linear``).

The pattern (CSR row pointers and column indices, and its transpose for the backward) is held in
buffers; the nonzero ``values`` are the parameter. ``state_dict`` holds the values, the bias and
the CSR pattern, so a checkpoint restores the pattern too, whatever the module held before.
"""

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from ffops import _backend
from ffops.nn._im2col import patches_feature_major
from ffops.ops.sparse_conv import direct_conv_applies, sparse_conv2d_direct
from ffops.ops.sparse_linear import CPU_DTYPES, sparse_linear, sparse_linear_t
from ffops.ops.sparse_linear_pattern import (
    TransposedPattern,
    check_csr,
    csr_rows,
    dense_weight,
    magnitude_mask,
    pattern_from_mask,
    transpose_pattern,
)


def _mask_for(weight: torch.Tensor, sparsity, mask, op: str) -> torch.Tensor:
    """The boolean mask of a dense weight: given, or the ``1 - sparsity`` largest magnitudes, or
    (both None) the weight's nonzeros."""
    if mask is not None and sparsity is not None:
        raise ValueError(f"{op}: give sparsity or mask, not both")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != weight.shape:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{op}: mask must be a tensor of the weight's shape {tuple(weight.shape)}, got {got}")
        return mask.to(weight.device) != 0
    if sparsity is None:
        return weight.detach() != 0
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"{op}: sparsity must be a number in [0, 1], got {sparsity!r}")
    return magnitude_mask(weight, float(sparsity))


class _SparsePatternMixin:
    """The shared state of the sparse layers: values, bias, the CSR pattern and its transpose."""

    def _init_pattern(self, out_features, in_features, crow_indices, col_indices, values, bias, device, dtype, op):
        check_csr(crow_indices, col_indices, out_features, in_features, op=op)
        self._op = op
        factory = {"device": device if device is not None else crow_indices.device, "dtype": dtype}
        nnz = col_indices.numel()
        if values is None:
            # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) over the full fan-in
            bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
            values = torch.empty(nnz, **factory).uniform_(-bound, bound)
        elif values.shape != (nnz,):
            raise ValueError(f"{op}: values must have shape ({nnz},) (one per nonzero), got {tuple(values.shape)}")
        self.values = nn.Parameter(values.detach().to(**{k: v for k, v in factory.items() if v is not None}).clone())
        device = self.values.device
        self.register_buffer("crow_indices", crow_indices.to(device))
        self.register_buffer("col_indices", col_indices.to(device))
        self._set_transposed()
        if bias is True:
            bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
            self.bias = nn.Parameter(
                torch.empty(out_features, device=device, dtype=self.values.dtype).uniform_(-bound, bound)
            )
        elif bias is False or bias is None:
            self.register_parameter("bias", None)
        else:
            if bias.shape != (out_features,):
                raise ValueError(f"{op}: bias must have shape ({out_features},), got {tuple(bias.shape)}")
            self.bias = nn.Parameter(bias.detach().to(device=device, dtype=self.values.dtype).clone())

    def _set_transposed(self):
        t = transpose_pattern(self.crow_indices, self.col_indices, self._dense_in_features(), op=self._op)
        # derived from the CSR buffers: not saved in state_dict, rebuilt on load
        self.register_buffer("t_ptr", t.ptr, persistent=False)
        self.register_buffer("t_row", t.row, persistent=False)
        self.register_buffer("t_perm", t.perm, persistent=False)

    def _autocast(self, x):
        """``(x, values, bias, out_dtype)``: under autocast, like nn.Linear, everything in the autocast
        dtype and so is the result. The C++ CPU kernels have no float16 / bfloat16 path: on CPU they
        compute in float32 and only the result is cast to the autocast dtype."""
        values, bias = self.values, self.bias
        if not torch.is_autocast_enabled(x.device.type):
            return x, values, bias, None
        out_dtype = compute = torch.get_autocast_dtype(x.device.type)
        if x.device.type == "cpu" and compute not in CPU_DTYPES and _backend.resolve(x.device) == "cpp":
            compute = torch.float32
        x, values = x.to(compute), values.to(compute)
        bias = None if bias is None else bias.to(compute)
        return x, values, bias, out_dtype

    @property
    def transposed(self) -> TransposedPattern:
        return TransposedPattern(self.t_ptr, self.t_row, self.t_perm)

    @property
    def nnz(self) -> int:
        """Number of stored nonzeros."""
        return self.col_indices.numel()

    @property
    def sparsity(self) -> float:
        """Fraction of the dense weight's entries that are not stored."""
        total = self.weight_numel()
        return 1.0 - self.nnz / total if total else 0.0

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense ``[out, in]`` matrix (zeros off the pattern; differentiable)."""
        return dense_weight(self.values, self.crow_indices, self.col_indices, self._dense_in_features())

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # a checkpoint may hold another pattern (another nnz): take it over before the copy
        crow, col = state_dict.get(prefix + "crow_indices"), state_dict.get(prefix + "col_indices")
        values = state_dict.get(prefix + "values")
        if crow is not None and col is not None and values is not None:
            check_csr(crow, col, self.crow_indices.numel() - 1, self._dense_in_features(), op=self._op)
            if values.shape != (col.numel(),):
                raise ValueError(
                    f"{self._op}: checkpoint values {tuple(values.shape)} do not match its pattern "
                    f"({col.numel()} nonzeros)"
                )
            device = self.values.device
            self.crow_indices = crow.to(device=device)
            self.col_indices = col.to(device=device)
            self.values.data = torch.empty(col.numel(), device=device, dtype=self.values.dtype)
            self._set_transposed()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class SparseLinear(_SparsePatternMixin, nn.Module):
    """``y = x @ W^T + b`` with ``W [out_features, in_features]`` stored as CSR (``ffops.sparse_linear``).

    Build it from a dense layer with :meth:`from_dense` (magnitude pruning or a given mask), or from
    a pattern: ``SparseLinear(in_features, out_features, crow_indices, col_indices, values=None)``.
    The pattern is validated here (indices in range, sorted and unique per row); values default
    to nn.Linear's initialization.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        crow_indices: torch.Tensor,
        col_indices: torch.Tensor,
        values: torch.Tensor | None = None,
        bias=True,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_pattern(
            out_features,
            in_features,
            crow_indices,
            col_indices,
            values,
            bias,
            device,
            dtype,
            "ffops.nn.SparseLinear",
        )

    def _dense_in_features(self) -> int:
        return self.in_features

    def weight_numel(self) -> int:
        """Entries of the equivalent dense weight."""
        return self.out_features * self.in_features

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        sparsity: float | None = None,
        mask: torch.Tensor | None = None,
        index_dtype: torch.dtype = torch.int32,
    ) -> "SparseLinear":
        """Keep ``linear``'s weights on ``mask``, or its ``1 - sparsity`` largest magnitudes, or (neither
        given) its nonzeros. Bias, device and dtype are kept."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"SparseLinear.from_dense: expected an nn.Linear, got {type(linear).__name__}")
        weight = linear.weight.detach()
        keep = _mask_for(weight, sparsity, mask, "SparseLinear.from_dense")
        crow, col = pattern_from_mask(keep, index_dtype)
        return cls(
            linear.in_features,
            linear.out_features,
            crow,
            col,
            weight[keep],
            bias=linear.bias if linear.bias is not None else False,
            device=weight.device,
            dtype=weight.dtype,
        )

    def to_dense(self) -> nn.Linear:
        """An nn.Linear with the same function (zeros off the pattern)."""
        p = self.values
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, device=p.device, dtype=p.dtype
        )
        with torch.no_grad():
            linear.weight.copy_(self.dense_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"ffops.nn.SparseLinear: x must have {self.in_features} features in its last "
                f"dimension, got shape {tuple(x.shape)}"
            )
        x, values, bias, out_dtype = self._autocast(x)
        y = sparse_linear(
            x,
            values,
            self.crow_indices,
            self.col_indices,
            bias,
            self.out_features,
            transposed=self.transposed,
        )
        return y if out_dtype is None else y.to(out_dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}, "
            f"sparsity={self.sparsity:.3f}, bias={self.bias is not None}"
        )


def _conv_padding(conv: nn.Conv2d):
    if conv.padding_mode != "zeros":
        raise ValueError(f"SparseConv2d: only padding_mode='zeros' is supported, got {conv.padding_mode!r}")
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total) or conv.stride != (1, 1):
            raise ValueError(
                "SparseConv2d: padding='same' is supported only with stride 1 and symmetric padding "
                f"(dilation * (kernel_size - 1) even), got kernel {conv.kernel_size}, "
                f"dilation {conv.dilation}, stride {conv.stride}"
            )
        return tuple(t // 2 for t in total)
    return conv.padding


ALGORITHMS = ("auto", "im2col")


class SparseConv2d(_SparsePatternMixin, nn.Module):
    """A 2-D convolution whose weight ``[out, in / groups, kh, kw]`` is unstructured-sparse.

    The weight is one CSR matrix ``[out, in * kh * kw]``; groups are its block-diagonal structure (a
    nonzero of output channel o only in o's group's columns). Two algorithms:

    * direct (``algorithm="auto"`` on the CPU with the C++ kernels): the sparse kernels read every
      kernel tap as a shift of one padded copy of the input (strided: of one of its stride phases;
      ``ffops.ops.sparse_conv``); no patch matrix is built.
    * im2col (``algorithm="im2col"``, and everywhere the direct path does not apply: GPU, the Triton
      or reference backend, kernels with no more taps than the stride skips such as a 1 x 1
      stride-2 shortcut): the input's patches are gathered feature-major,
      ``[in * kh * kw, N * L]`` (``kh * kw`` times the input), and forward and backward run the
      kernels of ``ffops.sparse_linear``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        crow_indices: torch.Tensor,
        col_indices: torch.Tensor,
        values: torch.Tensor | None = None,
        *,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias=True,
        algorithm: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        op = "ffops.nn.SparseConv2d"
        if algorithm not in ALGORITHMS:
            raise ValueError(f"{op}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.algorithm = algorithm
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{op}: groups ({groups}) must divide in_channels ({in_channels}) and out_channels ({out_channels})"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self._init_pattern(
            out_channels,
            self._dense_in_features(),
            crow_indices,
            col_indices,
            values,
            bias,
            device,
            dtype,
            op,
        )
        self._check_groups(op)

    def _dense_in_features(self) -> int:
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def weight_numel(self) -> int:
        """Entries of the equivalent dense weight ``[out, in / groups, kh, kw]``."""
        return self.out_channels * self._dense_in_features() // self.groups

    def _check_groups(self, op):
        if self.groups == 1 or self.nnz == 0:
            return
        block = self._dense_in_features() // self.groups  # columns of one group
        rows = torch.repeat_interleave(
            torch.arange(self.out_channels, device=self.col_indices.device),
            (self.crow_indices[1:] - self.crow_indices[:-1]).long(),
        )
        row_group = rows // (self.out_channels // self.groups)
        if bool((self.col_indices.long() // block != row_group).any()):
            raise ValueError(
                f"{op}: with groups={self.groups}, output channel o may only use the input columns of its group"
            )

    @classmethod
    def from_dense(
        cls,
        conv: nn.Conv2d,
        sparsity: float | None = None,
        mask: torch.Tensor | None = None,
        index_dtype: torch.dtype = torch.int32,
        algorithm: str = "auto",
    ) -> "SparseConv2d":
        """Keep ``conv``'s weights on ``mask`` (the weight's shape), or its ``1 - sparsity`` largest
        magnitudes, or (neither given) its nonzeros. ``algorithm``: see the class."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"SparseConv2d.from_dense: expected an nn.Conv2d, got {type(conv).__name__}")
        padding = _conv_padding(conv)
        weight = conv.weight.detach()
        keep = _mask_for(weight, sparsity, mask, "SparseConv2d.from_dense")
        out_c, g = weight.shape[0], conv.groups
        keep, weight = keep.reshape(out_c, -1), weight.reshape(out_c, -1)
        # the pattern of each row in its group's columns, then shifted there: output channel o's group
        # holds the columns [group * block, (group + 1) * block) of the [out, in * kh * kw] matrix (no
        # block-diagonal matrix is built: memory stays proportional to the weight, depthwise too)
        crow, col = pattern_from_mask(keep, torch.int64)
        if g > 1:
            group_start = torch.arange(out_c, device=weight.device) // (out_c // g) * keep.shape[1]
            col += group_start.repeat_interleave(crow.diff())
        return cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            crow.to(index_dtype),
            col.to(index_dtype),
            weight[keep],
            stride=conv.stride,
            padding=padding,
            dilation=conv.dilation,
            groups=g,
            bias=conv.bias if conv.bias is not None else False,
            algorithm=algorithm,
            device=weight.device,
            dtype=weight.dtype,
        )

    def dense_conv_weight(self) -> torch.Tensor:
        """The weight as a dense ``[out, in / groups, kh, kw]`` tensor (zeros off the pattern)."""
        out_c, g = self.out_channels, self.groups
        block = self._dense_in_features() // g  # columns of one group
        # each row's columns shifted back from its group's block: [out, block], never [out, in * kh * kw]
        rows = csr_rows(self.crow_indices)
        flat = rows * block + self.col_indices.long() - rows // (out_c // g) * block
        w = self.values.new_zeros(out_c * block).index_put((flat,), self.values)  # differentiable w.r.t. values
        return w.view(out_c, self.in_channels // g, *self.kernel_size)

    def to_dense(self) -> nn.Conv2d:
        """An nn.Conv2d with the same function."""
        p = self.values
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
            device=p.device,
            dtype=p.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.dense_conv_weight())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ffops.nn.SparseConv2d: x must be [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        x, values, bias, out_dtype = self._autocast(x)
        if values.dtype != x.dtype:
            raise TypeError(f"ffops.nn.SparseConv2d: x must have the layer's dtype ({values.dtype}), got {x.dtype}")
        if self.algorithm == "auto" and direct_conv_applies(x, self.kernel_size, self.stride):
            y = sparse_conv2d_direct(
                x,
                values,
                self.crow_indices,
                self.col_indices,
                self.transposed,
                bias,
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
            )
            return y if out_dtype is None else y.to(out_dtype)
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        out_h = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        out_w = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        xt = patches_feature_major(x, self.kernel_size, self.stride, self.padding, self.dilation, (out_h, out_w))
        yt = sparse_linear_t(xt, values, self.crow_indices, self.col_indices, self.transposed, bias)
        y = yt.view(self.out_channels, n, out_h, out_w).transpose(0, 1)
        return y.contiguous() if out_dtype is None else y.to(out_dtype, memory_format=torch.contiguous_format)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, nnz={self.nnz}, "
            f"sparsity={self.sparsity:.3f}, bias={self.bias is not None}, algorithm={self.algorithm!r}"
        )
