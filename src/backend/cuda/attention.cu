// Fused multi-head attention (contract: strata/backend/cuda/attention.h; the
// reference is the composed path of src/autograd/ops_attention.cpp).
//
// Forward (flash-attention with an online softmax, all in f32): a block takes
// BR queries of one (batch, head), keeps them in shared memory, and walks the
// key tiles (BC keys) the tile can see, staging K and V in shared memory. Per
// query row it keeps the running maximum m, the running denominator l and the
// unnormalised output acc; a new tile rescales them by exp(m_old - m_new).
// It writes out = acc / l and lse = m + log(l) per row.
//
// Backward, without atomics so two runs are bit-identical: with P = exp(s -
// lse) recomputed from q, k and lse, Z the dropout factors, dP = (dO v^T) * Z
// and D_i = sum_j P_ij dP_ij,
//   dS = P * (dP - D)       dq = scale dS k       dk = scale dS^T q
//   dv = (P * Z)^T dO
// - dq kernel, a block per query tile looping over key tiles: since
//   sum_j dS_ij k_j = sum_j P_ij dP_ij k_j - D_i sum_j P_ij k_j, it
//   accumulates both sums and D_i in one pass (D is exact, not dO . out with
//   a rounded 16-bit out) and stores D for the second kernel;
// - dk/dv kernel, a block per key tile looping over the query tiles that see
//   it, reading D.
//
// Work split (every kernel): 256 threads = 16 row groups x 16 column lanes.
// Thread (rg, cl) owns tile rows rg*RPT .. rg*RPT+RPT-1 and, of a score tile,
// the columns cl, cl+16, ...; of a [rows x head_dim] accumulator, the
// columns cl, cl+16, ... (so 16 adjacent threads store 16 adjacent
// elements). A row's 16 lanes are one half-warp, so row max/sum are 4
// shuffles. Tiles sit in shared memory as f32 rows padded to DM+4 floats:
// 16-byte aligned for float4 reads along the head dim, and 8 consecutive rows
// start in distinct bank quads, so the reads are conflict-free. Head dims
// are padded with zeros to DM in {16, 32, 64, 128}.
#include "strata/backend/cuda/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda::attention_impl {

using backend::cuda::AttentionMask;
using backend::cuda::FusedAttentionForward;
using backend::cuda::FusedAttentionGrads;

