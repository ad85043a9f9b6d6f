#include "strata/nn/layers.h"

#include <cmath>

#include "strata/autograd/ops.h"
#include "strata/nn/autocast.h"

namespace strata::nn {

Linear::Linear(int64_t in, int64_t out, bool bias)
    : Linear(in, out, bias, InitSpec{InitSpec::Uniform, 1.0 / std::sqrt(double(in))},
             InitSpec{InitSpec::Uniform, 1.0 / std::sqrt(double(in))}) {}

Linear::Linear(int64_t in, int64_t out, bool bias, InitSpec weight_init, InitSpec bias_init) : in_(in), out_(out) {
  STRATA_CHECK(in > 0 && out > 0) << "Linear: sizes must be positive, got in=" << in << " out=" << out;
  weight_ = register_parameter("weight", {out, in}, weight_init);
  if (bias) bias_ = register_parameter("bias", {out}, bias_init);
}

Tensor Linear::forward(const Tensor& x) const {
  if (!autocast_enabled()) return linear(x, weight_, bias_);
  // 16-bit GEMM on casts of the f32 master weights (their gradients come back in f32).
  return linear(autocast(x), autocast(weight_), autocast(bias_));
}

Tensor Linear::forward_relu(const Tensor& x) const {
  if (!autocast_enabled()) return linear_relu(x, weight_, bias_);
  return linear_relu(autocast(x), autocast(weight_), autocast(bias_));
}

LayerNorm::LayerNorm(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", {dim}, InitSpec{InitSpec::Ones});
  bias_ = register_parameter("bias", {dim}, InitSpec{InitSpec::Zeros});
}

Tensor LayerNorm::forward(const Tensor& x) const {
  if (!autocast_enabled()) return layer_norm(x, weight_, bias_, eps_);
  return layer_norm(autocast(x), autocast(weight_), autocast(bias_), eps_);
}

Embedding::Embedding(int64_t num_embeddings, int64_t dim, int64_t padding_idx) : dim_(dim), padding_idx_(padding_idx) {
  STRATA_CHECK(padding_idx < num_embeddings)
      << "Embedding: padding index " << padding_idx << " outside a table of " << num_embeddings << " rows";
  weight_ = register_parameter("weight", {num_embeddings, dim},
                               InitSpec{InitSpec::Normal, 1.0 / std::sqrt(double(dim)), padding_idx});
}

// The lookup reads the f32 table; only the [..., dim] rows are cast (cheaper
// than casting the whole table), and the table's gradient stays f32.
Tensor Embedding::forward(const Tensor& ids) const { return autocast(embedding(weight_, ids, padding_idx_)); }

Tensor sinusoidal_table(int64_t num_positions, int64_t dim, int64_t padding_idx) {
  STRATA_CHECK(dim % 2 == 0 && dim >= 4) << "sinusoidal positions need an even dimension >= 4, got " << dim;
  const int64_t half = dim / 2;
  const double step = std::log(10000.0) / double(half - 1);
  Tensor t = Tensor::zeros({num_positions, dim});
  float* p = t.data<float>();
  for (int64_t pos = 0; pos < num_positions; ++pos) {
    if (pos == padding_idx) continue;
    for (int64_t i = 0; i < half; ++i) {
      // f32 frequencies and angles as in the reference (torch computes in f32)
      float f = std::exp(float(i) * -float(step));
      float angle = float(pos) * f;
      p[pos * dim + i] = std::sin(angle);
      p[pos * dim + half + i] = std::cos(angle);
    }
  }
  return t;
}

Tensor make_positions(const Tensor& ids, int64_t padding_idx, int64_t start) {
  STRATA_CHECK(ids.dim() == 2) << "make_positions: ids must be [batch, time], got " << ids.str();
  // Computed on the host (a host copy of GPU ids); the result is a CPU tensor.
  Tensor c = ids.to(Device::cpu()).to(DType::I64).contiguous();
  Tensor out = Tensor::empty(c.shape(), DType::I64);
  const int64_t* in = c.data<int64_t>();
  int64_t* o = out.data<int64_t>();
  const int64_t T = c.size(1);
  for (int64_t i = 0; i < c.numel(); ++i)
    o[i] = in[i] == padding_idx ? padding_idx : padding_idx + 1 + start + (i % T);
  return out;
}

}  // namespace strata::nn
