#include "strata/moe/routing.h"

#include <cmath>
#include <limits>

#include "strata/core/error.h"

namespace strata::moe {

int64_t expert_capacity(int64_t S, int64_t V, bool top1, double capacity_factor, bool training,
                        double eval_fraction) {
  STRATA_CHECK(S >= 0 && V > 0) << "moe capacity: " << S << " rows over " << V << " experts";
  if (!training && eval_fraction > 0) return int64_t(std::ceil(eval_fraction * double(S)));
  const int64_t per_expert = (S + V - 1) / V;
  // the factor is applied in double and rounded up; 1.0 gives the reference's 2*ceil(S/V) / ceil(S/V)
  return int64_t(std::ceil(capacity_factor * double(top1 ? 1 : 2) * double(per_expert) - 1e-9));
}

int64_t Routing::used_capacity() const {
  int64_t used = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (keep1[size_t(r)]) used = std::max(used, loc1[size_t(r)] + 1);
    if (k == 2 && keep2[size_t(r)]) used = std::max(used, loc2[size_t(r)] + 1);
  }
  return used;
}

template <class T>
Routing route(const T* probs, const T* logits, int64_t n, int64_t V, int64_t capacity, const RouteOptions& opt,
              const PhiloxStream* noise) {
  using config::SecondExpertPolicy;
  Routing r;
  r.rows = n;
  r.experts = V;
  r.capacity = capacity;
  r.k = opt.top1 ? 1 : 2;
  r.e1.assign(size_t(n), 0);
  r.e2.assign(size_t(n), -1);
  r.loc1.assign(size_t(n), 0);
  r.loc2.assign(size_t(n), 0);
  r.keep1.assign(size_t(n), 0);
  r.keep2.assign(size_t(n), 0);
  r.first_count.assign(size_t(V), 0);
  const bool second = !opt.top1 && V > 1;
  STRATA_CHECK(!second || opt.policy == SecondExpertPolicy::Argmax || noise != nullptr)
      << "moe route: the " << config::to_string(opt.policy) << " second-expert policy needs a random stream";

  // First choice: argmax of the probabilities (first maximum, as torch.argmax).
  for (int64_t i = 0; i < n; ++i) {
    const T* p = probs + i * V;
    int32_t best = 0;
    for (int64_t e = 1; e < V; ++e)
      if (p[e] > p[best]) best = int32_t(e);
    r.e1[size_t(i)] = best;
  }
  // Second choice: argmax over the other experts of the logits, Gumbel-noised
  // for Sampling (noise in training and evaluation alike, as in the reference).
  if (second) {
    for (int64_t i = 0; i < n; ++i) {
      const T* l = logits + i * V;
      const int32_t first = r.e1[size_t(i)];
      int32_t best = -1;
      T best_v = -std::numeric_limits<T>::infinity();
      for (int64_t e = 0; e < V; ++e) {
        if (e == first) continue;
        T v = l[e];
        if (opt.policy == SecondExpertPolicy::Sampling) v += T(noise->gumbel(uint64_t(i * V + e)));
        if (best < 0 || v > best_v) {
          best = int32_t(e);
          best_v = v;
        }
      }
      if (opt.policy == SecondExpertPolicy::Random) {
        // fairseq's "random": keep the second expert with probability min(1, 2*g2)
        const T* p = probs + i * V;
        T g2 = p[best];
        if (opt.normalize_before_dropping) {
          T denom = std::max(p[first] + p[best], std::numeric_limits<T>::epsilon());
          g2 = g2 / denom;
        }
        if (!(T(2) * g2 > T(noise->uniform(uint64_t(i))))) best = -1;
      }
      r.e2[size_t(i)] = best;
    }
  }
  // Positions: an exclusive running count per expert in row order; every
  // first choice (kept or not) comes before every second choice.
  std::vector<int64_t> count(size_t(V), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t e = r.e1[size_t(i)];
    r.loc1[size_t(i)] = count[size_t(e)]++;
    r.keep1[size_t(i)] = r.loc1[size_t(i)] < capacity;
  }
  r.first_count = count;
  if (second) {
    std::vector<int64_t> count2(size_t(V), 0);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t e = r.e2[size_t(i)];
      if (e < 0) continue;
      r.loc2[size_t(i)] = count2[size_t(e)]++ + r.first_count[size_t(e)];
      r.keep2[size_t(i)] = r.loc2[size_t(i)] < capacity;
    }
  }
  return r;
}

template Routing route<float>(const float*, const float*, int64_t, int64_t, int64_t, const RouteOptions&,
                              const PhiloxStream*);
template Routing route<double>(const double*, const double*, int64_t, int64_t, int64_t, const RouteOptions&,
                               const PhiloxStream*);

SlotMap make_slot_map(const Routing& r, int64_t expert_base, int64_t buffer_experts, int64_t capacity) {
  STRATA_CHECK(expert_base >= 0 && expert_base + r.experts <= buffer_experts)
      << "moe slot map: experts [" << expert_base << ", " << expert_base + r.experts << ") outside a buffer of "
      << buffer_experts << " experts";
  STRATA_CHECK(capacity >= r.used_capacity())
      << "moe slot map: buffer capacity " << capacity << " below the used capacity " << r.used_capacity();
  SlotMap m;
  m.rows = r.rows;
  m.k = r.k;
  m.slots = buffer_experts * capacity;
  m.row_slot.assign(size_t(r.rows * r.k), -1);
  m.slot_src.assign(size_t(m.slots), -1);
  for (int64_t i = 0; i < r.rows; ++i) {
    for (int j = 0; j < r.k; ++j) {
      const bool kept = j == 0 ? r.keep1[size_t(i)] : r.keep2[size_t(i)];
      if (!kept) continue;
      const int64_t e = j == 0 ? r.e1[size_t(i)] : r.e2[size_t(i)];
      const int64_t loc = j == 0 ? r.loc1[size_t(i)] : r.loc2[size_t(i)];
      const int64_t slot = (expert_base + e) * capacity + loc;
      m.row_slot[size_t(i * r.k + j)] = slot;
      m.slot_src[size_t(slot)] = i * r.k + j;
    }
  }
  return m;
}

std::vector<double> eom_keep(const Routing& r, int64_t expert_offset, int64_t experts, const PhiloxStream& stream,
                             double p) {
  STRATA_CHECK(expert_offset >= 0 && expert_offset + r.experts <= experts)
      << "moe eom: experts [" << expert_offset << ", " << expert_offset + r.experts << ") outside the block's "
      << experts;
  std::vector<double> keep(size_t(r.rows * r.k), 1.0);
  for (int64_t i = 0; i < r.rows; ++i)
    for (int j = 0; j < r.k; ++j) {
      const int64_t e = j == 0 ? r.e1[size_t(i)] : r.e2[size_t(i)];
      if (e < 0) continue;
      if (stream.bernoulli(uint64_t(i * experts + expert_offset + e), float(p))) keep[size_t(i * r.k + j)] = 0.0;
    }
  return keep;
}

}  // namespace strata::moe
