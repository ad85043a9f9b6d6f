// Row-keyed expert dropout masks on the GPU: one thread per mask element,
// the element's Philox word computed exactly as the host loop in
// moe::expert_dropout_mask does (same counter layout, same f32 comparison).
#include "strata/backend/cuda/keyed_dropout.h"

#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"
#include "strata/core/philox.h"

namespace strata::backend::cuda {

using ::strata::cuda::blocks_for;
using ::strata::cuda::kThreads;
using ::strata::cuda::storage_ptr;
using ::strata::cuda::store_cast;

namespace {

template <class T>
__global__ void keyed_mask_kernel(T* __restrict__ out, int64_t R, int64_t F, int64_t total, int64_t experts,
                                  const int64_t* __restrict__ row, const int64_t* __restrict__ global,
                                  const int64_t* __restrict__ seed, const int64_t* __restrict__ offset,
                                  float threshold, T keep, T drop) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t buffer_row = i / F, f = i - buffer_row * F;
    const int64_t src = row[buffer_row];
    if (src < 0) {
      out[i] = drop;
      continue;
    }
    const PhiloxStream st{uint64_t(seed[buffer_row]), uint64_t(offset[buffer_row])};
    const uint64_t e = (uint64_t(src) * uint64_t(experts) + uint64_t(global[buffer_row / R])) * uint64_t(F) + uint64_t(f);
    out[i] = st.uniform(e) >= threshold ? keep : drop;
  }
}

void check_ids(const Tensor& t, int64_t n, const char* what) {
  STRATA_CHECK(t.device().is_cuda() && t.dtype() == DType::I64 && t.is_contiguous() && t.numel() == n)
      << "moe expert dropout: " << what << " must be a contiguous i64 GPU tensor of " << n << " elements, got "
      << t.str();
}

}  // namespace

Tensor keyed_dropout_mask(int64_t V, int64_t R, int64_t F, DType dtype, double p, int64_t experts, const Tensor& row,
                          const Tensor& global, const Tensor& seed, const Tensor& offset) {
  STRATA_CHECK(p >= 0.0 && p <= 1.0) << "moe expert dropout: p must be in [0, 1], got " << p;
  STRATA_CHECK(V >= 0 && R >= 0 && F >= 0 && experts > 0)
      << "moe expert dropout: buffer " << V << " x " << R << " x " << F << " for " << experts << " experts";
  check_ids(row, V * R, "row ids");
  check_ids(global, V, "global expert ids");
  check_ids(seed, V * R, "stream seeds");
  check_ids(offset, V * R, "stream offsets");
  Tensor out = Tensor::empty({V, R, F}, dtype, row.device());
  const int64_t total = V * R * F;
  if (total == 0) return out;
  auto launch = [&](auto tag) {
    using T = typename decltype(tag)::type;
    // p == 1 drops everything (u < 1 never reaches the threshold); the host uses the same convention.
    const T keep = store_cast<T>(p == 1.0 ? 0.0 : 1.0 / (1.0 - p));
    keyed_mask_kernel<T><<<blocks_for(total), kThreads, 0, ::strata::cuda::compute_stream()>>>(
        storage_ptr<T>(out), R, F, total, experts, row.data<int64_t>(), global.data<int64_t>(),
        seed.data<int64_t>(), offset.data<int64_t>(), float(p), keep, store_cast<T>(0.0));
    STRATA_KERNEL_CHECK();
  };
  switch (dtype) {
    case DType::F32: launch(TypeTag<float>{}); break;
    case DType::F64: launch(TypeTag<double>{}); break;
    case DType::F16: launch(TypeTag<Half>{}); break;
    case DType::BF16: launch(TypeTag<BFloat16>{}); break;
    default: STRATA_FAIL() << "moe expert dropout: expected a float mask dtype, got " << dtype_name(dtype);
  }
  return out;
}

}  // namespace strata::backend::cuda
