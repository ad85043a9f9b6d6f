// Whether a strided matrix view can go to BLAS (OpenBLAS or cuBLAS) without a
// copy, and with which leading dimension and transpose: the one rule both
// GEMM backends use.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>

namespace strata::backend {

// How BLAS reads one matrix [rows, cols] with strides (rs, cs): row-major with
// leading dimension `ld`, or (transposed = true) as the transpose of a
// row-major [cols, rows] matrix. False when neither holds (gaps in both
// dimensions, broadcast strides, overlapping rows): the caller copies.
// Strides of size-1 dimensions are never read, so they do not constrain.
inline bool blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, int64_t& ld, bool& transposed) {
  if (cs == 1 || cols == 1) {
    ld = rows == 1 ? std::max<int64_t>(cols, 1) : rs;
    if (ld >= std::max<int64_t>(cols, 1) && ld <= INT_MAX) {
      transposed = false;
      return true;
    }
  }
  if (rs == 1 || rows == 1) {
    ld = cols == 1 ? std::max<int64_t>(rows, 1) : cs;
    if (ld >= std::max<int64_t>(rows, 1) && ld <= INT_MAX) {
      transposed = true;
      return true;
    }
  }
  return false;
}

}  // namespace strata::backend
