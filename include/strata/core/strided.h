// Iteration over N operands that share a logical shape but have their own
// strides (views, broadcasts with stride 0). The last dimension is handed to
// the callback as a run so inner loops stay tight and vectorisable; rows are
// split across OpenMP threads when the work is large enough to pay for it.
#pragma once
#include <array>
#include <cstdint>

#include "strata/core/error.h"
#include "strata/core/shape.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace strata {

template <size_t N>
struct StridedRun {
  std::array<int64_t, N> offset;  // element offset of the run's first element, per operand
  std::array<int64_t, N> stride;  // stride along the run, per operand
  int64_t length;
};

// Below this many elements a loop stays on one thread.
constexpr int64_t kParallelGrain = 32768;

// Calls fn(const StridedRun<N>&) for every innermost row. `strides[k]` are the
// strides of operand k (same rank as shape), `base[k]` its storage offset.
template <size_t N, class Fn>
void for_each_run(const Shape& shape, const std::array<const int64_t*, N>& strides,
                  const std::array<int64_t, N>& base, Fn&& fn) {
  const int64_t nd = int64_t(shape.size());
  STRATA_CHECK(nd <= 16) << "tensors of rank " << nd << " are not supported (at most 16)";
  if (nd == 0) {
    StridedRun<N> r;
    r.offset = base;
    r.stride.fill(0);
    r.length = 1;
    fn(r);
    return;
  }
  for (int64_t d = 0; d < nd; ++d)
    if (shape[d] == 0) return;
  const int64_t inner = shape[nd - 1];
  int64_t rows = 1;
  for (int64_t d = 0; d < nd - 1; ++d) rows *= shape[d];
  std::array<int64_t, N> inner_stride;
  for (size_t k = 0; k < N; ++k) inner_stride[k] = strides[k][nd - 1];

  auto run_rows = [&](int64_t r0, int64_t r1) {
    // position of row r0 in the outer dims
    int64_t idx[16];
    int64_t rem = r0;
    for (int64_t d = nd - 2; d >= 0; --d) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
    }
    StridedRun<N> run;
    run.stride = inner_stride;
    run.length = inner;
    for (size_t k = 0; k < N; ++k) {
      int64_t o = base[k];
      for (int64_t d = 0; d < nd - 1; ++d) o += idx[d] * strides[k][d];
      run.offset[k] = o;
    }
    for (int64_t r = r0; r < r1; ++r) {
      fn(run);
      // odometer increment of the outer index
      for (int64_t d = nd - 2; d >= 0; --d) {
        if (++idx[d] < shape[d]) {
          for (size_t k = 0; k < N; ++k) run.offset[k] += strides[k][d];
          break;
        }
        for (size_t k = 0; k < N; ++k) run.offset[k] -= (shape[d] - 1) * strides[k][d];
        idx[d] = 0;
      }
    }
  };

  const int64_t total = rows * inner;
  if (total < kParallelGrain || rows < 2) {
    run_rows(0, rows);
    return;
  }
#pragma omp parallel
  {
    int nt = 1, t = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    t = omp_get_thread_num();
#endif
    int64_t chunk = (rows + nt - 1) / nt;
    int64_t r0 = t * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
    if (r0 < r1) run_rows(r0, r1);
  }
}

}  // namespace strata
