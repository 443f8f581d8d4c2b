"""torch.library wiring of the sparse linear kernels: fake (meta) implementations and the Triton
launchers (ffops.kernels.sparse) wrapped as opaque custom ops ``ffops::triton_sparse_linear_*``.

Two kernel sets compute the same two operators (math: csrc/ops.cpp):
  ``cpp``    ``ffops::sparse_linear_{fwd,bwd}``, C++ kernels registered per device by ffops._C;
  ``triton`` ``ffops::triton_sparse_linear_{fwd,bwd}``, custom ops around ffops.kernels.sparse.
Autograd lives one level up (ffops/ops/sparse.py): the backward needs the transposed pattern,
which the forward kernel does not take.
"""

from typing import NamedTuple

import torch

from ffops import _backend


class SparseKernels(NamedTuple):
    fwd: object
    bwd: object


def _fake_fwd(xt, values, crow, col, bias):
    return xt.new_empty((crow.shape[0] - 1, xt.shape[1]))


def _fake_bwd(dyt, xt, values, t_ptr, t_row, t_perm, need_dx, need_dvalues):
    dxt = dyt.new_empty(xt.shape if need_dx else (0,))
    dvalues = values.new_empty(values.shape if need_dvalues else (0,))
    return dxt, dvalues


def _wire(prefix: str) -> SparseKernels:
    torch.library.register_fake(f"ffops::{prefix}sparse_linear_fwd")(_fake_fwd)
    torch.library.register_fake(f"ffops::{prefix}sparse_linear_bwd")(_fake_bwd)
    ops = torch.ops.ffops
    return SparseKernels(
        getattr(ops, prefix + "sparse_linear_fwd").default, getattr(ops, prefix + "sparse_linear_bwd").default
    )


def _define_triton_ops() -> None:
    """Opaque custom ops around the Triton launchers (schemas as in csrc/ops.cpp)."""

    @torch.library.custom_op("ffops::triton_sparse_linear_fwd", mutates_args=())
    def fwd(
        xt: torch.Tensor, values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        from ffops.kernels import sparse

        return sparse.sparse_linear_fwd(xt, values, crow, col, bias)

    @torch.library.custom_op("ffops::triton_sparse_linear_bwd", mutates_args=())
    def bwd(
        dyt: torch.Tensor,
        xt: torch.Tensor,
        values: torch.Tensor,
        t_ptr: torch.Tensor,
        t_row: torch.Tensor,
        t_perm: torch.Tensor,
        need_dx: bool,
        need_dvalues: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from ffops.kernels import sparse

        return sparse.sparse_linear_bwd(dyt, xt, values, t_ptr, t_row, t_perm, need_dx, need_dvalues)


KERNELS: dict[str, SparseKernels] = {}
if _backend.CPP_LOADED:
    KERNELS["cpp"] = _wire("")
    torch.library.register_fake("ffops::transpose_2d")(lambda x: x.new_empty((x.shape[1], x.shape[0])))
if _backend.TRITON_OK:
    _define_triton_ops()
    KERNELS["triton"] = _wire("triton_")
