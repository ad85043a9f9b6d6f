// The MoE block: the stratified pass loop and one pass (gate -> dispatch ->
// all-to-all -> expert GEMMs -> all-to-all -> combine), plus the CMR mix.
// Routing decisions are plain C++ (moe/routing.h) on the CPU; a GPU gate
// routes on the device (strata/backend/cuda/routing.h), builds the slot map
// there too, and brings only its compact routing to the host, in one transfer,
// for the decisions the host makes (strata, buffer sizes, statistics, row
// keys of the expert dropout). Everything that carries a gradient is an
// autograd op.
#include "strata/moe/moe_block.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "strata/autograd/ops.h"
#include "strata/core/dispatch.h"
#include "strata/moe/dispatch.h"
#include "strata/moe/profile.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/routing.h"
#endif

namespace strata::moe {

// ------------------------------------------------------------------ spec ----

int BlockSpec::experts() const { return std::accumulate(strata.begin(), strata.end(), 0); }

int BlockSpec::stratum_offset(int s) const {
  int off = 0;
  for (int i = 0; i < s; ++i) off += strata[size_t(i)];
  return off;
}

int BlockSpec::stratum_of(int expert) const {
  int end = 0;
  for (int s = 0; s < num_strata(); ++s) {
    end += strata[size_t(s)];
    if (expert < end) return s;
  }
  STRATA_FAIL() << "moe: expert " << expert << " outside the " << end << " experts of block " << name;
  return -1;
}

BlockSpec block_spec(const config::Config& cfg, bool decoder, int layer) {
  const config::MoEOptions& m = cfg.moe;
  BlockSpec s;
  s.name = std::string(decoder ? "decoder" : "encoder") + ".layers." + std::to_string(layer);
  s.key = (decoder ? 0x10000u : 0u) + uint64_t(layer);
  s.dim = cfg.model.embed_dim;
  s.ffn_dim = cfg.model.ffn_dim;
  s.strata = m.strata.empty() ? std::vector<int>{m.experts} : m.strata;
  s.gate.top1 = m.top1;
  s.gate.policy = m.second_expert_policy;
  s.gate.capacity_factor = m.capacity_factor;
  s.gate.eval_capacity_fraction = m.eval_capacity_token_fraction;
  s.gate.normalize_before_dropping = m.normalize_gate_prob_before_dropping;
  s.gate.balance_ignore_padding = m.balance_loss_ignore_padding;
  s.gate.z_loss = m.z_loss_weight > 0;
  s.dropout = cfg.model.dropout;
  s.activation_dropout = cfg.model.activation_dropout;
  s.eom_rate = m.effective_eom_rate();
  s.hmoe_layernorm = m.hmoe_layernorm;
  s.residual = m.smoe_residual;
  s.cmr = m.moe_type == config::MoEType::Cmr;
  s.cmr_gate_dropout = m.cmr_gate_dropout;
  s.layernorm_eps = cfg.model.layernorm_eps;
  return s;
}

ExpertPlacement ExpertPlacement::of(int64_t experts, const dist::Communicator& comm) {
  ExpertPlacement p;
  p.world = comm.size();
  p.rank = comm.rank();
  STRATA_CHECK(experts % p.world == 0)
      << "moe: " << experts << " experts do not split evenly over " << p.world << " ranks of '" << comm.name()
      << "' (with fewer experts than ranks, build the model over an expert group of dist::make_expert_groups)";
  p.num_local = experts / p.world;
  p.first_local = int64_t(p.rank) * p.num_local;
  return p;
}

// ----------------------------------------------------------------- a pass ----

namespace {

// The evaluation Gumbel noise when the context has no generator: a fixed
// stream per (block, stratum), so validation and decoding are reproducible
// and the PyTorch reference can draw the same numbers.
constexpr uint64_t kEvalNoiseSeed = 0x534D6F45ull;  // "SMoE"

struct Env {
  const BlockSpec& spec;
  const BlockWeights& w;
  const nn::ForwardContext& ctx;
  dist::Communicator& comm;
  const ExpertPlacement& place;
  GateOptions gate;                // with the evaluation capacity resolved
  BlockRoutingStats* stats;        // null: not collecting
};

struct PassOut {
  Tensor y;                       // [n, dim] combined expert output
  std::vector<int32_t> e1;        // global top-1 expert per row (before capacity)
  Tensor balance, z_loss;
};

void record_pass_stats(const Env& env, const GateOutput& g, int off, const std::vector<uint8_t>& pad,
                       const std::vector<int32_t>& lang) {
  BlockRoutingStats& st = *env.stats;
  const Routing& r = g.routing;
  if (r.rows == 0) return;
  Tensor p = g.probs.detach().contiguous().to(Device::cpu()).to(DType::F64).contiguous();  // routing reads the host
  const double* pp = p.data<double>();
  const int64_t V = r.experts;
  for (int64_t i = 0; i < r.rows; ++i) {
    if (pad[size_t(i)]) continue;
    const int e1 = off + r.e1[size_t(i)];
    ++st.top1[size_t(e1)];
    ++st.first_choices;
    st.first_dropped += r.keep1[size_t(i)] ? 0 : 1;
    if (r.e2[size_t(i)] >= 0) {
      ++st.top2[size_t(off + r.e2[size_t(i)])];
      ++st.second_choices;
      st.second_dropped += r.keep2[size_t(i)] ? 0 : 1;
    }
    double h = 0;
    for (int64_t e = 0; e < V; ++e) {
      const double q = pp[i * V + e];
      if (q > 0) h -= q * std::log(q);
    }
    st.entropy_sum += h;
    ++st.gated_rows;
    if (lang[size_t(i)] >= 0) {
      LangRouting& l = st.by_lang[lang[size_t(i)]];
      if (l.top1.empty()) l.top1.assign(size_t(st.experts), 0);
      ++l.top1[size_t(e1)];
    }
  }
}

// EOM on the combine weights: zeroing the weight of an (expert, slot)
// assignment is zeroing that expert output row, since each slot holds one
// token. Training: drop with probability p, no rescaling, keyed by (pass row,
// global expert) (eom_keep); evaluation: * (1-p).
// A GPU gate draws the same mask on the device (no upload).
Tensor expert_output_mask(const Env& env, const Tensor& weights, const GateOutput& g, int off) {
  const double p = env.spec.eom_rate;
  const Routing& r = g.routing;
  if (!env.ctx.training) return weights * (1.0 - p);
  if (r.rows == 0) return weights;  // no rows, no stream (see the stream rule in moe_pass)
  const PhiloxStream stream = env.ctx.next_stream();
#ifdef STRATA_WITH_CUDA
  if (g.device_routing.defined())
    return weights * backend::cuda::eom_keep(g.device_routing, off, env.spec.experts(), stream, p, weights.dtype());
#endif
  const std::vector<double> keep = eom_keep(r, off, env.spec.experts(), stream, p);
  return weights * Tensor::from_vector(keep, {r.rows, int64_t(r.k)}).to(weights.dtype()).to(weights.device());
}

// Choices that got a slot: the filled slots of the pass's slot map.
int64_t kept_choices(const Routing& r) {
  int64_t kept = 0;
  for (int64_t i = 0; i < r.rows; ++i) kept += int64_t(r.keep1[size_t(i)]) + (r.k == 2 ? r.keep2[size_t(i)] : 0);
  return kept;
}

// The streams a rank draws in a pass for dropout inside the experts.
struct ExpertStreams {
  bool on = false;  // training with activation dropout or dropout > 0
  PhiloxStream act, out;
};

// Row keys of a one-process buffer [V, used]: slot (v, c) is expert off + v,
// holding pass row slot_src / k of this batch.
ExpertRowKeys local_row_keys(const SlotMap& map, int64_t V, int64_t used, int off, int E, const ExpertStreams& st,
                             const BlockSpec& spec) {
  ExpertRowKeys keys;
  keys.experts = E;
  keys.global.resize(size_t(V));
  for (int64_t v = 0; v < V; ++v) keys.global[size_t(v)] = off + v;
  keys.row.resize(size_t(V * used));
  for (int64_t s = 0; s < V * used; ++s) {
    const int64_t src = map.slot_src[size_t(s)];
    keys.row[size_t(s)] = src >= 0 ? src / map.k : -1;
  }
  if (spec.activation_dropout > 0) keys.act.assign(size_t(V * used), st.act);
  if (spec.dropout > 0) keys.out.assign(size_t(V * used), st.out);
  return keys;
}

// Row keys of an expert-parallel buffer [EL, W * used] (local expert l, source
// rank q, slot c): every rank sends, with its buffer, each slot's source row
// and its streams (an i64 all-to-all of the same chunk layout), so an expert
// masks a token as the token's own micro-batch would on one process.
ExpertRowKeys exchanged_row_keys(const SlotMap& map, int64_t used, int E, const ExpertStreams& st, const BlockSpec& spec,
                                 const ExpertPlacement& place, dist::Communicator& comm, Device dev) {
  constexpr int64_t K = 5;  // source row, act seed, act offset, out seed, out offset
  std::vector<int64_t> ids(size_t(map.slots * K), -1);
  for (int64_t s = 0; s < map.slots; ++s) {
    const int64_t src = map.slot_src[size_t(s)];
    if (src < 0) continue;
    int64_t* o = ids.data() + s * K;
    o[0] = src / map.k;
    o[1] = int64_t(st.act.seed);
    o[2] = int64_t(st.act.offset);
    o[3] = int64_t(st.out.seed);
    o[4] = int64_t(st.out.offset);
  }
  // on the device of the expert buffers: the communicator that moves those moves these
  Tensor send = Tensor::from_vector(ids, {map.slots, K}).to(dev);
  Tensor recv = Tensor::empty({map.slots, K}, DType::I64, dev);
  comm.all_to_all(send, recv);
  recv = recv.to(Device::cpu());
  const int64_t* rp = recv.data<int64_t>();
  const int64_t W = place.world, EL = place.num_local, R = W * used;
  ExpertRowKeys keys;
  keys.experts = E;
  keys.global.resize(size_t(EL));
  for (int64_t l = 0; l < EL; ++l) keys.global[size_t(l)] = place.first_local + l;
  keys.row.assign(size_t(EL * R), -1);
  if (spec.activation_dropout > 0) keys.act.resize(size_t(EL * R));
  if (spec.dropout > 0) keys.out.resize(size_t(EL * R));
  for (int64_t q = 0; q < W; ++q)
    for (int64_t l = 0; l < EL; ++l)
      for (int64_t c = 0; c < used; ++c) {
        const int64_t* in = rp + ((q * EL + l) * used + c) * K;  // received [source rank, local expert, slot]
        const size_t b = size_t(l * R + q * used + c);           // buffer [local expert, source rank * slot]
        keys.row[b] = in[0];
        if (in[0] < 0) continue;
        if (!keys.act.empty()) keys.act[b] = PhiloxStream{uint64_t(in[1]), uint64_t(in[2])};
        if (!keys.out.empty()) keys.out[b] = PhiloxStream{uint64_t(in[3]), uint64_t(in[4])};
      }
  return keys;
}

PassOut moe_pass(const Tensor& z, int s, const std::vector<uint8_t>& pad, const std::vector<int32_t>& lang,
                 const Env& env) {
  const BlockSpec& spec = env.spec;
  const int E = spec.experts(), off = spec.stratum_offset(s), V = E - off;
  const int64_t n = z.size(0), d = spec.dim;
  const nn::ForwardContext& ctx = env.ctx;

  // Buffer rows: the largest token count at this stratum over all ranks.
  const int64_t S = env.comm.all_reduce_int(n, dist::ReduceOp::Max);
  const int64_t C = expert_capacity(S, V, env.gate.top1, env.gate.capacity_factor, ctx.training,
                                    env.gate.eval_capacity_fraction);
  const bool noisy = !env.gate.top1 && V > 1 && env.gate.policy != config::SecondExpertPolicy::Argmax;
  // The stream rule: a rank draws the pass's streams from ctx (gate noise,
  // EOM, expert dropout, in that order) only when it has rows at the pass. One
  // process makes the pass exactly when its batch has rows at the stratum, so
  // rank r draws what micro-batch r draws on one process, whatever the other
  // ranks' batches make the expert group's pass loop do.
  PhiloxStream noise;
  if (noisy)
    noise = !ctx.rng ? PhiloxStream{mix_keys(kEvalNoiseSeed, spec.key), uint64_t(s)}
                     : n > 0 ? ctx.next_stream() : PhiloxStream{};  // n = 0: gate_forward routes nothing
  MoEProfile& prof = profile();
  const double t_gate = prof.enabled ? profile_clock() : 0;
  GateTimer gate_timer;
  GateOutput g = gate_forward(gate_timer.begin_gate(z), env.w.gates[size_t(s)], S, C, env.gate, pad.data(),
                              noisy ? &noise : nullptr);
  g.weights = gate_timer.end_gate(g.weights);
  g.balance = gate_timer.end_gate(g.balance);
  if (g.z_loss.defined()) g.z_loss = gate_timer.end_gate(g.z_loss);
  if (prof.enabled) prof.gate_fwd += profile_clock() - t_gate;
  if (env.stats) record_pass_stats(env, g, off, pad, lang);

  PassOut out;
  out.balance = g.balance;
  out.z_loss = g.z_loss;
  out.e1.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) out.e1[size_t(i)] = off + g.routing.e1[size_t(i)];
  Tensor weights = g.weights;
  if (spec.eom_rate > 0) weights = expert_output_mask(env, weights, g, off);
  // Dropout inside the experts, keyed by (this batch's stream, pass row, global
  // expert, feature): drawn here, before any early return, by a rank with rows.
  ExpertStreams xs;
  xs.on = ctx.training && (spec.activation_dropout > 0 || spec.dropout > 0);
  if (xs.on && n > 0) {
    if (spec.activation_dropout > 0) xs.act = ctx.next_stream();
    if (spec.dropout > 0) xs.out = ctx.next_stream();
  }

