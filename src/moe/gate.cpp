#include "strata/moe/gate.h"

#include <cmath>
#include <limits>

#include "strata/autograd/ops.h"
#include "strata/core/dispatch.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/routing.h"
#endif

namespace strata::moe {

Tensor combine_weights(const Tensor& g1, const Tensor& g2, const Tensor& keep1, const Tensor& keep2, bool top1,
                       bool normalize_before_dropping) {
  if (top1) return g1 * keep1;  // Switch: the raw probability, no renormalisation
  const double eps = g1.dtype() == DType::F64 ? std::numeric_limits<double>::epsilon()
                                              : double(std::numeric_limits<float>::epsilon());
  const double inf = std::numeric_limits<double>::infinity();
  Tensor a, b;
  if (normalize_before_dropping) {
    Tensor denom = clamp(g1 + g2, eps, inf);
    a = g1 / denom * keep1;
    b = g2 / denom * keep2;
  } else {
    a = g1 * keep1;
    b = g2 * keep2;
    Tensor denom = clamp(a + b, eps, inf);
    a = a / denom;
    b = b / denom;
  }
  return concat({a, b}, 1);
}

namespace {
// Host vectors become constants on the device the gate computes on.
Tensor column(const std::vector<double>& v, DType dt, Device dev) {
  return Tensor::from_vector(v, {int64_t(v.size()), 1}).to(dt).to(dev);
}

// The balance loss V * sum_e m_e c_e over the visible experts, and the z-loss,
// from rw [1, n] (1 for the rows that count, 0 for the others) and cnt [1, V]
// (first choices per expert over the rows that count), constants on the
// gate's device; counted = the number of rows that count.
void add_losses(GateOutput& out, const Tensor& logits, const Tensor& rw, const Tensor& cnt, int64_t counted, int64_t S,
                const GateOptions& opt, DType gt, Device dev) {
  const int64_t n = logits.size(0), V = logits.size(1);
  const int64_t denom = opt.balance_ignore_padding ? counted : S;
  if (denom > 0) {
    Tensor msum = matmul(rw, out.probs);  // [1, V]: sum of probabilities over the counted rows
    Tensor dot = sum(msum * cnt);
    out.balance = dot * (double(V) / (double(denom) * double(denom)));
    if (!opt.balance_ignore_padding && S > n) {
      // The S - n zero padding rows: uniform 1/V probabilities, no first choice.
      out.balance = out.balance + double(S - n) * double(n) / (double(S) * double(S));
    }
  } else {
    out.balance = Tensor::scalar(0.0, gt).to(dev);
  }
  if (opt.z_loss) {
    // logsumexp with the row maximum as a constant shift (its gradient cancels)
    Tensor m = max(logits.detach(), 1, true);
    Tensor lse = log(sum(exp(logits - m), 1, true)) + m;  // [n, 1]
    out.z_loss = counted > 0 ? sum(matmul(rw, square(lse))) / double(counted) : Tensor::scalar(0.0, gt).to(dev);
  }
}

// The rows that count in the balance loss and z-loss: all n, or with
// balance_ignore_padding the non-PAD ones. Returns their count and fills
// row_w (1 or 0 per row).
int64_t counted_rows(int64_t n, const uint8_t* pad_rows, const GateOptions& opt, std::vector<double>& row_w) {
  row_w.assign(size_t(n), 1.0);
  if (!(opt.balance_ignore_padding && pad_rows)) return n;
  int64_t counted = 0;
  for (int64_t i = 0; i < n; ++i) {
    row_w[size_t(i)] = pad_rows[i] ? 0.0 : 1.0;
    counted += pad_rows[i] ? 0 : 1;
  }
  return counted;
}

#ifdef STRATA_WITH_CUDA
// A GPU gate after its softmax: routing, combine weights and losses stay on
// the device; the routing comes to the host in one transfer at the end, after
// every kernel of the gate is queued.
void finish_on_device(GateOutput& out, const Tensor& logits, int64_t S, int64_t capacity, const GateOptions& opt,
                      const uint8_t* pad_rows, const PhiloxStream* noise, DType gt, Device dev) {
  const int64_t n = logits.size(0);
  const int k = opt.top1 ? 1 : 2;
  const RouteOptions ro{opt.top1, opt.policy, opt.normalize_before_dropping};
  out.device_routing = backend::cuda::route(out.probs.detach(), logits.detach(), capacity, ro, noise);
  const backend::cuda::GateColumns c = backend::cuda::gate_columns(out.device_routing, gt);
  // The chosen experts' probabilities: a one-hot row sum is exactly the
  // gathered value (the other terms are +0) with the gather's gradient.
  Tensor g1 = sum(out.probs * c.onehot1, 1, true);
  Tensor g2;
  if (k == 2) g2 = sum(out.probs * c.onehot2, 1, true);  // 0 without a second expert
  out.weights = combine_weights(g1, g2, c.keep1, k == 2 ? c.keep2 : Tensor(), opt.top1, opt.normalize_before_dropping);

  std::vector<double> row_w;
  const int64_t counted = counted_rows(n, pad_rows, opt, row_w);
  Tensor rw, cnt;
  if (counted == n) {  // every row counts: no upload
    rw = Tensor::ones({1, n}, gt, dev);
    cnt = c.first_count;
  } else {
    rw = Tensor::from_vector(row_w, {1, n}).to(gt).to(dev);
    cnt = matmul(rw, c.onehot1);  // counted first choices per expert (0/1 sums: exact)
  }
  add_losses(out, logits, rw, cnt, counted, S, opt, gt, dev);
  out.routing = backend::cuda::download_routing(out.device_routing);  // the pass's one transfer
}
#endif
}  // namespace

GateOutput gate_forward(const Tensor& z, const Tensor& wg, int64_t S, int64_t capacity, const GateOptions& opt,
                        const uint8_t* pad_rows, const PhiloxStream* noise) {
  STRATA_CHECK(z.dim() == 2 && wg.dim() == 2 && z.size(1) == wg.size(1))
      << "moe gate: input " << z.str() << " and gate weight " << wg.str() << " do not fit";
  const int64_t n = z.size(0), V = wg.size(0);
  STRATA_CHECK(S >= n) << "moe gate: " << n << " rows in a buffer of " << S;
  const DType gt = z.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const Device dev = z.device();
  const int k = opt.top1 ? 1 : 2;
  GateOutput out;
  out.routing.experts = V;
  out.routing.capacity = capacity;
  out.routing.k = k;
  out.routing.first_count.assign(size_t(V), 0);
  if (n == 0) {  // this rank has no tokens at the stratum: all-padding buffer, L_s = 0
    out.weights = Tensor::zeros({0, k}, gt, dev);
    out.balance = Tensor::scalar(0.0, gt).to(dev);
    if (opt.z_loss) out.z_loss = Tensor::scalar(0.0, gt).to(dev);
    return out;
  }
  Tensor logits = linear(cast(z, gt), cast(wg, gt));  // [n, V]
  out.probs = softmax(logits, 1);
#ifdef STRATA_WITH_CUDA
  if (dev.is_cuda()) {
    finish_on_device(out, logits, S, capacity, opt, pad_rows, noise, gt, dev);
    return out;
  }
#endif
  // Routing decisions on the host (raw pointers).
  Tensor pd = out.probs.detach().contiguous();
  Tensor ld = logits.detach().contiguous();
  const RouteOptions ro{opt.top1, opt.policy, opt.normalize_before_dropping};
  dispatch_float(gt, "moe gate", [&](auto tag) {
    using T = typename decltype(tag)::type;
    out.routing = route<T>(pd.data<T>(), ld.data<T>(), n, V, capacity, ro, noise);
  });
  const Routing& r = out.routing;

  // Combine weights: the probabilities of the chosen experts, gathered.
  const size_t rows = size_t(n);
  std::vector<int64_t> i1(rows), i2(rows);
  std::vector<double> k1(rows), k2(rows), has2(rows);
  for (int64_t i = 0; i < n; ++i) {
    i1[size_t(i)] = r.e1[size_t(i)];
    k1[size_t(i)] = r.keep1[size_t(i)];
    i2[size_t(i)] = std::max<int32_t>(r.e2[size_t(i)], 0);
    has2[size_t(i)] = r.e2[size_t(i)] >= 0;
    k2[size_t(i)] = r.keep2[size_t(i)];
  }
  Tensor g1 = gather(out.probs, 1, Tensor::from_vector(i1, {n, 1}).to(dev));
  Tensor g2;
  if (k == 2) g2 = gather(out.probs, 1, Tensor::from_vector(i2, {n, 1}).to(dev)) * column(has2, gt, dev);
  out.weights = combine_weights(g1, g2, column(k1, gt, dev), k == 2 ? column(k2, gt, dev) : Tensor(), opt.top1,
                                opt.normalize_before_dropping);

  // Balance loss and z-loss over the rows that count.
  std::vector<double> row_w;
  const int64_t counted = counted_rows(n, pad_rows, opt, row_w);
  std::vector<double> cnt(size_t(V), 0.0);
  for (int64_t i = 0; i < n; ++i) cnt[size_t(r.e1[size_t(i)])] += row_w[size_t(i)];
  Tensor rw = Tensor::from_vector(row_w, {1, n}).to(gt).to(dev);
  add_losses(out, logits, rw, Tensor::from_vector(cnt, {1, V}).to(gt).to(dev), counted, S, opt, gt, dev);
  return out;
}

}  // namespace strata::moe