namespace {

constexpr int kAttnThreads = 256;
constexpr int kMaxHeadDim = 128;

template <class T>
struct View4 {
  T* p;
  int64_t sb, sh, st, sd;
  __device__ __forceinline__ T* at(int64_t b, int64_t h, int64_t t, int64_t d) const {
    return p + b * sb + h * sh + t * st + d * sd;
  }
};

template <class T>
View4<T> view4(const Tensor& x) {
  using U = std::remove_const_t<T>;
  const Strides& s = x.strides();
  return {storage_ptr<U>(x) + x.offset(), s[0], s[1], s[2], s[3]};
}

// Everything about one call that the kernels share (passed by value).
struct Problem {
  int64_t H = 0, Tq = 0, Tk = 0;
  int D = 0;
  float scale = 1.f;
  // key padding element (b, j): pad[(b * pad_sb + j * pad_sj)] of dtype pad_dtype; null = no padding
  const char* pad = nullptr;
  DType pad_dtype = DType::F32;
  int64_t pad_sb = 0, pad_sj = 0;
  bool causal = false;
  int64_t offset = 0;  // clamped to [-Tq, Tk]: the same masks, no overflow in i + offset
  bool dropout = false;
  float threshold = 0.f, keep = 1.f;
  PhiloxStream stream;
};

__device__ __forceinline__ bool padded(const Problem& pr, int64_t b, int64_t j) {
  if (pr.pad == nullptr) return false;
  const int64_t o = b * pr.pad_sb + j * pr.pad_sj;
  switch (pr.pad_dtype) {  // nonzero = hidden, as masked_fill reads a mask (a NaN counts as nonzero)
    case DType::F32: return reinterpret_cast<const float*>(pr.pad)[o] != 0.f;
    case DType::F64: return reinterpret_cast<const double*>(pr.pad)[o] != 0.0;
    case DType::F16: return float(reinterpret_cast<const Half*>(pr.pad)[o]) != 0.f;
    case DType::BF16: return float(reinterpret_cast<const BFloat16*>(pr.pad)[o]) != 0.f;
    case DType::I32: return reinterpret_cast<const int32_t*>(pr.pad)[o] != 0;
    case DType::I64: return reinterpret_cast<const int64_t*>(pr.pad)[o] != 0;
  }
  return false;
}

// 1 when key j is hidden from every query: past the end or padded.
__device__ __forceinline__ int key_hidden(const Problem& pr, int64_t b, int64_t j) {
  return (j >= pr.Tk || padded(pr, b, j)) ? 1 : 0;
}

__device__ __forceinline__ bool visible(const Problem& pr, int hidden, int64_t i, int64_t j) {
  return !hidden && i < pr.Tq && !(pr.causal && j > i + pr.offset);
}

// The dropout factor of probability (i, j) of head bh: the composed path's
// mask element ((bh * Tq + i) * Tk + j), drawn from the same Philox stream.
__device__ __forceinline__ float keep_factor(const Problem& pr, int64_t bh, int64_t i, int64_t j) {
  if (!pr.dropout) return 1.f;
  const uint64_t e = (uint64_t(bh) * uint64_t(pr.Tq) + uint64_t(i)) * uint64_t(pr.Tk) + uint64_t(j);
  return pr.stream.uniform(e) >= pr.threshold ? pr.keep : 0.f;
}

// Keys seen by query rows [.., i_end): with causality only j <= i_end - 1 + offset.
__device__ __forceinline__ int64_t keys_seen(const Problem& pr, int64_t i_end) {
  if (!pr.causal) return pr.Tk;
  const int64_t n = i_end + pr.offset;
  return n <= 0 ? 0 : (n < pr.Tk ? n : pr.Tk);
}

// The first query that sees key j0 (Tq or more when none does).
__device__ __forceinline__ int64_t first_query(const Problem& pr, int64_t j0) {
  if (!pr.causal) return 0;
  const int64_t i = j0 - pr.offset;
  return i < 0 ? 0 : i;
}

// The 16 lanes of a row group are one half-warp; xor shuffles below 16 stay
// inside it and leave the same (bit-identical) value in every lane.
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Rows t0 .. t0+ROWS-1 of src(b, h) into dst [ROWS][DM+4] as f32; rows past
// `len` and head dims past D are zero.
template <class T, int DM, int ROWS>
__device__ __forceinline__ void load_rows(float* dst, const View4<const T>& src, int64_t b, int64_t h, int64_t t0,
                                          int64_t len, int D) {
  constexpr int LD = DM + 4;
  for (int idx = threadIdx.x; idx < ROWS * DM; idx += kAttnThreads) {
    const int r = idx / DM, d = idx % DM;
    const int64_t t = t0 + r;
    dst[r * LD + d] = (t < len && d < D) ? float(load(src.at(b, h, t, d))) : 0.f;
  }
}

// acc[r][c] += A[rg*RPT + r] . B[cl + 16c] over the (padded) head dim.
template <int DM, int RPT, int CPT>
__device__ __forceinline__ void dot_tile(const float* A, const float* Bm, int rg, int cl, float (&acc)[RPT][CPT]) {
  constexpr int LD = DM + 4;
#pragma unroll 4
  for (int d = 0; d < DM; d += 4) {
    float4 a[RPT], b[CPT];
#pragma unroll
    for (int r = 0; r < RPT; ++r) a[r] = *reinterpret_cast<const float4*>(A + (rg * RPT + r) * LD + d);
#pragma unroll
    for (int c = 0; c < CPT; ++c) b[c] = *reinterpret_cast<const float4*>(Bm + (cl + 16 * c) * LD + d);
#pragma unroll
    for (int r = 0; r < RPT; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        float s = acc[r][c];
        s = fmaf(a[r].x, b[c].x, s);
        s = fmaf(a[r].y, b[c].y, s);
        s = fmaf(a[r].z, b[c].z, s);
        s = fmaf(a[r].w, b[c].w, s);
        acc[r][c] = s;
      }
  }
}

// acc[r][e] += sum_j P[rg*RPT + r][j] * V[j][cl + 16e] (P rows padded to NC+4).
template <int DM, int NC, int RPT>
__device__ __forceinline__ void pv_tile(const float* P, const float* V, int rg, int cl, float (&acc)[RPT][DM / 16]) {
  constexpr int LD = DM + 4, LP = NC + 4, DPT = DM / 16;
#pragma unroll 4
  for (int j = 0; j < NC; ++j) {
    float p[RPT], w[DPT];
#pragma unroll
    for (int r = 0; r < RPT; ++r) p[r] = P[(rg * RPT + r) * LP + j];
#pragma unroll
    for (int e = 0; e < DPT; ++e) w[e] = V[j * LD + cl + 16 * e];
#pragma unroll
    for (int r = 0; r < RPT; ++r)
#pragma unroll
      for (int e = 0; e < DPT; ++e) acc[r][e] = fmaf(p[r], w[e], acc[r][e]);
  }
}

// ---------------------------------------------------------------- forward

template <int DM, int BR, int BC>
constexpr size_t forward_smem() {
  return sizeof(float) * (size_t(BR + 2 * BC) * (DM + 4) + size_t(BR) * (BC + 4)) + sizeof(int) * BC;
}

template <class T, int DM, int BR, int BC>
__global__ void __launch_bounds__(kAttnThreads)
    forward_kernel(View4<const T> q, View4<const T> k, View4<const T> v, View4<T> out, float* __restrict__ lse,
                   Problem pr, int64_t tiles) {
  constexpr int LD = DM + 4, LP = BC + 4, RPT = BR / 16, CPT = BC / 16, DPT = DM / 16;
  extern __shared__ float4 smem4[];
  float* q_s = reinterpret_cast<float*>(smem4);
  float* k_s = q_s + BR * LD;
  float* v_s = k_s + BC * LD;
  float* p_s = v_s + BC * LD;
  int* hid_s = reinterpret_cast<int*>(p_s + BR * LP);

  const int tid = threadIdx.x, rg = tid >> 4, cl = tid & 15;
  const int64_t bh = blockIdx.x / tiles, b = bh / pr.H, h = bh % pr.H;
  const int64_t i0 = (blockIdx.x % tiles) * BR;
  const float neg_inf = -std::numeric_limits<float>::infinity();

  load_rows<T, DM, BR>(q_s, q, b, h, i0, pr.Tq, pr.D);
  float m[RPT], l[RPT], acc[RPT][DPT];
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    m[r] = neg_inf;
    l[r] = 0.f;
#pragma unroll
    for (int e = 0; e < DPT; ++e) acc[r][e] = 0.f;
  }

