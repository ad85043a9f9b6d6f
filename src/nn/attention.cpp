#include "strata/nn/attention.h"

#include <cmath>

#include "strata/autograd/ops.h"
#include "strata/autograd/ops_attention.h"

namespace strata::nn {

void AttentionCache::reorder(const Tensor& order) {
  if (!defined()) return;
  const Tensor idx = order.device() == k.device() ? order : order.to(k.device());
  k = index_select(k, 0, idx);
  v = index_select(v, 0, idx);
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

  // Scores, padding and causal masks, softmax, dropout and the weighted sum
  // as one op: on the CPU exactly the composed sequence this layer used to
  // spell out (q is pre-scaled, scale 1); on a GPU the fused kernels, which
  // build the masks themselves (no [Tq, Tk] mask crosses from the host).
  // Queries are the last Tq positions of the keys (incremental decoding), and
  // a single new query sees every cached key.
  const bool use_causal = causal && !(cache && !static_kv && Tq == 1);
  const bool drop = ctx.training && attention_dropout_ > 0;
  const PhiloxStream stream = drop ? ctx.next_stream() : PhiloxStream{};
  Tensor out = scaled_dot_product_attention(q, k, v, key_padding, use_causal, Tk - Tq, drop ? attention_dropout_ : 0.0,
                                            stream, drop, 1.0);  // [B, H, Tq, dh]
  out = reshape(permute(out, {0, 2, 1, 3}), {B, Tq, dim_});
  return out_proj_.forward(out);
}

}  // namespace strata::nn
