#include "strata/core/tensor.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "strata/core/dispatch.h"
#include "strata/core/grad_mode.h"
#include "strata/core/philox.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/context.h"
#include "strata/backend/cuda/copy.h"
#endif

namespace strata {

namespace {
#ifndef STRATA_WITH_CUDA
void require_cpu(const Tensor& t, const char* op) {
  STRATA_CHECK(t.device().is_cpu()) << op << ": tensor on " << t.device().str()
                                    << " needs the CUDA backend (build with CUDA=1)";
}
#endif
}  // namespace

// ---------------------------------------------------------------- devices

Tensor Tensor::to(Device device) const {
  if (this->device() == device) return *this;
#ifdef STRATA_WITH_CUDA
  // A contiguous same-dtype copy; copy_ stages a non-contiguous source (a GPU
  // view too) on its own device, then makes one transfer.
  Tensor out = empty(shape(), dtype(), device);
  out.copy_(*this);
  return out;
#else
  STRATA_FAIL() << "Tensor::to(" << device.str() << "): this build has no CUDA backend (build with CUDA=1)";
  return *this;
#endif
}

#ifdef STRATA_WITH_CUDA
namespace {
// copy_ when at least one side is on a GPU. Same device: one kernel (cast and
// strides in one pass). Different devices: a contiguous same-dtype staging
// copy on the source side, one transfer on the compute stream, then the cast
// and strides on the destination side (skipped when dst can take the bytes as
// they are). Transfers to or from the host wait for the GPU, so the host
// buffers are free to reuse when this returns.
void copy_with_gpu(const Tensor& dst, const Tensor& src) {
  if (dst.numel() == 0) return;
  if (dst.device() == src.device()) {
    backend::cuda::copy_(dst, src);
    return;
  }
  const Tensor s = src.contiguous();
  const bool direct = dst.dtype() == s.dtype() && dst.is_contiguous();
  const Tensor landing = direct ? dst : Tensor::empty(s.shape(), s.dtype(), dst.device());
  cudaStream_t stream = cuda::compute_stream();
  if (src.device().is_cpu()) {
    STRATA_CUDA_CHECK(cudaMemcpyAsync(landing.raw_data(), s.raw_data(), s.nbytes(), cudaMemcpyHostToDevice, stream));
    cuda::synchronize();
    if (!direct) backend::cuda::copy_(dst, landing);
  } else if (dst.device().is_cpu()) {
    STRATA_CUDA_CHECK(cudaMemcpyAsync(landing.raw_data(), s.raw_data(), s.nbytes(), cudaMemcpyDeviceToHost, stream));
    cuda::synchronize();
    if (!direct) dst.copy_(landing);  // CPU cast/strides
  } else {  // GPU -> another GPU
    STRATA_CUDA_CHECK(cudaMemcpyPeerAsync(landing.raw_data(), dst.device().index, s.raw_data(), s.device().index,
                                          s.nbytes(), stream));
    if (!direct) backend::cuda::copy_(dst, landing);
  }
}
}  // namespace
#endif

// ---------------------------------------------------------------- creation

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    STRATA_CHECK(d >= 0) << "Tensor::empty: negative size in shape " << shape_str(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::scalar(double value, DType dtype) { return full({}, value, dtype); }

// arange, uniform and normal (like scalar and from_vector) build CPU tensors;
// callers move them with to(Device). Philox gives the same numbers on any
// device, so a GPU generator can be added later without changing results.
Tensor Tensor::arange(int64_t n, DType dtype) {
  Tensor t = empty({n}, dtype);
  dispatch_dtype(dtype, "arange", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = from_compute<T>(double(i));
  });
  return t;
}

Tensor Tensor::uniform(const Shape& shape, uint64_t seed, uint64_t offset, double lo, double hi, DType dtype) {
  Tensor t = empty(shape, DType::F32);
  PhiloxStream s{seed, offset};
  float* p = t.data<float>();
  const float a = float(lo), w = float(hi - lo);
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = a + w * s.uniform(uint64_t(i));
  return t.to(dtype);
}

Tensor Tensor::normal(const Shape& shape, uint64_t seed, uint64_t offset, double mean, double stddev,
                      DType dtype) {
  Tensor t = empty(shape, DType::F32);
  PhiloxStream s{seed, offset};
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(mean) + float(stddev) * s.normal(uint64_t(i));
  return t.to(dtype);
}

// ---------------------------------------------------------------- metadata

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "Tensor::size")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  std::ostringstream o;
  o << dtype_name(dtype()) << shape_str(shape()) << " " << device().str();
  return o.str();
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl().storage->data()) + impl().offset * int64_t(dtype_size(dtype()));
}

