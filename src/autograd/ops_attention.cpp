// Scaled dot-product attention: the composed sequence of autograd ops (CPU
// and GPU fallback), and on a GPU cuDNN's fused attention or Strata's fused
// kernels, each wrapped in one autograd node.
#include "strata/autograd/ops_attention.h"

#include <algorithm>
#include <limits>
#include <string>

#include "strata/autograd/node.h"
#include "strata/autograd/ops.h"
#include "strata/backend/device_dispatch.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/attention.h"
#include "strata/backend/cuda/cudnn_attention.h"
#endif

namespace strata {

namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

// Shapes, dtypes and devices; returns the key padding on the inputs' device
// (detached: a mask takes no gradient), or an undefined tensor.
Tensor check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding, double dropout_p) {
  STRATA_CHECK(q.defined() && k.defined() && v.defined()) << kOp << ": undefined q, k or v";
  STRATA_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4)
      << kOp << ": expected q [B, H, Tq, D] and k, v [B, H, Tk, D], got q " << shape_str(q.shape()) << ", k "
      << shape_str(k.shape()) << ", v " << shape_str(v.shape());
  STRATA_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3) && v.shape() == k.shape())
      << kOp << ": q " << shape_str(q.shape()) << ", k " << shape_str(k.shape()) << ", v " << shape_str(v.shape())
      << " do not agree (k and v must be [" << q.size(0) << ", " << q.size(1) << ", Tk, " << q.size(3) << "])";
  STRATA_CHECK(is_floating(q.dtype()) && k.dtype() == q.dtype() && v.dtype() == q.dtype())
      << kOp << ": q, k, v must share one floating dtype, got " << q.str() << ", " << k.str() << ", " << v.str();
  STRATA_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0) << kOp << ": dropout p must be in [0, 1], got " << dropout_p;
  backend::on_cuda(kOp, {q, k, v});  // throws on mixed devices
  if (!key_padding.defined()) return Tensor();
  STRATA_CHECK(key_padding.dim() == 2 && key_padding.size(0) == q.size(0) && key_padding.size(1) == k.size(2))
      << kOp << ": key padding mask must be [" << q.size(0) << ", " << k.size(2) << "], got " << key_padding.str();
  Tensor pad = key_padding.detach();
  return pad.device() == q.device() ? pad : pad.to(q.device());
}

// [1, 1, Tq, Tk] on `device`, nonzero where key j > query i + offset. Built
// per call: Tq*Tk floats, small next to the [B, H, Tq, Tk] scores it masks.
Tensor causal_mask(int64_t Tq, int64_t Tk, int64_t offset, Device device) {
  Tensor m = Tensor::zeros({1, 1, Tq, Tk}, DType::F32);
  float* p = m.data<float>();
  for (int64_t i = 0; i < Tq; ++i)
    for (int64_t j = std::max<int64_t>(0, i + offset + 1); j < Tk; ++j) p[i * Tk + j] = 1.f;
  return m.to(device);
}

Tensor composed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pad, bool causal,
                int64_t causal_offset, double dropout_p, const PhiloxStream& stream, bool training, double scale) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  Tensor scores = bmm(reshape(q, {B * H, Tq, D}), reshape(k, {B * H, Tk, D}), false, true);
  scores = reshape(scores, {B, H, Tq, Tk});
  if (scale != 1.0) scores = mul(scores, scale);
  // Padding, then causality: two broadcast fills, as MultiheadAttention does.
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (pad.defined()) scores = masked_fill(scores, pad.unsqueeze(1).unsqueeze(1), neg_inf);
  // Clamped so i + offset cannot overflow; [-Tq, Tk] covers every mask. With
  // offset >= Tk - 1 no key is hidden (the mask would be all zeros).
  const int64_t offset = std::min<int64_t>(std::max<int64_t>(causal_offset, -Tq), Tk);
  if (causal && offset < Tk - 1) scores = masked_fill(scores, causal_mask(Tq, Tk, offset, scores.device()), neg_inf);
  Tensor probs = softmax(scores, -1);
  if (training && dropout_p > 0) probs = dropout(probs, dropout_p, stream, true);
  Tensor out = bmm(reshape(probs, {B * H, Tq, Tk}), reshape(v, {B * H, Tk, D}));
  return reshape(out, {B, H, Tq, D});
}

