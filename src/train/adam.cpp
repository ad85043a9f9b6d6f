#include "strata/train/adam.h"

#include <cmath>
#include <map>
#include <set>

#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/adam.h"
#include "strata/backend/cuda/context.h"
#endif

namespace strata::train {

namespace {

using detail::adam_element;
using detail::AdamCoef;

// Zero-filled state of the parameter's shape, dtype and device. On a GPU the
// bytes are cleared in stream order on the compute stream (all-zero bytes
// are 0.0 in f32/f64), without waiting for the device.
Tensor zero_state(const Tensor& p) {
  if (p.device().is_cpu()) return Tensor::zeros(p.shape(), p.dtype());
#ifdef STRATA_WITH_CUDA
  Tensor t = Tensor::empty(p.shape(), p.dtype(), p.device());
  if (t.nbytes() > 0) STRATA_CUDA_CHECK(cudaMemsetAsync(t.raw_data(), 0, t.nbytes(), cuda::compute_stream()));
  return t;
#else
  STRATA_FAIL() << "Adam: parameter " << p.str() << " is on a GPU, but this build has no CUDA backend";
  return Tensor();
#endif
}

// Copies saved state (any device, any float dtype) into live state. GPU
// state is filled from a host-side cast and one copy in stream order.
void load_into(const Tensor& dst, const Tensor& src) {
  if (dst.device().is_cpu()) {
    dst.copy_(src.device().is_cpu() ? src : src.to(Device::cpu()));
    return;
  }
#ifdef STRATA_WITH_CUDA
  Tensor host = src.device().is_cpu() ? src : src.to(Device::cpu());
  Tensor s = host.to(dst.dtype()).contiguous().to(dst.device());
  if (dst.nbytes() > 0)
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), s.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice,
                                      cuda::compute_stream()));
#endif
}

void check_options(const AdamOptions& o) {
  STRATA_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1)
      << "Adam: betas must lie in [0, 1), got (" << o.beta1 << ", " << o.beta2 << ")";
  STRATA_CHECK(o.eps >= 0 && std::isfinite(o.eps)) << "Adam: eps must be finite and >= 0, got " << o.eps;
  STRATA_CHECK(o.weight_decay >= 0 && std::isfinite(o.weight_decay))
      << "Adam: weight_decay must be finite and >= 0, got " << o.weight_decay;
}

}  // namespace

Adam::Adam(NamedTensors params, AdamOptions options) : params_(std::move(params)), options_(options) {
  check_options(options_);
  std::set<std::string> names;
  for (const auto& [name, p] : params_) {
    STRATA_CHECK(!name.empty()) << "Adam: a parameter has an empty name";
    STRATA_CHECK(names.insert(name).second) << "Adam: parameter '" << name << "' is listed twice";
    STRATA_CHECK(p.defined()) << "Adam: parameter '" << name << "' is undefined";
#ifndef STRATA_WITH_CUDA
    STRATA_CHECK(p.device().is_cpu()) << "Adam: parameter '" << name << "' is on " << p.device().str()
                                      << "; this update needs the CUDA backend";
#endif
    STRATA_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::F64)
        << "Adam: parameter '" << name << "' is " << dtype_name(p.dtype())
        << "; keep f32 master weights and give Adam those";
    exp_avg_.push_back(zero_state(p));
    exp_avg_sq_.push_back(zero_state(p));
    steps_.push_back(0);
  }
}

