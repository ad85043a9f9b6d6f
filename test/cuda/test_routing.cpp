// GPU routing (strata/backend/cuda/routing.h) against the host's moe::route
// and moe::make_slot_map: every field equal on the same probabilities and
// logits, for n in {1, 7, 513, 4099}, V in {1, 2, 4, 8, 16}, top-1 and top-2
// with each second-expert policy, capacities that drop and that do not,
// exact ties, NaN, infinities, signed zeros and subnormals, f32 and f64,
// strided inputs; the Gumbel noise bit for bit on
// every draw it can take; the slot maps, gate columns and EOM masks; the GPU
// gate against the CPU gate; and whole MoE blocks (top-2, Switch, SMoE 2-2)
// forward and backward on the GPU against the CPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "strata/autograd/ops.h"
#include "strata/backend/cuda/routing.h"
#include "strata/dist/communicator.h"
#include "strata/moe/dispatch.h"
#include "strata/moe/gate.h"
#include "strata/moe/moe_block.h"
#include "strata/moe/routing.h"

using namespace strata;
using namespace strata::moe;
using config::SecondExpertPolicy;
using strata::test::cpu;
using strata::test::gpu;
using strata::test::require_close;
namespace bc = strata::backend::cuda;

namespace {

// probs/logits [n, V] on the CPU in dtype dt. ties: small integers (1..4 for
// the probabilities before normalising, 0..3 for the logits), so rows have
// many exactly equal entries; otherwise a softmax of uniform logits.
struct Inputs {
  Tensor probs, logits;
};

Inputs make_inputs(int64_t n, int64_t V, DType dt, bool ties, uint64_t seed) {
  std::vector<double> a = Tensor::uniform({n, V}, seed, 0, 0.0, 1.0, DType::F64).to_vector<double>();
  std::vector<double> b = Tensor::uniform({n, V}, seed, 1, 0.0, 1.0, DType::F64).to_vector<double>();
  std::vector<double> p(a.size()), l(a.size());
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t e = 0; e < V; ++e) {
      const size_t j = size_t(i * V + e);
      if (ties) {
        p[j] = 1.0 + std::floor(a[j] * 4.0);
        l[j] = std::floor(b[j] * 4.0);
      } else {
        l[j] = -2.0 + 4.0 * b[j];
        p[j] = std::exp(l[j]);
      }
      s += p[j];
    }
    for (int64_t e = 0; e < V; ++e) p[size_t(i * V + e)] /= s;
  }
  return {Tensor::from_vector(p, {n, V}).to(dt), Tensor::from_vector(l, {n, V}).to(dt)};
}

Routing host_route(const Inputs& in, int64_t C, const RouteOptions& ro, const PhiloxStream* noise) {
  Tensor p = in.probs.contiguous(), l = in.logits.contiguous();
  const int64_t n = p.size(0), V = p.size(1);
  if (p.dtype() == DType::F64) return route<double>(p.data<double>(), l.data<double>(), n, V, C, ro, noise);
  return route<float>(p.data<float>(), l.data<float>(), n, V, C, ro, noise);
}

// A GPU view [a, b] with a non-unit inner stride holding x's values.
Tensor gpu_strided(const Tensor& x) { return gpu(x.transpose(0, 1).contiguous()).transpose(0, 1); }

void require_same_routing(const Routing& want, const Routing& got) {
  REQUIRE(got.rows == want.rows);
  REQUIRE(got.experts == want.experts);
  REQUIRE(got.capacity == want.capacity);
  REQUIRE(got.k == want.k);
  CHECK(got.e1 == want.e1);
  CHECK(got.e2 == want.e2);
  CHECK(got.loc1 == want.loc1);
  CHECK(got.loc2 == want.loc2);
  CHECK(got.keep1 == want.keep1);
  CHECK(got.keep2 == want.keep2);
  CHECK(got.first_count == want.first_count);
  CHECK(got.used_capacity() == want.used_capacity());
}

std::vector<int64_t> i64_of(const Tensor& t) { return cpu(t).to_vector<int64_t>(); }
std::vector<double> f64_of(const Tensor& t) { return cpu(t).to(DType::F64).to_vector<double>(); }

