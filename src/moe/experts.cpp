#include "strata/moe/experts.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "strata/autograd/node.h"
#include "strata/autograd/ops.h"
#include "strata/backend/elementwise.h"
#include "strata/core/dispatch.h"
#include "strata/core/strided.h"
#include "strata/nn/autocast.h"
#include "strata/nn/transformer.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/keyed_dropout.h"
#endif

namespace strata::moe {

Tensor expert_dropout_mask(int64_t V, int64_t R, int64_t F, DType dtype, double p, const ExpertRowKeys& keys,
                           const std::vector<PhiloxStream>& streams) {
  STRATA_CHECK(p >= 0.0 && p <= 1.0) << "moe expert dropout: p must be in [0, 1], got " << p;
  STRATA_CHECK(V >= 0 && R >= 0 && F >= 0 && int64_t(keys.global.size()) == V && int64_t(keys.row.size()) == V * R &&
               int64_t(streams.size()) == V * R && keys.experts > 0)
      << "moe expert dropout: keys for " << keys.global.size() << " experts, " << keys.row.size() << " rows and "
      << streams.size() << " streams do not fit a buffer of " << V << " x " << R << " rows";
  for (int64_t v = 0; v < V; ++v)
    STRATA_CHECK(keys.global[size_t(v)] >= 0 && keys.global[size_t(v)] < keys.experts)
        << "moe expert dropout: global expert " << keys.global[size_t(v)] << " outside " << keys.experts;
  Tensor mask = Tensor::zeros({V, R, F}, dtype);
  dispatch_float(dtype, "moe expert dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* out = mask.data<T>();
    const int64_t rows = V * R;
    if (p == 0.0 || p == 1.0) {  // nothing to draw: all kept (empty rows still 0) or all dropped
      if (p == 0.0)
        for (int64_t i = 0; i < rows; ++i)
          if (keys.row[size_t(i)] >= 0) std::fill(out + i * F, out + (i + 1) * F, T(1));
      return;
    }
    const float threshold = float(p);  // f32 compare, as backend::dropout_mask and PhiloxStream::bernoulli
    const T scale = T(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (rows * F >= kParallelGrain)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t src = keys.row[size_t(i)];
      if (src < 0) continue;
      const PhiloxStream& st = streams[size_t(i)];
      T* o = out + i * F;
      const uint64_t base = (uint64_t(src) * uint64_t(keys.experts) + uint64_t(keys.global[size_t(i / R)])) * uint64_t(F);
      // element base + f; one Philox block gives 4 consecutive elements (PhiloxStream::u32's layout)
      uint64_t e = base;
      const uint64_t end = base + uint64_t(F);
      while (e < end) {
        const uint64_t b = e >> 2;
        const Philox4x32 w = philox4x32_10(uint32_t(b), uint32_t(b >> 32), uint32_t(st.offset), uint32_t(st.offset >> 32),
                                           uint32_t(st.seed), uint32_t(st.seed >> 32));
        for (uint64_t k = e & 3; k < 4 && e < end; ++k, ++e) {
          const float u = float(w.v[k] >> 8) * (1.0f / 16777216.0f);  // == st.uniform(e)
          o[e - base] = u >= threshold ? scale : T(0);
        }
      }
    }
  });
  return mask;
}

namespace {
// The same mask drawn on the GPU: only the per-row keys (a few integers per
// buffer row) cross the bus, not the [V, R, F] mask.
Tensor expert_dropout_mask_on_gpu(const Tensor& x, double p, const ExpertRowKeys& keys,
                                  const std::vector<PhiloxStream>& streams) {
#ifdef STRATA_WITH_CUDA
  const int64_t V = x.size(0), R = x.size(1);
  STRATA_CHECK(int64_t(keys.global.size()) == V && int64_t(keys.row.size()) == V * R &&
               int64_t(streams.size()) == V * R)
      << "moe expert dropout: keys for " << keys.global.size() << " experts and " << keys.row.size()
      << " rows do not fit a buffer of " << V << " x " << R << " rows";
  for (int64_t v = 0; v < V; ++v)
    STRATA_CHECK(keys.global[size_t(v)] >= 0 && keys.global[size_t(v)] < keys.experts)
        << "moe expert dropout: global expert " << keys.global[size_t(v)] << " outside " << keys.experts;
  std::vector<int64_t> seed(size_t(V * R)), offset(size_t(V * R));
  for (size_t i = 0; i < streams.size(); ++i) {
    seed[i] = int64_t(streams[i].seed);
    offset[i] = int64_t(streams[i].offset);
  }
  auto up = [&](const std::vector<int64_t>& v) {
    return Tensor::from_vector(v, {int64_t(v.size())}).to(x.device());
  };
  return backend::cuda::keyed_dropout_mask(V, R, x.size(2), x.dtype(), p, keys.experts, up(keys.row), up(keys.global),
                                           up(seed), up(offset));
#else
  STRATA_FAIL() << "moe expert dropout: " << x.str() << " is on a GPU, but this build has no CUDA backend";
  return Tensor();
#endif
}
}  // namespace

Tensor expert_dropout(const Tensor& x, double p, const ExpertRowKeys& keys, const std::vector<PhiloxStream>& streams) {
  STRATA_CHECK(x.dim() == 3) << "moe expert dropout: input must be [experts, rows, features], got " << x.str();
  if (p == 0.0) return x;
  Tensor mask = x.device().is_cuda() ? expert_dropout_mask_on_gpu(x, p, keys, streams)
                                     : expert_dropout_mask(x.size(0), x.size(1), x.size(2), x.dtype(), p, keys, streams);
  Tensor y = backend::binary(backend::BinaryOp::Mul, x.detach(), mask);
  return autograd::record("moe_expert_dropout", y, {x}, [mask](const Tensor& g) -> std::vector<Tensor> {
    return {backend::binary(backend::BinaryOp::Mul, g, mask)};
  });
}

Tensor experts_forward(const Tensor& x, const ExpertWeights& w, double activation_dropout, double dropout,
                       const nn::ForwardContext& ctx, const ExpertRowKeys* keys) {
  STRATA_CHECK(x.dim() == 3 && x.size(0) == w.count() && x.size(2) == w.fc1_weight.size(2))
      << "moe experts: input " << x.str() << " for " << w.count() << " experts of weight " << w.fc1_weight.str();
  const bool keyed = keys && ctx.training;
  // Under autocast the expert GEMMs run in the compute dtype like every
  // Linear (the f32 master weights are cast per forward; the gate and routing
  // upstream stay f32); the block gets its input's dtype back.
  const DType io = x.dtype();
  Tensor h = bmm(nn::autocast(x), nn::autocast(w.fc1_weight), false, true);  // [V, C, ffn]
  h = relu(h + unsqueeze(nn::autocast(w.fc1_bias), 1));
  if (keyed && activation_dropout > 0) h = expert_dropout(h, activation_dropout, *keys, keys->act);
  else if (!keyed) h = nn::maybe_dropout(h, activation_dropout, ctx);
  Tensor y = bmm(h, nn::autocast(w.fc2_weight), false, true) + unsqueeze(nn::autocast(w.fc2_bias), 1);  // [V, C, dim]
  if (keyed) y = dropout > 0 ? expert_dropout(y, dropout, *keys, keys->out) : y;
  else y = nn::maybe_dropout(y, dropout, ctx);
  return cast(y, io);
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
    // A buffer, so Module::to moves it together with the parameters that
    // view it (they stay views of one block and stacked() keeps its fast path).
    register_buffer(std::string("stack.") + kNames[w], storage_[w]);
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