  const int64_t nk = keys_seen(pr, i0 + BR < pr.Tq ? i0 + BR : pr.Tq);
  for (int64_t j0 = 0; j0 < nk; j0 += BC) {
    __syncthreads();  // the previous tile's readers are done (and q_s is complete on the first pass)
    load_rows<T, DM, BC>(k_s, k, b, h, j0, pr.Tk, pr.D);
    load_rows<T, DM, BC>(v_s, v, b, h, j0, pr.Tk, pr.D);
    for (int c = tid; c < BC; c += kAttnThreads) hid_s[c] = key_hidden(pr, b, j0 + c);
    __syncthreads();

    float s[RPT][CPT];
#pragma unroll
    for (int r = 0; r < RPT; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) s[r][c] = 0.f;
    dot_tile<DM, RPT, CPT>(q_s, k_s, rg, cl, s);

#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      const int64_t i = i0 + rg * RPT + r;
      float mx = neg_inf;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int col = cl + 16 * c;
        s[r][c] = visible(pr, hid_s[col], i, j0 + col) ? s[r][c] * pr.scale : neg_inf;
        mx = fmaxf(mx, s[r][c]);
      }
      const float m_new = fmaxf(m[r], group_max(mx));
      // m_new is the same in the row's 16 lanes; -inf means no visible key so
      // far (then l and acc are still 0 and exp(-inf - -inf) would be NaN).
      const bool any = m_new != neg_inf;
      const float alpha = any ? expf(m[r] - m_new) : 1.f;
      float p[CPT], rs = 0.f;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        p[c] = any ? expf(s[r][c] - m_new) : 0.f;  // a hidden key: exp(-inf) = 0
        rs += p[c];
      }
      rs = group_sum(rs);
      l[r] = l[r] * alpha + rs;
      m[r] = m_new;
#pragma unroll
      for (int e = 0; e < DPT; ++e) acc[r][e] *= alpha;
      // dropout scales what reaches the output, not the denominator
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int col = cl + 16 * c;
        p_s[(rg * RPT + r) * LP + col] = p[c] != 0.f ? p[c] * keep_factor(pr, bh, i, j0 + col) : 0.f;
      }
    }
    __syncthreads();
    pv_tile<DM, BC, RPT>(p_s, v_s, rg, cl, acc);
  }

