"""The fused FF layer in plain torch (the specification of ffops.ff_linear)."""

import torch


def ff_linear(x, weight, bias=None, *, x_scale=None, n_pos=0):
    """``h = relu(x_scale * (x @ weight^T) + bias)``, with ``sumsq = sum_j h^2`` per row and
    ``pos_mean = mean of h over the first n_pos rows`` per column.

    The GEMM runs in the input dtype (as torch's linear does); the epilogue in float32 (float64 for
    float64 input). ``h`` is returned detached: it is the next layer's input, and gradient never
    crosses FF layers. ``sumsq`` and ``pos_mean`` carry the gradient to ``weight`` and ``bias``.
    """
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    pre = (x.detach() @ weight.t()).to(acc_dtype)
    if x_scale is not None:
        pre = pre * x_scale.detach().to(acc_dtype)[:, None]
    if bias is not None:
        pre = pre + bias.to(acc_dtype)
    h = torch.relu(pre)
    return h.detach().to(x.dtype), h.square().sum(1), h[:n_pos].mean(0)