#ifdef STRATA_WITH_CUDA
// The fused kernels as one node: the backward recomputes the probabilities
// from q, k and the saved per-row log-sum-exp (no [Tq, Tk] tensor is kept).
Tensor fused(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pad, bool causal, int64_t causal_offset,
             double dropout_p, const PhiloxStream& stream, bool training, double scale) {
  backend::cuda::AttentionMask mask;
  mask.key_padding = pad;
  mask.causal = causal;
  mask.causal_offset = causal_offset;
  const double p = training ? dropout_p : 0.0;
  backend::cuda::FusedAttentionForward f = backend::cuda::fused_attention_forward(q, k, v, mask, scale, p, stream);
  return autograd::record(
      "scaled_dot_product_attention", f.out, {q, k, v},
      [qd = q.detach(), kd = k.detach(), vd = v.detach(), lse = f.lse, mask, scale, p,
       stream](const Tensor& g) -> std::vector<Tensor> {
        const Tensor go = g.dtype() == qd.dtype() ? g : g.to(qd.dtype());
        backend::cuda::FusedAttentionGrads r =
            backend::cuda::fused_attention_backward(go, qd, kd, vd, lse, mask, scale, p, stream);
        return {r.dq, r.dk, r.dv};
      });
}

// cuDNN's fused attention as one node (no dropout: the cuDNN path is only
// taken with dropout off). Its backward is cuDNN's backward graph; where cuDNN
// turns that graph down (policy auto), it continues with Strata's fused
// backward from the saved lse: cuDNN's softmax statistics and the fused
// kernel's lse are the same quantity (the log-sum-exp of the scaled, masked
// scores, -inf on rows that see no key), so the fused backward recomputes the
// same probabilities. The forward output is saved (detached) for cuDNN's
// dO . O row sums.
Tensor via_cudnn(const Tensor& q, const Tensor& k, const Tensor& v, const backend::cuda::AttentionMask& mask,
                 const backend::cuda::FusedAttentionForward& f, double scale) {
  return autograd::record(
      "scaled_dot_product_attention", f.out, {q, k, v},
      [qd = q.detach(), kd = k.detach(), vd = v.detach(), od = f.out.detach(), lse = f.lse, mask,
       scale](const Tensor& g) -> std::vector<Tensor> {
        const Tensor go = g.dtype() == qd.dtype() ? g : g.to(qd.dtype());
        std::string why;
        if (auto r = backend::cuda::cudnn_attention_backward(go, qd, kd, vd, od, lse, mask, scale, &why))
          return {r->dq, r->dk, r->dv};
        STRATA_CHECK(backend::cuda::attention_policy() != backend::cuda::AttentionPolicy::Cudnn)
            << kOp << ": STRATA_ATTENTION=cudnn, but cuDNN's attention backward is unavailable: " << why;
        backend::cuda::FusedAttentionGrads r =
            backend::cuda::fused_attention_backward(go, qd, kd, vd, lse, mask, scale, 0.0, PhiloxStream{});
        return {r.dq, r.dk, r.dv};
      });
}
#endif

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding,
                                    bool causal, int64_t causal_offset, double dropout_p, const PhiloxStream& stream,
                                    bool training, double scale) {
  const Tensor pad = check_inputs(q, k, v, key_padding, dropout_p);
#ifdef STRATA_WITH_CUDA
  // GPU order: cuDNN (when the STRATA_ATTENTION policy selects it and it
  // builds), Strata's fused kernels, the composed ops. The CPU never gets here.
  if (q.device().is_cuda()) {
    backend::cuda::AttentionMask mask;
    mask.key_padding = pad;
    mask.causal = causal;
    mask.causal_offset = causal_offset;
    if (backend::cuda::cudnn_attention_selected(q, k, v, mask, training ? dropout_p : 0.0,
                                                autograd::any_needs_grad({q, k, v}))) {
      std::string why;
      if (auto f = backend::cuda::cudnn_attention_forward(q, k, v, mask, scale, &why))
        return via_cudnn(q, k, v, mask, *f, scale);
      STRATA_CHECK(backend::cuda::attention_policy() != backend::cuda::AttentionPolicy::Cudnn)
          << kOp << ": STRATA_ATTENTION=cudnn, but cuDNN's attention is unavailable: " << why;
    }
  }
  if (backend::cuda::fused_attention_supported(q, k, v))
    return fused(q, k, v, pad, causal, causal_offset, dropout_p, stream, training, scale);
#endif
  return composed(q, k, v, pad, causal, causal_offset, dropout_p, stream, training, scale);
}

Tensor scaled_dot_product_attention_composed(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& key_padding, bool causal, int64_t causal_offset,
                                             double dropout_p, const PhiloxStream& stream, bool training,
                                             double scale) {
  const Tensor pad = check_inputs(q, k, v, key_padding, dropout_p);
  return composed(q, k, v, pad, causal, causal_offset, dropout_p, stream, training, scale);
}

}  // namespace strata