#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int64_t i = i0 + rg * RPT + r;
    if (i >= pr.Tq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // a row that sees no key: zeros
#pragma unroll
    for (int e = 0; e < DPT; ++e) {
      const int d = cl + 16 * e;
      if (d < pr.D) *out.at(b, h, i, d) = store_cast<T>(acc[r][e] * inv);
    }
    if (cl == 0) lse[bh * pr.Tq + i] = l[r] > 0.f ? m[r] + logf(l[r]) : neg_inf;
  }
}

// ---------------------------------------------------------------- backward: dq (and D)

template <int DM, int BR, int BC>
constexpr size_t dq_smem() {
  return sizeof(float) * (size_t(2 * BR + 2 * BC) * (DM + 4) + size_t(2 * BR) * (BC + 4) + BR) + sizeof(int) * BC;
}

template <class T, int DM, int BR, int BC>
__global__ void __launch_bounds__(kAttnThreads)
    dq_kernel(View4<const T> q, View4<const T> k, View4<const T> v, View4<const T> dout,
              const float* __restrict__ lse, View4<T> dq, float* __restrict__ delta, Problem pr, int64_t tiles) {
  constexpr int LD = DM + 4, LP = BC + 4, RPT = BR / 16, CPT = BC / 16, DPT = DM / 16;
  extern __shared__ float4 smem4[];
  float* q_s = reinterpret_cast<float*>(smem4);
  float* do_s = q_s + BR * LD;
  float* k_s = do_s + BR * LD;
  float* v_s = k_s + BC * LD;
  float* p_s = v_s + BC * LD;     // P
  float* pdp_s = p_s + BR * LP;   // P * dP
  float* lse_s = pdp_s + BR * LP;
  int* hid_s = reinterpret_cast<int*>(lse_s + BR);

  const int tid = threadIdx.x, rg = tid >> 4, cl = tid & 15;
  const int64_t bh = blockIdx.x / tiles, b = bh / pr.H, h = bh % pr.H;
  const int64_t i0 = (blockIdx.x % tiles) * BR;

  load_rows<T, DM, BR>(q_s, q, b, h, i0, pr.Tq, pr.D);
  load_rows<T, DM, BR>(do_s, dout, b, h, i0, pr.Tq, pr.D);
  for (int r = tid; r < BR; r += kAttnThreads)
    lse_s[r] = i0 + r < pr.Tq ? lse[bh * pr.Tq + i0 + r] : -std::numeric_limits<float>::infinity();

  float a_acc[RPT][DPT], p_acc[RPT][DPT], dsum[RPT];  // sum P dP k, sum P k, sum P dP
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    dsum[r] = 0.f;
#pragma unroll
    for (int e = 0; e < DPT; ++e) a_acc[r][e] = p_acc[r][e] = 0.f;
  }

  const int64_t nk = keys_seen(pr, i0 + BR < pr.Tq ? i0 + BR : pr.Tq);
  for (int64_t j0 = 0; j0 < nk; j0 += BC) {
    __syncthreads();
    load_rows<T, DM, BC>(k_s, k, b, h, j0, pr.Tk, pr.D);
    load_rows<T, DM, BC>(v_s, v, b, h, j0, pr.Tk, pr.D);
    for (int c = tid; c < BC; c += kAttnThreads) hid_s[c] = key_hidden(pr, b, j0 + c);
    __syncthreads();

    float s[RPT][CPT], dp[RPT][CPT];
#pragma unroll
    for (int r = 0; r < RPT; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) s[r][c] = dp[r][c] = 0.f;
    dot_tile<DM, RPT, CPT>(q_s, k_s, rg, cl, s);
    dot_tile<DM, RPT, CPT>(do_s, v_s, rg, cl, dp);  // dO . v: the gradient of the dropped-out probabilities

#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      const int row = rg * RPT + r;
      const int64_t i = i0 + row;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int col = cl + 16 * c;
        float p = 0.f, pdp = 0.f;
        if (visible(pr, hid_s[col], i, j0 + col)) {
          p = expf(s[r][c] * pr.scale - lse_s[row]);
          pdp = p * (dp[r][c] * keep_factor(pr, bh, i, j0 + col));
        }
        p_s[row * LP + col] = p;
        pdp_s[row * LP + col] = pdp;
        dsum[r] += pdp;
      }
    }
    __syncthreads();
    pv_tile<DM, BC, RPT>(pdp_s, k_s, rg, cl, a_acc);
    pv_tile<DM, BC, RPT>(p_s, k_s, rg, cl, p_acc);
  }

