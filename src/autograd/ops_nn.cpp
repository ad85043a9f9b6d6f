// Differentiable wrappers over the softmax, layer-norm, dropout and indexing
// backends. Closures capture detached inputs and saved statistics, never the
// op's output tensor (that would make a reference cycle through grad_fn).
#include "strata/autograd/ops_nn.h"

#include "strata/autograd/node.h"
#include "strata/backend/dropout.h"
#include "strata/backend/elementwise.h"
#include "strata/backend/index.h"
#include "strata/backend/layer_norm.h"
#include "strata/backend/softmax.h"

namespace strata {

using autograd::record;

Tensor softmax(const Tensor& x, int64_t axis) {
  Tensor y = backend::softmax(x, axis);
  return record("softmax", y, {x}, [yd = y.detach(), axis](const Tensor& g) -> std::vector<Tensor> {
    return {backend::softmax_backward(g, yd, axis)};
  });
}

Tensor log_softmax(const Tensor& x, int64_t axis) {
  Tensor y = backend::log_softmax(x, axis);
  return record("log_softmax", y, {x}, [yd = y.detach(), axis](const Tensor& g) -> std::vector<Tensor> {
    return {backend::log_softmax_backward(g, yd, axis)};
  });
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  backend::LayerNormForward f = backend::layer_norm_forward(x, gamma, beta, eps);
  // Only the statistics are saved: f.y is the output itself.
  return record("layer_norm", f.y, {x, gamma, beta},
                [xd = x.detach(), gd = gamma.defined() ? gamma.detach() : Tensor(), mean = f.mean, rstd = f.rstd,
                 has_gamma = gamma.defined(), has_beta = beta.defined()](const Tensor& g) -> std::vector<Tensor> {
                  backend::LayerNormForward saved;
                  saved.mean = mean;
                  saved.rstd = rstd;
                  backend::LayerNormBackward b = backend::layer_norm_backward(g, xd, gd, saved);
                  return {b.dx, has_gamma ? b.dgamma : Tensor(), has_beta ? b.dbeta : Tensor()};
                });
}

Tensor dropout(const Tensor& x, double p, const PhiloxStream& stream, bool training) {
  // Checked even when inactive so a bad config fails in evaluation runs too.
  STRATA_CHECK(p >= 0.0 && p <= 1.0) << "dropout: p must be in [0, 1], got " << p;
  if (!training || p == 0.0) return x;
  Tensor mask = backend::dropout_mask(x.shape(), x.dtype(), p, stream, x.device());
  Tensor y = backend::binary(backend::BinaryOp::Mul, x, mask);
  // The mask is a pure function of (stream, shape, p): regenerating it in the
  // backward is cheaper than keeping an activation-sized tensor alive.
  return record("dropout", y, {x},
                [shape = x.shape(), dtype = x.dtype(), p, stream, dev = x.device()](const Tensor& g) -> std::vector<Tensor> {
                  Tensor m = backend::dropout_mask(shape, dtype, p, stream, dev);
                  return {backend::binary(backend::BinaryOp::Mul, g, m)};
                });
}

Tensor embedding(const Tensor& weight, const Tensor& ids, int64_t padding_idx) {
  Tensor y = backend::embedding(weight, ids);
  const int64_t rows = weight.shape()[0];
  STRATA_CHECK(padding_idx < rows) << "embedding: padding_idx " << padding_idx << " is not a row of weight "
                                   << weight.str();
  return record("embedding", y, {weight, ids},
                [idsd = ids.detach(), rows, padding_idx](const Tensor& g) -> std::vector<Tensor> {
                  return {backend::embedding_backward(g, idsd, rows, padding_idx), Tensor()};
                });
}

Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index) {
  Tensor y = backend::index_select(x, axis, index);
  return record("index_select", y, {x, index},
                [shape = x.shape(), axis, idx = index.detach()](const Tensor& g) -> std::vector<Tensor> {
                  return {backend::index_add(shape, axis, idx, g), Tensor()};
                });
}

Tensor gather(const Tensor& x, int64_t axis, const Tensor& index) {
  Tensor y = backend::gather(x, axis, index);
  return record("gather", y, {x, index},
                [shape = x.shape(), axis, idx = index.detach()](const Tensor& g) -> std::vector<Tensor> {
                  return {backend::scatter_add(Tensor::zeros(shape, g.dtype(), g.device()), axis, idx, g), Tensor()};
                });
}

Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src) {
  Tensor y = backend::scatter_add(x, axis, index, src);
  return record("scatter_add", y, {x, index, src},
                [axis, idx = index.detach()](const Tensor& g) -> std::vector<Tensor> {
                  return {g, Tensor(), backend::gather(g, axis, idx)};
                });
}

}  // namespace strata
