// Basic layers: Linear, LayerNorm, token Embedding, and the fixed sinusoidal
// position table. Weights follow the PyTorch/fairseq layouts (Linear weight is
// [out, in]) so checkpoints map 1:1 onto the reference implementation.
// Under a 16-bit nn::AutocastGuard, Linear and LayerNorm compute in the
// compute dtype and Embedding returns it (nn/autocast.h); in f32 they are
// the plain ops.
#pragma once
#include "strata/nn/module.h"

namespace strata::nn {

class Linear : public Module {
 public:
  // init: PyTorch's nn.Linear default (U(±1/sqrt(in)) for weight and bias)
  // unless a weight spec is given.
  Linear(int64_t in, int64_t out, bool bias = true);
  Linear(int64_t in, int64_t out, bool bias, InitSpec weight_init, InitSpec bias_init);
  Tensor forward(const Tensor& x) const;  // [..., in] -> [..., out]
  // relu(forward(x)) as one op (on a GPU the bias and ReLU ride in the GEMM's
  // epilogue; on the CPU the same values as relu(forward(x))).
  Tensor forward_relu(const Tensor& x) const;
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  int64_t in_, out_;
  Tensor weight_, bias_;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;

 private:
  double eps_;
  Tensor weight_, bias_;
};

// Token embedding with fairseq's init: N(0, dim^-1/2), padding row zero.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, int64_t padding_idx);
  Tensor forward(const Tensor& ids) const;  // [...] -> [..., dim]
  const Tensor& weight() const { return weight_; }
  int64_t padding_idx() const { return padding_idx_; }
  int64_t dim() const { return dim_; }

 private:
  int64_t dim_, padding_idx_;
  Tensor weight_;
};

// fairseq's SinusoidalPositionalEmbedding: for position p (counted from
// padding_idx + 1), row p = [sin(p*f_0..f_{h-1}), cos(p*f_0..f_{h-1})] with
// f_i = exp(-i * ln(10000) / (h - 1)), h = dim/2; the padding row is zero.
// Not a parameter.
Tensor sinusoidal_table(int64_t num_positions, int64_t dim, int64_t padding_idx);
// Position ids for right-padded token ids [B, T]: padding_idx + 1 + t for a
// real token, padding_idx for a pad; `start` offsets t (incremental decoding).
Tensor make_positions(const Tensor& ids, int64_t padding_idx, int64_t start = 0);

}  // namespace strata::nn
