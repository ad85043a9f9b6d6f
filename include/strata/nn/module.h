// Module: the parameter registry every layer derives from. Parameters get
// stable dotted names from the registration tree
// ("encoder.layers.1.self_attn.q_proj.weight"), which checkpoints and the
// PyTorch reference use. Initialisation is separate from construction: each
// parameter registers an InitSpec, and init_parameters(seed) draws it from a
// Philox stream keyed by (seed, hash of the full name), so values do not
// depend on construction order, rank or world size.
//
// Device placement: parameters are created on the CPU (initialised and
// loaded there) and moved with to(device), in place: every handle a layer
// holds keeps pointing at the moved tensor. Tensors a module caches that are
// not parameters (position tables) are registered as buffers and move too.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "strata/core/philox.h"
#include "strata/core/tensor.h"

namespace strata::nn {

struct InitSpec {
  enum Kind { Zeros, Ones, Uniform, Normal, XavierUniform } kind = Zeros;
  double a = 0;  // Uniform: bound; Normal: stddev; XavierUniform: gain
  int64_t zero_row = -1;  // a row set to zero after drawing (embedding padding row)
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct AuxLosses;  // MoE gate/CMR losses and routing statistics (moe module)

// What a forward pass needs besides its inputs.
struct ForwardContext {
  bool training = false;
  Generator* rng = nullptr;  // dropout streams, handed out in forward order
  AuxLosses* aux = nullptr;  // where MoE blocks add their losses; null for dense models
  PhiloxStream next_stream() const;
};

class Module {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  // Draws every parameter from its InitSpec (see the header comment); on the
  // host, then copied to a parameter's device, so every device gets the same values.
  void init_parameters(uint64_t seed);
  // Copies values by name (from any device, converting the dtype); every
  // parameter must be present with its shape.
  void load_parameters(const NamedTensors& values, const std::string& source);
  void zero_grad();

  // Moves every parameter (with its gradient, if any) and every buffer of
  // this module tree to `device`, in place: each TensorImpl gets new storage
  // on the device with its shape, strides, offset, dtype and requires_grad
  // unchanged, so the handles layers hold see the moved tensor. Tensors that
  // shared one storage (views into a stacked block) still share one after
  // the move. No-op for tensors already there.
  void to(Device device);
  // Where the parameters live (the first parameter's device; CPU when the
  // tree has none).
  Device device() const;
  // Non-parameter tensors of the tree (name, tensor), e.g. "positions".
  NamedTensors named_buffers() const;

 protected:
  Tensor register_parameter(const std::string& name, const Shape& shape, InitSpec init);
  // An empty name merges the child's parameters into this module's namespace
  // (the FFN block's fc1/fc2 appear as "layers.1.fc1.weight", as in fairseq).
  void register_module(const std::string& name, Module* child);
  // A tensor the module computes with that is not trained (no gradient, not
  // in checkpoints) but must follow the parameters to their device.
  void register_buffer(const std::string& name, const Tensor& t);

 private:
  struct Param {
    std::string name;
    Tensor value;
    InitSpec init;
  };
  void collect(const std::string& prefix, std::vector<std::pair<std::string, const Param*>>& out) const;
  void collect_buffers(const std::string& prefix, NamedTensors& out) const;
  std::vector<Param> params_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
};

// Initialises one tensor in place from a spec and a stream.
void init_tensor(const Tensor& t, const InitSpec& spec, const PhiloxStream& stream);

}  // namespace strata::nn