// The slot maps of the device routing equal make_slot_map's, for the visible
// experts alone and at offset 1 of a wider, deeper buffer.
void require_same_slot_maps(const Routing& host, const DeviceRouting& dev) {
  const int64_t used = host.used_capacity();
  struct Layout {
    int64_t base, experts, capacity;
  } layouts[] = {{0, host.experts, used}, {1, host.experts + 2, used + 2}};
  for (const Layout& L : layouts) {
    INFO("slot map at expert " << L.base << " of " << L.experts << " x " << L.capacity);
    const SlotMap want = make_slot_map(host, L.base, L.experts, L.capacity);
    auto maps = bc::slot_map(dev, L.base, L.experts, L.capacity, Device::cuda(0));
    CHECK(i64_of(maps.first) == want.row_slot);
    CHECK(i64_of(maps.second) == want.slot_src);
    auto dm = make_device_slot_map(host, dev, L.base, L.experts, L.capacity, Device::cuda(0));
    CHECK(dm->rows() == want.rows);
    CHECK(dm->k() == want.k);
    CHECK(dm->slots() == want.slots);
    CHECK(i64_of(dm->row_slot()) == want.row_slot);
    CHECK(i64_of(dm->slot_src()) == want.slot_src);
  }
}

// The gate columns and EOM masks, against values made from the host routing.
void require_same_columns(const Routing& host, const DeviceRouting& dev, DType dt) {
  const int64_t n = host.rows, V = host.experts;
  const bc::GateColumns c = bc::gate_columns(dev, dt);
  std::vector<double> oh1(size_t(n * V), 0.0), oh2(size_t(n * V), 0.0), k1(size_t(n), 0.0), k2(size_t(n), 0.0);
  std::vector<double> fc(host.first_count.begin(), host.first_count.end());
  for (int64_t i = 0; i < n; ++i) {
    oh1[size_t(i * V + host.e1[size_t(i)])] = 1.0;
    if (host.e2[size_t(i)] >= 0) oh2[size_t(i * V + host.e2[size_t(i)])] = 1.0;
    k1[size_t(i)] = host.keep1[size_t(i)];
    k2[size_t(i)] = host.keep2[size_t(i)];
  }
  CHECK(c.onehot1.dtype() == dt);
  CHECK(f64_of(c.onehot1) == oh1);
  CHECK(f64_of(c.onehot2) == oh2);
  CHECK(f64_of(c.keep1) == k1);
  CHECK(f64_of(c.keep2) == k2);
  CHECK(f64_of(c.first_count) == fc);
  const PhiloxStream s{77, 3};
  CHECK(f64_of(bc::eom_keep(dev, 1, V + 2, s, 0.3, dt)) == eom_keep(host, 1, V + 2, s, 0.3));
}

const char* policy_name(SecondExpertPolicy p) {
  switch (p) {
    case SecondExpertPolicy::Argmax: return "argmax";
    case SecondExpertPolicy::Sampling: return "sampling";
    default: return "random";
  }
}

}  // namespace

TEST_CASE("the GPU Gumbel noise is the host's on every draw it can take", "[cuda][routing]") {
  // Element i's noise depends only on the top 24 bits of its Philox word.
  const std::vector<float> dev = cpu(bc::gumbel_of_all_draws()).to_vector<float>();
  REQUIRE(dev.size() == size_t(1) << 24);
  size_t bad = 0, first = dev.size();
  for (uint32_t m = 0; m < (1u << 24); ++m) {
    const float u = (float(m) + 0.5f) * (1.0f / 16777216.0f);
    const float want = -logf(-logf(u));  // PhiloxStream::gumbel on the host
    if (std::memcmp(&want, &dev[m], sizeof(float)) != 0 && ++bad == 1) first = m;
  }
  INFO(bad << " draws differ; first at " << first);
  CHECK(bad == 0);
  // host_logf on the host is glibc's logf (every 61st float; all of them were checked when it was written)
  size_t bad_log = 0;
  for (uint64_t b = 0; b < (uint64_t(1) << 32); b += 61) {
    float x;
    const uint32_t bits = uint32_t(b);
    std::memcpy(&x, &bits, sizeof x);
    const float a = logf(x), h = bc::host_logf(x);
    if (!(std::isnan(a) && std::isnan(h)) && std::memcmp(&a, &h, sizeof a) != 0) ++bad_log;
  }
  CHECK(bad_log == 0);
  // and through a stream
  const PhiloxStream s{20240601, 9};
  for (uint64_t i = 0; i < 100000; ++i) {
    const float a = s.gumbel(i), h = bc::host_gumbel(s, i);
    REQUIRE(std::memcmp(&a, &h, sizeof a) == 0);
  }
}