double Tensor::item() const {
  STRATA_CHECK(numel() == 1) << "Tensor::item: tensor " << str() << " has " << numel() << " elements, expected 1";
  // A GPU value is copied to the host first (this waits for the GPU).
  const Tensor h = device().is_cpu() ? *this : to(Device::cpu());
  return dispatch_dtype(h.dtype(), "item", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return double(to_compute(*static_cast<const T*>(h.raw_data())));
  });
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  // GPU data is copied to the host as it is stored, then cast there, so the
  // values are exactly those of the CPU path.
  const Tensor h = device().is_cpu() ? *this : to(Device::cpu());
  Tensor c = h.to(DTypeOf<T>::value).contiguous();
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

// ---------------------------------------------------------------- views

Tensor make_view(const Tensor& base, const Shape& shape, const Strides& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl().storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(impl);
}

bool Tensor::needs_grad() const { return GradMode::enabled() && (requires_grad() || grad_fn() != nullptr); }

void Tensor::check_raw_view(const char* op) const {
  STRATA_CHECK(!needs_grad()) << "Tensor::" << op << " is a raw view and would cut the gradient of " << str()
                              << "; use strata::" << op << " from strata/autograd/ops.h (or detach() first)";
}

namespace {
Shape infer_shape(const Shape& shape, int64_t numel, const char* op) {
  Shape out = shape;
  int64_t known = 1, neg = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      STRATA_CHECK(neg < 0) << op << ": more than one -1 in shape " << shape_str(shape);
      neg = int64_t(i);
    } else {
      STRATA_CHECK(out[i] >= 0) << op << ": invalid size in shape " << shape_str(shape);
      known *= out[i];
    }
  }
  if (neg >= 0) {
    STRATA_CHECK(known > 0 && numel % known == 0)
        << op << ": cannot infer -1 in shape " << shape_str(shape) << " for " << numel << " elements";
    out[neg] = numel / known;
  }
  STRATA_CHECK(shape_numel(out) == numel)
      << op << ": shape " << shape_str(shape) << " does not hold " << numel << " elements";
  return out;
}

// Strides for viewing `t` as `shape` without copying, or empty when impossible.
bool view_strides(const Tensor& t, const Shape& shape, Strides& out) {
  if (t.is_contiguous() || t.numel() == 0) {
    out = contiguous_strides(shape);
    return true;
  }
  // General case (as in numpy's attempt_nocopy_reshape): match groups of old
  // dims whose product equals groups of new dims, each old group contiguous.
  const Shape& os = t.shape();
  const Strides& ost = t.strides();
  Shape oshape;
  Strides ostr;
  for (size_t i = 0; i < os.size(); ++i)
    if (os[i] != 1) oshape.push_back(os[i]), ostr.push_back(ost[i]);
  out.assign(shape.size(), 0);
  size_t oi = 0, ni = 0;
  const size_t on = oshape.size(), nn = shape.size();
  while (oi < on && ni < nn) {
    int64_t np = shape[ni], op = oshape[oi];
    size_t oj = oi + 1, nj = ni + 1;
    while (np != op) {
      if (np < op) np *= shape[nj++];
      else op *= oshape[oj++];
    }
    for (size_t k = oi; k + 1 < oj; ++k)
      if (ostr[k] != ostr[k + 1] * oshape[k + 1]) return false;
    out[nj - 1] = ostr[oj - 1];
    for (size_t k = nj - 1; k > ni; --k) out[k - 1] = out[k] * shape[k];
    oi = oj;
    ni = nj;
  }
  for (; ni < nn; ++ni) out[ni] = 1;  // trailing size-1 dims
  // size-1 dims between groups may have been left 0: give them any stride
  for (size_t i = 0; i < nn; ++i)
    if (shape[i] == 1 && out[i] == 0) out[i] = 1;
  return true;
}
}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  check_raw_view("view");
  Shape s = infer_shape(shape, numel(), "view");
  Strides st;
  STRATA_CHECK(view_strides(*this, s, st))
      << "view: cannot view " << str() << " (strides " << shape_str(strides()) << ") as " << shape_str(s)
      << " without a copy; use reshape";
  return make_view(*this, s, st, offset());
}

