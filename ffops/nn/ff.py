"""Fused Forward-Forward layers: ``FFLinear`` and ``FFConv2d``.

A layer is called once on the concatenated positive and negative batch and returns its local
loss plus the detached activity for the next layer (``FFLayerOutput``). Gradient never crosses
layers: the loss depends on this layer's parameters only.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

import ffops
from ffops._validation import check_choice, check_finite_real
from ffops.ops._common import stat_dtype
from ffops.ops.ff_linear import ff_linear_known_output
from ffops.reference.ff_linear import overlay_rows

GOODNESS = ("mean", "sum")
NORMS = ("l2", "rms")
LOSSES = ("softplus", "symba")


class OverlayRows(NamedTuple):
    """Label-overlaid input rows that share their images, kept unmaterialized (a first layer's input).

    Row ``r`` is ``base[r % B]`` with its first ``num_classes`` features replaced by
    ``on[r % B] * one_hot(labels[r])``. Supervised FF's batch is ``labels = cat([y, y_wrong])``: the
    positive rows, then the negative rows of the same images. ``FFLinear`` runs such rows through
    ffops.ff_linear_overlay, whose GEMMs take the ``B`` images once instead of every row.
    ``shape``, ``device`` and ``dtype`` are those of the materialized ``[R, features]`` rows.
    """

    base: torch.Tensor  # [B, features]
    labels: torch.Tensor  # [R], R = k * B
    on: torch.Tensor  # [B] float
    num_classes: int

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.labels.shape[0], self.base.shape[1]))

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    def sumsq(self) -> torch.Tensor:
        """Per-row ``sum x^2`` ``[R]`` (the label features hold ``on`` once), in float32 (float64 for
        float64 rows)."""
        stat = stat_dtype(self.base.dtype)
        rest = ffops.goodness(self.base[:, self.num_classes :].detach(), reduction="sum").to(stat)
        per_image = rest + self.on.detach().to(stat).square()
        return per_image.repeat(self.labels.shape[0] // max(self.base.shape[0], 1))

    def materialize(self) -> torch.Tensor:
        """The ``[R, features]`` rows as a tensor."""
        return overlay_rows(self.base, self.labels, self.on, self.num_classes)


class FFLayerOutput(NamedTuple):
    """What one FF layer returns.

    loss: scalar local loss (``None`` when called without ``n_pos``: inference);
    h: the activity ``[B, ...]`` (detached) for the next layer;
    sumsq: ``[B]`` per-sample sum of ``h^2`` (detached): the next layer's input norm, for free;
    goodness: ``[B]`` per-sample goodness (detached; plus the offset in collaborative FF), for
        prediction and logging.
    """

    loss: torch.Tensor | None
    h: torch.Tensor
    sumsq: torch.Tensor
    goodness: torch.Tensor


class _FFLossMixin:
    """The FF loss on per-row goodness, shared by the linear and conv layers."""

    def _init_loss(self, threshold, goodness, norm, loss, alpha, sign, eps, peer_weight, peer_momentum):
        name = type(self).__name__
        self.threshold = check_finite_real(name, "threshold", threshold)
        check_choice(name, "goodness", goodness, GOODNESS)
        check_choice(name, "norm", norm, NORMS)
        check_choice(name, "loss", loss, LOSSES)
        if sign not in (1, -1) or isinstance(sign, bool):
            raise ValueError(f"{name}: sign must be +1 or -1, got {sign!r}")
        self.goodness_kind, self.norm, self.loss_kind, self.sign = goodness, norm, loss, sign
        self.alpha = check_finite_real(name, "alpha", alpha, positive=True)
        self.eps = check_finite_real(name, "eps", eps, positive=True)
        self.peer_weight = check_finite_real(name, "peer_weight", peer_weight)
        self.peer_momentum = check_finite_real(name, "peer_momentum", peer_momentum)
        if self.peer_weight < 0 or not 0 <= self.peer_momentum < 1:
            raise ValueError(
                f"{name}: need peer_weight >= 0 and 0 <= peer_momentum < 1, got {peer_weight} and {peer_momentum}"
            )
        self._targets_cache: dict[tuple, torch.Tensor] = {}

    def _input_scale(self, x, x_sumsq: torch.Tensor | None) -> torch.Tensor:
        """Per-sample length normalization of the input as a scale: ``1 / (||x|| + eps)`` (l2) or
        ``1 / (rms(x) + eps)``. ``x_sumsq`` (the previous layer's ``sumsq``) avoids a pass over x."""
        stat = stat_dtype(x.dtype)
        if x_sumsq is None:
            x_sumsq = x.sumsq() if isinstance(x, OverlayRows) else ffops.goodness(x.detach(), reduction="sum")
        sumsq = x_sumsq.detach().to(stat)
        if self.norm == "rms":
            sumsq = sumsq * (1.0 / max(math.prod(x.shape[1:]), 1))
        return sumsq.sqrt().add_(self.eps).reciprocal_()

    def _loss(self, sumsq, pos_mean, features, n_pos, offset):
        """Mean FF loss over ``sumsq`` (``[B]``, or ``[B, C]`` for per-channel goodness: every entry
        has its own logit); the first ``n_pos`` entries along dim 0 are positive."""
        g = sumsq * (1.0 / features if self.goodness_kind == "mean" else 1.0)
        if offset is not None:
            g = g + offset.detach().to(g.dtype)
        rows = g.shape[0]
        if n_pos is None:
            return None, g.detach()
        if not 0 <= n_pos <= rows:
            raise ValueError(f"{type(self).__name__}: n_pos must be in [0, {rows}], got {n_pos}")
        if self.loss_kind == "softplus":
            # softplus(-logit) on positive rows and softplus(logit) on negative ones is BCE-with-logits
            # against targets 1 / 0: one op each way instead of the slices, two softplus and a cat
            logit = g - self.threshold if self.sign == 1 else self.threshold - g
            loss = F.binary_cross_entropy_with_logits(logit, self._targets(g, n_pos))
        else:
            if rows != 2 * n_pos:
                raise ValueError(
                    f"{type(self).__name__}: loss='symba' pairs positive and negative rows; "
                    f"need a batch of 2 * n_pos rows, got {rows} rows and n_pos={n_pos}"
                )
            loss = F.softplus(-self.alpha * self.sign * (g[:n_pos] - g[n_pos:])).mean()
        if self.peer_weight > 0 and n_pos > 0:
            mu = self.peer_momentum * self.running_mean + (1 - self.peer_momentum) * pos_mean
            loss = loss + self.peer_weight * (mu.mean() - mu).square().mean()
            self.running_mean.copy_(mu.detach())
        return loss, g.detach()

    def _targets(self, g: torch.Tensor, n_pos: int) -> torch.Tensor:
        """BCE targets shaped like ``g``: 1 on the first ``n_pos`` rows, 0 after. Kept per shape, dtype and
        device: a CUDA graph captured on one batch shape reads its buffer at every replay, also after
        steps on other shapes."""
        key = (g.shape, n_pos, g.dtype, g.device)
        targets = self._targets_cache.get(key)
        if targets is None:
            targets = torch.zeros_like(g)
            targets[:n_pos] = 1
            self._targets_cache[key] = targets
        return targets

    def _extra_loss_repr(self):
        return (
            f"threshold={self.threshold}, goodness={self.goodness_kind!r}, norm={self.norm!r}, "
            f"loss={self.loss_kind!r}" + (f", peer_weight={self.peer_weight}" if self.peer_weight else "")
        )


class FFLinear(_FFLossMixin, nn.Module):
    """A fused Forward-Forward linear layer: ``h = relu(normalize(x) @ W^T + b)`` and its FF loss.

    Call it on the concatenated batch ``x = cat([x_pos, x_neg])`` with ``n_pos = len(x_pos)``: one
    GEMM serves both. The input's length normalization (``norm``) is applied as a per-row scale
    after the GEMM (never materialized); bias, ReLU, the goodness' sum of squares and the peer
    normalization statistics are fused into the GEMM epilogue (ffops.ff_linear).

    Args:
        threshold: theta of the logit ``sign * (G - theta)`` (e.g. 2.0 with mean goodness).
        goodness: ``"mean"`` or ``"sum"`` of squares. norm: ``"l2"`` or ``"rms"`` input normalization.
        loss: ``"softplus"`` (Hinton) or ``"symba"`` (pairs; the batch is x_pos then x_neg of equal size).
        alpha: SymBa's scale. sign: -1 turns goodness into energy. eps: of the normalization.
        normalize_input: set False for a raw first-layer input.
        peer_weight / peer_momentum: peer normalization (Hinton's code uses 0.03 / 0.9); 0 disables it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        threshold: float,
        goodness: str = "mean",
        norm: str = "l2",
        loss: str = "softplus",
        bias: bool = True,
        alpha: float = 4.0,
        sign: int = 1,
        eps: float = 1e-8,
        normalize_input: bool = True,
        peer_weight: float = 0.0,
        peer_momentum: float = 0.9,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self._init_loss(threshold, goodness, norm, loss, alpha, sign, eps, peer_weight, peer_momentum)
        self.in_features, self.out_features = in_features, out_features
        self.normalize_input = normalize_input
        linear = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer(
            "running_mean", torch.zeros(out_features, device=device, dtype=stat_dtype(self.weight.dtype))
        )

    def forward(
        self,
        x: torch.Tensor | OverlayRows,
        n_pos: int | None = None,
        *,
        x_sumsq: torch.Tensor | None = None,
        goodness_offset: torch.Tensor | None = None,
        output: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> FFLayerOutput:
        """``x``: ``[B, in_features]`` (positive rows first), or ``OverlayRows`` (label overlays of shared
        images: the GEMMs run on the images once); ``n_pos``: number of positive rows, or None for
        inference (no loss). ``x_sumsq``: the previous layer's ``sumsq`` (saves a pass).
        ``goodness_offset``: per-row value added to the goodness in the logit (collaborative FF).
        ``output``: ``(h, sumsq)``, this layer's output on ``x`` computed earlier with the current
        parameters (e.g. by FFTrainer's hard-negative pass): the layer is not run again, the loss gets
        its gradient through ffops.ops.ff_linear.ff_linear_known_output."""
        overlay = isinstance(x, OverlayRows)
        if (not overlay and x.dim() != 2) or x.shape[1] != self.in_features:
            raise ValueError(f"FFLinear: x must be [batch, {self.in_features}], got {tuple(x.shape)}")
        known_inference = output is not None and n_pos is None  # nothing to run
        scale = self._input_scale(x, x_sumsq) if self.normalize_input and not known_inference else None
        if known_inference:
            (h, sumsq), pos_mean = output, None
        elif output is not None:
            h, sumsq = output
            rows = (x.base.detach(), x.labels, x.on, x.num_classes) if overlay else None
            sumsq, pos_mean = ff_linear_known_output(
                None if overlay else x,
                self.weight,
                self.bias,
                h,
                sumsq,
                x_scale=scale,
                n_pos=n_pos,
                overlay=rows,
            )
        elif overlay:
            h, sumsq, pos_mean = ffops.ff_linear_overlay(
                x.base.detach(),
                x.labels,
                x.on,
                self.weight,
                self.bias,
                num_classes=x.num_classes,
                x_scale=scale,
                n_pos=n_pos or 0,
            )
        else:
            h, sumsq, pos_mean = ffops.ff_linear(x.detach(), self.weight, self.bias, x_scale=scale, n_pos=n_pos or 0)
        loss, g = self._loss(sumsq, pos_mean, self.out_features, n_pos, goodness_offset)
        return FFLayerOutput(loss, h, sumsq.detach(), g)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, " + self._extra_loss_repr()


class FFConv2d(_FFLossMixin, nn.Module):
    """A Forward-Forward conv layer (Scalable FF): ``h = relu(conv(normalize(x)) + b)`` and its FF loss.

    ``goodness_over="sample"`` scores each sample by the mean (or sum) of ``h^2`` over C, H, W;
    ``"channel"`` scores each (sample, channel) by its spatial mean (or sum), ``[N, C]``, and every
    channel gets its own logit ``sign * (G[n, c] - threshold)``. The per-sample input normalization
    is a per-sample scale applied after the convolution (conv is linear), like FFLinear's; the
    goodness runs on ffops' fused goodness kernels. Other arguments as ``FFLinear``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        *,
        threshold: float,
        goodness: str = "mean",
        goodness_over: str = "sample",
        norm: str = "l2",
        loss: str = "softplus",
        bias: bool = True,
        alpha: float = 4.0,
        sign: int = 1,
        eps: float = 1e-8,
        normalize_input: bool = True,
        peer_weight: float = 0.0,
        peer_momentum: float = 0.9,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self._init_loss(threshold, goodness, norm, loss, alpha, sign, eps, peer_weight, peer_momentum)
        check_choice("FFConv2d", "goodness_over", goodness_over, ("sample", "channel"))
        self.goodness_over = goodness_over
        self.normalize_input = normalize_input
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.weight, self.bias = conv.weight, conv.bias
        self.register_buffer(
            "running_mean", torch.zeros(out_channels, device=device, dtype=stat_dtype(self.weight.dtype))
        )

    def forward(
        self,
        x: torch.Tensor,
        n_pos: int | None = None,
        *,
        x_sumsq: torch.Tensor | None = None,
        goodness_offset: torch.Tensor | None = None,
    ) -> FFLayerOutput:
        """``x``: ``[B, C_in, H, W]`` (positive samples first). Returns ``FFLayerOutput`` whose
        ``goodness`` is ``[B]`` or ``[B, C_out]`` (per channel); ``sumsq`` is always per sample."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"FFConv2d: x must be [batch, {self.in_channels}, H, W], got {tuple(x.shape)}")
        x = x.detach()
        pre = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation)
        if self.normalize_input:
            pre = pre * self._input_scale(x, x_sumsq).to(pre.dtype)[:, None, None, None]
        if self.bias is not None:
            pre = pre + self.bias[:, None, None]
        h = torch.relu(pre)
        if self.goodness_over == "sample":
            sumsq = ffops.goodness(h, reduction="sum").to(stat_dtype(h.dtype))
            features = math.prod(h.shape[1:])
            sample_sumsq = sumsq
        else:
            sumsq = ffops.goodness(h, reduction="sum", dims=(2, 3)).to(stat_dtype(h.dtype))  # [B, C]
            features = h.shape[2] * h.shape[3]
            sample_sumsq = sumsq.sum(1)
        pos_mean = h[: n_pos or 0].to(stat_dtype(h.dtype)).mean((0, 2, 3)) if self.peer_weight > 0 else None
        loss, g = self._loss(sumsq, pos_mean, features, n_pos, goodness_offset)
        return FFLayerOutput(loss, h.detach(), sample_sumsq.detach(), g)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.weight.shape[2:])}, "
            f"stride={self.stride}, padding={self.padding}, goodness_over={self.goodness_over!r}, "
            + self._extra_loss_repr()
        )