TEST_CASE("GPU routing makes the host's decisions, field by field", "[cuda][routing]") {
  struct Opt {
    bool top1;
    SecondExpertPolicy policy;
    bool normalize;
  } opts[] = {{true, SecondExpertPolicy::Sampling, false},
              {false, SecondExpertPolicy::Argmax, false},
              {false, SecondExpertPolicy::Sampling, false},
              {false, SecondExpertPolicy::Random, false},
              {false, SecondExpertPolicy::Random, true}};
  uint64_t seed = 1;
  // 4099: several 1024-row chunks of the positions scan with a partial last one
  for (int64_t n : {1, 7, 513, 4099})
    for (int64_t V : {1, 2, 4, 8, 16})
      for (const Opt& o : opts)
        for (DType dt : {DType::F32, DType::F64})
          for (bool ties : {false, true})
            for (bool drops : {false, true}) {
              ++seed;
              // n never drops (an expert holds at most n choices); n / (3V) drops almost always
              const int64_t C = drops ? std::max<int64_t>(1, n / (3 * V)) : n;
              INFO("n " << n << " V " << V << (o.top1 ? " top-1 " : " top-2 ") << policy_name(o.policy)
                        << (o.normalize ? " normalised" : "") << " " << dtype_name(dt) << (ties ? " ties" : "")
                        << " capacity " << C);
              const Inputs in = make_inputs(n, V, dt, ties, seed);
              const RouteOptions ro{o.top1, o.policy, o.normalize};
              const PhiloxStream noise{seed * 31, seed};
              // Argmax needs no stream: give it none, as the gate does
              const PhiloxStream* np = o.policy == SecondExpertPolicy::Argmax ? nullptr : &noise;
              const Routing want = host_route(in, C, ro, np);
              // strided GPU views for the untied inputs, contiguous for the tied ones
              const Tensor gp = ties ? gpu(in.probs) : gpu_strided(in.probs);
              const Tensor gl = ties ? gpu(in.logits) : gpu_strided(in.logits);
              const DeviceRouting dev = bc::route(gp, gl, C, ro, np);
              REQUIRE(dev.defined());
              const Routing got = bc::download_routing(dev);
              require_same_routing(want, got);
              if (!drops || n <= 7) {  // every layout on a subset, to keep the test short
                require_same_slot_maps(want, dev);
                require_same_columns(want, dev, dt);
              }
              // deterministic: a second run gives the same bytes
              if (n == 513 && V == 8) CHECK(cpu(bc::route(gp, gl, C, ro, np).packed).to_vector<int32_t>() ==
                                            cpu(dev.packed).to_vector<int32_t>());
            }
}

TEST_CASE("GPU routing makes the host's decisions on NaN, infinite and subnormal gate values", "[cuda][routing]") {
  // Every element drawn from special values, so rows hold NaN first/second
  // candidates, all-NaN rows, +-inf logits (inf + noise, -inf everywhere
  // else), -0 against +0 and subnormal probabilities (f32 and f64 ones).
  const double kSpecial[] = {std::nan(""), INFINITY, -INFINITY, 0.0, -0.0, 1e-40, 1e-310, 0.25, 0.5, 1.0};
  const int64_t n = 300;
  struct Opt {
    bool top1;
    SecondExpertPolicy policy;
    bool normalize;
  } opts[] = {{true, SecondExpertPolicy::Sampling, false},
              {false, SecondExpertPolicy::Argmax, false},
              {false, SecondExpertPolicy::Sampling, false},
              {false, SecondExpertPolicy::Random, false},
              {false, SecondExpertPolicy::Random, true}};
  uint64_t seed = 500;
  for (int64_t V : {1, 3, 8})
    for (DType dt : {DType::F32, DType::F64})
      for (const Opt& o : opts)
        for (int64_t C : {int64_t(1), n}) {
          ++seed;
          INFO("V " << V << (o.top1 ? " top-1 " : " top-2 ") << policy_name(o.policy) << (o.normalize ? " normalised" : "")
                    << " " << dtype_name(dt) << " capacity " << C);
          const std::vector<double> a = Tensor::uniform({n, V}, seed, 0, 0.0, 10.0, DType::F64).to_vector<double>();
          const std::vector<double> b = Tensor::uniform({n, V}, seed, 1, 0.0, 10.0, DType::F64).to_vector<double>();
          std::vector<double> p(a.size()), l(a.size());
          for (size_t j = 0; j < a.size(); ++j) {
            p[j] = kSpecial[std::min<size_t>(9, size_t(a[j]))];
            l[j] = kSpecial[std::min<size_t>(9, size_t(b[j]))];
          }
          const Inputs in{Tensor::from_vector(p, {n, V}).to(dt), Tensor::from_vector(l, {n, V}).to(dt)};
          const RouteOptions ro{o.top1, o.policy, o.normalize};
          const PhiloxStream noise{seed, 5};
          const PhiloxStream* np = o.policy == SecondExpertPolicy::Argmax ? nullptr : &noise;
          const Routing want = host_route(in, C, ro, np);
          const DeviceRouting dev = bc::route(gpu(in.probs), gpu(in.logits), C, ro, np);
          require_same_routing(want, bc::download_routing(dev));
        }
}