#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const float D_i = group_sum(dsum[r]);  // every lane calls (shuffles), whether or not its row exists
    const int64_t i = i0 + rg * RPT + r;
    if (i >= pr.Tq) continue;
#pragma unroll
    for (int e = 0; e < DPT; ++e) {
      const int d = cl + 16 * e;
      if (d < pr.D) *dq.at(b, h, i, d) = store_cast<T>(pr.scale * (a_acc[r][e] - D_i * p_acc[r][e]));
    }
    if (cl == 0) delta[bh * pr.Tq + i] = D_i;
  }
}

// ---------------------------------------------------------------- backward: dk, dv

template <int DM, int BR, int BC>
constexpr size_t dkdv_smem() {
  return sizeof(float) * (size_t(2 * BR + 2 * BC) * (DM + 4) + size_t(2 * BR) * (BC + 4) + 2 * BC) +
         sizeof(int) * BR;
}

// BR keys per block, BC queries per step.
template <class T, int DM, int BR, int BC>
__global__ void __launch_bounds__(kAttnThreads)
    dkdv_kernel(View4<const T> q, View4<const T> k, View4<const T> v, View4<const T> dout,
                const float* __restrict__ lse, const float* __restrict__ delta, View4<T> dk, View4<T> dv, Problem pr,
                int64_t tiles) {
  constexpr int LD = DM + 4, LP = BC + 4, RPT = BR / 16, CPT = BC / 16, DPT = DM / 16;
  extern __shared__ float4 smem4[];
  float* k_s = reinterpret_cast<float*>(smem4);
  float* v_s = k_s + BR * LD;
  float* q_s = v_s + BR * LD;
  float* do_s = q_s + BC * LD;
  float* pd_s = do_s + BC * LD;  // P * Z (transposed: [key][query])
  float* ds_s = pd_s + BR * LP;  // dS (transposed)
  float* lse_s = ds_s + BR * LP;
  float* dl_s = lse_s + BC;
  int* hid_s = reinterpret_cast<int*>(dl_s + BC);

  const int tid = threadIdx.x, rg = tid >> 4, cl = tid & 15;
  const int64_t bh = blockIdx.x / tiles, b = bh / pr.H, h = bh % pr.H;
  const int64_t j0 = (blockIdx.x % tiles) * BR;

  load_rows<T, DM, BR>(k_s, k, b, h, j0, pr.Tk, pr.D);
  load_rows<T, DM, BR>(v_s, v, b, h, j0, pr.Tk, pr.D);
  for (int r = tid; r < BR; r += kAttnThreads) hid_s[r] = key_hidden(pr, b, j0 + r);

  float dk_acc[RPT][DPT], dv_acc[RPT][DPT];
#pragma unroll
  for (int r = 0; r < RPT; ++r)
#pragma unroll
    for (int e = 0; e < DPT; ++e) dk_acc[r][e] = dv_acc[r][e] = 0.f;

  for (int64_t i0 = first_query(pr, j0) / BC * BC; i0 < pr.Tq; i0 += BC) {
    __syncthreads();
    load_rows<T, DM, BC>(q_s, q, b, h, i0, pr.Tq, pr.D);
    load_rows<T, DM, BC>(do_s, dout, b, h, i0, pr.Tq, pr.D);
    for (int c = tid; c < BC; c += kAttnThreads) {
      const bool in = i0 + c < pr.Tq;
      lse_s[c] = in ? lse[bh * pr.Tq + i0 + c] : -std::numeric_limits<float>::infinity();
      dl_s[c] = in ? delta[bh * pr.Tq + i0 + c] : 0.f;
    }
    __syncthreads();

    float s[RPT][CPT], dp[RPT][CPT];
#pragma unroll
    for (int r = 0; r < RPT; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) s[r][c] = dp[r][c] = 0.f;
    dot_tile<DM, RPT, CPT>(k_s, q_s, rg, cl, s);
    dot_tile<DM, RPT, CPT>(v_s, do_s, rg, cl, dp);

#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      const int row = rg * RPT + r;  // key
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const int col = cl + 16 * c;  // query
        const int64_t i = i0 + col;
        float pd = 0.f, ds = 0.f;
        if (visible(pr, hid_s[row], i, j0 + row)) {
          const float p = expf(s[r][c] * pr.scale - lse_s[col]);
          const float z = keep_factor(pr, bh, i, j0 + row);
          pd = p * z;
          ds = p * (dp[r][c] * z - dl_s[col]);
        }
        pd_s[row * LP + col] = pd;
        ds_s[row * LP + col] = ds;
      }
    }
    __syncthreads();
    pv_tile<DM, BC, RPT>(pd_s, do_s, rg, cl, dv_acc);
    pv_tile<DM, BC, RPT>(ds_s, q_s, rg, cl, dk_acc);
  }