  // Trim the buffer to the slots some rank uses (same shape on every rank).
  const int64_t used = env.comm.all_reduce_int(g.routing.used_capacity(), dist::ReduceOp::Max);
  if (used == 0) {
    out.y = Tensor::zeros({n, d}, z.dtype(), z.device());
    return out;
  }
  const bool local = env.place.world == 1;
  // One process: only the V visible experts get a buffer. Expert parallel:
  // all E (equal all-to-all chunks); earlier strata's rows stay empty.
  const int64_t buf_experts = local ? V : E, base = local ? 0 : off;
  const double t_map = prof.enabled ? profile_clock() : 0;
  // On a GPU the slot map is built on the device; the host map then serves
  // only the row keys of the expert dropout (the same map: the host routing
  // is the device routing's copy).
  const bool on_gpu = z.device().is_cuda();
  std::shared_ptr<const SlotMap> map;
  std::shared_ptr<DeviceSlotMap> dmap;
  if (on_gpu) dmap = make_device_slot_map(g.routing, g.device_routing, base, buf_experts, used, z.device());
  if (!on_gpu || xs.on) map = std::make_shared<const SlotMap>(make_slot_map(g.routing, base, buf_experts, used));
  if (prof.enabled) {
    prof.dispatch_fwd += profile_clock() - t_map;
    prof.slots += double(buf_experts * used);
    prof.filled += double(kept_choices(g.routing));  // each kept choice fills one slot
  }
  Tensor X = all_to_all_rows(on_gpu ? dispatch_rows(z, dmap) : dispatch_rows(z, map), env.comm);
  // The row keys of the expert buffer (dropout inside the experts in training).
  ExpertRowKeys keys;
  if (xs.on) {
    if (local) {
      keys = local_row_keys(*map, V, used, off, E, xs, spec);
    } else {
      const double t_ids = prof.enabled ? profile_clock() : 0;
      keys = exchanged_row_keys(*map, used, E, xs, spec, env.place, env.comm, z.device());
      if (prof.enabled) prof.exchange_fwd += profile_clock() - t_ids;
    }
  }
  const ExpertRowKeys* kp = xs.on ? &keys : nullptr;
  Tensor Y;
  const double t_exp = prof.enabled ? profile_clock() : 0;
  if (local) {
    Y = experts_forward(reshape(X, {V, used, d}), env.w.experts(off, V), spec.activation_dropout, spec.dropout, ctx, kp);
    Y = reshape(Y, {int64_t(V) * used, d});
  } else {
    // received [source rank, local expert, slot] -> [local expert, source rank * slot] and back
    const int64_t W = env.place.world, EL = env.place.num_local;
    Tensor Xe = reshape(contiguous(permute(reshape(X, {W, EL, used, d}), {1, 0, 2, 3})), {EL, W * used, d});
    Tensor Ye = experts_forward(Xe, env.w.experts(0, EL), spec.activation_dropout, spec.dropout, ctx, kp);
    Y = reshape(contiguous(permute(reshape(Ye, {EL, W, used, d}), {1, 0, 2, 3})), {W * EL * used, d});
  }
  if (prof.enabled) prof.experts_fwd += profile_clock() - t_exp;
  Y = all_to_all_rows(Y, env.comm);
  out.y = on_gpu ? combine_rows(Y, cast(weights, Y.dtype()), dmap) : combine_rows(Y, cast(weights, Y.dtype()), map);
  return out;
}

template <class T>
std::vector<T> pick(const std::vector<T>& v, const std::vector<int64_t>& rows) {
  std::vector<T> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = v[size_t(rows[i])];
  return out;
}

Tensor add_loss(const Tensor& acc, const Tensor& x) {
  if (!x.defined()) return acc;
  return acc.defined() ? acc + x : x;
}

}  // namespace

