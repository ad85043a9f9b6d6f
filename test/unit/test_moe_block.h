// Shared by the MoE block tests: an f64 block whose weights are gradcheck
// leaves, and a naive per-token implementation of the block written straight
// from docs/smoe_spec.md (loops over tokens and experts, no buffers), used as
// the reference the batched implementation must reproduce.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "strata/autograd/ops.h"
#include "strata/moe/moe_block.h"
#include "test_util.h"

namespace strata::test {

using Vec = std::vector<double>;

// Leaves in a fixed order: ln_w, ln_b, gates[0..L), w1, b1, w2, b2,
// hmoe_w[0..L), hmoe_b[0..L) (when the spec has them), then for CMR
// cmr_w, cmr_b, s1w, s1b, s2w, s2b.
inline std::vector<Tensor> block_leaves(const moe::BlockSpec& spec, uint64_t seed) {
  const int64_t d = spec.dim, f = spec.ffn_dim, E = spec.experts();
  const int L = spec.num_strata();
  std::vector<Tensor> v;
  auto leaf = [&](const Shape& s, double lo, double hi) { v.push_back(grad_input(s, seed + v.size() * 7919, false, lo, hi)); };
  leaf({d}, 0.8, 1.2);
  leaf({d}, -0.2, 0.2);
  for (int s = 0; s < L; ++s) leaf({E - spec.stratum_offset(s), d}, -1, 1);
  leaf({E, f, d}, -0.6, 0.6);
  leaf({E, f}, -0.3, 0.3);
  leaf({E, d, f}, -0.6, 0.6);
  leaf({E, d}, -0.3, 0.3);
  if (spec.has_hmoe_layernorms()) {
    for (int s = 0; s < L; ++s) leaf({d}, 0.8, 1.2);
    for (int s = 0; s < L; ++s) leaf({d}, -0.2, 0.2);
  }
  if (spec.cmr) {
    leaf({1, d}, -1, 1);
    leaf({1}, -0.5, 0.5);
    leaf({f, d}, -0.6, 0.6);
    leaf({f}, -0.3, 0.3);
    leaf({d, f}, -0.6, 0.6);
    leaf({d}, -0.3, 0.3);
  }
  return v;
}

inline moe::BlockWeights block_weights(const moe::BlockSpec& spec, const std::vector<Tensor>& in) {
  const int L = spec.num_strata();
  moe::BlockWeights w;
  size_t i = 0;
  w.ln_weight = in[i++];
  w.ln_bias = in[i++];
  for (int s = 0; s < L; ++s) w.gates.push_back(in[i++]);
  Tensor w1 = in[i++], b1 = in[i++], w2 = in[i++], b2 = in[i++];
  w.experts = [w1, b1, w2, b2](int64_t first, int64_t count) {
    return moe::ExpertWeights{narrow(w1, 0, first, count), narrow(b1, 0, first, count), narrow(w2, 0, first, count),
                              narrow(b2, 0, first, count)};
  };
  if (spec.has_hmoe_layernorms()) {
    for (int s = 0; s < L; ++s) w.hmoe_ln_weight.push_back(in[i++]);
    for (int s = 0; s < L; ++s) w.hmoe_ln_bias.push_back(in[i++]);
  }
  if (spec.cmr) {
    w.cmr_weight = in[i++];
    w.cmr_bias = in[i++];
    w.shared_fc1_weight = in[i++];
    w.shared_fc1_bias = in[i++];
    w.shared_fc2_weight = in[i++];
    w.shared_fc2_bias = in[i++];
  }
  return w;
}

inline moe::BlockSpec small_spec(std::vector<int> strata, int64_t d = 6, int64_t f = 8) {
  moe::BlockSpec s;
  s.name = "encoder.layers.1";
  s.key = 1;
  s.dim = d;
  s.ffn_dim = f;
  s.strata = std::move(strata);
  s.gate.policy = config::SecondExpertPolicy::Argmax;
  s.gate.eval_capacity_fraction = 1.0;
  s.dropout = 0.0;
  s.activation_dropout = 0.0;
  return s;
}

// ------------------------------------------------------------- the naive reference

inline Vec ref_layer_norm(const Vec& x, const Vec& g, const Vec& b, double eps) {
  double m = 0, v = 0;
  for (double a : x) m += a / double(x.size());
  for (double a : x) v += (a - m) * (a - m) / double(x.size());
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - m) / std::sqrt(v + eps) * g[i] + b[i];
  return y;
}

struct NaiveBlock {
  moe::BlockSpec spec;
  int64_t d, f;
  Vec ln_w, ln_b, w1, b1, w2, b2;
  std::vector<Vec> gates, hw, hb;

  NaiveBlock(const moe::BlockSpec& sp, const std::vector<Tensor>& in) : spec(sp), d(sp.dim), f(sp.ffn_dim) {
    size_t i = 0;
    auto vec = [&]() { return in[i++].detach().to_vector<double>(); };
    ln_w = vec();
    ln_b = vec();
    for (int s = 0; s < sp.num_strata(); ++s) gates.push_back(vec());
    w1 = vec();
    b1 = vec();
    w2 = vec();
    b2 = vec();
    if (sp.has_hmoe_layernorms()) {
      for (int s = 0; s < sp.num_strata(); ++s) hw.push_back(vec());
      for (int s = 0; s < sp.num_strata(); ++s) hb.push_back(vec());
    }
  }

