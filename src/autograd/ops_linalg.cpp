#include "strata/autograd/ops_linalg.h"

#include <algorithm>
#include <cstring>

#include "strata/autograd/node.h"
#include "strata/backend/device_dispatch.h"
#include "strata/backend/elementwise.h"
#include "strata/backend/gemm.h"
#include "strata/backend/reduce.h"
#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/gemm.h"
#endif

namespace strata {

using autograd::record;

namespace {

// Gradients of C = op(A) @ op(B) from G = dC, as products with transpose
// flags rather than transposed copies:
//   dA = G @ op(B)^T, or op(B) @ G^T when A is read transposed (dA = (G op(B)^T)^T)
//   dB = op(A)^T @ G, or G^T @ op(A) when B is read transposed
// `mm` is backend::matmul or backend::bmm; a and b are only needed for the
// other operand's gradient, so each may be undefined when that one is not.
template <class Mm>
std::vector<Tensor> product_grads(Mm mm, const Tensor& g, const Tensor& a, const Tensor& b, bool ta, bool tb,
                                  bool need_a, bool need_b) {
  Tensor ga, gb;
  if (need_a) ga = ta ? mm(b, g, tb, true) : mm(g, b, false, !tb);
  if (need_b) gb = tb ? mm(g, a, true, ta) : mm(a, g, !ta, false);
  return {ga, gb};
}

template <class Mm>
Tensor record_product(const char* name, Mm mm, const Tensor& a, const Tensor& b, bool ta, bool tb) {
  Tensor y = mm(a, b, ta, tb);
  const bool need_a = a.needs_grad(), need_b = b.needs_grad();
  // Save only what the wanted gradients read: dA needs B, dB needs A.
  Tensor a_saved = need_b ? a.detach() : Tensor(), b_saved = need_a ? b.detach() : Tensor();
  return record(name, y, {a, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    return product_grads(mm, g, a_saved, b_saved, ta, tb, need_a, need_b);
  });
}

// [rows, n] filled with copies of the vector v[n]; linear accumulates the GEMM
// onto it (beta = 1), so adding the bias costs no extra pass over the output.
Tensor repeat_rows(const Tensor& v, int64_t rows) {
  const int64_t n = v.shape()[0];
  Tensor out = Tensor::empty({rows, n}, v.dtype());
  Tensor vc = v.contiguous();
  const size_t row_bytes = size_t(n) * dtype_size(v.dtype());
  const char* src = static_cast<const char*>(vc.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + size_t(r) * row_bytes, src, row_bytes);
  return out;
}

// Column sums of g[rows, n] -> [n] (the bias gradient). Threads own disjoint
// column blocks and walk every row, so no partial sums need merging and the
// result does not depend on the thread count; accumulation is in double.
Tensor sum_rows(const Tensor& g) {
  Tensor gc = g.strides()[1] == 1 ? g : g.contiguous();
  const int64_t rows = gc.shape()[0], n = gc.shape()[1], ld = gc.strides()[0];
  Tensor out = Tensor::empty({n}, g.dtype());
  constexpr int64_t kBlock = 128;
  dispatch_float(g.dtype(), "linear", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = gc.data<T>();
    T* o = out.data<T>();
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t j0 = blk * kBlock, len = std::min(kBlock, n - j0);
      double acc[kBlock] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const T* row = p + r * ld + j0;
        for (int64_t j = 0; j < len; ++j) acc[j] += double(row[j]);
      }
      for (int64_t j = 0; j < len; ++j) o[j0 + j] = T(acc[j]);
    }
  });
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  auto mm = [](const Tensor& x, const Tensor& y, bool tx, bool ty) { return backend::matmul(x, y, tx, ty); };
  return record_product("matmul", mm, a, b, trans_a, trans_b);
}

Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  auto mm = [](const Tensor& x, const Tensor& y, bool tx, bool ty) { return backend::bmm(x, y, tx, ty); };
  return record_product("bmm", mm, a, b, trans_a, trans_b);
}

