// The autograd tape. Every recorded op creates a Node that remembers its
// inputs and a backward closure; the node's sequence number is its position on
// the tape, so walking nodes in decreasing sequence order visits every node
// after all nodes that consume its output (define-by-run reverse mode).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "strata/core/grad_mode.h"
#include "strata/core/tensor.h"

namespace strata::autograd {

// Given dL/d(output), returns dL/d(input_k) for every input, in order. An
// undefined tensor means "no gradient" for that input. Runs under NoGradGuard.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

class Node {
 public:
  Node(const char* name, std::vector<Tensor> inputs, BackwardFn fn);
  const char* name() const { return name_; }
  uint64_t sequence() const { return sequence_; }
  const std::vector<Tensor>& inputs() const { return inputs_; }
  // Calls the closure once; the closure (and the tensors it saved) is freed after.
  std::vector<Tensor> apply(const Tensor& grad_output);
  bool released() const { return !fn_; }

 private:
  const char* name_;
  uint64_t sequence_;
  std::vector<Tensor> inputs_;
  BackwardFn fn_;
};

// True when any input takes part in autograd and recording is on.
bool any_needs_grad(const std::vector<Tensor>& inputs);

// Attaches a node for op `name` to `out` when any input needs a gradient, and
// returns `out`. The closure must capture detached tensors (x.detach()), never
// `out` itself, so the graph holds no reference cycle.
Tensor record(const char* name, Tensor out, std::vector<Tensor> inputs, BackwardFn fn);

// Called with a leaf (a tensor that requires grad and has no grad_fn) as soon
// as this backward has added its last contribution to the leaf's gradient:
// every recorded node that takes the leaf as an input has run (or has been
// passed over for lack of a gradient). Leaves the backward never reaches are
// not reported. The data-parallel gradient reduction starts a bucket's
// all-reduce from here while the rest of the backward runs
// (dist::GradientReducer).
using LeafReadyFn = std::function<void(const Tensor& leaf)>;

// Runs reverse mode from `root` with seed gradient `grad_output` (ones for a
// single-element root when undefined). Leaves that require grad accumulate.
void run_backward(const Tensor& root, const Tensor& grad_output, const LeafReadyFn& on_leaf_ready = {});

}  // namespace strata::autograd
