#include "strata/autograd/ops_view.h"

#include "strata/autograd/node.h"
#include "strata/backend/elementwise.h"

namespace strata {

using autograd::record;

namespace {
// Gradient of a view that selected part of x: zeros of x's shape with g
// written through the same view applied to them.
template <class ViewFn>
Tensor scatter_into_zeros(const Tensor& g, const Shape& shape, DType dtype, ViewFn&& view_of) {
  Tensor z = Tensor::zeros(shape, dtype, g.device());
  view_of(z).copy_(g);
  return z;
}
}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  Shape in = x.shape();
  return record("reshape", x.detach().reshape(shape), {x},
                [in](const Tensor& g) -> std::vector<Tensor> { return {g.reshape(in)}; });
}

Tensor view(const Tensor& x, const Shape& shape) {
  Shape in = x.shape();
  return record("view", x.detach().view(shape), {x},
                [in](const Tensor& g) -> std::vector<Tensor> { return {g.reshape(in)}; });
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  return record("transpose", x.detach().transpose(d0, d1), {x},
                [d0, d1](const Tensor& g) -> std::vector<Tensor> { return {g.transpose(d0, d1)}; });
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor y = x.detach().permute(dims);
  std::vector<int64_t> inverse(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) inverse[size_t(wrap_dim(dims[i], x.dim(), "permute"))] = int64_t(i);
  return record("permute", y, {x},
                [inverse](const Tensor& g) -> std::vector<Tensor> { return {g.permute(inverse)}; });
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  Shape in = x.shape();
  DType dt = x.dtype();
  return record("slice", x.detach().slice(dim, start, end, step), {x},
                [=](const Tensor& g) -> std::vector<Tensor> {
                  return {scatter_into_zeros(g, in, dt, [&](const Tensor& z) { return z.slice(dim, start, end, step); })};
                });
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  Shape in = x.shape();
  DType dt = x.dtype();
  return record("narrow", x.detach().narrow(dim, start, length), {x},
                [=](const Tensor& g) -> std::vector<Tensor> {
                  return {scatter_into_zeros(g, in, dt, [&](const Tensor& z) { return z.narrow(dim, start, length); })};
                });
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  Shape in = x.shape();
  DType dt = x.dtype();
  return record("select", x.detach().select(dim, index), {x},
                [=](const Tensor& g) -> std::vector<Tensor> {
                  return {scatter_into_zeros(g, in, dt, [&](const Tensor& z) { return z.select(dim, index); })};
                });
}

Tensor expand(const Tensor& x, const Shape& shape) {
  Shape in = x.shape();
  return record("expand", x.detach().expand(shape), {x},
                [in](const Tensor& g) -> std::vector<Tensor> { return {backend::sum_to_shape(g, in)}; });
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  Shape in = x.shape();
  return record("unsqueeze", x.detach().unsqueeze(dim), {x},
                [in](const Tensor& g) -> std::vector<Tensor> { return {g.reshape(in)}; });
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  Shape in = x.shape();
  return record("squeeze", x.detach().squeeze(dim), {x},
                [in](const Tensor& g) -> std::vector<Tensor> { return {g.reshape(in)}; });
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  return record("contiguous", x.detach().contiguous(), {x},
                [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
}

Tensor cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  STRATA_CHECK(!x.needs_grad() || is_floating(dtype))
      << "cast: cannot cast " << x.str() << " to " << dtype_name(dtype) << " and keep its gradient";
  DType in = x.dtype();
  return record("cast", x.detach().to(dtype), {x},
                [in](const Tensor& g) -> std::vector<Tensor> { return {g.to(in)}; });
}

}  // namespace strata