namespace {

// Shared by linear and linear_relu: checks, one GEMM over all leading dims
// (weight read transposed in place; on a GPU with the bias and ReLU fused into
// the GEMM's epilogue), and the backward. With `relu`, the incoming gradient
// is first masked by output > 0 (the same mask as input > 0, so relu'(0) = 0
// as in relu()).
Tensor linear_impl(const char* name, const Tensor& x, const Tensor& weight, const Tensor& bias, bool relu) {
  STRATA_CHECK(x.defined() && weight.defined()) << name << ": undefined input or weight";
  STRATA_CHECK(x.dim() >= 1 && weight.dim() == 2) << name << ": expected x [..., in] and weight [out, in], got x "
                                                  << shape_str(x.shape()) << ", weight " << shape_str(weight.shape());
  const int64_t in = weight.shape()[1], out = weight.shape()[0];
  STRATA_CHECK(x.shape().back() == in) << name << ": x " << shape_str(x.shape()) << " has " << x.shape().back()
                                       << " features, weight " << shape_str(weight.shape()) << " expects " << in;
  STRATA_CHECK(x.dtype() == weight.dtype()) << name << ": dtypes differ: x " << x.str() << ", weight " << weight.str();
  if (bias.defined()) {
    STRATA_CHECK(bias.dim() == 1 && bias.shape()[0] == out)
        << name << ": bias " << shape_str(bias.shape()) << " does not match weight " << shape_str(weight.shape())
        << " (expected [" << out << "])";
    STRATA_CHECK(bias.dtype() == x.dtype()) << name << ": dtypes differ: x " << x.str() << ", bias " << bias.str();
  }
  const bool gpu = backend::on_cuda(name, {x, weight, bias});
  const Shape in_shape = x.shape();
  const int64_t rows = shape_numel(Shape(in_shape.begin(), in_shape.end() - 1));
  Tensor x2 = x.detach().reshape({rows, in});
  Tensor y2;
#ifdef STRATA_WITH_CUDA
  if (gpu) y2 = backend::cuda::linear_forward(x2, weight.detach(), bias.defined() ? bias.detach() : Tensor(), relu);
#endif
  if (!gpu) {
    if (bias.defined()) {
      y2 = repeat_rows(bias, rows);
      backend::gemm_into(y2, x2, weight, false, true, 1.0, 1.0);
    } else {
      y2 = backend::matmul(x2, weight, false, true);
    }
    if (relu) y2 = backend::unary(backend::UnaryOp::Relu, y2);
  }
  Shape y_shape = in_shape;
  y_shape.back() = out;
  const bool need_x = x.needs_grad(), need_w = weight.needs_grad(), need_b = bias.defined() && bias.needs_grad();
  Tensor x_saved = need_w ? x2 : Tensor(), w_saved = need_x ? weight.detach() : Tensor();
  Tensor y_saved = relu && (need_x || need_w || need_b) ? y2 : Tensor();
  return record(name, y2.view(y_shape), {x, weight, bias}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor g2 = g.reshape({rows, out});
    // relu's backward reads its input only through the sign, and y > 0 exactly where the input is.
    if (relu) g2 = backend::unary_backward(backend::UnaryOp::Relu, g2, y_saved, Tensor());
    Tensor gx = need_x ? backend::matmul(g2, w_saved).view(in_shape) : Tensor();  // [rows,out] @ [out,in]
    Tensor gw = need_w ? backend::matmul(g2, x_saved, true, false) : Tensor();   // g2^T @ x2
    Tensor gb;
    if (need_b) gb = gpu ? backend::sum(g2, 0) : sum_rows(g2);
    return {gx, gw, gb};
  });
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return linear_impl("linear", x, weight, bias, false);
}

Tensor linear_relu(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return linear_impl("linear_relu", x, weight, bias, true);
}

}  // namespace strata
