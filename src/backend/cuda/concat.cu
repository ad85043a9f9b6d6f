// GPU concat (contract: strata/backend/index.h; CPU twin:
// src/backend/cpu/concat.cpp): each input is copied into its slab of a new
// contiguous tensor by one strided copy kernel. The copy moves bits, so every
// dtype is served by an unsigned type of its size.
#include <cstdint>

#include "strata/backend/cuda/concat.h"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::backend::cuda {

namespace {

using ::strata::cuda::blocks_for;
using ::strata::cuda::kThreads;
using ::strata::cuda::make_indexer;
using ::strata::cuda::storage_ptr;
using ::strata::cuda::StridedIndexer;

// dst = src element by element (same shape, any strides).
template <class B>
__global__ void copy_kernel(B* dst, const B* src, StridedIndexer<2> ix, int64_t total) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(t, off);
    dst[off[0]] = src[off[1]];
  }
}

template <class B>
void copy_into(const Tensor& dst, const Tensor& src) {
  const auto ix = make_indexer<2>({&dst, &src});
  const int64_t n = src.numel();
  copy_kernel<B><<<blocks_for(n), kThreads, 0, ::strata::cuda::compute_stream()>>>(storage_ptr<B>(dst),
                                                                                   storage_ptr<const B>(src), ix, n);
  STRATA_KERNEL_CHECK();
}

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  STRATA_CHECK(!xs.empty()) << "concat: no tensors given";
  const Tensor& x0 = xs[0];
  const int64_t ax = wrap_dim(axis, x0.dim(), "concat");
  Shape shape = x0.shape();
  int64_t total = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    STRATA_CHECK(x.defined()) << "concat: tensor " << k << " is undefined";
    STRATA_CHECK(x.device() == x0.device())
        << "concat: tensor " << k << " " << x.str() << " is not on the device of tensor 0 " << x0.str();
    STRATA_CHECK(x.dtype() == x0.dtype())
        << "concat: tensor " << k << " is " << x.str() << " but tensor 0 is " << x0.str();
    bool same = x.dim() == x0.dim();
    for (int64_t d = 0; same && d < x.dim(); ++d) same = d == ax || x.shape()[d] == x0.shape()[d];
    STRATA_CHECK(same) << "concat: tensor " << k << " has shape " << shape_str(x.shape()) << " but tensor 0 has "
                       << shape_str(x0.shape()) << " (they may differ only along axis " << axis << ")";
    total += x.shape()[ax];
  }
  shape[ax] = total;
  Tensor out = Tensor::empty(shape, x0.dtype(), x0.device());
  int64_t pos = 0;
  for (const Tensor& x : xs) {
    if (x.numel() > 0) {
      const Tensor slab = make_view(out, x.shape(), out.strides(), pos * out.strides()[ax]);
      switch (dtype_size(x0.dtype())) {
        case 2: copy_into<uint16_t>(slab, x); break;
        case 4: copy_into<uint32_t>(slab, x); break;
        case 8: copy_into<uint64_t>(slab, x); break;
        default: STRATA_FAIL() << "concat: unsupported dtype " << dtype_name(x0.dtype());
      }
    }
    pos += x.shape()[ax];
  }
  return out;
}

}  // namespace strata::backend::cuda
