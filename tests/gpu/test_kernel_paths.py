"""GPU tests of the CUDA kernels' launch paths that need large shapes, written for one short GPU lease.

Each case names the path it lands on and why, from the launchers in csrc/cuda/ (the thresholds there
decide the access width, the work mapping and the tiling): ff_linear's epilogues, cwc_block's tiles,
rmm_sketch's row blocks, sparse_linear's batch tiles and backward spans. The kernels are compared with
the pure-torch reference (ffops.reference, the specification) on the same data, in float64 and in the
kernels' dtype (tests.helpers.assert_matches_reference: at most 2x torch's own error in that dtype).
Also: every public op on a side stream, ff_linear under torch.use_deterministic_algorithms, and
FFTrainer's CUDA graphs with AdamW and with a resumed checkpoint (tests/ff/test_cuda_graph.py has the
Adam / SGD / greedy runs). The small shapes of every kernel are in tests/ops/ (backend ``cuda``).

The ``cpu`` variants run the same cases on the C++ CPU kernels (thresholds there differ): they show
here, without a GPU, that the inputs, the reference and the tolerances of a case are sound.
"""

import pytest
import torch

import ffops
from ffops import _backend, ff
from ffops.ff.cuda_graph import WARMUP_STEPS
from ffops.ops._common import stat_dtype
from ffops.reference import randomized_linear as rmm_reference
from ffops.sparse import magnitude_mask, pattern_from_mask, transpose_pattern
from tests.conftest import HAS_GPU
from tests.helpers import assert_matches_reference, kernel_op

CUDA_KERNELS = pytest.mark.skipif(
    not (HAS_GPU and _backend.CPP_CUDA), reason="needs a GPU and ffops' CUDA kernels (ffops._C built with CUDA)"
)
CPU_KERNELS = pytest.mark.skipif(not _backend.CPP_CPU, reason="ffops._C CPU kernels not built")
# the device of a case; its kernels are the backend of the same name
DEVICES = [
    pytest.param("cpu", id="cpu", marks=CPU_KERNELS),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, CUDA_KERNELS]),
]
CUDA_ONLY = [pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, CUDA_KERNELS])]