Tensor Tensor::reshape(const Shape& shape) const {
  check_raw_view("reshape");
  Shape s = infer_shape(shape, numel(), "reshape");
  Strides st;
  if (view_strides(*this, s, st)) return make_view(*this, s, st, offset());
  return contiguous().view(s);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  check_raw_view("transpose");
  int64_t a = wrap_dim(d0, dim(), "transpose"), b = wrap_dim(d1, dim(), "transpose");
  Shape s = shape();
  Strides st = strides();
  std::swap(s[a], s[b]);
  std::swap(st[a], st[b]);
  return make_view(*this, s, st, offset());
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  check_raw_view("permute");
  STRATA_CHECK(int64_t(dims.size()) == dim())
      << "permute: " << dims.size() << " axes given for a tensor of rank " << dim();
  Shape s(dims.size());
  Strides st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    STRATA_CHECK(!seen[d]) << "permute: axis " << dims[i] << " repeated";
    seen[d] = true;
    s[i] = shape()[d];
    st[i] = strides()[d];
  }
  return make_view(*this, s, st, offset());
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  check_raw_view("slice");
  int64_t a = wrap_dim(d, dim(), "slice");
  int64_t n = shape()[a];
  STRATA_CHECK(step > 0) << "slice: step must be positive, got " << step;
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::max<int64_t>(0, std::min(start, n));
  end = std::max<int64_t>(start, std::min(end, n));
  Shape s = shape();
  Strides st = strides();
  s[a] = (end - start + step - 1) / step;
  st[a] = strides()[a] * step;
  return make_view(*this, s, st, offset() + start * strides()[a]);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  check_raw_view("narrow");
  int64_t a = wrap_dim(d, dim(), "narrow");
  STRATA_CHECK(start >= 0 && length >= 0 && start + length <= shape()[a])
      << "narrow: range [" << start << ", " << start + length << ") out of bounds for axis " << d << " of size "
      << shape()[a];
  return slice(a, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  check_raw_view("select");
  int64_t a = wrap_dim(d, dim(), "select");
  int64_t n = shape()[a];
  if (index < 0) index += n;
  STRATA_CHECK(index >= 0 && index < n) << "select: index " << index << " out of range for axis of size " << n;
  Shape s = shape();
  Strides st = strides();
  int64_t off = offset() + index * st[a];
  s.erase(s.begin() + a);
  st.erase(st.begin() + a);
  return make_view(*this, s, st, off);
}

Tensor Tensor::expand(const Shape& shape) const {
  check_raw_view("expand");
  STRATA_CHECK(shape.size() >= size_t(dim()))
      << "expand: cannot expand " << shape_str(this->shape()) << " to fewer dims " << shape_str(shape);
  size_t lead = shape.size() - size_t(dim());
  Strides st(shape.size(), 0);
  Shape s = shape;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      STRATA_CHECK(shape[i] >= 0) << "expand: invalid target " << shape_str(shape);
      continue;
    }
    int64_t cur = this->shape()[i - lead];
    if (shape[i] == -1) s[i] = cur;
    if (cur == s[i]) {
      st[i] = strides()[i - lead];
    } else {
      STRATA_CHECK(cur == 1) << "expand: cannot expand " << shape_str(this->shape()) << " to " << shape_str(shape);
      st[i] = 0;
    }
  }
  return make_view(*this, s, st, offset());
}

