// GPU routing of one MoE gate pass (declarations, contract and the reason for
// host_logf: strata/backend/cuda/routing.h; host twin: src/moe/routing.cpp).
//
// Three steps, each deterministic without atomics:
//  1. choose: one thread per row runs the host's loops over the V experts
//     (same comparisons, same order, same arithmetic in the gate dtype).
//  2. positions: one block per expert walks the rows in order, a block-wide
//     chunk at a time; a warp ballot and the per-warp counts give each row
//     that chose the expert its exclusive running count. The block does the
//     first choices, then continues the count over the second choices, which
//     is the host's loc2 = count2 + first_count.
//  3. the slot map (and the gate's one-hot/keep columns, and EOM keep masks):
//     one thread per (row, choice); slots are distinct, so no two threads
//     write one element.
#include <cstdint>
#include <limits>
#include <vector>

#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/backend/cuda/routing.h"
#include "strata/core/dispatch.h"

namespace strata::backend::cuda {

namespace {

using ::strata::cuda::blocks_for;
using ::strata::cuda::kThreads;
using ::strata::cuda::storage_ptr;

cudaStream_t stream() { return ::strata::cuda::compute_stream(); }

// Threads of a positions block: many rows per step, few steps (a multiple of 32).
constexpr int kPositionThreads = 1024;

// A 2-D view: element (r, c) at p[r * s0 + c * s1].
template <class T>
struct View2 {
  const T* p;
  int64_t s0, s1;
  __device__ __forceinline__ T operator()(int64_t r, int64_t c) const { return p[r * s0 + c * s1]; }
};

template <class T>
View2<T> view_of(const Tensor& t) {
  return {storage_ptr<const T>(t) + t.offset(), t.strides()[0], t.strides()[1]};
}

// The packed buffer's arrays (moe::DeviceRouting): e1 | e2 | loc1 | loc2 | first_count.
struct Packed {
  int32_t *e1, *e2, *loc1, *loc2, *first_count;
};

Packed packed_of(const moe::DeviceRouting& r) {
  int32_t* base = storage_ptr<int32_t>(r.packed) + r.packed.offset();
  const int64_t n = r.rows;
  return {base, base + n, base + 2 * n, base + 3 * n, base + 4 * n};
}

// 1. Choices of row i, as moe::route<T>: policy 0 Argmax, 1 Sampling, 2 Random
// (config::SecondExpertPolicy); loc2 starts at 0 (rows without a second
// choice keep it, as on the host).
template <class T>
__global__ void choose_kernel(View2<T> probs, View2<T> logits, int64_t n, int64_t V, bool second, int policy,
                              bool normalize, PhiloxStream noise, Packed out) {
  STRATA_GRID_LOOP(i, n) {
    // first choice: the first maximum of the probabilities
    int32_t first = 0;
    for (int64_t e = 1; e < V; ++e)
      if (probs(i, e) > probs(i, first)) first = int32_t(e);
    int32_t best = -1;
    if (second) {
      // second choice: the first maximum over the other experts of the
      // (Gumbel-noised) logits; the first candidate always enters
      T best_v = -std::numeric_limits<T>::infinity();
      for (int64_t e = 0; e < V; ++e) {
        if (e == first) continue;
        T v = logits(i, e);
        if (policy == 1) v = v + T(host_gumbel(noise, uint64_t(i * V + e)));
        if (best < 0 || v > best_v) {
          best = int32_t(e);
          best_v = v;
        }
      }
      if (policy == 2) {
        // keep the second expert with probability min(1, 2 * g2); denom is
        // std::max(sum, eps) spelled out: (sum < eps) ? eps : sum
        T g2 = probs(i, best);
        if (normalize) {
          const T sum = probs(i, first) + probs(i, best);
          const T eps = std::numeric_limits<T>::epsilon();
          const T denom = sum < eps ? eps : sum;
          g2 = g2 / denom;
        }
        if (!(T(2) * g2 > T(noise.uniform(uint64_t(i))))) best = -1;
      }
    }
    out.e1[i] = first;
    out.e2[i] = best;
    out.loc2[i] = 0;
  }
}

// 2. Block e: positions of the choices of expert e in row order, first
// choices, then second choices continuing the count; first_count[e].
__global__ void positions_kernel(Packed p, int64_t n, bool second) {
  __shared__ int32_t warp_count[kPositionThreads / 32];
  const int32_t e = int32_t(blockIdx.x);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, warps = int(blockDim.x) >> 5;
  int64_t placed = 0;  // choices of expert e before the current chunk
  for (int pass = 0; pass < (second ? 2 : 1); ++pass) {
    const int32_t* choice = pass == 0 ? p.e1 : p.e2;
    int32_t* loc = pass == 0 ? p.loc1 : p.loc2;
    // every thread runs the same chunks, so the ballots and barriers see the whole block
    for (int64_t start = 0; start < n; start += blockDim.x) {
      const int64_t i = start + threadIdx.x;
      const bool mine = i < n && choice[i] == e;
      const unsigned ballot = __ballot_sync(0xffffffffu, mine);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int64_t before = placed, chunk = 0;
      for (int w = 0; w < warps; ++w) {
        if (w < warp) before += warp_count[w];
        chunk += warp_count[w];
      }
      if (mine) loc[i] = int32_t(before + __popc(ballot & ((1u << lane) - 1u)));
      __syncthreads();  // warp_count is rewritten by the next chunk
      placed += chunk;
    }
    if (pass == 0 && threadIdx.x == 0) p.first_count[e] = int32_t(placed);
  }
}

__device__ __forceinline__ bool kept(int32_t e, int32_t loc, int64_t capacity) { return e >= 0 && loc < capacity; }

// 3. row_slot [n * k] (every entry), slot_src at the kept choices' slots.
__global__ void slot_map_kernel(Packed p, int64_t n, int k, int64_t route_capacity, int64_t expert_base,
                                int64_t capacity, int64_t* row_slot, int64_t* slot_src) {
  STRATA_GRID_LOOP(t, n * k) {
    const int64_t i = t / k;
    const int j = int(t % k);
    const int32_t e = j == 0 ? p.e1[i] : p.e2[i];
    const int32_t loc = j == 0 ? p.loc1[i] : p.loc2[i];
    if (!kept(e, loc, route_capacity)) {
      row_slot[t] = -1;
      continue;
    }
    const int64_t slot = (expert_base + e) * capacity + loc;
    row_slot[t] = slot;
    slot_src[slot] = t;
  }
}

// The gate's columns: one-hot rows of the first/second choice [n, V] (a zero
// row without a second expert), keep flags [n, 1], first_count [1, V].
template <class T>
__global__ void gate_columns_kernel(Packed p, int64_t n, int64_t V, int64_t capacity, T* onehot1, T* onehot2,
                                    T* keep1, T* keep2, T* first_count) {
  STRATA_GRID_LOOP(t, n * V) {
    const int64_t i = t / V;
    const int32_t e = int32_t(t % V);
    onehot1[t] = p.e1[i] == e ? T(1) : T(0);
    onehot2[t] = p.e2[i] == e ? T(1) : T(0);
    if (e == 0) {
      keep1[i] = kept(p.e1[i], p.loc1[i], capacity) ? T(1) : T(0);
      keep2[i] = kept(p.e2[i], p.loc2[i], capacity) ? T(1) : T(0);
    }
    if (i == 0) first_count[e] = T(p.first_count[e]);
  }
}

// EOM keep [n, k]: choice j of row i with expert e is dropped when element
// i * experts + expert_offset + e of the stream is below prob (moe::eom_keep).
template <class T>
__global__ void eom_keep_kernel(Packed p, int64_t n, int k, int64_t expert_offset, int64_t experts,
                                PhiloxStream s, float prob, T* out) {
  STRATA_GRID_LOOP(t, n * k) {
    const int64_t i = t / k;
    const int32_t e = t % k == 0 ? p.e1[i] : p.e2[i];
    const bool drop = e >= 0 && s.bernoulli(uint64_t(i * experts + expert_offset + e), prob);
    out[t] = drop ? T(0) : T(1);
  }
}

__global__ void gumbel_table_kernel(float* out, int64_t count) {
  STRATA_GRID_LOOP(m, count) {
    // PhiloxStream::uniform_open for a draw whose top 24 bits are m
    const float u = (float(uint32_t(m)) + 0.5f) * (1.0f / 16777216.0f);
    out[m] = -host_logf(-host_logf(u));
  }
}

void check_packed(const moe::DeviceRouting& r, const char* op) {
  STRATA_CHECK(r.defined() && r.packed.device().is_cuda() && r.packed.dtype() == DType::I32 &&
               r.packed.is_contiguous() && r.packed.numel() == 4 * r.rows + r.experts)
      << op << ": not a device routing of " << r.rows << " rows over " << r.experts << " experts";
}

}  // namespace

moe::DeviceRouting route(const Tensor& probs, const Tensor& logits, int64_t capacity, const moe::RouteOptions& opt,
                         const PhiloxStream* noise) {
  using config::SecondExpertPolicy;
  const char* op = "moe route";
  STRATA_CHECK(probs.device().is_cuda() && probs.dim() == 2 && logits.shape() == probs.shape() &&
               logits.dtype() == probs.dtype() && logits.device() == probs.device())
      << op << ": probabilities " << probs.str() << " and logits " << logits.str()
      << " must be [rows, experts] alike on one GPU";
  STRATA_CHECK(probs.dtype() == DType::F32 || probs.dtype() == DType::F64)
      << op << ": expected f32 or f64 gate values, got " << dtype_name(probs.dtype());
  const int64_t n = probs.size(0), V = probs.size(1);
  // positions and expert ids live in i32 (a position is below n)
  STRATA_CHECK(V > 0 && n < int64_t(std::numeric_limits<int32_t>::max()) &&
               V < int64_t(std::numeric_limits<int32_t>::max()))
      << op << ": " << n << " rows over " << V << " experts";
  const bool second = !opt.top1 && V > 1;
  STRATA_CHECK(!second || opt.policy == SecondExpertPolicy::Argmax || noise != nullptr)
      << "moe route: the " << config::to_string(opt.policy) << " second-expert policy needs a random stream";
  moe::DeviceRouting r;
  r.rows = n;
  r.experts = V;
  r.capacity = capacity;
  r.k = opt.top1 ? 1 : 2;
  r.packed = Tensor::empty({4 * n + V}, DType::I32, probs.device());
  const Packed p = packed_of(r);
  const int policy = opt.policy == SecondExpertPolicy::Argmax ? 0 : opt.policy == SecondExpertPolicy::Sampling ? 1 : 2;
  const PhiloxStream s = noise ? *noise : PhiloxStream{};
  if (n > 0) {
    dispatch_float(probs.dtype(), op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      choose_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(view_of<T>(probs), view_of<T>(logits), n, V,
                                                                  second, policy, opt.normalize_before_dropping, s, p);
      STRATA_KERNEL_CHECK();
    });
  }
  // also with n = 0: first_count is zero
  positions_kernel<<<unsigned(V), kPositionThreads, 0, stream()>>>(p, n, second);
  STRATA_KERNEL_CHECK();
  return r;
}