#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int64_t j = j0 + rg * RPT + r;
    if (j >= pr.Tk) continue;
#pragma unroll
    for (int e = 0; e < DPT; ++e) {
      const int d = cl + 16 * e;
      if (d >= pr.D) continue;
      *dk.at(b, h, j, d) = store_cast<T>(pr.scale * dk_acc[r][e]);
      *dv.at(b, h, j, d) = store_cast<T>(dv_acc[r][e]);
    }
  }
}

// ---------------------------------------------------------------- host side

// Kernels above 48 KiB of dynamic shared memory must opt in, once per kernel
// (the process uses one device, so once per process).
template <class Kernel>
bool allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > size_t(48) << 10)
    STRATA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  return true;
}

// Tile shapes by padded head dim: 64 x 64 up to 64; at 128 smaller tiles keep
// the shared memory at ~75 KiB so two or more blocks share an SM.
template <int DM> struct Tiles {
  static constexpr int fwd_rows = 64, fwd_cols = DM > 64 ? 32 : 64;
  static constexpr int bwd_rows = DM > 64 ? 32 : 64, bwd_cols = DM > 64 ? 32 : 64;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned grid_for(int64_t blocks, const char* op) {
  STRATA_CHECK(blocks < (int64_t(1) << 31)) << op << ": " << blocks << " blocks are more than one launch takes";
  return unsigned(blocks);
}

template <class Fn>
void dispatch_head_dim(int64_t D, Fn&& fn) {
  if (D <= 16) return fn(std::integral_constant<int, 16>{});
  if (D <= 32) return fn(std::integral_constant<int, 32>{});
  if (D <= 64) return fn(std::integral_constant<int, 64>{});
  return fn(std::integral_constant<int, 128>{});
}

template <class Fn>
void dispatch_attention_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(TypeTag<float>{});
    case DType::F16: return fn(TypeTag<Half>{});
    case DType::BF16: return fn(TypeTag<BFloat16>{});
    default: break;
  }
  STRATA_FAIL() << "fused attention: expected f32, f16 or bf16 inputs, got " << dtype_name(t);
}

// The most dynamic shared memory the forward and backward kernels of a head
// dim need (the DM = 64 backward takes ~103 KiB).
size_t smem_for_head_dim(int64_t D) {
  size_t bytes = 0;
  dispatch_head_dim(D, [&](auto dm) {
    constexpr int DM = decltype(dm)::value;
    using Ti = Tiles<DM>;
    bytes = std::max({forward_smem<DM, Ti::fwd_rows, Ti::fwd_cols>(), dq_smem<DM, Ti::bwd_rows, Ti::bwd_cols>(),
                      dkdv_smem<DM, Ti::bwd_rows, Ti::bwd_cols>()});
  });
  return bytes;
}

// The device's opt-in per-block shared memory limit (227 KiB on sm_90, 163 KiB
// on sm_80, but 99 KiB on sm_86/sm_89, which run the sm_80 build): where a
// head dim needs more, the op takes the composed path instead of failing in
// cudaFuncSetAttribute half-way through a step.
size_t smem_optin_limit() {
  static const size_t limit = [] {
    int v = 0;
    STRATA_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, context().device));
    return size_t(v);
  }();
  return limit;
}

