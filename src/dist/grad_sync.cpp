#include "strata/dist/grad_sync.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/context.h"
#include "strata/dist/nccl_communicator.h"
#endif

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
  STRATA_CHECK(g.device() == p.second.device())
      << "all_reduce_gradients: gradient of '" << p.first << "' " << g.str() << " is not on the parameter's device "
      << p.second.device().str();
  STRATA_CHECK(g.dtype() == p.second.dtype())
      << "all_reduce_gradients: gradient of '" << p.first << "' is " << dtype_name(g.dtype()) << ", the parameter "
      << dtype_name(p.second.dtype());
  return g;
}

// The one device every selected parameter lives on (CPU when none is
// selected): buckets and the small bookkeeping buffers go there, so the
// communicator sees the buffers it moves (MPI: CPU, NCCL: GPU).
Device params_device(const NamedTensors& params, const std::vector<size_t>& sel, const char* op) {
  if (sel.empty()) return Device::cpu();
  const Device d = params[sel[0]].second.device();
  for (size_t i : sel)
    STRATA_CHECK(params[i].second.device() == d)
        << op << ": parameters '" << params[sel[0]].first << "' (" << d.str() << ") and '" << params[i].first
        << "' (" << params[i].second.device().str() << ") are on different devices";
  return d;
}

// dst <- src (same shape and dtype). Contiguous GPU pairs are one copy in
// stream order on the compute stream; everything else goes through copy_.
void copy_into(const Tensor& dst, const Tensor& src) {
#ifdef STRATA_WITH_CUDA
  if (dst.device().is_cuda() && dst.is_contiguous() && src.is_contiguous() && dst.dtype() == src.dtype()) {
    if (dst.nbytes() > 0)
      STRATA_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice,
                                        cuda::compute_stream()));
    return;
  }
#endif
  dst.copy_(src);
}

// Zeros a contiguous slice (GPU: a memset in stream order).
void zero_into(const Tensor& dst) {
#ifdef STRATA_WITH_CUDA
  if (dst.device().is_cuda() && dst.is_contiguous()) {
    if (dst.nbytes() > 0)
      STRATA_CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), 0, dst.nbytes(), cuda::compute_stream()));
    return;
  }
#endif
  dst.fill_(0.0);
}

// Where `comm` wants small bookkeeping buffers (gradient flags, parameter
// hashes) that start on the host: on its GPU for NCCL, else on the CPU (MPI
// keeps host buffers even when the parameters live on a GPU).
Device bookkeeping_device(const Communicator& comm) {
#ifdef STRATA_WITH_CUDA
  if (const auto* nccl = dynamic_cast<const NcclCommunicator*>(&comm)) return Device::cuda(nccl->device());
#endif
  return Device::cpu();
}

// A fresh contiguous copy on dst's device.
Tensor fresh_copy(const Tensor& src) {
  Tensor out = Tensor::empty(src.shape(), src.dtype(), src.device());
  copy_into(out, src);
  return out;
}

// CPU copy of a parameter's bytes for hashing.
Tensor host_contiguous(const Tensor& t) {
  return t.device().is_cpu() ? t.contiguous() : t.contiguous().to(Device::cpu());
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
  const Device device = params_device(params, sel, "all_reduce_gradients");
  // 1. Which parameters have a gradient on any rank (one small all-reduce),
  //    so every rank builds the same buckets.
  Tensor flags = Tensor::zeros({int64_t(sel.size())}, DType::I32);
  for (size_t k = 0; k < sel.size(); ++k) flags.data<int32_t>()[k] = checked_grad(params[sel[k]]).defined() ? 1 : 0;
  const Device flags_device = bookkeeping_device(comm);
  if (flags_device.is_cpu()) {
    comm.all_reduce(flags, ReduceOp::Max);
  } else {
    Tensor on_device = flags.to(flags_device);
    comm.all_reduce(on_device, ReduceOp::Max);
    flags = on_device.to(Device::cpu());
  }
  const int32_t* f = flags.data<int32_t>();
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
    if (!buf.defined() || buf.dtype() != b.dtype || buf.numel() < b.numel)
      buf = Tensor::empty({b.numel}, b.dtype, device);
    Tensor flat = buf.narrow(0, 0, b.numel);
    int64_t off = 0;
    for (size_t j : b.params) {
      const auto& p = params[active[j]];
      Tensor slice = flat.narrow(0, off, p.second.numel()).view(p.second.shape());
      Tensor g = checked_grad(p);
      if (g.defined())
        copy_into(slice, g);
      else
        zero_into(slice);
      off += p.second.numel();
    }
    comm.all_reduce(flat, ReduceOp::Sum);
    off = 0;
    for (size_t j : b.params) {
      const auto& p = params[active[j]];
      Tensor slice = flat.narrow(0, off, p.second.numel()).view(p.second.shape());
      Tensor g = checked_grad(p);
      if (g.defined())
        copy_into(g, slice);
      else
        p.second.set_grad(fresh_copy(slice));
      off += p.second.numel();
    }
  }
  return st;
}

std::vector<int64_t> parameter_hashes(const NamedTensors& params, const ParamFilter& select) {
  std::vector<int64_t> out;
  for (size_t i : selected(params, select)) {
    Tensor c = host_contiguous(params[i].second);
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
  const Device device = bookkeeping_device(comm);
  if (device.is_cpu()) {
    comm.all_gather(send, all);
  } else {  // the hashes travel where the communicator's buffers live
    Tensor all_dev = Tensor::empty(all.shape(), DType::I64, device);
    comm.all_gather(send.to(device), all_dev);
    all = all_dev.to(Device::cpu());
  }
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