// ----------------------------------------------------------------- block ----

Tensor moe_block_forward(const Tensor& x, const Tensor& pad, const BlockSpec& spec, const BlockWeights& w,
                         const nn::ForwardContext& ctx, dist::Communicator& comm, const ExpertPlacement& place,
                         std::optional<double> eval_capacity_override) {
  STRATA_CHECK(x.dim() == 3 && x.size(2) == spec.dim)
      << "moe block " << spec.name << ": input must be [batch, time, " << spec.dim << "], got " << x.str();
  const int L = spec.num_strata(), E = spec.experts();
  STRATA_CHECK(L >= 1 && int(w.gates.size()) == L) << "moe block " << spec.name << ": " << w.gates.size()
                                                   << " gates for " << L << " strata";
  STRATA_CHECK(!spec.cmr || L == 1) << "moe block " << spec.name << ": cmr cannot be combined with " << L
                                    << " strata (the reference has no stratified CMR)";
  const int64_t B = x.size(0), T = x.size(1), N = B * T, d = spec.dim;
  Tensor u = reshape(x, {N, d});

  std::vector<uint8_t> is_pad(size_t(N), 0);
  if (pad.defined()) {
    STRATA_CHECK(pad.dim() == 2 && pad.size(0) == B && pad.size(1) == T)
        << "moe block " << spec.name << ": padding mask must be [" << B << ", " << T << "], got " << pad.str();
    Tensor pf = pad.detach().contiguous().to(Device::cpu()).to(DType::F32).contiguous();
    const float* pp = pf.data<float>();
    for (int64_t i = 0; i < N; ++i) is_pad[size_t(i)] = pp[i] != 0.0f;
  }
  nn::AuxLosses* aux = ctx.aux;
  std::vector<int32_t> lang(size_t(N), -1);
  if (aux && int64_t(aux->sentence_lang.size()) == B)
    for (int64_t i = 0; i < N; ++i) lang[size_t(i)] = aux->sentence_lang[size_t(i / T)];
  Env env{spec, w, ctx, comm, place, spec.gate, aux && aux->collect_stats ? &aux->stats.block(spec.name, spec.strata) : nullptr};
  if (aux && aux->eval_capacity_token_fraction) env.gate.eval_capacity_fraction = *aux->eval_capacity_token_fraction;
  else if (eval_capacity_override) env.gate.eval_capacity_fraction = *eval_capacity_override;

  nn::AuxLosses::Block rec;
  rec.name = spec.name;
  std::vector<int> visits(size_t(N), 0);
  if (aux && aux->record_paths) rec.paths.resize(size_t(N));
  Tensor out;
  if (spec.cmr) {
    Tensor z = layer_norm(u, w.ln_weight, w.ln_bias, spec.layernorm_eps);
    PassOut p = moe_pass(z, 0, is_pad, lang, env);
    Tensor sh = nn::maybe_dropout(relu(linear(z, w.shared_fc1_weight, w.shared_fc1_bias)), spec.activation_dropout, ctx);
    sh = nn::maybe_dropout(linear(sh, w.shared_fc2_weight, w.shared_fc2_bias), spec.dropout, ctx);
    // c = Dropout(sigmoid(w.z + b)): inverted dropout on the gate value, so c may exceed 1 in training
    Tensor c = nn::maybe_dropout(sigmoid(linear(z, w.cmr_weight, w.cmr_bias)), spec.cmr_gate_dropout, ctx);  // [N, 1]
    out = u + sh * (1.0 - c) + p.y * c;
    rec.balance = p.balance;
    rec.z_loss = p.z_loss;
    rec.cmr_gate_sum = sum(c);
    rec.cmr_tokens = N;
    rec.passes = 1;
    std::fill(visits.begin(), visits.end(), 1);
    if (!rec.paths.empty())
      for (int64_t t = 0; t < N; ++t) rec.paths[size_t(t)].emplace_back(0, p.e1[size_t(t)]);
  } else {
    std::vector<int> state(size_t(N), 0);
    Tensor H = u;
    Tensor balance_sum, z_sum;
    int s = int(comm.all_reduce_int(N > 0 ? 0 : L, dist::ReduceOp::Min));
    while (s < L) {
      std::vector<int64_t> rows;
      for (int64_t t = 0; t < N; ++t)
        if (state[size_t(t)] == s) rows.push_back(t);
      const int64_t n = int64_t(rows.size());
      const bool all = n == N;
      const double t_rows = profile().enabled ? profile_clock() : 0;
      Tensor h = all ? H : index_select(H, 0, Tensor::from_vector(rows, {n}).to(H.device()));
      if (profile().enabled) profile().rows_fwd += profile_clock() - t_rows;
      Tensor z, r;
      if (s == 0) {
        z = layer_norm(h, w.ln_weight, w.ln_bias, spec.layernorm_eps);
        r = h;
      } else if (spec.has_hmoe_layernorms()) {
        z = layer_norm(h, w.hmoe_ln_weight[size_t(s - 1)], w.hmoe_ln_bias[size_t(s - 1)], spec.layernorm_eps);
        r = spec.residual == config::SmoeResidual::Code ? z : h;
      } else {  // no hmoe LNs: later strata see the raw stream (reference with --hmoe-layernorm 0)
        z = h;
        r = h;
      }
      PassOut p = moe_pass(z, s, all ? is_pad : pick(is_pad, rows), all ? lang : pick(lang, rows), env);
      Tensor h_new = r + p.y;
      H = all ? h_new : replace_rows(H, rows, h_new);
      for (int64_t i = 0; i < n; ++i) {
        const size_t t = size_t(rows[size_t(i)]);
        state[t] = spec.stratum_of(p.e1[size_t(i)]) + 1;  // top-1 before capacity decides the next stratum
        ++visits[t];
        if (!rec.paths.empty()) rec.paths[t].emplace_back(s, p.e1[size_t(i)]);
      }
      balance_sum = add_loss(balance_sum, p.balance);
      z_sum = add_loss(z_sum, p.z_loss);
      ++rec.passes;
      int local_min = L;
      for (int st : state) local_min = std::min(local_min, st);
      s = int(comm.all_reduce_int(local_min, dist::ReduceOp::Min));
    }
    out = spec.has_hmoe_layernorms()
              ? layer_norm(H, w.hmoe_ln_weight[size_t(L - 1)], w.hmoe_ln_bias[size_t(L - 1)], spec.layernorm_eps)
              : H;
    if (rec.passes > 0) {
      rec.balance = balance_sum / double(rec.passes);
      if (z_sum.defined()) rec.z_loss = z_sum / double(rec.passes);
    }
  }
  if (aux) {
    if (!rec.balance.defined())
      rec.balance = Tensor::scalar(0.0, x.dtype() == DType::F64 ? DType::F64 : DType::F32).to(x.device());
    aux->blocks.push_back(rec);
  }
  if (env.stats) {
    BlockRoutingStats& st = *env.stats;
    for (int64_t t = 0; t < N; ++t) {
      if (is_pad[size_t(t)] || visits[size_t(t)] == 0) continue;
      ++st.tokens;
      st.visits += visits[size_t(t)];
      ++st.visit_hist[size_t(std::min(visits[size_t(t)], L) - 1)];
      if (lang[size_t(t)] >= 0) {
        LangRouting& l = st.by_lang[lang[size_t(t)]];
        if (l.top1.empty()) l.top1.assign(size_t(E), 0);
        ++l.tokens;
        l.visits += visits[size_t(t)];
      }
    }
  }
  return reshape(out, {B, T, d});
}