moe::Routing download_routing(const moe::DeviceRouting& r) {
  check_packed(r, "moe route download");
  const std::vector<int32_t> h = r.packed.to_vector<int32_t>();  // one device-to-host copy
  const size_t n = size_t(r.rows), V = size_t(r.experts);
  moe::Routing out;
  out.rows = r.rows;
  out.experts = r.experts;
  out.capacity = r.capacity;
  out.k = r.k;
  out.e1.assign(h.begin(), h.begin() + ptrdiff_t(n));
  out.e2.assign(h.begin() + ptrdiff_t(n), h.begin() + ptrdiff_t(2 * n));
  out.loc1.assign(h.begin() + ptrdiff_t(2 * n), h.begin() + ptrdiff_t(3 * n));
  out.loc2.assign(h.begin() + ptrdiff_t(3 * n), h.begin() + ptrdiff_t(4 * n));
  out.first_count.assign(h.begin() + ptrdiff_t(4 * n), h.begin() + ptrdiff_t(4 * n + V));
  out.keep1.resize(n);
  out.keep2.resize(n);
  for (size_t i = 0; i < n; ++i) {
    out.keep1[i] = out.loc1[i] < r.capacity;
    out.keep2[i] = out.e2[i] >= 0 && out.loc2[i] < r.capacity;
  }
  return out;
}

