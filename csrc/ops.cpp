// The schemas of every ffops operator, defined once. Kernels register per device in
// csrc/cpu/<family>.cpp and csrc/cuda/<family>_cuda.cpp; fake (meta) implementations and
// autograd are registered from Python (ffops/ops/).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(ffops, m) {
  // ---- Forward-Forward family (csrc/cpu/ff.cpp, csrc/cuda/ff.cu) ------------------------
  // All take a 2-D activation `h` of shape [R, K] whose last dimension is contiguous
  // (any row stride); per-row statistics have shape [R] and the accumulation type: float32
  // for float32 / float16 / bfloat16 h, float64 for float64 h.
  //
  // g[r] = scale * sum_k h[r, k]^2
  m.def("goodness_fwd(Tensor h, float scale) -> Tensor");
  // out[r, k] = coef[r] * h[r, k]  (backward of every goodness-based op; contiguous, dtype of h)
  m.def("row_scale(Tensor h, Tensor coef) -> Tensor");
  // g[r] = scale * sum_k h[r, k]^2;  z = coef * (t[r] - g[r]) with t = target if given else theta;
  // loss[r] = softplus(z). Returns (g, loss).
  m.def("ff_loss_fwd(Tensor h, float scale, float coef, float theta, Tensor? target) -> (Tensor, Tensor)");
  // s[r] = sum_k h[r, k]^2;  y = h / (sqrt(norm_scale * s) + eps). Returns (y, s).
  m.def("normalize_fwd(Tensor h, float norm_scale, float eps) -> (Tensor, Tensor)");
  // Backward of normalize_fwd, with an optional gradient flowing into s as well:
  // dh = r * dy + h * (2 * ds - [n > 0] * r^2 * norm_scale / n * <dy, h>),  n = sqrt(norm_scale*s),
  // r = 1 / (n + eps).
  m.def(
      "normalize_bwd(Tensor grad_y, Tensor? grad_s, Tensor h, Tensor s, float norm_scale, float eps) -> Tensor");

  // ---- Fused Forward-Forward layer (csrc/cpu/ff_linear.cpp, csrc/cuda/ff_linear*.{cu,cpp}) ------
  // x [B, in] and weight [out, in] contiguous, same dtype; x_scale [B] (stat type) or None: a
  // per-row scale of the input (its length normalization, applied after the GEMM); bias [out]
  // (dtype of x) or None. Rows r < n_pos are positive data.
  //   pre = x_scale[r] * (x @ weight^T)[r, :] + bias;  h = relu(pre)  (contiguous [B, out], dtype of x)
  //   sumsq[r] = sum_j h[r, j]^2;  pos_mean[j] = mean_{r < n_pos} h[r, j]  (stat type; NaN if n_pos == 0)
  m.def("ff_linear_fwd(Tensor x, Tensor? x_scale, Tensor weight, Tensor? bias, int n_pos) -> (Tensor, Tensor, Tensor)");
  // Gradients of a loss L(sumsq, pos_mean) given dL/dsumsq (grad_sumsq [B]) and dL/dpos_mean
  // (grad_pos_mean [out] or None; stat type):
  //   dpre[r, j] = 2 grad_sumsq[r] h[r, j] + [r < n_pos] [h[r, j] > 0] grad_pos_mean[j] / n_pos
  //   grad_weight = (x_scale[:, None] * dpre)^T @ x  [out, in];  grad_bias = sum_r dpre[r, :]  [out]
  // (both in the dtype of x). Returns (grad_weight, grad_bias).
  m.def(
      "ff_linear_bwd(Tensor x, Tensor? x_scale, Tensor h, Tensor grad_sumsq, Tensor? grad_pos_mean, int n_pos) "
      "-> (Tensor, Tensor)");
}

// ffops._C is imported for its side effect: loading this library registers the operators.
static struct PyModuleDef ffops_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&ffops_c_module); }