// ---------------------------------------------------------------- module ----

MoEBlock::MoEBlock(BlockSpec spec, dist::Communicator& comm) : spec_(std::move(spec)), comm_(comm) {
  const int L = spec_.num_strata(), E = spec_.experts();
  const int64_t d = spec_.dim, f = spec_.ffn_dim;
  STRATA_CHECK(L >= 1 && d > 0 && f > 0) << "moe block " << spec_.name << ": " << L << " strata, dim " << d
                                         << ", ffn " << f;
  for (int n : spec_.strata)
    STRATA_CHECK(n >= 1) << "moe block " << spec_.name << ": every stratum needs at least one expert";
  STRATA_CHECK(!spec_.cmr || L == 1) << "moe block " << spec_.name << ": cmr cannot be combined with " << L
                                     << " strata (the reference has no stratified CMR)";
  place_ = ExpertPlacement::of(E, comm_);

  ln_weight_ = register_parameter("final_layer_norm.weight", {d}, nn::InitSpec{nn::InitSpec::Ones});
  ln_bias_ = register_parameter("final_layer_norm.bias", {d}, nn::InitSpec{nn::InitSpec::Zeros});
  for (int s = 0; s < L; ++s) {
    gates_.push_back(std::make_unique<nn::Linear>(d, E - spec_.stratum_offset(s), false));
    register_module("moe_layer.gate." + std::to_string(s) + ".wg", gates_.back().get());
  }
  experts_ = std::make_unique<ExpertBank>(place_.first_local, place_.num_local, d, f);
  register_module("moe_layer.experts", experts_.get());
  if (spec_.has_hmoe_layernorms()) {
    for (int s = 0; s < L; ++s) {
      const std::string p = "hmoe_layernorms." + std::to_string(s) + ".";
      hmoe_weight_.push_back(register_parameter(p + "weight", {d}, nn::InitSpec{nn::InitSpec::Ones}));
      hmoe_bias_.push_back(register_parameter(p + "bias", {d}, nn::InitSpec{nn::InitSpec::Zeros}));
    }
  }
  if (spec_.cmr) {
    cmr_gate_ = std::make_unique<nn::Linear>(d, 1);
    fc1_ = std::make_unique<nn::Linear>(d, f);
    fc2_ = std::make_unique<nn::Linear>(f, d);
    register_module("cmr_layer.gate", cmr_gate_.get());
    register_module("fc1", fc1_.get());
    register_module("fc2", fc2_.get());
  }
}

BlockWeights MoEBlock::weights() const {
  BlockWeights w;
  w.ln_weight = ln_weight_;
  w.ln_bias = ln_bias_;
  for (const auto& g : gates_) w.gates.push_back(g->weight());
  const ExpertBank* bank = experts_.get();
  w.experts = [bank](int64_t first, int64_t count) { return bank->range(first, count); };
  w.hmoe_ln_weight = hmoe_weight_;
  w.hmoe_ln_bias = hmoe_bias_;
  if (spec_.cmr) {
    w.cmr_weight = cmr_gate_->weight();
    w.cmr_bias = cmr_gate_->bias();
    w.shared_fc1_weight = fc1_->weight();
    w.shared_fc1_bias = fc1_->bias();
    w.shared_fc2_weight = fc2_->weight();
    w.shared_fc2_bias = fc2_->bias();
  }
  return w;
}

Tensor MoEBlock::forward(const Tensor& x, const Tensor& pad, const nn::ForwardContext& ctx) {
  return moe_block_forward(x, pad, spec_, weights(), ctx, comm_, place_, eval_capacity_);
}

}  // namespace strata::moe