  Vec expert(int e, const Vec& z) const {
    Vec h(static_cast<size_t>(f)), y(static_cast<size_t>(d));
    for (int64_t j = 0; j < f; ++j) {
      double a = b1[size_t(e * f + j)];
      for (int64_t c = 0; c < d; ++c) a += w1[size_t((e * f + j) * d + c)] * z[size_t(c)];
      h[size_t(j)] = std::max(a, 0.0);
    }
    for (int64_t c = 0; c < d; ++c) {
      double a = b2[size_t(e * d + c)];
      for (int64_t j = 0; j < f; ++j) a += w2[size_t((e * d + c) * f + j)] * h[size_t(j)];
      y[size_t(c)] = a;
    }
    return y;
  }

  // Evaluation mode, Argmax second expert, capacity ceil(frac * tokens at the stratum).
  std::vector<Vec> forward(const std::vector<Vec>& u, double frac,
                           std::vector<std::vector<std::pair<int, int>>>* paths = nullptr) const {
    const size_t N = u.size();
    const int L = spec.num_strata(), E = spec.experts();
    const bool hmoe = spec.has_hmoe_layernorms();
    std::vector<int> state(N, 0);
    std::vector<Vec> h = u, z(N), r(N);
    if (paths) paths->assign(N, {});
    int s = 0;
    while (s < L) {
      std::vector<size_t> A;
      for (size_t t = 0; t < N; ++t)
        if (state[t] == s) A.push_back(t);
      for (size_t t : A) {
        if (s == 0) {
          z[t] = ref_layer_norm(u[t], ln_w, ln_b, spec.layernorm_eps);
          r[t] = u[t];
        } else if (hmoe) {
          z[t] = ref_layer_norm(h[t], hw[size_t(s - 1)], hb[size_t(s - 1)], spec.layernorm_eps);
          r[t] = spec.residual == config::SmoeResidual::Code ? z[t] : h[t];
        } else {
          z[t] = h[t];
          r[t] = h[t];
        }
      }
      const int off = spec.stratum_offset(s), V = E - off;
      const int64_t C = int64_t(std::ceil(frac * double(A.size())));
      std::vector<int> e1(A.size()), e2(A.size(), -1);
      std::vector<Vec> G(A.size());
      for (size_t i = 0; i < A.size(); ++i) {
        Vec l(static_cast<size_t>(V));
        for (int e = 0; e < V; ++e)
          for (int64_t c = 0; c < d; ++c) l[size_t(e)] += gates[size_t(s)][size_t(e * d + c)] * z[A[i]][size_t(c)];
        double m = *std::max_element(l.begin(), l.end()), sum = 0;
        G[i].resize(size_t(V));
        for (int e = 0; e < V; ++e) sum += (G[i][size_t(e)] = std::exp(l[size_t(e)] - m));
        for (double& g : G[i]) g /= sum;
        for (int e = 1; e < V; ++e)
          if (G[i][size_t(e)] > G[i][size_t(e1[i])]) e1[i] = e;
        if (!spec.gate.top1 && V > 1)
          for (int e = 0; e < V; ++e)
            if (e != e1[i] && (e2[i] < 0 || l[size_t(e)] > l[size_t(e2[i])])) e2[i] = e;
      }
      std::vector<int64_t> first(size_t(V), 0), second(size_t(V), 0), loc1(A.size()), loc2(A.size());
      for (size_t i = 0; i < A.size(); ++i) loc1[i] = first[size_t(e1[i])]++;
      for (size_t i = 0; i < A.size(); ++i)
        if (e2[i] >= 0) loc2[i] = second[size_t(e2[i])]++ + first[size_t(e2[i])];
      const double eps = std::numeric_limits<double>::epsilon();
      for (size_t i = 0; i < A.size(); ++i) {
        const size_t t = A[i];
        const double k1 = loc1[i] < C ? 1 : 0, k2 = e2[i] >= 0 && loc2[i] < C ? 1 : 0;
        const double p1 = G[i][size_t(e1[i])], p2 = e2[i] >= 0 ? G[i][size_t(e2[i])] : 0.0;
        double g1, g2 = 0;
        if (spec.gate.top1) {
          g1 = p1 * k1;
        } else if (spec.gate.normalize_before_dropping) {
          const double den = std::max(p1 + p2, eps);
          g1 = p1 / den * k1;
          g2 = p2 / den * k2;
        } else {
          const double den = std::max(p1 * k1 + p2 * k2, eps);
          g1 = p1 * k1 / den;
          g2 = p2 * k2 / den;
        }
        const double scale = 1.0 - spec.eom_rate;  // EOM in evaluation
        Vec y(size_t(d), 0.0);
        if (g1 != 0) {
          Vec a = expert(off + e1[i], z[t]);
          for (int64_t c = 0; c < d; ++c) y[size_t(c)] += scale * g1 * a[size_t(c)];
        }
        if (g2 != 0) {
          Vec b = expert(off + e2[i], z[t]);
          for (int64_t c = 0; c < d; ++c) y[size_t(c)] += scale * g2 * b[size_t(c)];
        }
        for (int64_t c = 0; c < d; ++c) h[t][size_t(c)] = r[t][size_t(c)] + y[size_t(c)];
        if (paths) (*paths)[t].emplace_back(s, off + e1[i]);
        state[t] = spec.stratum_of(off + e1[i]) + 1;
      }
      s = *std::min_element(state.begin(), state.end());
    }
    if (hmoe)
      for (size_t t = 0; t < N; ++t) h[t] = ref_layer_norm(h[t], hw[size_t(L - 1)], hb[size_t(L - 1)], spec.layernorm_eps);
    return h;
  }
};

inline std::vector<Vec> rows_of(const Tensor& x) {
  const int64_t d = x.size(-1), n = x.numel() / d;
  std::vector<double> v = x.detach().to(DType::F64).contiguous().to_vector<double>();
  std::vector<Vec> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = Vec(v.begin() + i * d, v.begin() + (i + 1) * d);
  return out;
}

}  // namespace strata::test