std::pair<Tensor, Tensor> slot_map(const moe::DeviceRouting& r, int64_t expert_base, int64_t buffer_experts,
                                   int64_t capacity, Device device) {
  const char* op = "moe slot map";
  STRATA_CHECK(device.is_cuda() && capacity >= 0 && buffer_experts >= 0)
      << op << ": " << buffer_experts << " experts x " << capacity << " slots on " << device.str();
  const int64_t rows = r.defined() ? r.rows : 0, k = r.k;
  if (rows > 0) {
    check_packed(r, op);
    STRATA_CHECK(r.packed.device() == device && expert_base >= 0 && expert_base + r.experts <= buffer_experts)
        << op << ": experts [" << expert_base << ", " << expert_base + r.experts << ") outside a buffer of "
        << buffer_experts << " experts";
  }
  const int64_t slots = buffer_experts * capacity;
  Tensor row_slot = Tensor::empty({rows * k}, DType::I64, device);
  Tensor slot_src = Tensor::empty({slots}, DType::I64, device);
  // all bytes 0xFF: every slot starts as -1 (empty)
  if (slots > 0)
    STRATA_CUDA_CHECK(cudaMemsetAsync(storage_ptr<int64_t>(slot_src) + slot_src.offset(), 0xFF,
                                      size_t(slots) * sizeof(int64_t), stream()));
  if (rows > 0) {
    slot_map_kernel<<<blocks_for(rows * k), kThreads, 0, stream()>>>(
        packed_of(r), rows, int(k), r.capacity, expert_base, capacity,
        storage_ptr<int64_t>(row_slot) + row_slot.offset(), storage_ptr<int64_t>(slot_src) + slot_src.offset());
    STRATA_KERNEL_CHECK();
  }
  return {row_slot, slot_src};
}

