"""The ``cwc_block`` op: the fused epilogue of a channel-wise competitive (CwC) conv FF block.

After a block's convolution ``z``: ReLU, 2x2 max-pool, batch norm and the class-group goodness in
three passes over channels_last memory (the pooled ``p`` written once, ``y`` once), and a backward of
two passes that writes the convolution's gradient once. Eager torch takes ~10 passes for the same
(relu, max_pool2d with int64 indices, batch_norm, the goodness reshape's copy and their backwards).
Two operators (schemas and math: csrc/ops.cpp; autograd: csrc/cwc_block.cpp; kernels:
csrc/cpu/cwc_block.cpp, csrc/cuda/cwc_block.cu, kernels/cwc_block.py). The pure-torch specification
is ffops.reference.cwc_block.
"""

import torch

from ffops import _backend
from ffops._validation import check_finite_real, check_float_tensor, check_same_device
from ffops.ops._common import stat_dtype, wire
from ffops.reference import cwc_block as reference


def _nhwc_empty(like, n, c, h, w, dtype=None):
    return like.new_empty((n, h, w, c), dtype=dtype or like.dtype).permute(0, 3, 1, 2)


def _fake_cwc_block_fwd(z, weight, bias, mean, var, num_classes, pool, eps):
    n, c, h, w = z.shape
    ho, wo = (h // 2, w // 2) if pool else (h, w)
    idx = _nhwc_empty(z, n, c, ho, wo, torch.uint8) if pool else z.new_empty((0,), dtype=torch.uint8)
    stat = stat_dtype(z.dtype)
    return (
        _nhwc_empty(z, n, c, ho, wo),
        z.new_empty((n, num_classes), dtype=stat),
        _nhwc_empty(z, n, c, ho, wo),
        idx,
        weight.new_empty((c,)),
        weight.new_empty((c,)),
    )


def _fake_cwc_block_bwd(grad_y, grad_g, p, idx, weight, bias, mean, var, num_classes, pool, batch_stats, eps, h, w):
    n, c = p.shape[:2]
    return _nhwc_empty(p, n, c, h, w), weight.new_empty((c,)), weight.new_empty((c,))


KERNELS = wire(
    {"cwc_block_fwd": _fake_cwc_block_fwd, "cwc_block_bwd": _fake_cwc_block_bwd},
    triton_module="cwc_block",
)


def cwc_block(
    z: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    *,
    num_classes: int,
    pool: bool = True,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The epilogue of a CwComp block on its convolution output: ``(y, G)``.

    ``p = max_pool2d(relu(z), 2)`` (``relu(z)`` when ``pool=False``), ``y = batch_norm(p, ...)`` as
    ``torch.nn.functional.batch_norm`` (batch statistics when ``training`` or when no running
    statistics are given, which are then updated in place with ``momentum``), and the class-group
    goodness ``G[n, k]`` = mean of ``y^2`` over the ``C / num_classes`` channels of group ``k`` and all
    positions (CwComp: Papachristodoulou et al., AAAI 2024; ``cross_entropy(G, labels)`` is their
    ``CwC_CE`` loss, as ``ffops.cwc_loss(y, ...)``). Differentiable in ``z``, ``weight`` and ``bias``.

    Args:
        z: ``[N, C, H, W]`` float tensor; the kernels work in channels_last (other layouts are copied).
        weight, bias: the norm's affine parameters ``[C]``.
        running_mean, running_var: ``[C]`` running statistics (both or neither).
        num_classes: channel groups; must divide ``C``.
        pool: 2x2 max-pool (floor, as ``nn.MaxPool2d(2)``) between the ReLU and the norm.

    Returns:
        ``y`` ``[N, C, H', W']`` channels_last of ``z``'s dtype, and ``G`` ``[N, num_classes]``
        (float32; float64 for float64 ``z``).
    """
    op = "ffops.cwc_block"
    check_float_tensor(op, "z", z, min_ndim=4)
    if z.dim() != 4:
        raise ValueError(f"{op}: z must be 4-D [N, C, H, W], got shape {tuple(z.shape)}")
    c = z.shape[1]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1 or c % num_classes:
        raise ValueError(f"{op}: num_classes must be an int >= 1 dividing the channels of z ({c}), got {num_classes!r}")
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is None and name in ("weight", "bias"):
            raise ValueError(f"{op}: {name} is required (a [{c}] tensor)")
        if t is not None and (not isinstance(t, torch.Tensor) or t.shape != (c,) or not t.is_floating_point()):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{op}: {name} must be a float [{c}] tensor (one value per channel), got {got}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    others = {"weight": weight, "bias": bias}
    if running_mean is not None:
        others.update(running_mean=running_mean, running_var=running_var)
    check_same_device(op, "z", z, others)
    eps = check_finite_real(op, "eps", eps, positive=True)
    momentum = check_finite_real(op, "momentum", momentum)
    batch_stats = training or running_mean is None
    count = z.shape[0] * ((z.shape[2] // 2) * (z.shape[3] // 2) if pool else z.shape[2] * z.shape[3])
    if batch_stats and count <= 1:  # as torch's batch_norm
        raise ValueError(
            f"{op}: batch statistics need more than 1 value per channel, got {count} (input {tuple(z.shape)})"
        )
    if _backend.resolve(z.device) == "reference":
        return reference.cwc_block(
            z, weight, bias, running_mean, running_var, num_classes,
            pool=pool, training=batch_stats, momentum=momentum, eps=eps,
        )  # fmt: skip
    stat = stat_dtype(z.dtype)
    y, g, _, _, mean, var = KERNELS[_backend.resolve(z.device)].cwc_block_fwd(
        z.contiguous(memory_format=torch.channels_last),
        weight.to(stat),
        bias.to(stat),
        None if batch_stats else running_mean.to(stat),
        None if batch_stats else running_var.to(stat),
        num_classes,
        bool(pool),
        eps,
    )
    if training and running_mean is not None:
        with torch.no_grad():  # as batch_norm: the running variance is the unbiased one
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * (count / (count - 1))).to(running_var.dtype), momentum)
    return y, g
