#include "strata/dist/grad_sync.h"

#include <algorithm>
#include <cstring>
#include <sstream>

namespace strata::dist {

namespace {

std::vector<size_t> selected(const NamedTensors& params, const ParamFilter& select) {
  std::vector<size_t> out;
  for (size_t i = 0; i < params.size(); ++i)
    if (!select || select(params[i].first)) out.push_back(i);
  return out;
}

Tensor checked_grad(const std::pair<std::string, Tensor>& p) {
  Tensor g = p.second.grad();
  if (!g.defined()) return g;
  STRATA_CHECK(g.device().is_cpu()) << "all_reduce_gradients: gradient of '" << p.first << "' " << g.str()
                                    << " is not on the CPU";
  STRATA_CHECK(g.dtype() == p.second.dtype())
      << "all_reduce_gradients: gradient of '" << p.first << "' is " << dtype_name(g.dtype()) << ", the parameter "
      << dtype_name(p.second.dtype());
  return g;
}

// splitmix64 finaliser: a full-avalanche mix of one 64-bit word.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<Bucket> plan_buckets(const std::vector<std::pair<DType, int64_t>>& params, size_t bucket_bytes) {
  std::vector<Bucket> out;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [dt, n] = params[i];
    const size_t bytes = size_t(n) * dtype_size(dt);
    bool fits = !out.empty() && out.back().dtype == dt &&
                size_t(out.back().numel) * dtype_size(dt) + bytes <= bucket_bytes;
    if (!fits) {
      out.emplace_back();
      out.back().dtype = dt;
    }
    out.back().params.push_back(i);
    out.back().numel += n;
  }
  return out;
}

GradSyncStats all_reduce_gradients(Communicator& comm, const NamedTensors& params, const ParamFilter& select,
                                   const GradSyncOptions& options) {
  GradSyncStats st;
  const std::vector<size_t> sel = selected(params, select);
  if (comm.size() == 1) {
    for (size_t i : sel) (checked_grad(params[i]).defined() ? st.params : st.without_grad) += 1;
    return st;
  }
  // 1. Which parameters have a gradient on any rank (one small all-reduce),
  //    so every rank builds the same buckets.
  Tensor flags = Tensor::zeros({int64_t(sel.size())}, DType::I32);
  int32_t* f = flags.data<int32_t>();
  for (size_t k = 0; k < sel.size(); ++k) f[k] = checked_grad(params[sel[k]]).defined() ? 1 : 0;
  comm.all_reduce(flags, ReduceOp::Max);
  std::vector<size_t> active;
  std::vector<std::pair<DType, int64_t>> shapes;
  for (size_t k = 0; k < sel.size(); ++k) {
    if (!f[k]) {
      ++st.without_grad;
      continue;
    }
    const Tensor& p = params[sel[k]].second;
    active.push_back(sel[k]);
    shapes.emplace_back(p.dtype(), p.numel());
  }
  // 2. One all-reduce per bucket.
  Tensor buf;
  for (const Bucket& b : plan_buckets(shapes, options.bucket_bytes)) {
    ++st.buckets;
    st.bytes += b.numel * int64_t(dtype_size(b.dtype));
    st.params += int64_t(b.params.size());
    if (b.params.size() == 1) {  // a large parameter: no packing when its gradient allows
      const auto& p = params[active[b.params[0]]];
      Tensor g = checked_grad(p);
      if (g.defined() && g.is_contiguous()) {
        comm.all_reduce(g, ReduceOp::Sum);
        continue;
      }
    }
    if (!buf.defined() || buf.dtype() != b.dtype || buf.numel() < b.numel) buf = Tensor::empty({b.numel}, b.dtype);
    Tensor flat = buf.narrow(0, 0, b.numel);
    int64_t off = 0;
    for (size_t j : b.params) {
      const auto& p = params[active[j]];
      Tensor slice = flat.narrow(0, off, p.second.numel()).view(p.second.shape());
      Tensor g = checked_grad(p);
      if (g.defined())
        slice.copy_(g);
      else
        slice.fill_(0.0);
      off += p.second.numel();
    }
    comm.all_reduce(flat, ReduceOp::Sum);
    off = 0;
    for (size_t j : b.params) {
      const auto& p = params[active[j]];
      Tensor slice = flat.narrow(0, off, p.second.numel()).view(p.second.shape());
      Tensor g = checked_grad(p);
      if (g.defined())
        g.copy_(slice);
      else
        p.second.set_grad(slice.clone());
      off += p.second.numel();
    }
  }
  return st;
}

std::vector<int64_t> parameter_hashes(const NamedTensors& params, const ParamFilter& select) {
  std::vector<int64_t> out;
  for (size_t i : selected(params, select)) {
    Tensor c = params[i].second.contiguous();
    uint64_t h = mix64(uint64_t(c.dtype()) + 0x51ED270B27A3F1ull);
    for (int64_t d : c.shape()) h = mix64(h ^ uint64_t(d));
    const unsigned char* p = static_cast<const unsigned char*>(c.raw_data());
    const size_t n = c.nbytes();
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
      uint64_t w;
      std::memcpy(&w, p + k, 8);
      h = (h ^ w) * 0x9E3779B97F4A7C15ull;
      h ^= h >> 32;
    }
    uint64_t tail = 0;
    if (k < n) std::memcpy(&tail, p + k, n - k);
    out.push_back(int64_t(mix64(h ^ tail ^ uint64_t(n))));
  }
  return out;
}

void check_replicas_agree(Communicator& comm, const NamedTensors& params, const std::string& when,
                          const ParamFilter& select) {
  if (comm.size() == 1) return;
  std::vector<size_t> sel = selected(params, select);
  const int64_t n = int64_t(sel.size());
  const int64_t lo = comm.all_reduce_int(n, ReduceOp::Min), hi = comm.all_reduce_int(n, ReduceOp::Max);
  STRATA_CHECK(lo == hi) << "replica check " << when << " on '" << comm.name() << "': ranks hold between " << lo
                         << " and " << hi << " parameters (this rank " << n << ")";
  if (n == 0) return;
  std::vector<int64_t> mine = parameter_hashes(params, select);
  Tensor send = Tensor::from_vector(mine, {n});
  Tensor all = Tensor::empty({int64_t(comm.size()) * n}, DType::I64);
  comm.all_gather(send, all);
  const int64_t* h = all.data<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    std::vector<int> differ;
    for (int r = 1; r < comm.size(); ++r)
      if (h[r * n + k] != h[k]) differ.push_back(r);
    if (differ.empty()) continue;
    std::ostringstream os;
    for (size_t i = 0; i < differ.size(); ++i) os << (i ? ", " : "") << differ[i];
    STRATA_FAIL() << "replica check " << when << " on '" << comm.name() << "': parameter '"
                  << params[sel[size_t(k)]].first << "' differs between rank 0 and rank(s) " << os.str()
                  << " (every rank must hold the same values)";
  }
}

}  // namespace strata::dist