void Adam::step(double lr) {
  STRATA_CHECK(std::isfinite(lr) && lr >= 0) << "Adam::step: learning rate must be finite and >= 0, got " << lr;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    STRATA_CHECK(g.shape() == p.shape()) << "Adam::step: gradient " << g.str() << " of parameter '" << name
                                         << "' does not match " << p.str();
    STRATA_CHECK(g.device() == p.device()) << "Adam::step: gradient of parameter '" << name << "' is on "
                                           << g.device().str() << ", the parameter on " << p.device().str();
    STRATA_CHECK(is_floating(g.dtype())) << "Adam::step: gradient of parameter '" << name << "' is "
                                         << dtype_name(g.dtype());
    const int64_t t = ++steps_[i];
    const double bc1 = 1.0 - std::pow(options_.beta1, double(t));
    const double bc2 = 1.0 - std::pow(options_.beta2, double(t));
    const double step_size = lr * std::sqrt(bc2) / bc1;
#ifdef STRATA_WITH_CUDA
    if (p.device().is_cuda()) {  // one fused kernel; a 16-bit gradient is widened per element there
      backend::cuda::adam_step(p, g, exp_avg_[i], exp_avg_sq_[i],
                               {options_.beta1, 1.0 - options_.beta1, options_.beta2, 1.0 - options_.beta2,
                                options_.eps, -options_.weight_decay * lr, -step_size});
      continue;
    }
#endif
    if (g.dtype() != p.dtype()) g = g.to(p.dtype());
    dispatch_float(p.dtype(), "Adam::step", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const AdamCoef<T> c{T(options_.beta1),        T(1.0 - options_.beta1), T(options_.beta2),
                          T(1.0 - options_.beta2),  T(options_.eps),         T(-options_.weight_decay * lr),
                          T(-step_size)};
      T* m = exp_avg_[i].data<T>();
      T* v = exp_avg_sq_[i].data<T>();
      const int64_t n = p.numel();
      if (p.is_contiguous() && g.is_contiguous()) {
        T* pp = p.data<T>();
        const T* gp = g.data<T>();
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
        for (int64_t k = 0; k < n; ++k) adam_element(pp[k], gp[k], m[k], v[k], c);
        return;
      }
      // Views: walk parameter and gradient through their strides; the state is contiguous.
      T* pbase = static_cast<T*>(p.impl().storage->data());
      const T* gbase = static_cast<const T*>(g.impl().storage->data());
      const Strides& ms = exp_avg_[i].strides();
      for_each_run<3>(p.shape(), {p.strides().data(), g.strides().data(), ms.data()}, {p.offset(), g.offset(), 0},
                      [&](const StridedRun<3>& r) {
                        for (int64_t k = 0; k < r.length; ++k) {
                          int64_t s = r.offset[2] + k * r.stride[2];
                          adam_element(pbase[r.offset[0] + k * r.stride[0]], gbase[r.offset[1] + k * r.stride[1]],
                                       m[s], v[s], c);
                        }
                      });
    });
  }
}

void Adam::zero_grad() {
  for (auto& kv : params_) kv.second.zero_grad();
}

NamedTensors Adam::state_dict() const {
  NamedTensors out;
  out.reserve(3 * params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].first;
    out.emplace_back(name + ".exp_avg", exp_avg_[i]);
    out.emplace_back(name + ".exp_avg_sq", exp_avg_sq_[i]);
    out.emplace_back(name + ".step", Tensor::scalar(double(steps_[i]), DType::I64));
  }
  return out;
}

void Adam::load_state_dict(const NamedTensors& state) {
  std::map<std::string, Tensor> by_name;
  for (const auto& [name, t] : state) {
    STRATA_CHECK(by_name.emplace(name, t).second) << "Adam::load_state_dict: entry '" << name << "' appears twice";
    STRATA_CHECK(t.defined()) << "Adam::load_state_dict: entry '" << name << "' is undefined";
  }
  std::vector<int64_t> steps(params_.size());
  std::set<std::string> used;
  auto find = [&](const std::string& param, const char* suffix) -> const Tensor& {
    std::string key = param + suffix;
    auto it = by_name.find(key);
    STRATA_CHECK(it != by_name.end()) << "Adam::load_state_dict: no '" << key << "' for parameter '" << param << "'";
    used.insert(key);
    return it->second;
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      const Tensor& t = find(name, suffix);
      STRATA_CHECK(t.shape() == p.shape() && is_floating(t.dtype()))
          << "Adam::load_state_dict: '" << name << suffix << "' is " << t.str() << " but parameter '" << name
          << "' is " << p.str();
    }
    const Tensor& s = find(name, ".step");
    STRATA_CHECK(s.numel() == 1 && is_integer(s.dtype()) && s.item() >= 0)
        << "Adam::load_state_dict: '" << name << ".step' must be a non-negative integer scalar, got " << s.str();
    steps[i] = int64_t(s.item());
  }
  for (const auto& kv : by_name)
    STRATA_CHECK(used.count(kv.first)) << "Adam::load_state_dict: unexpected entry '" << kv.first
                                       << "' (no such parameter)";
  // Everything checked: now overwrite.
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].first;
    load_into(exp_avg_[i], by_name.at(name + ".exp_avg"));
    load_into(exp_avg_sq_[i], by_name.at(name + ".exp_avg_sq"));
    steps_[i] = steps[i];
  }
}

}  // namespace strata::train