GateColumns gate_columns(const moe::DeviceRouting& r, DType dtype) {
  const char* op = "moe gate columns";
  check_packed(r, op);
  const int64_t n = r.rows, V = r.experts;
  const Device dev = r.packed.device();
  GateColumns c;
  c.onehot1 = Tensor::empty({n, V}, dtype, dev);
  c.onehot2 = Tensor::empty({n, V}, dtype, dev);
  c.keep1 = Tensor::empty({n, 1}, dtype, dev);
  c.keep2 = Tensor::empty({n, 1}, dtype, dev);
  c.first_count = Tensor::empty({1, V}, dtype, dev);
  dispatch_float(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (n == 0) {  // only first_count has elements: all zero
      STRATA_CUDA_CHECK(cudaMemsetAsync(storage_ptr<T>(c.first_count), 0, size_t(V) * sizeof(T), stream()));
      return;
    }
    gate_columns_kernel<T><<<blocks_for(n * V), kThreads, 0, stream()>>>(
        packed_of(r), n, V, r.capacity, storage_ptr<T>(c.onehot1), storage_ptr<T>(c.onehot2), storage_ptr<T>(c.keep1),
        storage_ptr<T>(c.keep2), storage_ptr<T>(c.first_count));
    STRATA_KERNEL_CHECK();
  });
  return c;
}

Tensor eom_keep(const moe::DeviceRouting& r, int64_t expert_offset, int64_t experts, const PhiloxStream& stream_,
                double p, DType dtype) {
  const char* op = "moe eom";
  check_packed(r, op);
  STRATA_CHECK(expert_offset >= 0 && expert_offset + r.experts <= experts)
      << op << ": experts [" << expert_offset << ", " << expert_offset + r.experts << ") outside the block's "
      << experts;
  const int64_t n = r.rows, k = r.k;
  Tensor out = Tensor::empty({n, k}, dtype, r.packed.device());
  if (n == 0) return out;
  dispatch_float(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    eom_keep_kernel<T><<<blocks_for(n * k), kThreads, 0, stream()>>>(packed_of(r), n, int(k), expert_offset, experts,
                                                                      stream_, float(p), storage_ptr<T>(out));
    STRATA_KERNEL_CHECK();
  });
  return out;
}

Tensor gumbel_of_all_draws() {
  const int64_t count = int64_t(1) << 24;
  Tensor out = Tensor::empty({count}, DType::F32, Device::cuda(::strata::cuda::context().device));
  gumbel_table_kernel<<<blocks_for(count), kThreads, 0, stream()>>>(storage_ptr<float>(out), count);
  STRATA_KERNEL_CHECK();
  return out;
}

}  // namespace strata::backend::cuda