bool supported(const Tensor& q, const Tensor& k, const Tensor& v) {
  if (!q.defined() || !k.defined() || !v.defined()) return false;
  if (!q.device().is_cuda() || k.device() != q.device() || v.device() != q.device()) return false;
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  const DType dt = q.dtype();
  if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16) return false;
  if (k.dtype() != dt || v.dtype() != dt) return false;
  const int64_t D = q.size(3);
  if (D < 1 || D > kMaxHeadDim) return false;
  if (smem_for_head_dim(D) > smem_optin_limit()) return false;
  return k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == D && v.shape() == k.shape();
}

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, const char* op) {
  STRATA_CHECK(supported(q, k, v))
      << op << ": unsupported inputs q " << q.str() << ", k " << k.str() << ", v " << v.str()
      << " (needs CUDA tensors [B, H, T, D], f32/f16/bf16, D <= " << kMaxHeadDim
      << ", and the device's shared memory for D)";
  if (mask.key_padding.defined()) {
    const Tensor& p = mask.key_padding;
    STRATA_CHECK(p.dim() == 2 && p.size(0) == q.size(0) && p.size(1) == k.size(2))
        << op << ": key padding must be [" << q.size(0) << ", " << k.size(2) << "], got " << p.str();
    STRATA_CHECK(p.device() == q.device())
        << op << ": key padding " << p.str() << " is not on the inputs' device " << q.device().str();
  }
}

Problem make_problem(const Tensor& q, const Tensor& k, const AttentionMask& mask, double scale, double dropout_p,
                     const PhiloxStream& stream) {
  STRATA_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0) << "fused attention: dropout p must be in [0, 1], got "
                                                     << dropout_p;
  Problem pr;
  pr.H = q.size(1);
  pr.Tq = q.size(2);
  pr.Tk = k.size(2);
  pr.D = int(q.size(3));
  pr.scale = float(scale);
  if (mask.key_padding.defined()) {
    const Tensor& p = mask.key_padding;
    pr.pad = static_cast<const char*>(p.impl().storage->data()) + p.offset() * int64_t(dtype_size(p.dtype()));
    pr.pad_dtype = p.dtype();
    pr.pad_sb = p.strides()[0];
    pr.pad_sj = p.strides()[1];
  }
  pr.causal = mask.causal;
  pr.offset = std::min<int64_t>(std::max<int64_t>(mask.causal_offset, -pr.Tq), pr.Tk);
  pr.dropout = dropout_p > 0.0;
  pr.threshold = float(dropout_p);  // compared in f32, as the dropout mask does
  pr.stream = stream;
  return pr;
}

// The kept probabilities' factor in the input dtype: the composed path's
// dropout mask holds 1/(1-p) rounded to it.
template <class T>
float keep_scale(double p) {
  return p >= 1.0 ? 0.f : float(store_cast<T>(1.0 / (1.0 - p)));
}

template <class T> const float* cptr(const Tensor& t) { return storage_ptr<T>(t) + t.offset(); }
template <class T> float* mptr(const Tensor& t) { return storage_ptr<T>(t) + t.offset(); }

// One launcher per (dtype, head dim), so the shared-memory opt-in below runs
// once per kernel.
template <class T, int DM>
void launch_forward(const Tensor& q, const Tensor& k, const Tensor& v, const FusedAttentionForward& f,
                    const Problem& pr, int64_t BH) {
  constexpr int BR = Tiles<DM>::fwd_rows, BC = Tiles<DM>::fwd_cols;
  constexpr size_t smem = forward_smem<DM, BR, BC>();
  auto kernel = forward_kernel<T, DM, BR, BC>;
  static const bool ready = allow_smem(kernel, smem);
  (void)ready;
  const int64_t tiles = ceil_div(pr.Tq, BR);
  kernel<<<grid_for(BH * tiles, "fused attention"), kAttnThreads, smem, compute_stream()>>>(
      view4<const T>(q), view4<const T>(k), view4<const T>(v), view4<T>(f.out), mptr<float>(f.lse), pr, tiles);
  STRATA_KERNEL_CHECK();
}

