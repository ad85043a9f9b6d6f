#include "strata/dist/grad_sync.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <unordered_map>

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

// Buckets follow `order` (positions in the selected list, reverse
// registration order); Bucket::params holds positions in `order`.
struct GradientReducer::State {
  Communicator& comm;
  NamedTensors params;
  std::vector<size_t> order;  // indices into params, in bucket order
  std::vector<Bucket> buckets;
  std::unordered_map<const TensorImpl*, size_t> position;  // parameter -> position in order
  std::vector<size_t> bucket_of;                           // position -> bucket
  std::vector<char> ready;                                 // position -> gradient final
  std::vector<char> had_grad;                              // position -> had one when packed
  std::vector<Tensor> stash;      // position -> reduced values of a parameter without a local gradient
  std::vector<int64_t> missing;   // bucket -> parameters not yet ready
  struct Flight {
    Tensor flat;                  // the packed buffer (undefined: reduced in place)
    std::unique_ptr<PendingCollective> pending;
    bool written = false;         // sums are in the gradients (or the stash)
  };
  std::vector<Flight> flights;    // bucket -> its all-reduce
  Tensor spare;                   // a packed buffer whose collective is over
  size_t next = 0;                // first bucket not started
  int64_t early = 0;
  bool finished = false;
  Device device = Device::cpu();

  State(Communicator& c, NamedTensors p) : comm(c), params(std::move(p)) {}

  const std::pair<std::string, Tensor>& param_at(size_t pos) const { return params[order[pos]]; }

  // fn(position, parameter, its slice of `flat`) for each parameter of bucket k.
  template <class Fn>
  void for_each_slice(size_t k, const Tensor& flat, Fn&& fn) const {
    int64_t off = 0;
    for (size_t pos : buckets[k].params) {
      const Tensor& p = param_at(pos).second;
      fn(pos, p, flat.narrow(0, off, p.numel()).view(p.shape()));
      off += p.numel();
    }
  }

  void start(size_t k) {
    const Bucket& b = buckets[k];
    Flight& f = flights[k];
    for (size_t pos : b.params) had_grad[pos] = checked_grad(param_at(pos)).defined() ? 1 : 0;
    if (b.params.size() == 1 && had_grad[b.params[0]]) {  // a large parameter: no packing when its gradient allows
      Tensor g = param_at(b.params[0]).second.grad();
      if (g.is_contiguous()) {
        f.pending = comm.all_reduce_start(g, ReduceOp::Sum);
        return;
      }
    }
    if (spare.defined() && spare.dtype() == b.dtype && spare.numel() >= b.numel)
      f.flat = spare.narrow(0, 0, b.numel);
    else
      f.flat = Tensor::empty({b.numel}, b.dtype, device);
    spare = Tensor();
    for_each_slice(k, f.flat, [&](size_t pos, const Tensor& p, const Tensor& slice) {
      if (had_grad[pos])
        copy_into(slice, p.grad());
      else
        zero_into(slice);
    });
    f.pending = comm.all_reduce_start(f.flat, ReduceOp::Sum);
  }

  // After the bucket's all-reduce: sums into the local gradients, or kept
  // for a parameter without one until finish() knows whether any rank had one.
  void write_back(size_t k) {
    Flight& f = flights[k];
    if (f.written) return;
    f.pending->wait();
    f.written = true;
    if (!f.flat.defined()) return;  // reduced in place
    for_each_slice(k, f.flat, [&](size_t pos, const Tensor& p, const Tensor& slice) {
      if (had_grad[pos])
        copy_into(p.grad(), slice);
      else
        stash[pos] = fresh_copy(slice);
    });
    // Reused by the next bucket: the collective is over and, on a GPU, the
    // compute stream (which fills the next bucket) is ordered after it.
    if (!spare.defined() || spare.numel() < f.flat.numel()) spare = f.flat;
    f.flat = Tensor();
  }

  // Starts buckets in order while the next one is complete.
  void start_ready_buckets() {
    while (next < buckets.size() && missing[next] == 0) {
      start(next);
      // A collective that is already over (MPI's blocking path) frees its
      // buffer now, so at most one packed buffer exists at a time.
      if (flights[next].pending->done()) write_back(next);
      ++next;
    }
  }
};

