// Helpers for the GPU tests: moving tensors between CPU and GPU and comparing
// a GPU result with its CPU twin at a tolerance chosen by dtype.
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "../scoped_env.h"
#include "strata/backend/cuda/context.h"
#include "strata/core/tensor.h"

namespace strata::test {

inline Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }
inline Tensor cpu(const Tensor& t) { return t.to(Device::cpu()); }

// Relative tolerance by dtype (fp32 ~1e-5, bf16 ~1e-2; f16 between).
inline double tolerance_for(DType dt) {
  switch (dt) {
    case DType::F64: return 1e-10;
    case DType::F32: return 1e-5;
    case DType::F16: return 2e-3;
    case DType::BF16: return 1e-2;
    default: return 0;  // integers: exact
  }
}

// Element-wise |g - c| <= tol * (|c| + scale) where scale is the largest |c|
// times 1e-2 (so values that cancel to ~0 are judged against the tensor's magnitude).
inline void require_close(const Tensor& cpu_result, const Tensor& gpu_result, double tol = -1,
                          const std::string& what = "") {
  REQUIRE(gpu_result.device().is_cuda());
  Tensor g = cpu(gpu_result).to(DType::F64);
  Tensor c = cpu_result.to(DType::F64);
  REQUIRE(g.shape() == c.shape());
  if (tol < 0) tol = tolerance_for(gpu_result.dtype());
  auto gv = g.to_vector<double>(), cv = c.to_vector<double>();
  double maxabs = 0;
  for (double v : cv) maxabs = std::fmax(maxabs, std::fabs(v));
  const double floor = 1e-2 * maxabs + 1e-30;
  size_t bad = 0, first = cv.size();
  for (size_t i = 0; i < cv.size(); ++i) {
    const bool ok = std::fabs(gv[i] - cv[i]) <= tol * (std::fabs(cv[i]) + floor) || (gv[i] == cv[i]);
    if (!ok) {
      ++bad;
      if (first == cv.size()) first = i;
    }
  }
  INFO(what << " " << bad << " of " << cv.size() << " elements differ; first at " << first << ": gpu "
            << (first < cv.size() ? gv[first] : 0) << " cpu " << (first < cv.size() ? cv[first] : 0) << " (tol "
            << tol << ")");
  REQUIRE(bad == 0);
}


}  // namespace strata::test