def _randn(*shape, dtype=torch.float32, device="cpu", scale=1.0):
    """Normal values drawn in float64 on the CPU (the same numbers on every device), then cast."""
    return (torch.randn(*shape, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _assert_all_match_reference(names, got, ref64, ref_in_dtype):
    for name, g, r, t in zip(names, got, ref64, ref_in_dtype):
        assert_matches_reference(g, r, t, name)


# ---- ff_linear: the forward and backward epilogues --------------------------------------------------
#
# csrc/cuda/ff_linear.cu (dispatch_variant, make_cfg): a row of `out` columns is cut into slots of N
# elements, N = 16 bytes / element (float32: 4, float16: 8) when out % N == 0 and h, bias (forward) or
# h, u (backward) are 16-byte aligned (always here: fresh tensors), else N = 1. Each thread keeps I
# slots of column partials, I = 64 bytes (forward) or 32 bytes (backward) / (4 * N), within [1, 8]:
#     forward   float32 N=4 I=4 | float16 N=8 I=2 | N=1 I=8
#     backward  float32 N=4 I=2 | float16 N=8 I=1 | N=1 I=8
# slots <= 32 I: sub-warp groups (a power of two <= 32 lanes per row, 256-thread blocks, column sums
# reduced with shuffles and shared memory). Else whole-block rows: t = clamp(ceil(slots / I) rounded up
# to 32, 128, 1024) threads, and ceil(slots / (t I)) column tiles (blockIdx.y), each adding its part of
# the rows' sumsq. The grid is one resident wave at most (<= 132 SMs x 2048 / threads / tiles blocks on
# an H100): more rows than that make blocks carry their column sums over rows.
FF_LINEAR_IN = 64
FF_LINEAR_CASES = [  # (rows, out, n_pos)
    # float32: 25 slots -> sub-warp, group 8 forward / 16 backward; float16: 100 % 8 != 0 -> N = 1, 100
    # slots -> sub-warp, group 16. n_pos = 137 falls inside a block (32 or 16 rows per block).
    pytest.param(300, 100, 137, id="out100-subwarp"),
    # float32 500 / float16 250 slots -> whole-block rows, one tile: 128 threads forward, 256 backward;
    # one row per block (a wave of such blocks exceeds 300), the blocks from n_pos on see no positive
    # row and skip the pos_mean flush.
    pytest.param(300, 2000, 137, id="out2000-block"),
    # odd: N = 1 in both dtypes, 8193 slots -> 1024 threads, 2 column tiles (8192 + 1 column): the
    # tiles' sumsq parts, a one-column tile. At most 132 x 2 / 2 blocks (<= 2 of 1024 threads per SM), so
    # blocks loop over the 200 rows, carrying column sums; blocks from n_pos = 50 on have no positive row.
    pytest.param(200, 8193, 50, id="out8193-scalar-2tiles"),
    # float32 4100 / float16 2050 slots -> 1024 threads; forward 2 tiles (4096 / 2048 slots per tile),
    # backward 3 tiles (2048 / 1024 slots per tile): the vectorized column tiles; rows loop as above.
    pytest.param(200, 16400, 50, id="out16400-vector-tiles"),
]


def _ff_linear_inputs(rows, out, dtype, device):
    x = _randn(rows, FF_LINEAR_IN).relu().to(device=device, dtype=dtype)
    weight = _randn(out, FF_LINEAR_IN, dtype=dtype, device=device, scale=FF_LINEAR_IN**-0.5)
    bias = _randn(out, dtype=dtype, device=device, scale=0.1)
    x_scale = (torch.rand(rows, dtype=torch.float64) + 0.5).to(device=device, dtype=stat_dtype(dtype))
    return x, weight, bias, x_scale


def _ff_linear_run(x, weight, bias, x_scale, n_pos, sumsq_weights, pos_mean_weights):
    """(h, sumsq, pos_mean, grad_weight, grad_bias) of the loss sum(sumsq * a) + sum(pos_mean * b)."""
    weight = weight.detach().clone().requires_grad_(True)
    bias = bias.detach().clone().requires_grad_(True)
    h, sumsq, pos_mean = ffops.ff_linear(x, weight, bias, x_scale=x_scale, n_pos=n_pos)
    loss = (sumsq * sumsq_weights.to(sumsq)).sum() + (pos_mean * pos_mean_weights.to(pos_mean)).sum()
    loss.backward()
    return h, sumsq.detach(), pos_mean.detach(), weight.grad, bias.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("rows,out,n_pos", FF_LINEAR_CASES)
def test_ff_linear_epilogue_paths(device, dtype, rows, out, n_pos):
    x, weight, bias, x_scale = _ff_linear_inputs(rows, out, dtype, device)
    sumsq_weights, pos_mean_weights = torch.randn(rows), torch.randn(out)
    with ffops.use_backend(device):
        got = _ff_linear_run(x, weight, bias, x_scale, n_pos, sumsq_weights, pos_mean_weights)
    with ffops.use_backend("reference"):
        ref64 = _ff_linear_run(
            x.double(), weight.double(), bias.double(), x_scale, n_pos, sumsq_weights, pos_mean_weights
        )
        ref_in_dtype = _ff_linear_run(x, weight, bias, x_scale, n_pos, sumsq_weights, pos_mean_weights)
    _assert_all_match_reference(["h", "sumsq", "pos_mean", "grad_weight", "grad_bias"], got, ref64, ref_in_dtype)


# ---- ff_linear under torch.use_deterministic_algorithms(True) ----------------------------------------
#
# By default the epilogues add the blocks' partial column sums (pos_mean forward, grad_bias backward)
# and, with column tiles, the tiles' parts of each row's sumsq with float atomics. Under the flag the op
# must either be bitwise reproducible (e.g. partials summed in a fixed order) or refuse with torch's own
# error (Context::alertNotDeterministic); a reproducible result is also checked against the reference.
# Cases: the sub-warp flush (shared-memory reduction, blocks without positive rows) and the tiled
# whole-block flush with its per-tile row sums.
NOT_DETERMINISTIC = "does not have a deterministic implementation"
DETERMINISTIC_CASES = [FF_LINEAR_CASES[0], FF_LINEAR_CASES[2]]  # out100-subwarp, out8193-scalar-2tiles


@pytest.fixture
def deterministic_algorithms(monkeypatch):
    """torch.use_deterministic_algorithms(True) for the test, then the previous setting. torch releases
    that still check the cuBLAS workspace setting under the flag read it at every GEMM: set it too."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.mark.usefixtures("deterministic_algorithms")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows,out,n_pos", DETERMINISTIC_CASES)
def test_ff_linear_is_reproducible_or_refused_under_deterministic_algorithms(device, rows, out, n_pos):
    x, weight, bias, x_scale = _ff_linear_inputs(rows, out, torch.float32, device)
    # the loss is linear in sumsq and pos_mean: the gradients come from the backward alone
    sumsq_weights, pos_mean_weights = torch.randn(rows), torch.randn(out)
    with ffops.use_backend(device):
        try:
            first = _ff_linear_run(x, weight, bias, x_scale, n_pos, sumsq_weights, pos_mean_weights)
            second = _ff_linear_run(x, weight, bias, x_scale, n_pos, sumsq_weights, pos_mean_weights)
        except RuntimeError as err:
            assert NOT_DETERMINISTIC in str(err), f"not torch's own refusal: {err}"
            return
    names = ["h", "sumsq", "pos_mean", "grad_weight", "grad_bias"]
    for name, a, b in zip(names, first, second):
        assert torch.equal(a, b), f"{name} differs between two runs"
    with ffops.use_backend("reference"):
        ref64 = _ff_linear_run(
            x.double(), weight.double(), bias.double(), x_scale, n_pos, sumsq_weights, pos_mean_weights
        )
        ref_in_dtype = _ff_linear_run(x, weight, bias, x_scale, n_pos, sumsq_weights, pos_mean_weights)
    _assert_all_match_reference(names, first, ref64, ref_in_dtype)


# ---- cwc_block -------------------------------------------------------------------------------------
#
# csrc/cuda/cwc_block.cu: every pass is a grid of (n * ceil(pixels / 64), ceil(C / 32)) blocks of 32 x 8
# threads; a block owns 64 output pixels of one sample by 32 channels (lanes past C idle: `live`).
CWC_CASES = [  # (shape [N, C, H, W], num_classes, pool, training)
    # 9 x 9 = 81 pooled pixels -> 2 pixel tiles (64 + 17) per sample; 64 channels -> 2 full channel
    # tiles; H = 19 is odd, so the pool drops a row (zeroed dz rows); batch statistics: the partial
    # sums of the pool pass, the centered-square pass and the c0 / c1 terms of the backward.
    pytest.param((2, 64, 19, 18), 4, True, True, id="64ch-19x18-pool-batch-stats"),
    # 110 pixels -> 2 pixel tiles (64 + 46); 48 channels -> the second channel tile half idle; no pool
    # (dz written in place); running statistics: no partials in the first pass, no centered-square
    # pass, c0 = c1 = 0.
    pytest.param((3, 48, 10, 11), 6, False, False, id="48ch-10x11-running-stats"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape,num_classes,pool,training", CWC_CASES)
def test_cwc_block_tiles(device, dtype, shape, num_classes, pool, training):
    channels = shape[1]
    z = _randn(*shape, dtype=dtype, device=device)
    weight = (torch.rand(channels, dtype=torch.float64) + 0.5).to(device)
    bias = _randn(channels, dtype=torch.float64, device=device)
    running = [_randn(channels, scale=0.1, device=device), (torch.rand(channels) + 0.5).to(device)]
    out_h, out_w = (shape[2] // 2, shape[3] // 2) if pool else shape[2:]
    y_weights, g_weights = torch.randn(shape[0], channels, out_h, out_w), torch.randn(shape[0], num_classes)

    def run(z, weight, bias):
        """(y, G, dz, dweight, dbias) for the loss sum(y * a) + sum(G * b)."""
        leaves = [t.detach().clone().requires_grad_(True) for t in (z, weight, bias)]
        stats = [s.clone() for s in running] if not training else [None, None]
        y, g = ffops.cwc_block(*leaves, *stats, num_classes=num_classes, pool=pool, training=training)
        ((y.float() * y_weights.to(y.device)).sum() + (g * g_weights.to(g)).sum()).backward()
        return (y.detach(), g.detach(), *(t.grad for t in leaves))

    with ffops.use_backend(device):
        got = run(z, weight.to(stat_dtype(dtype)), bias.to(stat_dtype(dtype)))
    with ffops.use_backend("reference"):
        ref64 = run(z.double(), weight, bias)
        ref_in_dtype = run(z, weight.to(stat_dtype(dtype)), bias.to(stat_dtype(dtype)))
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    _assert_all_match_reference(["y", "G", "dz", "dweight", "dbias"], got, ref64, ref_in_dtype)


# ---- randomized_linear: rmm_sketch over several row blocks ---------------------------------------------
#
# csrc/cuda/randomized_linear_cuda.cpp: rows are taken in blocks of min(rows, max(256, 2^22 / k)) = 6990
# for k = 600, so 20000 rows are 3 blocks (6990, 6990 and a partial 6020), each S^T block generated by
# rmm_fill_kernel (float; double for float64) and added with addmm. S is a counter-based hash of (seed,
# row, column) on host and device alike (csrc/randomized_linear.h), so the CPU kernel, the CUDA kernel
# and the reference compute the same S for one seed, up to the rounding of log / cos and of the sums:
# they are compared directly. (The fill kernel's grid-stride loop needs k * block > 65535 * 256 entries,
# i.e. k > 65535: not reached.)
RMM_ROWS, RMM_RATIO, RMM_K, RMM_SEED = 20000, 0.03, 600, 2**40 + 12345
RMM_TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-12}  # relative; absolute: times sqrt(rows)


@pytest.mark.parametrize("device", CUDA_ONLY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kind", rmm_reference.KINDS)
def test_rmm_sketch_row_blocks_match_cpu_kernel_and_spec(device, dtype, kind):
    a = _randn(RMM_ROWS, 48, dtype=dtype)
    seed = torch.tensor(RMM_SEED)
    on_device = kernel_op(device, "rmm_sketch")(a.to(device), seed, RMM_K, rmm_reference.KINDS.index(kind)).cpu()
    on_cpu = kernel_op("cpu", "rmm_sketch")(a, seed, RMM_K, rmm_reference.KINDS.index(kind))
    spec = rmm_reference.rmm_sketch(a.to(device).double(), RMM_SEED, RMM_K, kind).cpu()
    tol = RMM_TOLERANCE[dtype]
    assert on_device.dtype == dtype and on_device.shape == (RMM_K, 48)
    torch.testing.assert_close(on_device.double(), spec, rtol=tol, atol=tol * RMM_ROWS**0.5)
    torch.testing.assert_close(on_device, on_cpu, rtol=tol, atol=tol * RMM_ROWS**0.5)


@pytest.mark.parametrize("device", CUDA_ONLY)
@pytest.mark.parametrize("kind", rmm_reference.KINDS)
def test_randomized_linear_weight_gradient_matches_cpu_kernel_and_spec(device, kind):
    assert rmm_reference.sketch_rows(RMM_ROWS, RMM_RATIO) == RMM_K
    x, weight, bias = _randn(RMM_ROWS, 48), _randn(32, 48, scale=48**-0.5), _randn(32, scale=0.1)
    grad_y = torch.randn(RMM_ROWS, 32)

    def weight_gradient(on):
        leaves = [t.detach().to(on).requires_grad_(True) for t in (x, weight, bias)]
        with ffops.use_backend(on):
            y = ffops.randomized_linear(*leaves, ratio=RMM_RATIO, seed=RMM_SEED, kind=kind)
        (grad_weight,) = torch.autograd.grad(y, leaves[1], grad_y.to(on))
        return grad_weight.cpu().double()

    # the specification: dW = (S^T dY)^T (S^T X) with S materialized in float64
    s = rmm_reference.sketch_matrix(RMM_SEED, RMM_ROWS, RMM_K, kind, torch.float64, device)
    spec = ((s.t() @ grad_y.to(device).double()).t() @ (s.t() @ x.to(device).double())).cpu()
    atol = 1e-4 * spec.abs().max().item()
    on_device = weight_gradient(device)
    torch.testing.assert_close(on_device, spec, rtol=1e-4, atol=atol)
    torch.testing.assert_close(on_device, weight_gradient("cpu"), rtol=1e-4, atol=atol)


# ---- sparse_linear: access width, batch tiles and the backward's spans -------------------------------
#
# csrc/cuda/sparse_linear.cu: the batch B is cut into slots of V elements, V = 16 bytes / element
# (float32: 4, bfloat16: 8) when B % V == 0 and every dense pointer is 16-byte aligned, else V = 1; a
# warp covers 32 slots (group 32 here: B / V >= 32), so tiles = ceil(B / V / 32). Backward (bwd_plan):
# one tile -> "direct" (each nonzero's dot complete, written to dvalues); several -> the tiles of a
# column are split into spans of span_len tiles for about 16384 (column, span) items: spans =
# min(ceil(16384 / in), tiles) for in = 4096 (at most 4 spans), their partial dots in a float workspace
# that dvalues_sum_kernel adds up in order.
SPARSE_IN, SPARSE_OUT, SPARSE_SPARSITY = 4096, 32, 0.9
SPARSE_CASES = [  # (batch, layout)
    # float32 V=4: 2 tiles -> 2 spans of 1 tile; bfloat16 V=8: 32 slots, 1 tile -> the direct backward
    pytest.param(256, "batch-major", id="B256"),
    # float32 V=4: 8 tiles -> 4 spans of 2; bfloat16 V=8: 4 tiles -> 4 spans of 1; the last tile of
    # each is partly idle (250 / 125 slots)
    pytest.param(1000, "batch-major", id="B1000"),
    # x stored feature-major one element past an aligned allocation: the op hands the kernels x.t()
    # as it is (csrc/sparse_linear.cpp, `transposed`), so xt is misaligned and V = 1 in both passes:
    # 256 slots, 8 tiles -> 4 spans of 2 (a batch-major x would be copied, aligned, by the transpose)
    pytest.param(256, "feature-major-odd-offset", id="B256-misaligned"),
]


def _feature_major_at_odd_offset(x):
    """``x`` [B, in] with the same values, stored as the transpose of a contiguous [in, B] matrix that
    starts one element past its allocation (so never 16-byte aligned)."""
    storage = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)
    xt = storage[1:].view(x.shape[1], x.shape[0])
    xt.copy_(x.t())
    return xt.t()


def _sparse_run(x, values, crow, col, bias, transposed, grad_y):
    """(y, grad_x, grad_values, grad_bias) for the loss sum(y * grad_y); x keeps its layout and offset."""
    leaves = [t.detach().requires_grad_(True) for t in (x, values, bias)]
    y = ffops.sparse_linear(leaves[0], leaves[1], crow, col, leaves[2], SPARSE_OUT, transposed=transposed)
    (y.float() * grad_y.to(y.device)).sum().backward()
    return (y.detach(), *(t.grad for t in leaves))


@pytest.mark.parametrize(
    "device,dtype",
    [
        pytest.param("cpu", torch.float32, id="cpu-float32", marks=CPU_KERNELS),
        pytest.param("cuda", torch.float32, id="cuda-float32", marks=[pytest.mark.gpu, CUDA_KERNELS]),
        pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16", marks=[pytest.mark.gpu, CUDA_KERNELS]),
    ],
)
@pytest.mark.parametrize("batch,layout", SPARSE_CASES)
def test_sparse_linear_batch_tiles(device, dtype, batch, layout):
    keep = magnitude_mask(torch.randn(SPARSE_OUT, SPARSE_IN), SPARSE_SPARSITY)
    crow, col = (t.to(device) for t in pattern_from_mask(keep, torch.int32))
    transposed = transpose_pattern(crow, col, SPARSE_IN)
    x64 = _randn(batch, SPARSE_IN, device=device, dtype=torch.float64)
    values64 = _randn(col.numel(), device=device, dtype=torch.float64, scale=SPARSE_IN**-0.5)
    bias64 = _randn(SPARSE_OUT, device=device, dtype=torch.float64, scale=0.1)
    x, values, bias = x64.to(dtype), values64.to(dtype), bias64.to(dtype)
    grad_y = torch.randn(batch, SPARSE_OUT)
    x_in_layout = x
    if layout == "feature-major-odd-offset":
        x_in_layout = _feature_major_at_odd_offset(x)
        assert x_in_layout.t().is_contiguous() and x_in_layout.data_ptr() % 16 != 0
    with ffops.use_backend(device):
        got = _sparse_run(x_in_layout, values, crow, col, bias, transposed, grad_y)
    with ffops.use_backend("reference"):
        ref64 = _sparse_run(x64, values64, crow, col, bias64, transposed, grad_y)
        ref_in_dtype = _sparse_run(x, values, crow, col, bias, transposed, grad_y)
    _assert_all_match_reference(["y", "grad_x", "grad_values", "grad_bias"], got, ref64, ref_in_dtype)


# ---- every public op on a side stream ------------------------------------------------------------------
#
# The kernels must run on the current stream (csrc/cuda/torch_glue.h). On the side stream the inputs
# (and, before the backward, the loss) are made after a sleep kernel: a launch on the default stream,
# which a torch side stream does not synchronize with, would read them before they are written. The
# results must equal the same call's on the default stream (up to the order of float atomics).
SLEEP_CYCLES = 50_000_000  # about 25 ms at H100 clocks


def _ff_linear_call(device):
    x, weight, bias, x_scale = _ff_linear_inputs(300, 8193, torch.float32, device)  # 2 column tiles
    return (lambda w, b: ffops.ff_linear(x, w, b, x_scale=x_scale, n_pos=137)), [weight, bias]


def _ff_linear_overlay_call(device):
    base = _randn(64, 40, device=device).relu()
    labels = torch.randint(0, 10, (128,), device=device)  # 2 label overlays of each of the 64 images
    call = lambda w, b: ffops.ff_linear_overlay(base, labels, 1.0, w, b, num_classes=10, n_pos=64)
    return call, [_randn(300, 40, device=device, scale=40**-0.5), _randn(300, device=device, scale=0.1)]


def _cwc_block_call(device):
    z = _randn(2, 64, 19, 18, device=device)
    weight, bias = (torch.rand(64) + 0.5).to(device), _randn(64, device=device)
    return (lambda z, w, b: ffops.cwc_block(z, w, b, num_classes=4)), [z, weight, bias]


def _cwc_loss_call(device):
    labels = torch.randint(0, 10, (8,), device=device)
    return (lambda h: ffops.cwc_loss(h, labels, 10)), [_randn(8, 20, 6, 6, device=device)]


def _sparse_linear_call(device):
    keep = magnitude_mask(torch.randn(64, 512), 0.9)
    crow, col = (t.to(device) for t in pattern_from_mask(keep, torch.int32))
    transposed = transpose_pattern(crow, col, 512)  # made here: the call itself reads nothing back
    call = lambda x, v, b: ffops.sparse_linear(x, v, crow, col, b, 64, transposed=transposed)
    inputs = [_randn(256, 512, device=device), _randn(col.numel(), device=device, scale=0.1)]
    return call, inputs + [_randn(64, device=device, scale=0.1)]


def _randomized_linear_call(device):
    call = lambda x, w, b: ffops.randomized_linear(x, w, b, ratio=RMM_RATIO, seed=RMM_SEED)
    return call, [_randn(RMM_ROWS, 48, device=device), _randn(32, 48, device=device), _randn(32, device=device)]


def _rows_call(op):
    """A row-wise op on [64, 1000] float32 rows."""
    return lambda device: (op, [_randn(64, 1000, device=device)])


# public op name -> builder(device) -> (call, inputs): call(*inputs) runs the op; inputs are its
# differentiable arguments, the others are fixed in the call
PUBLIC_OP_CALLS = {
    "goodness": _rows_call(ffops.goodness),
    "ff_loss": lambda device: (
        lambda pos, neg: ffops.ff_loss(pos, neg, 1.0),
        [_randn(64, 1000, device=device), _randn(64, 1000, device=device)],
    ),
    "ff_normalize": _rows_call(ffops.ff_normalize),
    "goodness_and_normalize": _rows_call(ffops.goodness_and_normalize),
    "cwc_loss": _cwc_loss_call,
    "ff_linear": _ff_linear_call,
    "ff_linear_overlay": _ff_linear_overlay_call,
    "cwc_block": _cwc_block_call,
    "regelu2": _rows_call(ffops.regelu2),
    "resilu2": _rows_call(ffops.resilu2),
    "fewbit": _rows_call(ffops.fewbit),
    "ms_layernorm": _rows_call(ffops.ms_layernorm),
    "ms_rmsnorm": _rows_call(ffops.ms_rmsnorm),
    "sparse_linear": _sparse_linear_call,
    "randomized_linear": _randomized_linear_call,
}


def test_side_stream_cases_cover_every_public_op():
    ops = {name for name in ffops.__all__ if getattr(getattr(ffops, name), "__module__", "").startswith("ffops.ops.")}
    assert set(PUBLIC_OP_CALLS) == ops


def _outputs_and_gradients(call, inputs, *, delayed):
    """Outputs of ``call`` on fresh copies of ``inputs``, and the gradients of half the sum of squares of
    its differentiable outputs. ``delayed``: each pass's first data is made after a sleep kernel."""
    if delayed:
        torch.cuda._sleep(SLEEP_CYCLES)
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = call(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    if delayed:
        torch.cuda._sleep(SLEEP_CYCLES)
    loss = sum(0.5 * o.float().square().sum() for o in outs if o.requires_grad)
    return [o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves))


@pytest.mark.gpu
@CUDA_KERNELS
@pytest.mark.parametrize("name", list(PUBLIC_OP_CALLS))
def test_public_op_on_a_side_stream_equals_the_default_stream(name):
    call, inputs = PUBLIC_OP_CALLS[name]("cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())  # the inputs, made on the default stream
    with ffops.use_backend("cuda"), torch.cuda.stream(side):
        on_side = _outputs_and_gradients(call, inputs, delayed=True)
    torch.cuda.current_stream().wait_stream(side)
    with ffops.use_backend("cuda"):
        on_default = _outputs_and_gradients(call, inputs, delayed=False)
    torch.cuda.synchronize()
    assert len(on_side) == len(on_default)
    for i, (got, expected) in enumerate(zip(on_side, on_default)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m, i=i: f"result {i}: {m}")


# ---- FFTrainer(cuda_graph=True): AdamW, and training resumed from a checkpoint -------------------------
#
# tests/ff/test_cuda_graph.py compares captured with eager training for Adam, SGD and greedy phases.
# Here: AdamW with weight decay (its decoupled decay reads the learning-rate tensor that the cooldown
# rewrites in place; 0.1 makes it visible beyond the tolerance), and a run that saves a checkpoint after
# epoch 1 and goes on in a fresh trainer (new graphs, the loaded optimizer state and generators). The
# two runs differ only by the summation order of float atomics, which Adam's normalized steps do not
# amplify beyond these tolerances.
GRAPH_NET, GRAPH_CLASSES, GRAPH_SAMPLES, GRAPH_BATCH, GRAPH_EPOCHS = [20, 32, 32], 5, 400, 40, 2
GRAPH_STEPS_PER_EPOCH = GRAPH_SAMPLES // GRAPH_BATCH


def _training_data(device):
    return torch.rand(GRAPH_SAMPLES, GRAPH_NET[0], device=device), torch.randint(
        0, GRAPH_CLASSES, (GRAPH_SAMPLES,), device=device
    )


def _adamw_trainer(device, cuda_graph, callbacks=()):
    torch.manual_seed(1)
    model = ff.FFNet(GRAPH_NET, num_classes=GRAPH_CLASSES, device=device)
    return ff.FFTrainer(model, optimizer="adamw", weight_decay=0.1, cuda_graph=cuda_graph, callbacks=callbacks)


def _assert_same_training(got, expected):
    for name, a, b in zip(
        [*dict(got.model.named_parameters()), *(f"head.{n}" for n, _ in got.head.named_parameters())],
        [*got.model.parameters(), *got.head.parameters()],
        [*expected.model.parameters(), *expected.head.parameters()],
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    assert [r["epoch"] for r in got.history] == [r["epoch"] for r in expected.history]
    for record, expected_record in zip(got.history, expected.history):
        for key in ("loss", "head_loss"):  # loss: one per layer
            assert record[key] == pytest.approx(expected_record[key], rel=1e-4), (record["epoch"], key)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
def test_captured_adamw_training_equals_eager_training():
    x, y = _training_data("cuda")
    eager, captured = _adamw_trainer("cuda", cuda_graph=False), _adamw_trainer("cuda", cuda_graph=True)
    for trainer in (eager, captured):
        trainer.fit(x, y, epochs=GRAPH_EPOCHS, batch_size=GRAPH_BATCH)
    graphs = captured._graphs
    assert (graphs.eager_steps, graphs.captures) == (WARMUP_STEPS, 1)
    assert graphs.replays == GRAPH_EPOCHS * GRAPH_STEPS_PER_EPOCH - WARMUP_STEPS
    _assert_same_training(captured, eager)


class _SaveAfterFirstEpoch(ff.Callback):
    def __init__(self, path):
        self.path = path

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == 1:
            ff.save_checkpoint(self.path, trainer)


@pytest.mark.parametrize(
    "device",
    [  # cpu: the same resume without graphs (eager)
        pytest.param("cpu", id="cpu-eager"),
        pytest.param(
            "cuda", id="cuda-graph", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")]
        ),
    ],
)
def test_training_resumed_from_a_checkpoint_equals_the_uninterrupted_run(device, tmp_path):
    captured = device == "cuda"
    x, y = _training_data(device)
    checkpoint = tmp_path / "after_epoch_1.pt"
    whole = _adamw_trainer(device, captured, callbacks=[_SaveAfterFirstEpoch(checkpoint)])
    whole.fit(x, y, epochs=GRAPH_EPOCHS, batch_size=GRAPH_BATCH)
    resumed = _adamw_trainer(device, captured)
    # no map_location: a GPU run's tensors (weights, optimizer states and their learning-rate tensors)
    # come back on the GPU, as a plain torch.load gives them to a user
    resumed.load_state_dict(torch.load(checkpoint))
    resumed.fit(x, y, epochs=GRAPH_EPOCHS, batch_size=GRAPH_BATCH, start_epoch=1)
    if captured:
        graphs = resumed._graphs
        assert (graphs.eager_steps, graphs.captures) == (WARMUP_STEPS, 1)
        assert graphs.replays == GRAPH_STEPS_PER_EPOCH - WARMUP_STEPS
    _assert_same_training(resumed, whole)