TEST_CASE("GPU routing refuses what the host refuses", "[cuda][routing]") {
  const Inputs in = make_inputs(5, 3, DType::F32, false, 3);
  const RouteOptions sampling{false, SecondExpertPolicy::Sampling, false};
  REQUIRE_THROWS_WITH(bc::route(gpu(in.probs), gpu(in.logits), 4, sampling, nullptr),
                      Catch::Contains("random stream"));
  REQUIRE_THROWS_WITH(bc::route(in.probs, gpu(in.logits), 4, RouteOptions{}, nullptr), Catch::Contains("moe route"));
  REQUIRE_THROWS_WITH(bc::route(gpu(in.probs.to(DType::BF16)), gpu(in.logits.to(DType::BF16)), 4, RouteOptions{},
                                nullptr),
                      Catch::Contains("moe route"));
  const RouteOptions argmax{false, SecondExpertPolicy::Argmax, false};
  const DeviceRouting dev = bc::route(gpu(in.probs), gpu(in.logits), 4, argmax, nullptr);
  const Routing host = bc::download_routing(dev);
  REQUIRE_THROWS_WITH(make_device_slot_map(host, dev, 1, 3, host.used_capacity(), Device::cuda(0)),
                      Catch::Contains("moe slot map"));
  if (host.used_capacity() > 0)
    REQUIRE_THROWS_WITH(make_device_slot_map(host, dev, 0, 3, host.used_capacity() - 1, Device::cuda(0)),
                        Catch::Contains("used capacity"));
  // no rows: an all-empty map
  Routing none;
  none.experts = 3;
  none.k = 2;
  auto empty = make_device_slot_map(none, DeviceRouting{}, 0, 3, 2, Device::cuda(0));
  CHECK(empty->rows() == 0);
  CHECK(i64_of(empty->slot_src()) == std::vector<int64_t>(6, -1));
}

