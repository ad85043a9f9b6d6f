#include "strata/train/grad_clip.h"

#include <cmath>

#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/adam.h"
#endif

namespace strata::train {

namespace {

Tensor checked_grad(const Tensor& p, const char* op) {
  STRATA_CHECK(p.defined()) << op << ": undefined parameter";
  Tensor g = p.grad();
  if (!g.defined()) return g;
#ifndef STRATA_WITH_CUDA
  STRATA_CHECK(g.device().is_cpu()) << op << ": gradient " << g.str() << " needs the CUDA backend";
#endif
  STRATA_CHECK(is_floating(g.dtype())) << op << ": gradient " << g.str() << " is not floating point";
  return g;
}

double cpu_sum_squares(const Tensor& g) {
  Tensor c = g.contiguous();
  return dispatch_dtype(c.dtype(), "grad_norm_sq", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = c.data<T>();
    const int64_t n = c.numel();
    double s = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : s) if (n >= kParallelGrain)
    for (int64_t k = 0; k < n; ++k) {
      double v = double(to_compute(x[k]));
      s += v * v;
    }
    return s;
  });
}

}  // namespace

double grad_norm_sq(const std::vector<Tensor>& params) {
  double total = 0.0;
  std::vector<Tensor> on_gpu;  // summed on the device together: one host read for all of them
  for (const Tensor& p : params) {
    Tensor g = checked_grad(p, "grad_norm_sq");
    if (!g.defined()) continue;
    if (g.device().is_cuda()) {
      on_gpu.push_back(g);
      continue;
    }
    total += cpu_sum_squares(g);
  }
#ifdef STRATA_WITH_CUDA
  if (!on_gpu.empty()) total += backend::cuda::sum_squares(on_gpu);
#endif
  return total;
}

void scale_grads(const std::vector<Tensor>& params, double coef) {
  for (const Tensor& p : params) {
    Tensor g = checked_grad(p, "scale_grads");
    if (!g.defined()) continue;
#ifdef STRATA_WITH_CUDA
    if (g.device().is_cuda()) {
      backend::cuda::scale_grad(g, coef);
      continue;
    }
#endif
    dispatch_dtype(g.dtype(), "scale_grads", [&](auto tag) {
      using T = typename decltype(tag)::type;
      // Scale in the compute type: f32 for f32/f16/bf16 grads, as torch's mul_.
      using C = decltype(to_compute(T()));
      const C c = C(coef);
      T* base = static_cast<T*>(g.impl().storage->data());
      for_each_run<1>(g.shape(), {g.strides().data()}, {g.offset()}, [&](const StridedRun<1>& r) {
        T* x = base + r.offset[0];
        for (int64_t k = 0; k < r.length; ++k) x[k * r.stride[0]] = from_compute<T>(to_compute(x[k * r.stride[0]]) * c);
      });
    });
  }
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm,
                      const std::function<double(double)>& aggregate_norm_sq) {
  double sq = grad_norm_sq(params);
  if (aggregate_norm_sq) sq = aggregate_norm_sq(sq);
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) scale_grads(params, coef);
  }
  return norm;
}

double clip_grad_norm(const NamedTensors& params, double max_norm,
                      const std::function<double(double)>& aggregate_norm_sq) {
  std::vector<Tensor> ps;
  ps.reserve(params.size());
  for (const auto& kv : params) ps.push_back(kv.second);
  return clip_grad_norm(ps, max_norm, aggregate_norm_sq);
}

}  // namespace strata::train