GradientReducer::GradientReducer(Communicator& comm, const NamedTensors& params, const ParamFilter& select,
                                 const GradSyncOptions& options)
    : s_(std::make_unique<State>(comm, params)) {
  State& st = *s_;
  std::vector<size_t> sel = selected(st.params, select);
  st.order.assign(sel.rbegin(), sel.rend());
  if (comm.size() == 1) return;
  st.device = params_device(st.params, sel, "all_reduce_gradients");
  std::vector<std::pair<DType, int64_t>> shapes;
  for (size_t pos = 0; pos < st.order.size(); ++pos) {
    const Tensor& p = st.param_at(pos).second;
    shapes.emplace_back(p.dtype(), p.numel());
    st.position[&p.impl()] = pos;
  }
  st.buckets = plan_buckets(shapes, options.bucket_bytes);
  st.bucket_of.resize(st.order.size());
  st.missing.resize(st.buckets.size());
  for (size_t k = 0; k < st.buckets.size(); ++k) {
    for (size_t pos : st.buckets[k].params) st.bucket_of[pos] = k;
    st.missing[k] = int64_t(st.buckets[k].params.size());
  }
  st.ready.assign(st.order.size(), 0);
  st.had_grad.assign(st.order.size(), 0);
  st.stash.resize(st.order.size());
  st.flights.resize(st.buckets.size());
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::gradient_ready(const Tensor& leaf) {
  State& st = *s_;
  if (st.finished || st.comm.size() == 1) return;
  auto it = st.position.find(&leaf.impl());
  if (it == st.position.end() || st.ready[it->second]) return;
  st.ready[it->second] = 1;
  --st.missing[st.bucket_of[it->second]];
  const size_t before = st.next;
  st.start_ready_buckets();
  st.early += int64_t(st.next - before);
}

int64_t GradientReducer::started_early() const { return s_->early; }

GradSyncStats GradientReducer::finish() {
  State& st = *s_;
  STRATA_CHECK(!st.finished) << "GradientReducer::finish called twice";
  st.finished = true;
  GradSyncStats out;
  if (st.comm.size() == 1) {
    for (size_t pos = 0; pos < st.order.size(); ++pos)
      (checked_grad(st.param_at(pos)).defined() ? out.params : out.without_grad) += 1;
    return out;
  }
  // 1. Every bucket started, in order (the rest had parameters this rank's
  //    backward never reached).
  for (size_t k = 0; k < st.buckets.size(); ++k) st.missing[k] = 0;
  st.start_ready_buckets();
  // 2. Which parameters have a gradient on any rank (one small all-reduce,
  //    after every bucket on every rank).
  const size_t n = st.order.size();
  Tensor flags = Tensor::zeros({int64_t(n)}, DType::I32);
  for (size_t pos = 0; pos < n; ++pos) flags.data<int32_t>()[pos] = st.had_grad[pos];
  const Device flags_device = bookkeeping_device(st.comm);
  if (flags_device.is_cpu()) {
    st.comm.all_reduce(flags, ReduceOp::Max);
  } else {
    Tensor on_device = flags.to(flags_device);
    st.comm.all_reduce(on_device, ReduceOp::Max);
    flags = on_device.to(Device::cpu());
  }
  // 3. Sums into the gradients.
  for (size_t k = 0; k < st.buckets.size(); ++k) {
    st.write_back(k);
    out.buckets += 1;
    out.bytes += st.buckets[k].numel * int64_t(dtype_size(st.buckets[k].dtype));
  }
  const int32_t* f = flags.data<int32_t>();
  for (size_t pos = 0; pos < n; ++pos) {
    if (!f[pos]) {
      ++out.without_grad;
      continue;
    }
    ++out.params;
    if (!st.had_grad[pos]) st.param_at(pos).second.set_grad(std::move(st.stash[pos]));
  }
  return out;
}

GradSyncStats all_reduce_gradients(Communicator& comm, const NamedTensors& params, const ParamFilter& select,
                                   const GradSyncOptions& options) {
  GradientReducer reducer(comm, params, select, options);
  return reducer.finish();
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
