#include "strata/train/loss_scaler.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/adam.h"
#endif

namespace strata::train {

namespace {

void check_scale(double scale, double min_scale, const char* op) {
  STRATA_CHECK(std::isfinite(min_scale) && min_scale > 0) << op << ": min_scale must be finite and > 0, got "
                                                          << min_scale;
  STRATA_CHECK(std::isfinite(scale) && scale >= min_scale)
      << op << ": scale must be finite and >= min_scale (" << min_scale << "), got " << scale;
}

bool cpu_all_finite(const Tensor& t) {
  return dispatch_dtype(t.dtype(), "all_finite", [&](auto tag) {
    using T = typename decltype(tag)::type;
    std::atomic<bool> ok{true};  // for_each_run may call from several OpenMP threads
    const T* base = static_cast<const T*>(t.impl().storage->data());
    for_each_run<1>(t.shape(), {t.strides().data()}, {t.offset()}, [&](const StridedRun<1>& r) {
      const T* x = base + r.offset[0];
      bool run_ok = true;
      for (int64_t k = 0; k < r.length; ++k) run_ok &= bool(std::isfinite(double(to_compute(x[k * r.stride[0]]))));
      if (!run_ok) ok.store(false, std::memory_order_relaxed);
    });
    return ok.load();
  });
}

}  // namespace

DynamicLossScaler::DynamicLossScaler(double init_scale, double growth_factor, double backoff_factor,
                                     int growth_interval, double min_scale)
    : scale_(init_scale),
      growth_factor_(growth_factor),
      backoff_factor_(backoff_factor),
      growth_interval_(growth_interval),
      min_scale_(min_scale) {
  check_scale(init_scale, min_scale, "DynamicLossScaler");
  STRATA_CHECK(std::isfinite(growth_factor) && growth_factor >= 1)
      << "DynamicLossScaler: growth_factor must be finite and >= 1, got " << growth_factor;
  STRATA_CHECK(backoff_factor > 0 && backoff_factor < 1)
      << "DynamicLossScaler: backoff_factor must lie in (0, 1), got " << backoff_factor;
  STRATA_CHECK(growth_interval >= 1) << "DynamicLossScaler: growth_interval must be >= 1, got " << growth_interval;
}

bool DynamicLossScaler::update(bool overflow) {
  if (overflow) {
    scale_ = std::max(scale_ * backoff_factor_, min_scale_);
    good_steps_ = 0;
    ++skipped_;
    return false;
  }
  if (++good_steps_ >= growth_interval_) {
    const double grown = scale_ * growth_factor_;
    if (std::isfinite(grown)) scale_ = grown;
    good_steps_ = 0;
  }
  return true;
}

void DynamicLossScaler::set_state(double scale, int good_steps, int64_t skipped) {
  check_scale(scale, min_scale_, "DynamicLossScaler::set_state");
  // A count at or past growth_interval (a checkpoint of a run with a longer
  // interval) is kept: the next clean step grows the scale.
  STRATA_CHECK(good_steps >= 0) << "DynamicLossScaler::set_state: good_steps must be >= 0, got " << good_steps;
  STRATA_CHECK(skipped >= 0) << "DynamicLossScaler::set_state: skipped must be >= 0, got " << skipped;
  scale_ = scale;
  good_steps_ = good_steps;
  skipped_ = skipped;
}

bool all_finite(const std::vector<Tensor>& tensors, dist::Communicator* comm) {
  bool ok = true;
  std::vector<Tensor> on_gpu;  // checked together: one flag, one host read
  for (const Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0 || !is_floating(t.dtype())) continue;
    if (t.device().is_cuda()) {
      on_gpu.push_back(t);
      continue;
    }
    if (ok && !cpu_all_finite(t)) ok = false;
  }
#ifdef STRATA_WITH_CUDA
  if (ok && !on_gpu.empty()) ok = backend::cuda::all_finite(on_gpu);
#else
  STRATA_CHECK(on_gpu.empty()) << "all_finite: " << on_gpu.front().str()
                               << " is on a GPU, but this build has no CUDA backend";
#endif
  if (comm && comm->size() > 1) ok = comm->all_reduce_int(ok ? 0 : 1, dist::ReduceOp::Max) == 0;
  return ok;
}

}  // namespace strata::train
