// The schemas of every ffops operator, each written once for two kernel sets: `<name>`, the C++
// kernels, and `triton_<name>` (same schema), whose CPU / CUDA kernels are the Triton launchers,
// registered from Python with torch.library after this library loads (def_op below; transpose_2d has
// no Triton twin). The C++ kernels of op group <op> register per device in csrc/cpu/<op>*.cpp and
// csrc/cuda/<op>_cuda.cpp (argument checks shared by both: csrc/<op>.h, csrc/common.h); fake (meta)
// implementations are registered from Python (ffops/ops/); autograd is in C++ for both sets
// (csrc/goodness.cpp, ff_linear.cpp, packed_act.cpp, ms_norm.cpp, cwc_block.cpp, sparse_linear.cpp,
// sparse_conv.cpp).
#include <Python.h>
#include <torch/library.h>

#include <string>

namespace {

// Defines the operator `schema` ("<name>(...) -> ...") and its Triton twin "triton_<name>(...) -> ...".
void def_op(torch::Library& m, const char* schema) {
  m.def(schema);
  m.def(("triton_" + std::string(schema)).c_str());
}

}  // namespace

TORCH_LIBRARY(ffops, m) {
  // ---- goodness: Forward-Forward row ops (csrc/cpu/goodness.cpp, csrc/cuda/goodness*.{cu,cpp}) -----
  // All take a 2-D activation `h` of shape [R, K] whose last dimension is contiguous
  // (any row stride); per-row statistics have shape [R] and the accumulation type: float32
  // for float32 / float16 / bfloat16 h, float64 for float64 h.
  //
  // g[r] = scale * sum_k h[r, k]^2
  def_op(m, "goodness_fwd(Tensor h, float scale) -> Tensor");
  // out[r, k] = coef[r] * h[r, k]  (backward of every goodness-based op; contiguous, dtype of h)
  def_op(m, "row_scale(Tensor h, Tensor coef) -> Tensor");
  // g[r] = scale * sum_k h[r, k]^2;  z = coef * (t[r] - g[r]) with t = target if given else theta;
  // loss[r] = softplus(z). Returns (g, loss).
  def_op(m, "ff_loss_fwd(Tensor h, float scale, float coef, float theta, Tensor? target) -> (Tensor, Tensor)");
  // s[r] = sum_k h[r, k]^2;  y = h / (sqrt(norm_scale * s) + eps). Returns (y, s).
  def_op(m, "normalize_fwd(Tensor h, float norm_scale, float eps) -> (Tensor, Tensor)");
  // Backward of normalize_fwd, with an optional gradient flowing into s as well:
  // dh = r * dy + h * (2 * ds - [n > 0] * r^2 * norm_scale / n * <dy, h>),  n = sqrt(norm_scale*s),
  // r = 1 / (n + eps).
  def_op(m, "normalize_bwd(Tensor grad_y, Tensor? grad_s, Tensor h, Tensor s, float norm_scale, float eps) -> Tensor");

  // ---- ff_linear: fused Forward-Forward layer (csrc/cpu/ff_linear.cpp, csrc/cuda/ff_linear*.{cu,cpp}) --
  // x [B, in] and weight [out, in] contiguous, same dtype; x_scale [B] (stat type) or None: a
  // per-row scale of the input (its length normalization, applied after the GEMM); bias [out]
  // (dtype of x) or None. Rows r < n_pos are positive data.
  //   pre = x_scale[r] * (x @ weight^T)[r, :] + bias;  h = relu(pre)  (contiguous [B, out], dtype of x)
  //   sumsq[r] = sum_j h[r, j]^2;  pos_mean[j] = mean_{r < n_pos} h[r, j]  (stat type; NaN if n_pos == 0)
  def_op(
      m,
      "ff_linear_fwd(Tensor x, Tensor? x_scale, Tensor weight, Tensor? bias, int n_pos) -> (Tensor, Tensor, Tensor)");
  // Gradients of a loss L(sumsq, pos_mean) given dL/dsumsq (grad_sumsq [B]) and dL/dpos_mean
  // (grad_pos_mean [out] or None; stat type):
  //   dpre[r, j] = 2 grad_sumsq[r] h[r, j] + [r < n_pos] [h[r, j] > 0] grad_pos_mean[j] / n_pos
  //   grad_weight = (x_scale[:, None] * dpre)^T @ x  [out, in];  grad_bias = sum_r dpre[r, :]  [out]
  // (both in the dtype of x). Returns (grad_weight, grad_bias).
  def_op(m,
         "ff_linear_bwd(Tensor x, Tensor? x_scale, Tensor h, Tensor grad_sumsq, Tensor? grad_pos_mean, int n_pos) "
         "-> (Tensor, Tensor)");
  // The first layer on every (sample, label) overlay, for prediction by goodness (inference only;
  // csrc/cpu/ff_label_rows.cpp, csrc/cuda/ff_linear*.{cu,cpp}). The label overlay only changes the
  // first C input features, so one GEMM on the label-free input x0 (x with its first C features
  // zeroed), pre = x0 @ W^T [B, out], plus a rank-1 term per label gives row b * C + c:
  //   h[b*C + c, j] = relu(scale[b] * (pre[b, j] + on[b] * label_weight[j, c]) + bias[j])
  //   sumsq[b*C + c] = sum_j h[b*C + c, j]^2
  // pre [B, out] contiguous (float32 / float64 / float16 / bfloat16); on [B] (the overlay's on value)
  // and scale [B] (the input's length normalization, or None: 1) of the stat type; label_weight
  // [out, C] = W[:, :C], C >= 1, and bias [out] (or None) contiguous, of pre's dtype. Computed in the
  // stat type; h contiguous [B*C, out] of pre's dtype, sumsq [B*C] of the stat type (from the
  // unrounded h). Returns (h, sumsq).
  def_op(m,
         "ff_label_rows(Tensor pre, Tensor on, Tensor? scale, Tensor label_weight, Tensor? bias) -> (Tensor, Tensor)");
  // The first layer trained on label-overlaid rows that share their images (supervised FF: the
  // positive and negative rows are the same images with different labels; csrc/cpu/ff_linear_overlay.cpp,
  // csrc/cuda/ff_linear_cuda.cpp). base [B, in] contiguous; labels [R] int64 contiguous with
  // R = k * B (k >= 1) and values in [0, C), C = num_classes in [1, in]; on [B] of the stat type.
  // Row r is base[r % B] with its first C features replaced by on[r % B] * one_hot(labels[r], C):
  //   pre[r, j] = x_scale[r] * (base[r % B, C:] . weight[j, C:] + on[r % B] * weight[j, labels[r]]) + bias[j]
  // and h, sumsq, pos_mean are ff_linear_fwd's on those rows (x_scale [R] or None, bias, n_pos as
  // there). The GEMM runs on the B shared rows only (k times fewer FLOPs than on the R rows).
  def_op(m,
         "ff_linear_overlay_fwd(Tensor base, Tensor labels, Tensor on, Tensor? x_scale, Tensor weight, Tensor? bias, "
         "int num_classes, int n_pos) -> (Tensor, Tensor, Tensor)");
  // ff_linear_bwd on those rows: with dpre as there and u[r] = x_scale[r] * dpre[r, :],
  //   grad_weight[:, C:] = (sum_{r % B == b} u[r])^T @ base[:, C:]   (one GEMM over the B shared rows)
  //   grad_weight[j, c]  = sum_{r : labels[r] == c} on[r % B] * u[r, j];  grad_bias = sum_r dpre[r, :]
  def_op(m,
         "ff_linear_overlay_bwd(Tensor base, Tensor labels, Tensor on, Tensor? x_scale, Tensor h, Tensor grad_sumsq, "
         "Tensor? grad_pos_mean, int num_classes, int n_pos) -> (Tensor, Tensor)");

  // ---- packed_act: memory-saving activations (csrc/cpu/packed_act.cpp, csrc/cuda/packed_act*.{cu,cpp}) --
  // Packed-code activations (ReGELU2, ReSiLU2, Few-Bit). x contiguous, any shape, n = numel; fn the
  // activation id (0 gelu, 1 gelu_tanh, 2 silu, 3 tanh, 4 sigmoid, 5 softplus, 6 elu, 7 mish);
  // bits in 1..4; 2^bits - 1 ascending borders, 2^bits levels. Compute type A: float32 (float64 for
  // float64 x).
  //   y = f(x) computed in A (contiguous, shape and dtype of x);
  //   code[i] = sum_j [A(x[i]) > A(borders[j])]  (NaN: 0), packed `bits` bits per element into
  //   codes uint8[ceil(n * bits / 8)]: element i at bits bits*i .. bits*i+bits-1 of the
  //   little-endian bit stream (8 elements fill exactly `bits` bytes; unused high bits are 0).
  // `levels` is not read by the forward; the autograd formula of the op uses it. Returns (y, codes).
  def_op(m, "packed_act_fwd(Tensor x, int fn, float[] borders, float[] levels, int bits) -> (Tensor, Tensor)");
  // dx[i] = grad_y[i] * A(levels[code[i]]) in A; contiguous, shape and dtype of grad_y (contiguous).
  def_op(m, "packed_act_bwd(Tensor grad_y, Tensor codes, float[] levels, int bits) -> Tensor");

  // ---- ms_norm: memory-saving norms (csrc/cpu/ms_norm.cpp, csrc/cuda/ms_norm*.{cu,cpp}) ------------
  // MS norms over the last dimension of x [R, K] (unit last stride, any row stride), no affine;
  // A as above. center: mean = sum_k x / K (LayerNorm) else 0 (RMSNorm);
  //   rstd[r] = 1 / sqrt(sum_k (x - mean)^2 / K + eps)  (A [R]);  y = (x - mean) * rstd
  // in out_dtype (default x's dtype; float32 / float16 / bfloat16, float64 only for float64 x),
  // contiguous [R, K]. Returns (y, rstd).
  def_op(m, "ms_norm_fwd(Tensor x, float eps, bool center, ScalarType? out_dtype) -> (Tensor, Tensor)");
  // Backward from the output: a = center ? mean(grad_y) : 0, b = mean(grad_y * y) per row,
  //   dx = rstd * (grad_y - a - y * b)  in dx_dtype (the dtype of the forward's x), contiguous.
  // grad_y [R, K] (unit last stride) has y's dtype; y contiguous.
  def_op(m, "ms_norm_bwd(Tensor grad_y, Tensor y, Tensor rstd, bool center, ScalarType dx_dtype) -> Tensor");

  // ---- cwc_block: the epilogue of a channel-wise competitive conv FF block (csrc/cpu/cwc_block.cpp,
  // csrc/cuda/cwc_block*.{cu,cpp}; specification ffops/reference/cwc_block.py) ---------------------
  // z [N, C, H, W] in channels_last memory format (float32 / float64 / float16 / bfloat16); A as
  // above. p = relu(z), 2x2 max-pooled (floor) when `pool` ([N, C, Ho, Wo]); then batch norm with
  // weight, bias [C] (A): batch statistics mean[c], var[c] (biased) over (N, Ho, Wo) when mean and
  // var are None, else the given ones; y = (p - mean) / sqrt(var + eps) * weight + bias; and
  // g[n, k] = mean of y^2 over the C / num_classes channels of group k and all positions (A).
  // Returns (y, g, p, idx, mean, var): y and p channels_last of z's dtype, idx uint8 [N, C, Ho, Wo]
  // channels_last (which of the 2x2 window held the max, row-major; [0] without pool), mean and var
  // [C] (A; copies of the given ones).
  def_op(m,
         "cwc_block_fwd(Tensor z, Tensor weight, Tensor bias, Tensor? mean, Tensor? var, int num_classes, bool pool, "
         "float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Backward: dy = grad_y + grad_g[n, k] * 2 y / (C / num_classes * Ho * Wo) (either may be None),
  // xhat = (p - mean) * rstd, rstd = 1 / sqrt(var + eps), over (N, Ho, Wo) (M values per channel):
  //   dweight = sum dy * xhat, dbias = sum dy (A [C]);
  //   dp = weight * rstd * (dy - dbias / M - xhat * dweight / M)   (batch_stats; else weight * rstd * dy)
  //   dz = dp at the window position idx when p > 0, else 0 (zeros in the rows / columns the pool
  //   drops); dz [N, C, height, width] channels_last of p's dtype. Returns (dz, dweight, dbias).
  def_op(m,
         "cwc_block_bwd(Tensor? grad_y, Tensor? grad_g, Tensor p, Tensor idx, Tensor weight, Tensor bias, Tensor mean, "
         "Tensor var, int num_classes, bool pool, bool batch_stats, float eps, int height, int width) "
         "-> (Tensor, Tensor, Tensor)");

  // ---- sparse_linear: sparse linear layer (csrc/cpu/sparse_linear.cpp, csrc/cuda/sparse_linear*.{cu,cpp}) --
  // The weight W [N, M] is unstructured-sparse in CSR: crow [N + 1], col [nnz] (column indices
  // sorted and unique within a row; validated once in Python, ffops/sparse/pattern.py), and the
  // trainable values [nnz]. Index tensors are int32 or int64, all of one dtype per call.
  // Activations are feature-major: xt [M, B] contiguous, column b is sample b (so every nonzero is
  // one contiguous vector operation over the batch). Accumulation in float32 (float64 for float64).
  //   yt[i, b] = bias[i] + sum_{k = crow[i]}^{crow[i+1]-1} values[k] * xt[col[k], b]
  // Returns yt [N, B] contiguous, dtype of xt. bias [N] (dtype of xt) or None.
  def_op(m, "sparse_linear_fwd(Tensor xt, Tensor values, Tensor crow, Tensor col, Tensor? bias) -> Tensor");
  // Backward, over the transposed pattern (W in CSC): t_ptr [M + 1], t_row [nnz] (the row i of each
  // nonzero, ascending within a column), t_perm [nnz] (each nonzero's index into values):
  //   dxt[j, b] = sum_{k = t_ptr[j]}^{t_ptr[j+1]-1} values[t_perm[k]] * dyt[t_row[k], b]      [M, B]
  //   dvalues[t_perm[k]] = sum_b dyt[t_row[k], b] * xt[j, b]   for k in column j (SDDMM)     [nnz]
  // dyt [N, B] and xt [M, B] contiguous, dtype of values. Both outputs contiguous in that dtype; an
  // output that is not needed (need_dx / need_dvalues false) is returned as an empty [0] tensor.
  def_op(m,
         "sparse_linear_bwd(Tensor dyt, Tensor xt, Tensor values, Tensor t_ptr, Tensor t_row, Tensor t_perm, "
         "bool need_dx, bool need_dvalues) -> (Tensor, Tensor)");
  // The layer: y [B, N] = x [B, M] @ W^T + bias through the two kernels above, the transposes in and out
  // included (csrc/sparse_linear.cpp, which also holds its autograd): y is the transposed view of a
  // contiguous yt when x is one (x.t() of a contiguous [M, B]), else contiguous. t_ptr, t_row, t_perm:
  // W's transposed pattern, for the backward.
  def_op(m,
         "sparse_linear(Tensor x, Tensor values, Tensor crow, Tensor col, Tensor t_ptr, Tensor t_row, Tensor t_perm, "
         "Tensor? bias) -> Tensor");
  // out = x.t().contiguous() for a 2-D x (CPU only: a fast transpose for the sparse layer's layouts).
  m.def("transpose_2d(Tensor x) -> Tensor");

  // ---- sparse_conv2d: direct sparse convolution, CPU only (csrc/cpu/sparse_conv.cpp;
  // autograd csrc/sparse_conv.cpp; on other devices SparseConv2d runs im2col + sparse_linear) ----------
  // x [N, C, H, W] (any strides), float32 / float64; the weight [O, C, kh, kw] as a CSR matrix
  // [O, C * kh * kw] (crow, col, values as for sparse_linear; groups are its block structure) with its
  // transposed pattern t_ptr [C * kh * kw + 1], t_row, t_perm [nnz]. Zero padding:
  //   y[n, o, a, b] = bias[o] + sum_{k in row o} values[k] * xpad[n, c_k, a sh + i_k dh, b sw + j_k dw]
  // with col[k] = (c_k kh + i_k) kw + j_k. Returns y [N, O, OH, OW] contiguous, dtype of x.
  m.def(
      "sparse_conv2d_fwd(Tensor x, Tensor values, Tensor crow, Tensor col, Tensor t_ptr, Tensor t_row, "
      "Tensor t_perm, Tensor? bias, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  // Backward: (dx [N, C, H, W] contiguous, dvalues [nnz]) of a loss with gradient grad_y at y; an output
  // that is not needed (need_dx / need_dvalues false) is returned as an empty [0] tensor.
  m.def(
      "sparse_conv2d_bwd(Tensor grad_y, Tensor x, Tensor values, Tensor t_ptr, Tensor t_row, Tensor t_perm, "
      "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool need_dx, bool need_dvalues) "
      "-> (Tensor, Tensor)");

  // ---- randomized_linear: the random sketch of the RMM backward (csrc/cpu/randomized_linear.cpp,
  // csrc/cuda/randomized_linear*.{cu,cpp}; specification ffops/reference/randomized_linear.py) --------
  // out [k, n] = S^T a for a [rows, n] contiguous, S [rows, k] the counter-based random matrix of
  // `seed` (a one-element int64 CPU tensor) and `kind` (0 gaussian, 1 rademacher), entries of variance
  // 1 / k (csrc/randomized_linear.h). Accumulated in float32 (float64 for float64 a), in a's dtype.
  def_op(m, "rmm_sketch(Tensor a, Tensor seed, int k, int kind) -> Tensor");
}

// ffops._C is imported for its side effect: loading this library registers the operators.
static struct PyModuleDef ffops_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&ffops_c_module); }