TEST_CASE("the GPU gate routes, weighs and balances as the CPU gate", "[cuda][routing]") {
  // z = integer logits and wg = I: both devices get bitwise equal logits, and
  // equal logits give equal probabilities on each device, so the routing is
  // identical even where rows tie; the values agree to rounding.
  const int64_t n = 37, V = 5;
  std::vector<double> lv = Tensor::uniform({n, V}, 5, 0, 0.0, 4.0, DType::F64).to_vector<double>();
  for (double& v : lv) v = std::floor(v);
  std::vector<double> eye(size_t(V * V), 0.0);
  for (int64_t e = 0; e < V; ++e) eye[size_t(e * V + e)] = 1.0;
  std::vector<uint8_t> pad(size_t(n), 0);
  for (int64_t i = 0; i < n; i += 4) pad[size_t(i)] = 1;
  struct Opt {
    const char* name;
    bool top1;
    SecondExpertPolicy policy;
    bool normalize, ignore_pad, z_loss;
    double frac;
  } opts[] = {{"top-2 argmax with drops", false, SecondExpertPolicy::Argmax, false, false, true, 0.15},
              {"top-2 sampling", false, SecondExpertPolicy::Sampling, false, false, false, 1.0},
              {"top-2 random, normalised, padding ignored", false, SecondExpertPolicy::Random, true, true, true, 0.2},
              {"switch with drops, padding ignored", true, SecondExpertPolicy::Sampling, false, true, true, 0.1}};
  for (DType dt : {DType::F32, DType::F64})
    for (const Opt& o : opts) {
      INFO(o.name << " " << dtype_name(dt));
      GateOptions go;
      go.top1 = o.top1;
      go.policy = o.policy;
      go.normalize_before_dropping = o.normalize;
      go.balance_ignore_padding = o.ignore_pad;
      go.z_loss = o.z_loss;
      const int64_t S = n + 3;  // 3 padding rows of the buffer
      const int64_t C = std::max<int64_t>(1, int64_t(o.frac * double(S)));
      const PhiloxStream noise{11, 2};
      const Tensor z = Tensor::from_vector(lv, {n, V}).to(dt), wg = Tensor::from_vector(eye, {V, V}).to(dt);
      Tensor zc = z.clone().set_requires_grad(true), zg = gpu(z).set_requires_grad(true);
      const GateOutput c = gate_forward(zc, wg, S, C, go, pad.data(), &noise);
      const GateOutput g = gate_forward(zg, gpu(wg), S, C, go, pad.data(), &noise);
      REQUIRE(g.device_routing.defined());
      CHECK(!c.device_routing.defined());
      require_same_routing(c.routing, g.routing);
      require_close(c.weights, g.weights, -1, "weights");
      require_close(c.balance, g.balance, -1, "balance");
      if (o.z_loss) require_close(c.z_loss, g.z_loss, -1, "z-loss");
      // gradients through the gathered probabilities and the losses
      const Tensor R = Tensor::uniform(c.weights.shape(), 9, 0, -1.0, 1.0, c.weights.dtype());
      Tensor lc = sum(c.weights * R) + c.balance, lg = sum(g.weights * gpu(R)) + g.balance;
      if (o.z_loss) {
        lc = lc + c.z_loss;
        lg = lg + g.z_loss;
      }
      lc.backward();
      lg.backward();
      require_close(zc.grad(), zg.grad(), dt == DType::F32 ? 1e-4 : 1e-9, "dz");
    }
}

// ----------------------------------------------------------- whole blocks

namespace {

dist::LocalCommunicator& comm() {
  static dist::LocalCommunicator c;
  return c;
}

// f32 leaves in a fixed order: ln_w, ln_b, gates[0..L), w1, b1, w2, b2,
// hmoe_w[0..L), hmoe_b[0..L) (when the spec has them).
std::vector<Tensor> block_leaves(const BlockSpec& spec, uint64_t seed) {
  const int64_t d = spec.dim, f = spec.ffn_dim, E = spec.experts();
  const int L = spec.num_strata();
  std::vector<Tensor> v;
  auto leaf = [&](const Shape& s, double lo, double hi) {
    v.push_back(Tensor::uniform(s, seed, uint64_t(v.size()), lo, hi, DType::F32));
  };
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
  return v;
}

BlockWeights block_weights(const BlockSpec& spec, const std::vector<Tensor>& in) {
  const int L = spec.num_strata();
  BlockWeights w;
  size_t i = 0;
  w.ln_weight = in[i++];
  w.ln_bias = in[i++];
  for (int s = 0; s < L; ++s) w.gates.push_back(in[i++]);
  Tensor w1 = in[i++], b1 = in[i++], w2 = in[i++], b2 = in[i++];
  w.experts = [w1, b1, w2, b2](int64_t first, int64_t count) {
    return ExpertWeights{narrow(w1, 0, first, count), narrow(b1, 0, first, count), narrow(w2, 0, first, count),
                         narrow(b2, 0, first, count)};
  };
  if (spec.has_hmoe_layernorms()) {
    for (int s = 0; s < L; ++s) w.hmoe_ln_weight.push_back(in[i++]);
    for (int s = 0; s < L; ++s) w.hmoe_ln_bias.push_back(in[i++]);
  }
  return w;
}

struct BlockRun {
  Tensor y, balance;
  std::vector<Tensor> grads;  // leaves, then x
  std::vector<std::vector<std::pair<int32_t, int32_t>>> paths;
};

// One forward and backward of the block on `dev` (leaves and x copied there
// as fresh leaves); loss = sum(y * R) + balance.
BlockRun run_block(const BlockSpec& spec, const std::vector<Tensor>& leaves, const Tensor& x, const Tensor& pad,
                   const Tensor& R, bool training, Device dev) {
  std::vector<Tensor> in;
  // fresh leaves on either device (to(cpu) of a CPU tensor would be the tensor itself)
  auto fresh = [&](const Tensor& t) { return dev.is_cpu() ? t.clone() : t.to(dev); };
  for (const Tensor& t : leaves) in.push_back(fresh(t).set_requires_grad(true));
  Tensor xin = fresh(x).set_requires_grad(true);
  Generator gen(21);
  nn::AuxLosses aux;
  aux.record_paths = true;
  nn::ForwardContext ctx{training, training ? &gen : nullptr, &aux};
  ExpertPlacement place = ExpertPlacement::of(spec.experts(), comm());
  BlockRun r;
  r.y = moe_block_forward(xin, pad.defined() ? pad.to(dev) : pad, spec, block_weights(spec, in), ctx, comm(), place);
  REQUIRE(aux.blocks.size() == 1);
  r.balance = aux.blocks[0].balance;
  r.paths = aux.blocks[0].paths;
  (sum(r.y * R.to(dev)) + r.balance).backward();
  for (const Tensor& t : in) r.grads.push_back(t.grad());
  r.grads.push_back(xin.grad());
  return r;
}

}  // namespace

