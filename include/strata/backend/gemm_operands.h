// The shape rules both GEMM backends (OpenBLAS on the CPU, cuBLAS/cuBLASLt on
// a GPU) apply to their operands, with the same messages: each backend adds
// its own device and dtype rules between the two checks.
#pragma once
#include <climits>
#include <cstdint>
#include <string>

#include "strata/core/error.h"
#include "strata/core/tensor.h"

namespace strata::backend {

// "[3, 5]^T" for an operand used transposed.
inline std::string gemm_operand_str(const Tensor& t, bool trans) {
  return shape_str(t.shape()) + (trans ? "^T" : "");
}

struct GemmDims {
  int64_t M, N, K;
};

// Both operands defined and `rank`-D (2: matrices, 3: batches of them).
inline void check_gemm_ranks(const char* op, const Tensor& a, const Tensor& b, bool ta, bool tb, int64_t rank) {
  STRATA_CHECK(a.defined() && b.defined()) << op << ": undefined operand";
  STRATA_CHECK(a.dim() == rank && b.dim() == rank)
      << op << ": expected " << rank << "-D operands, got " << gemm_operand_str(a, ta) << " @ "
      << gemm_operand_str(b, tb);
}

// (M, N, K) of op(a) @ op(b) after checking equal batch sizes, equal inner
// dimensions and that every dimension fits the 32-bit `blas` interface.
inline GemmDims gemm_dims(const char* op, const Tensor& a, const Tensor& b, bool ta, bool tb, int64_t rank,
                          const char* blas) {
  const size_t r = size_t(rank - 2);
  if (rank == 3) {
    STRATA_CHECK(a.shape()[0] == b.shape()[0])
        << op << ": batch sizes differ: " << gemm_operand_str(a, ta) << " @ " << gemm_operand_str(b, tb);
  }
  GemmDims d;
  d.M = a.shape()[r + (ta ? 1 : 0)];
  d.K = a.shape()[r + (ta ? 0 : 1)];
  const int64_t kb = b.shape()[r + (tb ? 1 : 0)];
  d.N = b.shape()[r + (tb ? 0 : 1)];
  STRATA_CHECK(d.K == kb) << op << ": inner dimensions differ: " << gemm_operand_str(a, ta) << " @ "
                          << gemm_operand_str(b, tb);
  STRATA_CHECK(d.M <= INT_MAX && d.N <= INT_MAX && d.K <= INT_MAX)
      << op << ": a dimension of " << gemm_operand_str(a, ta) << " @ " << gemm_operand_str(b, tb)
      << " exceeds the 32-bit " << blas << " interface";
  return d;
}

}  // namespace strata::backend
