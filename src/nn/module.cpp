#include "strata/nn/module.h"

#include <cmath>
#include <unordered_map>

#include "strata/core/grad_mode.h"

namespace strata::nn {

PhiloxStream ForwardContext::next_stream() const {
  STRATA_CHECK(rng != nullptr) << "forward: training mode needs a random generator in the ForwardContext";
  return rng->next_stream();
}

Tensor Module::register_parameter(const std::string& name, const Shape& shape, InitSpec init) {
  for (const Param& p : params_) STRATA_CHECK(p.name != name) << "register_parameter: duplicate name '" << name << "'";
  Tensor t = Tensor::zeros(shape, DType::F32);
  t.set_requires_grad(true);
  params_.push_back({name, t, init});
  return t;
}

void Module::register_module(const std::string& name, Module* child) { children_.emplace_back(name, child); }

void Module::register_buffer(const std::string& name, const Tensor& t) {
  STRATA_CHECK(t.defined()) << "register_buffer: '" << name << "' is undefined";
  for (const auto& b : buffers_) STRATA_CHECK(b.first != name) << "register_buffer: duplicate name '" << name << "'";
  buffers_.emplace_back(name, t);
}

void Module::collect_buffers(const std::string& prefix, NamedTensors& out) const {
  for (const auto& [name, t] : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect_buffers(name.empty() ? prefix : prefix + name + ".", out);
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect_buffers("", out);
  return out;
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, const Param*>>& out) const {
  for (const Param& p : params_) out.emplace_back(prefix + p.name, &p);
  for (const auto& [name, child] : children_) child->collect(name.empty() ? prefix : prefix + name + ".", out);
}

NamedTensors Module::named_parameters() const {
  std::vector<std::pair<std::string, const Param*>> all;
  collect("", all);
  NamedTensors out;
  out.reserve(all.size());
  for (auto& [n, p] : all) out.emplace_back(n, p->value);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

namespace {
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}
}  // namespace

void init_tensor(const Tensor& t, const InitSpec& spec, const PhiloxStream& stream) {
  NoGradGuard ng;
  STRATA_CHECK(t.dtype() == DType::F32 && t.is_contiguous() && t.device().is_cpu())
      << "init_tensor: contiguous f32 CPU tensor expected, got " << t.str();
  float* p = t.data<float>();
  const int64_t n = t.numel();
  switch (spec.kind) {
    case InitSpec::Zeros: t.fill_(0); break;
    case InitSpec::Ones: t.fill_(1); break;
    case InitSpec::Uniform:
      for (int64_t i = 0; i < n; ++i) p[i] = float(spec.a * (2.0 * stream.uniform(uint64_t(i)) - 1.0));
      break;
    case InitSpec::Normal:
      for (int64_t i = 0; i < n; ++i) p[i] = float(spec.a) * stream.normal(uint64_t(i));
      break;
    case InitSpec::XavierUniform: {
      STRATA_CHECK(t.dim() == 2) << "init_tensor: xavier_uniform needs a matrix, got " << t.str();
      double fan_out = double(t.size(0)), fan_in = double(t.size(1));
      double bound = spec.a * std::sqrt(6.0 / (fan_in + fan_out));
      for (int64_t i = 0; i < n; ++i) p[i] = float(bound * (2.0 * stream.uniform(uint64_t(i)) - 1.0));
      break;
    }
  }
  if (spec.zero_row >= 0) t.select(0, spec.zero_row).fill_(0);
}

void Module::init_parameters(uint64_t seed) {
  std::vector<std::pair<std::string, const Param*>> all;
  collect("", all);
  for (auto& [name, p] : all) {
    const PhiloxStream stream{seed, fnv1a(name)};
    if (p->value.device().is_cpu()) {
      init_tensor(p->value, p->init, stream);
      continue;
    }
    // Drawn on the host (the same numbers as a CPU model), then copied over.
    Tensor host = Tensor::zeros(p->value.shape(), p->value.dtype());
    init_tensor(host, p->init, stream);
    NoGradGuard ng;
    p->value.copy_(host);
  }
}

void Module::load_parameters(const NamedTensors& values, const std::string& source) {
  std::unordered_map<std::string, Tensor> by_name(values.begin(), values.end());
  NoGradGuard ng;
  for (auto& [name, t] : named_parameters()) {
    auto it = by_name.find(name);
    STRATA_CHECK(it != by_name.end()) << source << ": parameter '" << name << "' is missing";
    STRATA_CHECK(it->second.shape() == t.shape())
        << source << ": parameter '" << name << "' has shape " << shape_str(it->second.shape()) << ", the model expects "
        << shape_str(t.shape());
    t.copy_(it->second);
  }
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) t.zero_grad();
}

namespace {
// A copy on `device` of the whole block `s` (read as `dtype` elements), so
// every view into the block keeps its offset and strides over the copy.
std::shared_ptr<Storage> moved_storage(const std::shared_ptr<Storage>& s, DType dtype, Device device) {
  const size_t es = dtype_size(dtype);
  STRATA_CHECK(s->nbytes() % es == 0) << "Module::to: a storage of " << s->nbytes() << " bytes does not hold whole "
                                      << dtype_name(dtype) << " elements";
  auto whole = std::make_shared<TensorImpl>();
  whole->storage = s;
  whole->shape = {int64_t(s->nbytes() / es)};
  whole->strides = {1};
  whole->dtype = dtype;
  return Tensor(whole).to(device).impl().storage;
}
}  // namespace

void Module::to(Device device) {
  NoGradGuard ng;
  std::vector<TensorImpl*> impls;
  std::vector<std::pair<std::string, const Param*>> params;
  collect("", params);
  for (auto& [name, p] : params) {
    impls.push_back(&p->value.impl());
    if (p->value.impl().grad) impls.push_back(p->value.impl().grad.get());
  }
  NamedTensors buffers;
  collect_buffers("", buffers);
  for (auto& [name, b] : buffers) impls.push_back(&b.impl());
  // One copy per source storage: parameters that are views of one stacked
  // block (the experts' weights) stay views of one block on the device. The
  // old storages are held until the end so no address is reused as a key.
  std::unordered_map<const Storage*, std::pair<std::shared_ptr<Storage>, std::shared_ptr<Storage>>> moved;
  for (TensorImpl* t : impls) {
    if (t->storage->device() == device) continue;
    auto it = moved.find(t->storage.get());
    if (it == moved.end())
      it = moved.emplace(t->storage.get(), std::make_pair(t->storage, moved_storage(t->storage, t->dtype, device))).first;
    t->storage = it->second.second;
  }
}

Device Module::device() const {
  std::vector<std::pair<std::string, const Param*>> params;
  collect("", params);
  if (!params.empty()) return params.front().second->value.device();
  NamedTensors buffers;
  collect_buffers("", buffers);
  return buffers.empty() ? Device::cpu() : buffers.front().second.device();
}

}  // namespace strata::nn
