"""Forward-Forward goodness, losses and length normalization in plain torch (the specification).

Low-precision inputs are computed in float32 (the kernels accumulate in float32 too) and the
results are returned in the input's dtype.
"""

import math

import torch
import torch.nn.functional as F


def _acc(h: torch.Tensor) -> torch.Tensor:
    return h if h.dtype in (torch.float32, torch.float64) else h.float()


def goodness(h: torch.Tensor, reduction: str = "sum", dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Sum (or mean) of squares of ``h`` over ``dims`` (default: all but the batch dimension)."""
    dims = tuple(range(1, h.dim())) if dims is None else dims
    sq = _acc(h).square()
    g = sq.sum(dims) if reduction == "sum" else sq.mean(dims)
    return g.to(h.dtype)


def _per_sample_goodness(h: torch.Tensor, reduction: str) -> torch.Tensor:
    sq = _acc(h).flatten(1).square()
    return sq.sum(1) if reduction == "sum" else sq.mean(1)


def ff_loss(
    h_pos: torch.Tensor,
    h_neg: torch.Tensor,
    threshold: float,
    *,
    goodness: str = "mean",
    loss: str = "softplus",
    alpha: float = 4.0,
    sign: int = 1,
    reduction: str = "mean",
    return_goodness: bool = False,
):
    """The FF layer loss. The logit of "positive" is ``sign * (G - threshold)``:

    * ``softplus``: ``softplus(-logit(h_pos))`` per positive row and ``softplus(logit(h_neg))`` per
      negative row (BCE-with-logits with targets 1 / 0); ``mean`` averages over all rows of both.
    * ``symba``: ``softplus(-alpha * sign * (G_pos - G_neg))`` per pair.
    """
    g_pos = _per_sample_goodness(h_pos, goodness)
    g_neg = _per_sample_goodness(h_neg, goodness)
    if loss == "softplus":
        per_row = torch.cat([F.softplus(sign * (threshold - g_pos)), F.softplus(sign * (g_neg - threshold))])
    else:
        per_row = F.softplus(-alpha * sign * (g_pos - g_neg))
    if reduction == "mean":
        out = per_row.mean()
    elif reduction == "sum":
        out = per_row.sum()
    else:
        out = per_row
    out = out.to(h_pos.dtype)
    if return_goodness:
        return out, g_pos.to(h_pos.dtype), g_neg.to(h_neg.dtype)
    return out


def ff_normalize(h: torch.Tensor, mode: str = "l2", eps: float = 1e-8) -> torch.Tensor:
    """``h / (||h|| + eps)`` per sample (``l2``), or ``h / (sqrt(mean(h^2)) + eps)`` (``rms``)."""
    return goodness_and_normalize(h, mode=mode, eps=eps)[1]


def goodness_and_normalize(h: torch.Tensor, mode: str = "l2", eps: float = 1e-8, goodness: str = "sum"):
    """``(goodness(h), ff_normalize(h))`` per sample: the norm is the root of the sum-goodness."""
    flat = _acc(h).flatten(1)
    features = flat.shape[1]
    # torch's norm has a zero subgradient at h == 0; the kernels match it.
    norm = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    if mode == "rms" and features:
        norm = norm / math.sqrt(features)
    y = (flat / (norm + eps)).reshape(h.shape).to(h.dtype)
    sq = flat.square()
    g = sq.sum(1) if goodness == "sum" else sq.mean(1)
    return g.to(h.dtype), y


def cwc_loss(h: torch.Tensor, labels: torch.Tensor, num_classes: int, reduction: str = "mean"):
    """Channel-wise competitive loss (CwComp: Papachristodoulou et al., "Convolutional Channel-wise
    Competitive Learning for the Forward-Forward Algorithm", AAAI 2024; their ``CwC_CE`` criterion).

    The ``C`` channels of ``h`` ``[N, C, ...]`` form ``num_classes`` groups of ``C / num_classes``
    consecutive channels; ``G[n, k]`` is the mean of ``h^2`` over group ``k`` (its channels and all
    positions) and the loss is ``cross_entropy(G, labels)``: no negative samples. Returns
    ``(loss, G)``: the loss in ``h``'s dtype, ``G`` in float32 for low-precision ``h``.
    """
    g = _acc(h).reshape(h.shape[0], num_classes, math.prod(h.shape[1:]) // num_classes).square().mean(2)
    loss = F.cross_entropy(g, labels, reduction=reduction)
    return loss.to(h.dtype), g
