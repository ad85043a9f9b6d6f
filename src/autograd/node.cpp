#include "strata/autograd/node.h"

#include <atomic>

namespace strata::autograd {

namespace {
std::atomic<uint64_t> g_sequence{0};
}

Node::Node(const char* name, std::vector<Tensor> inputs, BackwardFn fn)
    : name_(name), sequence_(g_sequence++), inputs_(std::move(inputs)), fn_(std::move(fn)) {}

std::vector<Tensor> Node::apply(const Tensor& grad_output) {
  STRATA_CHECK(fn_) << "backward: the graph through op '" << name_
                    << "' was already used by an earlier backward() and its saved tensors are freed";
  NoGradGuard guard;
  std::vector<Tensor> grads = fn_(grad_output);
  fn_ = nullptr;
  STRATA_CHECK(grads.size() == inputs_.size())
      << "backward of '" << name_ << "' returned " << grads.size() << " gradients for " << inputs_.size()
      << " inputs";
  return grads;
}

bool any_needs_grad(const std::vector<Tensor>& inputs) {
  if (!GradMode::enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.needs_grad()) return true;
  return false;
}

Tensor record(const char* name, Tensor out, std::vector<Tensor> inputs, BackwardFn fn) {
  if (!any_needs_grad(inputs)) return out;
  // `out` may alias an input's impl (an op that returned its input unchanged):
  // give it its own impl so attaching grad_fn does not rewrite the input.
  for (const Tensor& t : inputs)
    if (t.defined() && t.same(out)) out = out.detach();
  out.impl().grad_fn = std::make_shared<Node>(name, std::move(inputs), std::move(fn));
  return out;
}

}  // namespace strata::autograd