Tensor Tensor::unsqueeze(int64_t d) const {
  check_raw_view("unsqueeze");
  int64_t a = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape();
  Strides st = strides();
  int64_t stride = a < dim() ? strides()[a] * shape()[a] : 1;
  s.insert(s.begin() + a, 1);
  st.insert(st.begin() + a, stride);
  return make_view(*this, s, st, offset());
}

Tensor Tensor::squeeze(int64_t d) const {
  check_raw_view("squeeze");
  int64_t a = wrap_dim(d, dim(), "squeeze");
  STRATA_CHECK(shape()[a] == 1) << "squeeze: axis " << d << " has size " << shape()[a] << ", expected 1";
  Shape s = shape();
  Strides st = strides();
  s.erase(s.begin() + a);
  st.erase(st.begin() + a);
  return make_view(*this, s, st, offset());
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), t, device());
  out.copy_(*this);
  return out;
}

void Tensor::copy_(const Tensor& src) const {
  STRATA_CHECK(src.shape() == shape()) << "copy_: source " << src.str() << " does not match destination " << str();
  if (!device().is_cpu() || !src.device().is_cpu()) {
#ifdef STRATA_WITH_CUDA
    copy_with_gpu(*this, src);
    return;
#else
    require_cpu(*this, "copy_");
    require_cpu(src, "copy_");
#endif
  }
  char* dst_base = static_cast<char*>(impl().storage->data());
  const char* src_base = static_cast<const char*>(src.impl().storage->data());
  if (dtype() == src.dtype() && is_contiguous() && src.is_contiguous()) {
    size_t es = dtype_size(dtype());
    std::memmove(dst_base + offset() * es, src_base + src.offset() * es, size_t(numel()) * es);
    return;
  }
  dispatch_dtype(dtype(), "copy_", [&](auto dtag) {
    using D = typename decltype(dtag)::type;
    dispatch_dtype(src.dtype(), "copy_", [&](auto stag) {
      using S = typename decltype(stag)::type;
      D* d = reinterpret_cast<D*>(dst_base);
      const S* s = reinterpret_cast<const S*>(src_base);
      for_each_run<2>(shape(), {strides().data(), src.strides().data()}, {offset(), src.offset()},
                      [&](const StridedRun<2>& r) {
                        D* dp = d + r.offset[0];
                        const S* sp = s + r.offset[1];
                        for (int64_t i = 0; i < r.length; ++i)
                          dp[i * r.stride[0]] = from_compute<D>(to_compute(sp[i * r.stride[1]]));
                      });
    });
  });
}

void Tensor::fill_(double value) const {
  if (!device().is_cpu()) {
#ifdef STRATA_WITH_CUDA
    backend::cuda::fill_(*this, value);
    return;
#else
    require_cpu(*this, "fill_");
#endif
  }
  dispatch_dtype(dtype(), "fill_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T v = from_compute<T>(value);
    T* base = static_cast<T*>(impl().storage->data());
    for_each_run<1>(shape(), {strides().data()}, {offset()}, [&](const StridedRun<1>& r) {
      T* p = base + r.offset[0];
      for (int64_t i = 0; i < r.length; ++i) p[i * r.stride[0]] = v;
    });
  });
}

// ---------------------------------------------------------------- autograd fields

Tensor& Tensor::set_requires_grad(bool on) {
  STRATA_CHECK(!on || is_floating(dtype())) << "set_requires_grad: only floating tensors can require grad, got "
                                            << str();
  STRATA_CHECK(grad_fn() == nullptr) << "set_requires_grad: only leaf tensors can be marked; " << str()
                                     << " is the result of an op";
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) const {
  if (!g.defined()) {
    impl().grad.reset();
    return;
  }
  STRATA_CHECK(g.shape() == shape()) << "set_grad: gradient " << g.str() << " does not match " << str();
  impl().grad = g.impl_ptr();
}

void Tensor::zero_grad() const { impl().grad.reset(); }

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

}  // namespace strata
