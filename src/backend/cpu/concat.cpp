// concat and split (declared in strata/backend/index.h). concat copies each
// input into its slab of a new contiguous tensor through Tensor::copy_, which
// already handles any strides and dtype and runs memmove when both sides are
// dense. split only computes views.
#include <vector>

#include "strata/backend/index.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/concat.h"
#include "strata/backend/device_dispatch.h"
#endif

namespace strata::backend {

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  STRATA_CHECK(!xs.empty()) << "concat: no tensors given";
  const Tensor& x0 = xs[0];
#ifdef STRATA_WITH_CUDA
  // every defined input on x0's device (on_cuda names the op on a mismatch)
  bool gpu = false;
  for (const Tensor& x : xs) gpu = on_cuda("concat", {x0, x}) || gpu;
  if (gpu) return cuda::concat(xs, axis);
#endif
  const int64_t ax = wrap_dim(axis, x0.dim(), "concat");
  Shape shape = x0.shape();
  int64_t total = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    STRATA_CHECK(x.defined()) << "concat: tensor " << k << " is undefined";
    STRATA_CHECK(x.device().is_cpu()) << "concat: tensor " << k << " " << x.str() << " needs the CUDA backend";
    STRATA_CHECK(x.dtype() == x0.dtype())
        << "concat: tensor " << k << " is " << x.str() << " but tensor 0 is " << x0.str();
    bool same = x.dim() == x0.dim();
    for (int64_t d = 0; same && d < x.dim(); ++d) same = d == ax || x.shape()[d] == x0.shape()[d];
    STRATA_CHECK(same) << "concat: tensor " << k << " has shape " << shape_str(x.shape()) << " but tensor 0 has "
                       << shape_str(x0.shape()) << " (they may differ only along axis " << axis << ")";
    total += x.shape()[ax];
  }
  shape[ax] = total;
  Tensor out = Tensor::empty(shape, x0.dtype());
  int64_t pos = 0;
  for (const Tensor& x : xs) {
    if (x.numel() > 0) make_view(out, x.shape(), out.strides(), pos * out.strides()[ax]).copy_(x);
    pos += x.shape()[ax];
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  const int64_t ax = wrap_dim(axis, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    STRATA_CHECK(s >= 0) << "split: negative size " << s << " for axis " << axis << " of " << shape_str(x.shape());
    total += s;
  }
  STRATA_CHECK(total == x.shape()[ax]) << "split: sizes sum to " << total << " but axis " << axis << " of "
                                       << shape_str(x.shape()) << " has size " << x.shape()[ax];
  std::vector<Tensor> pieces;
  pieces.reserve(sizes.size());
  int64_t pos = 0;
  for (int64_t s : sizes) {
    Shape ps = x.shape();
    ps[ax] = s;
    pieces.push_back(make_view(x, ps, x.strides(), x.offset() + pos * x.strides()[ax]));
    pos += s;
  }
  return pieces;
}

}  // namespace strata::backend
