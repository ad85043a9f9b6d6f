// Shared helpers for the unit tests: random tensors, non-contiguous copies of
// them, and element-wise comparison with a dtype-aware tolerance.
#pragma once
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "strata/autograd/gradcheck.h"
#include "strata/core/tensor.h"

namespace strata::test {

// A fresh directory under the system temp dir, removed with everything in it
// when the object goes out of scope.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& prefix = "strata-test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // Path of an entry inside the directory.
  std::string file(const std::string& name) const { return (std::filesystem::path(path) / name).string(); }
  std::string sub(const std::string& name) const { return file(name); }
};

// Uniform in [lo, hi) from a Philox stream keyed by `seed`.
inline Tensor rand(const Shape& s, uint64_t seed, DType dt = DType::F32, double lo = -1, double hi = 1) {
  return Tensor::uniform(s, seed, 0, lo, hi, dt);
}

// The same values as `t`, laid out non-contiguously: stored transposed in the
// last two dims inside a larger buffer with a gap (so both the stride and the
// storage offset differ from a plain tensor).
inline Tensor non_contiguous(const Tensor& t) {
  if (t.dim() == 0) return t.clone();
  Tensor v;
  if (t.dim() == 1) {  // every other element of a buffer, starting at 1
    Tensor buf = Tensor::full({2 * t.shape()[0] + 1}, 777.0, t.dtype());
    v = buf.slice(0, 1, 2 * t.shape()[0] + 1, 2);
  } else {  // rows 1.. of a buffer stored with the last two dims swapped
    Shape big = t.shape();
    std::swap(big[t.dim() - 1], big[t.dim() - 2]);
    big[0] += 1;
    Tensor buf = Tensor::full(big, 777.0, t.dtype());
    v = buf.narrow(0, 1, big[0] - 1).transpose(-1, -2);
  }
  v.copy_(t);
  return v;
}

// Relative tolerance by dtype: f32 ~1e-5, f64 ~1e-12, 16-bit ~1e-2.
inline double default_rtol(DType dt) {
  switch (dt) {
    case DType::F64: return 1e-12;
    case DType::F16:
    case DType::BF16: return 1e-2;
    default: return 1e-5;
  }
}

// Checks every element of `actual` against `expected` (same shape) with
// |a - e| <= atol + rtol*|e|; reports the first mismatch with its index.
inline void require_close(const Tensor& actual, const Tensor& expected, double rtol = -1, double atol = -1) {
  REQUIRE(actual.shape() == expected.shape());
  if (rtol < 0) rtol = default_rtol(actual.dtype());
  if (atol < 0) atol = rtol;
  std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) {
    bool ok = (std::isnan(a[i]) && std::isnan(e[i])) || a[i] == e[i] ||
              std::fabs(a[i] - e[i]) <= atol + rtol * std::fabs(e[i]);
    if (!ok) {
      INFO("element " << i << " of " << actual.str() << ": got " << a[i] << ", expected " << e[i]);
      REQUIRE(ok);
    }
  }
}

inline void require_close(const Tensor& actual, const std::vector<double>& expected, double rtol = -1,
                          double atol = -1) {
  require_close(actual, Tensor::from_vector(expected, actual.shape()).to(actual.dtype()), rtol, atol);
}

// Runs gradcheck in f64 and REQUIREs success, printing the report otherwise.
inline void require_gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                              const std::vector<Tensor>& inputs, autograd::GradcheckOptions opt = {}) {
  autograd::GradcheckResult r = autograd::gradcheck(f, inputs, opt);
  INFO(r.report);
  REQUIRE(r.ok);
}

// f64 leaf with requires_grad, optionally stored non-contiguously.
inline Tensor grad_input(const Shape& s, uint64_t seed, bool noncontig = false, double lo = -1, double hi = 1) {
  Tensor t = rand(s, seed, DType::F64, lo, hi);
  if (noncontig) t = non_contiguous(t);
  t.set_requires_grad(true);
  return t;
}

}  // namespace strata::test
