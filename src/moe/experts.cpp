#include "strata/moe/experts.h"

#include <cmath>
#include <string>

#include "strata/autograd/node.h"
#include "strata/autograd/ops.h"
#include "strata/nn/transformer.h"

namespace strata::moe {

Tensor experts_forward(const Tensor& x, const ExpertWeights& w, double activation_dropout, double dropout,
                       const nn::ForwardContext& ctx) {
  STRATA_CHECK(x.dim() == 3 && x.size(0) == w.count() && x.size(2) == w.fc1_weight.size(2))
      << "moe experts: input " << x.str() << " for " << w.count() << " experts of weight " << w.fc1_weight.str();
  Tensor h = bmm(x, w.fc1_weight, false, true);  // [V, C, ffn]
  h = relu(h + unsqueeze(w.fc1_bias, 1));
  h = nn::maybe_dropout(h, activation_dropout, ctx);
  Tensor y = bmm(h, w.fc2_weight, false, true) + unsqueeze(w.fc2_bias, 1);  // [V, C, dim]
  return nn::maybe_dropout(y, dropout, ctx);
}

namespace {
const char* const kNames[4] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
}

ExpertBank::ExpertBank(int64_t first_global, int64_t count, int64_t dim, int64_t ffn_dim)
    : first_global_(first_global), count_(count), dim_(dim), ffn_(ffn_dim) {
  STRATA_CHECK(count > 0 && dim > 0 && ffn_dim > 0 && first_global >= 0)
      << "moe experts: " << count << " experts from id " << first_global << " of dim " << dim << ", ffn " << ffn_dim;
  const Shape shapes[4] = {{ffn_dim, dim}, {ffn_dim}, {dim, ffn_dim}, {dim}};
  // PyTorch's nn.Linear default init (kaiming_uniform a=sqrt 5 == U(+-1/sqrt(fan_in)), bias the same)
  const double bound[4] = {1 / std::sqrt(double(dim)), 1 / std::sqrt(double(dim)), 1 / std::sqrt(double(ffn_dim)),
                           1 / std::sqrt(double(ffn_dim))};
  for (int w = 0; w < 4; ++w) {
    Shape full = shapes[w];
    full.insert(full.begin(), count);
    storage_[w] = Tensor::zeros(full, DType::F32);
  }
  for (int64_t e = 0; e < count; ++e) {
    for (int w = 0; w < 4; ++w) {
      Tensor p = register_parameter(std::to_string(first_global + e) + "." + kNames[w], shapes[w],
                                    nn::InitSpec{nn::InitSpec::Uniform, bound[w]});
      // Re-point the parameter at its row of the stacked storage (a view).
      p.impl().storage = storage_[w].impl().storage;
      p.impl().offset = e * shape_numel(shapes[w]);
      params_[w].push_back(p);
    }
  }
}

Tensor ExpertBank::stacked(int which, int64_t first, int64_t count) const {
  const Tensor& full = storage_[which];
  const std::vector<Tensor>& ps = params_[which];
  std::vector<Tensor> inputs(ps.begin() + first, ps.begin() + first + count);
  const int64_t per = shape_numel(ps[0].shape());
  bool aliased = true;
  for (int64_t e = 0; e < count; ++e) {
    const TensorImpl& pi = inputs[size_t(e)].impl();
    aliased = aliased && pi.storage == full.impl().storage && pi.offset == (first + e) * per && pi.dtype == full.dtype();
  }
  if (!aliased) {
    // Someone replaced a parameter's storage (e.g. moved it to another
    // device): stack copies instead, which is always correct.
    std::vector<Tensor> rows;
    for (const Tensor& p : inputs) rows.push_back(unsqueeze(p, 0));
    return concat(rows, 0);
  }
  Shape s = full.shape();
  s[0] = count;
  Tensor view = make_view(full, s, contiguous_strides(s), first * per);
  return autograd::record("moe_expert_stack", view, inputs, [count](const Tensor& g) -> std::vector<Tensor> {
    std::vector<Tensor> out;
    out.reserve(size_t(count));
    for (int64_t e = 0; e < count; ++e) out.push_back(g.select(0, e));
    return out;
  });
}

ExpertWeights ExpertBank::range(int64_t first, int64_t count) const {
  STRATA_CHECK(first >= 0 && count > 0 && first + count <= count_)
      << "moe experts: range [" << first << ", " << first + count << ") outside " << count_ << " local experts";
  return {stacked(0, first, count), stacked(1, first, count), stacked(2, first, count), stacked(3, first, count)};
}

}  // namespace strata::moe
