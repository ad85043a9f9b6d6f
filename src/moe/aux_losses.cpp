#include "strata/moe/aux_losses.h"

#include <cmath>

#include "strata/autograd/ops.h"

namespace strata::moe {

namespace {
// Sum of the defined tensors, all cast to f32 unless every one is f64.
Tensor sum_of(const std::vector<Tensor>& ts) {
  Tensor acc;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    acc = acc.defined() ? acc + cast(t, acc.dtype()) : t;
  }
  return acc;
}
// A 0-d loss as a double (copied to the host when it lives on a GPU).
double host_item(const Tensor& t) { return t.detach().contiguous().to(Device::cpu()).item(); }
}  // namespace

Tensor aux_loss_total(const nn::AuxLosses& aux, int64_t ntokens, const config::MoEOptions& o) {
  std::vector<Tensor> balance, zl, cmr_sum;
  int64_t cmr_tokens = 0;
  for (const auto& b : aux.blocks) {
    balance.push_back(b.balance);
    if (b.z_loss.defined()) zl.push_back(b.z_loss);
    if (b.cmr_gate_sum.defined()) {
      cmr_sum.push_back(b.cmr_gate_sum);
      cmr_tokens += b.cmr_tokens;
    }
  }
  if (balance.empty()) return Tensor::scalar(0.0);
  const double nt = double(ntokens);
  Tensor total = sum_of(balance) * (o.gate_loss_weight * nt / double(balance.size()));
  if (!cmr_sum.empty() && cmr_tokens > 0) {
    Tensor cmr = abs(sum_of(cmr_sum) / double(cmr_tokens) - o.cmr_target);
    total = total + cast(cmr, total.dtype()) * (o.cmr_loss_weight * nt);
  }
  if (!zl.empty() && o.z_loss_weight > 0)
    total = total + cast(sum_of(zl), total.dtype()) * (o.z_loss_weight * nt / double(zl.size()));
  return total;
}

AuxLossParts aux_loss_parts(const nn::AuxLosses& aux, const config::MoEOptions& o) {
  AuxLossParts p;
  double bal = 0, z = 0, c = 0;
  int nz = 0;
  int64_t ct = 0;
  for (const auto& b : aux.blocks) {
    bal += host_item(b.balance);
    if (b.z_loss.defined()) {
      z += host_item(b.z_loss);
      ++nz;
    }
    if (b.cmr_gate_sum.defined()) {
      c += host_item(b.cmr_gate_sum);
      ct += b.cmr_tokens;
    }
    ++p.blocks;
  }
  if (p.blocks) p.gate_loss = bal / p.blocks;
  if (nz) p.z_loss = z / nz;
  if (ct) p.cmr_loss = std::fabs(c / double(ct) - o.cmr_target);
  return p;
}

}  // namespace strata::moe
