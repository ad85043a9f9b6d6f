// Reverse-mode execution: collect the nodes reachable from the root, then
// apply them in decreasing tape order, summing gradients per node and into
// leaves.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "strata/autograd/node.h"
#include "strata/backend/accumulate.h"

namespace strata {

namespace autograd {

namespace {
// A gradient may be written in place only when it owns its storage outright
// and has no broadcast (stride-0) or gapped layout.
bool writable(const Tensor& t) { return t.is_contiguous() && t.impl().storage.use_count() == 1; }

void add_into(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) {
    slot = g;
  } else {
    if (!writable(slot)) slot = slot.clone();
    backend::accumulate_(slot, g);
  }
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_output, const LeafReadyFn& on_leaf_ready) {
  STRATA_CHECK(root.requires_grad() || root.grad_fn())
      << "backward: " << root.str() << " does not require grad (no recorded op produced it)";
  Tensor seed = grad_output;
  if (!seed.defined()) {
    STRATA_CHECK(root.numel() == 1) << "backward: a gradient must be given for non-scalar output " << root.str();
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  STRATA_CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype())
      << "backward: seed gradient " << seed.str() << " does not match output " << root.str();
  NoGradGuard no_grad;

  if (!root.grad_fn()) {  // backward on a leaf
    Tensor g = root.grad();
    add_into(g, seed.clone());
    root.set_grad(g);  // a leaf's gradient of itself
    if (on_leaf_ready) on_leaf_ready(root);
    return;
  }

  // collect reachable nodes
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack{root.grad_fn().get()};
  seen.insert(stack.back());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    order.push_back(n);
    for (const Tensor& in : n->inputs()) {
      if (!in.defined() || !in.grad_fn()) continue;
      Node* m = in.grad_fn().get();
      if (seen.insert(m).second) stack.push_back(m);
    }
  }
  std::sort(order.begin(), order.end(), [](Node* a, Node* b) { return a->sequence() > b->sequence(); });

  // For on_leaf_ready: how many reachable nodes still have to add to each
  // leaf (an input listed twice counts twice).
  std::unordered_map<const TensorImpl*, int64_t> leaf_uses;
  auto is_leaf = [](const Tensor& in) { return in.defined() && !in.grad_fn() && in.requires_grad(); };
  if (on_leaf_ready)
    for (Node* n : order)
      for (const Tensor& in : n->inputs())
        if (is_leaf(in)) ++leaf_uses[&in.impl()];
  auto node_done = [&](Node* n) {
    if (!on_leaf_ready) return;
    for (const Tensor& in : n->inputs())
      if (is_leaf(in) && --leaf_uses[&in.impl()] == 0) on_leaf_ready(in);
  };

  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = seed;
  for (Node* n : order) {
    auto it = grads.find(n);
    if (it == grads.end()) {  // reachable only through inputs that need no grad
      node_done(n);
      continue;
    }
    Tensor g = it->second;
    grads.erase(it);
    std::vector<Tensor> in_grads = n->apply(g);
    // A backward may hand the same tensor to two inputs (add's gradient is g
    // for both); accumulating in place into one slot would then change the
    // other, so later entries that alias an earlier one get their own copy.
    for (size_t k = 1; k < in_grads.size(); ++k)
      for (size_t j = 0; j < k; ++j)
        if (in_grads[k].defined() && in_grads[k].same(in_grads[j])) {
          in_grads[k] = in_grads[k].clone();
          break;
        }
    for (size_t k = 0; k < in_grads.size(); ++k) {
      const Tensor& in = n->inputs()[k];
      const Tensor& gk = in_grads[k];
      if (!gk.defined() || !in.defined()) continue;
      STRATA_CHECK(gk.shape() == in.shape())
          << "backward of '" << n->name() << "': gradient " << gk.str() << " for input " << k << " of shape "
          << shape_str(in.shape());
      if (in.grad_fn()) {
        add_into(grads[in.grad_fn().get()], gk);
      } else if (in.requires_grad()) {
        Tensor leaf_grad = in.grad();
        if (!leaf_grad.defined()) {
          in.set_grad(writable(gk) ? gk : gk.clone());
        } else {
          backend::accumulate_(leaf_grad, gk);
        }
      }
    }
    node_done(n);
  }
}

}  // namespace autograd

void Tensor::backward(const Tensor& grad_output) const { autograd::run_backward(*this, grad_output); }

}  // namespace strata