template <class T, int DM>
void launch_backward(const Tensor& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                     const Tensor& delta, const FusedAttentionGrads& r, const Problem& pr, int64_t BH) {
  constexpr int BR = Tiles<DM>::bwd_rows, BC = Tiles<DM>::bwd_cols;
  const char* op = "fused attention backward";
  // dq first: it also computes D, which the dk/dv kernel reads (stream order).
  if (pr.Tq > 0) {
    constexpr size_t smem = dq_smem<DM, BR, BC>();
    auto kernel = dq_kernel<T, DM, BR, BC>;
    static const bool ready = allow_smem(kernel, smem);
    (void)ready;
    const int64_t tiles = ceil_div(pr.Tq, BR);
    kernel<<<grid_for(BH * tiles, op), kAttnThreads, smem, compute_stream()>>>(
        view4<const T>(q), view4<const T>(k), view4<const T>(v), view4<const T>(g), cptr<float>(lse),
        view4<T>(r.dq), mptr<float>(delta), pr, tiles);
    STRATA_KERNEL_CHECK();
  }
  if (pr.Tk > 0) {  // with Tq == 0 this writes zero dk and dv
    constexpr size_t smem = dkdv_smem<DM, BR, BC>();
    auto kernel = dkdv_kernel<T, DM, BR, BC>;
    static const bool ready = allow_smem(kernel, smem);
    (void)ready;
    const int64_t tiles = ceil_div(pr.Tk, BR);
    kernel<<<grid_for(BH * tiles, op), kAttnThreads, smem, compute_stream()>>>(
        view4<const T>(q), view4<const T>(k), view4<const T>(v), view4<const T>(g), cptr<float>(lse),
        cptr<float>(delta), view4<T>(r.dk), view4<T>(r.dv), pr, tiles);
    STRATA_KERNEL_CHECK();
  }
}

FusedAttentionForward forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                              double scale, double dropout_p, const PhiloxStream& stream) {
  check_inputs(q, k, v, mask, "fused attention");
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2);
  FusedAttentionForward f;
  f.out = Tensor::empty(q.shape(), q.dtype(), q.device());
  f.lse = Tensor::empty({B, H, Tq}, DType::F32, q.device());
  Problem pr = make_problem(q, k, mask, scale, dropout_p, stream);
  if (B * H * Tq == 0) return f;
  dispatch_attention_dtype(q.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    pr.keep = keep_scale<T>(dropout_p);
    dispatch_head_dim(pr.D, [&](auto dm) { launch_forward<T, decltype(dm)::value>(q, k, v, f, pr, B * H); });
  });
  return f;
}

FusedAttentionGrads backward(const Tensor& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                             const AttentionMask& mask, double scale, double dropout_p, const PhiloxStream& stream) {
  const char* op = "fused attention backward";
  check_inputs(q, k, v, mask, op);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2);
  STRATA_CHECK(g.defined() && g.shape() == q.shape() && g.dtype() == q.dtype() && g.device() == q.device())
      << op << ": output gradient " << (g.defined() ? g.str() : "undefined") << " does not match q " << q.str();
  STRATA_CHECK(lse.defined() && lse.shape() == Shape({B, H, Tq}) && lse.dtype() == DType::F32 &&
               lse.is_contiguous() && lse.device() == q.device())
      << op << ": lse must be the forward's contiguous f32 [" << B << ", " << H << ", " << Tq << "], got "
      << (lse.defined() ? lse.str() : "undefined");
  FusedAttentionGrads r;
  r.dq = Tensor::empty(q.shape(), q.dtype(), q.device());
  r.dk = Tensor::empty(k.shape(), k.dtype(), k.device());
  r.dv = Tensor::empty(v.shape(), v.dtype(), v.device());
  if (B * H == 0) return r;
  const Tensor delta = Tensor::empty({B, H, Tq}, DType::F32, q.device());
  Problem pr = make_problem(q, k, mask, scale, dropout_p, stream);
  dispatch_attention_dtype(q.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    pr.keep = keep_scale<T>(dropout_p);
    dispatch_head_dim(pr.D, [&](auto dm) {
      launch_backward<T, decltype(dm)::value>(g, q, k, v, lse, delta, r, pr, B * H);
    });
  });
  return r;
}

}  // namespace
}  // namespace strata::cuda::attention_impl

namespace strata::backend::cuda {

namespace impl = ::strata::cuda::attention_impl;

bool fused_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v) { return impl::supported(q, k, v); }

FusedAttentionForward fused_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                              const AttentionMask& mask, double scale, double dropout_p,
                                              const PhiloxStream& stream) {
  return impl::forward(q, k, v, mask, scale, dropout_p, stream);
}

FusedAttentionGrads fused_attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                             const Tensor& v, const Tensor& lse, const AttentionMask& mask,
                                             double scale, double dropout_p, const PhiloxStream& stream) {
  return impl::backward(grad_out, q, k, v, lse, mask, scale, dropout_p, stream);
}

}  // namespace strata::backend::cuda
