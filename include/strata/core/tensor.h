// Tensor: a strided view (shape, strides, storage offset, dtype) over a shared
// Storage, plus the autograd fields. Copying a Tensor copies the handle, not
// the data. The member view methods (reshape, transpose, slice, ...) are raw:
// they share storage and are not recorded by autograd; on a tensor that takes
// part in autograd they refuse with an error pointing at the differentiable
// free functions in strata/autograd/ops.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/core/device.h"
#include "strata/core/dtype.h"
#include "strata/core/error.h"
#include "strata/core/shape.h"
#include "strata/core/storage.h"

namespace strata {

namespace autograd {
class Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;  // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<autograd::Node> grad_fn;  // set on results of recorded ops
  std::shared_ptr<TensorImpl> grad;         // accumulated gradient of a leaf
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation (contiguous, CPU unless a device is given)
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::F32);
  // 0, 1, ..., n-1
  static Tensor arange(int64_t n, DType dtype = DType::I64);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  // Deterministic random tensors from a Philox stream (seed, offset).
  static Tensor uniform(const Shape& shape, uint64_t seed, uint64_t offset = 0, double lo = 0.0,
                        double hi = 1.0, DType dtype = DType::F32);
  static Tensor normal(const Shape& shape, uint64_t seed, uint64_t offset = 0, double mean = 0.0,
                       double stddev = 1.0, DType dtype = DType::F32);

  // ---- metadata
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return int64_t(impl().shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  std::string str() const;  // "f32[2, 3] cpu"

  // ---- data access (CPU; checks the dtype)
  template <class T>
  T* data() const;
  void* raw_data() const;  // pointer to element 0 of the view
  double item() const;     // single-element tensor as double
  template <class T>
  std::vector<T> to_vector() const;  // row-major copy of the view

  // ---- raw views (share storage; see the header comment)
  Tensor view(const Shape& shape) const;     // needs a compatible layout; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view when possible, else contiguous copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops the dim
  Tensor expand(const Shape& shape) const;          // broadcast size-1 dims (stride 0)
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor contiguous() const;  // itself when already contiguous, else a copy
  Tensor clone() const;       // always a contiguous copy
  Tensor to(DType dtype) const;  // cast (copy); itself when already that dtype
  // Copy to another device (contiguous, same dtype); itself when already there.
  Tensor to(Device device) const;
  // Copies src (same shape; any dtype/strides) into this view, element by element.
  void copy_(const Tensor& src) const;
  void fill_(double value) const;

  // ---- autograd
  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf as trainable; its gradient accumulates in grad().
  Tensor& set_requires_grad(bool on = true);
  // Accumulated gradient (undefined until a backward reaches this leaf).
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  void zero_grad() const;  // drops the gradient
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  // True when ops on this tensor would be recorded now.
  bool needs_grad() const;
  // Same data, cut from the graph.
  Tensor detach() const;
  // Runs reverse-mode autodiff from this tensor (defined in autograd/engine.cpp).
  void backward(const Tensor& grad_output = Tensor()) const;

  TensorImpl& impl() const {
    STRATA_CHECK(impl_ != nullptr) << "use of an undefined tensor";
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  void check_raw_view(const char* op) const;
  std::shared_ptr<TensorImpl> impl_;
};

// Makes a tensor with the given layout over existing storage (used by views and backends).
Tensor make_view(const Tensor& base, const Shape& shape, const Strides& strides, int64_t offset);

template <class T>
T* Tensor::data() const {
  STRATA_CHECK(dtype() == DTypeOf<T>::value)
      << "Tensor::data: tensor is " << dtype_name(dtype()) << ", asked for " << dtype_name(DTypeOf<T>::value);
  return static_cast<T*>(impl().storage->data()) + impl().offset;
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  STRATA_CHECK(int64_t(values.size()) == shape_numel(shape))
      << "Tensor::from_vector: " << values.size() << " values for shape " << shape_str(shape);
  Tensor t = empty(shape, DTypeOf<T>::value);
  T* p = t.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return t;
}

}  // namespace strata
