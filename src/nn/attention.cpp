#include "strata/nn/attention.h"

#include <cmath>
#include <limits>

#include "strata/autograd/ops.h"

namespace strata::nn {

void AttentionCache::reorder(const Tensor& order) {
  if (!defined()) return;
  k = index_select(k, 0, order);
  v = index_select(v, 0, order);
}

namespace {
// fairseq initialises q/k/v with xavier_uniform(gain 1/sqrt 2) when the
// dimensions agree, the output projection with gain 1 and a zero bias.
InitSpec xavier(double gain) { return InitSpec{InitSpec::XavierUniform, gain}; }
InitSpec default_bias(int64_t in) { return InitSpec{InitSpec::Uniform, 1.0 / std::sqrt(double(in))}; }
}  // namespace

MultiheadAttention::MultiheadAttention(int64_t dim, int64_t heads, double attention_dropout)
    : dim_(dim),
      heads_(heads),
      head_dim_(heads > 0 ? dim / heads : 0),
      attention_dropout_(attention_dropout),
      k_proj_(dim, dim, true, xavier(1 / std::sqrt(2.0)), default_bias(dim)),
      v_proj_(dim, dim, true, xavier(1 / std::sqrt(2.0)), default_bias(dim)),
      q_proj_(dim, dim, true, xavier(1 / std::sqrt(2.0)), default_bias(dim)),
      out_proj_(dim, dim, true, xavier(1.0), InitSpec{InitSpec::Zeros}) {
  STRATA_CHECK(heads > 0 && dim % heads == 0)
      << "attention: embed_dim " << dim << " is not divisible by attention_heads " << heads;
  register_module("k_proj", &k_proj_);
  register_module("v_proj", &v_proj_);
  register_module("q_proj", &q_proj_);
  register_module("out_proj", &out_proj_);
}

Tensor MultiheadAttention::split_heads(const Tensor& x) const {
  const int64_t B = x.size(0), T = x.size(1);
  return contiguous(permute(reshape(x, {B, T, heads_, head_dim_}), {0, 2, 1, 3}));
}

Tensor MultiheadAttention::forward(const Tensor& query, const Tensor& kv, const Tensor& key_padding, bool causal,
                                   const ForwardContext& ctx, AttentionCache* cache, bool static_kv) const {
  STRATA_CHECK(query.dim() == 3 && query.size(2) == dim_)
      << "attention: query must be [batch, time, " << dim_ << "], got " << query.str();
  const int64_t B = query.size(0), Tq = query.size(1);
  const double scaling = 1.0 / std::sqrt(double(head_dim_));

  Tensor q = split_heads(q_proj_.forward(query) * scaling);  // [B, H, Tq, dh]
  Tensor k, v;
  if (cache && static_kv && cache->defined()) {
    k = cache->k;
    v = cache->v;
  } else {
    k = split_heads(k_proj_.forward(kv));
    v = split_heads(v_proj_.forward(kv));
    if (cache && !static_kv && cache->defined()) {
      k = concat({cache->k, k}, 2);
      v = concat({cache->v, v}, 2);
    }
    if (cache) {
      cache->k = k;
      cache->v = v;
    }
  }
  const int64_t Tk = k.size(2);

  Tensor scores = bmm(reshape(q, {B * heads_, Tq, head_dim_}), reshape(k, {B * heads_, Tk, head_dim_}), false, true);
  scores = reshape(scores, {B, heads_, Tq, Tk});

  // One mask [B, 1, Tq, Tk] for padding and causality (built without autograd).
  const bool use_causal = causal && !(cache && !static_kv && Tq == 1);
  if (key_padding.defined() || use_causal) {
    Tensor mask = Tensor::zeros({B, 1, Tq, Tk}, DType::F32);
    float* m = mask.data<float>();
    Tensor pad;
    if (key_padding.defined()) {
      STRATA_CHECK(key_padding.dim() == 2 && key_padding.size(0) == B && key_padding.size(1) == Tk)
          << "attention: key padding mask must be [" << B << ", " << Tk << "], got " << key_padding.str();
      pad = key_padding.to(DType::F32).contiguous();
    }
    const int64_t offset = Tk - Tq;  // queries are the last Tq positions (incremental decoding)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Tq; ++i)
        for (int64_t j = 0; j < Tk; ++j) {
          bool masked = (pad.defined() && pad.data<float>()[b * Tk + j] != 0) || (use_causal && j > i + offset);
          m[(b * Tq + i) * Tk + j] = masked ? 1.f : 0.f;
        }
    scores = masked_fill(scores, mask, -std::numeric_limits<double>::infinity());
  }
  Tensor probs = softmax(scores, -1);
  if (ctx.training && attention_dropout_ > 0) probs = dropout(probs, attention_dropout_, ctx.next_stream(), true);
  Tensor out = bmm(reshape(probs, {B * heads_, Tq, Tk}), reshape(v, {B * heads_, Tk, head_dim_}));
  out = reshape(permute(reshape(out, {B, heads_, Tq, head_dim_}), {0, 2, 1, 3}), {B, Tq, dim_});
  return out_proj_.forward(out);
}

}  // namespace strata::nn