TEST_CASE("MoE blocks run forward and backward on the GPU as on the CPU", "[cuda][routing]") {
  struct Case {
    const char* name;
    std::vector<int> strata;
    bool top1;
    SecondExpertPolicy policy;
    bool training;
    double capacity_factor, eval_fraction, eom, activation_dropout;
  } cases[] = {
      {"top-2, Gumbel second expert, training", {4}, false, SecondExpertPolicy::Sampling, true, 1.0, 1.0, 0, 0},
      {"top-2, evaluation with drops", {4}, false, SecondExpertPolicy::Argmax, false, 1.0, 0.2, 0, 0},
      {"switch top-1 with drops, training", {4}, true, SecondExpertPolicy::Sampling, true, 0.5, 1.0, 0, 0},
      {"SMoE 2-2, training, random policy", {2, 2}, false, SecondExpertPolicy::Random, true, 1.0, 1.0, 0, 0},
      {"SMoE 2-2 with drops, EOM and expert dropout, training", {2, 2}, false, SecondExpertPolicy::Sampling, true,
       0.5, 1.0, 0.2, 0.1},
      {"SMoE 2-2, evaluation with drops and EOM", {2, 2}, false, SecondExpertPolicy::Argmax, false, 1.0, 0.3, 0.2, 0},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      BlockSpec spec;
      spec.name = "encoder.layers.1";
      spec.key = 1;
      spec.dim = 8;
      spec.ffn_dim = 12;
      spec.strata = c.strata;
      spec.gate.top1 = c.top1;
      spec.gate.policy = c.policy;
      spec.gate.capacity_factor = c.capacity_factor;
      spec.gate.eval_capacity_fraction = c.eval_fraction;
      spec.gate.z_loss = false;
      spec.eom_rate = c.eom;
      spec.activation_dropout = c.activation_dropout;
      const std::vector<Tensor> leaves = block_leaves(spec, 100);
      const Tensor x = Tensor::uniform({3, 7, spec.dim}, 7, 0, -2, 2, DType::F32);
      std::vector<double> pv(21, 0.0);
      pv[6] = pv[13] = pv[20] = 1.0;  // one PAD token per sentence
      const Tensor pad = Tensor::from_vector(pv, {3, 7});
      const Tensor R = Tensor::uniform({3, 7, spec.dim}, 8, 0, -1, 1, DType::F32);
      const BlockRun cr = run_block(spec, leaves, x, pad, R, c.training, Device::cpu());
      const BlockRun gr = run_block(spec, leaves, x, pad, R, c.training, Device::cuda(0));
      // the routing first: a difference here would be a near tie of CPU and GPU rounding
      REQUIRE(gr.paths == cr.paths);
      require_close(cr.y, gr.y, 2e-5, "block output");
      require_close(cr.balance, gr.balance, 2e-5, "balance loss");
      REQUIRE(gr.grads.size() == cr.grads.size());
      for (size_t i = 0; i < cr.grads.size(); ++i) {
        // a stratum no token reaches leaves its gate without a gradient, on both devices
        REQUIRE(gr.grads[i].defined() == cr.grads[i].defined());
        if (cr.grads[i].defined()) require_close(cr.grads[i], gr.grads[i], 1e-4, "gradient of leaf " + std::to_string(i));
      }
    }
  }
}
