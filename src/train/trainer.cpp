#include "strata/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <ostream>
#include <sstream>
#include <set>
#include <thread>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "strata/autograd/node.h"
#include "strata/autograd/ops.h"
#include "strata/config/config.h"
#include "strata/core/grad_mode.h"
#include "strata/decode/translator.h"
#include "strata/dist/agree.h"
#include "strata/dist/environment.h"
#include "strata/dist/grad_sync.h"
#include "strata/eval/bleu.h"
#include "strata/eval/chrf.h"
#include "strata/model/build.h"
#include "strata/moe/aux_losses.h"
#include "strata/nn/autocast.h"
#include "strata/train/checkpoint.h"
#include "strata/train/grad_clip.h"
#include "strata/train/metrics.h"
#include "strata/train/safetensors.h"
#include "strata/train/task.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/context.h"
#include "strata/dist/nccl_communicator.h"
#endif

namespace strata::train {

namespace {

// Expert parallelism (docs/distributed.md): expert parameters carry their
// global expert id in the name, "<block>.moe_layer.experts.<g>.<...>".
constexpr const char* kExpertTag = ".moe_layer.experts.";
bool is_expert_param(const std::string& name) { return name.find(kExpertTag) != std::string::npos; }
bool is_shared_param(const std::string& name) { return !is_expert_param(name); }
// Experts placed over the ranks (otherwise every rank holds every expert).
bool expert_parallel(const config::Config& c, const dist::Communicator& comm) {
  return c.moe.expert_parallel && comm.size() > 1;
}

// `name` with its global expert id moved by `delta`.
std::string shift_expert_id(const std::string& name, int delta) {
  const size_t p = name.find(kExpertTag) + std::char_traits<char>::length(kExpertTag);
  const size_t e = name.find('.', p);
  return name.substr(0, p) + std::to_string(std::stoi(name.substr(p, e - p)) + delta) + name.substr(e);
}

// Every rank's expert entries, under their global names, next to this rank's
// shared ones: the checkpoint one process would write. Rank q holds experts
// [q*L, (q+1)*L) in the same registration order as every other rank, so
// rank q's copy of this rank's k-th entry is the same name shifted by
// (q - rank) * L. Collective over `comm` (values travel as f64: exact for the
// f32 weights and the i64 step counts).
dist::NamedTensors gather_experts(dist::Communicator& comm, const dist::NamedTensors& entries, int local_experts) {
  const int W = comm.size(), R = comm.rank();
  dist::NamedTensors out;
  for (const auto& [name, t] : entries) {
    if (!is_expert_param(name)) {
      out.emplace_back(name, t);
      continue;
    }
    Tensor send = t.to(DType::F64).contiguous().reshape({t.numel()});
    Tensor recv = Tensor::zeros({W, t.numel()}, DType::F64);
    comm.all_gather(send, recv);
    for (int q = 0; q < W; ++q)
      out.emplace_back(shift_expert_id(name, (q - R) * local_experts),
                       recv.select(0, q).reshape(t.shape()).to(t.dtype()).clone());
  }
  return out;
}

// The entries of a full checkpoint this rank holds: `wanted` names only.
dist::NamedTensors only_names(const dist::NamedTensors& all, const dist::NamedTensors& wanted) {
  std::set<std::string> keep;
  for (const auto& kv : wanted) keep.insert(kv.first);
  dist::NamedTensors out;
  for (const auto& kv : all)
    if (keep.count(kv.first)) out.push_back(kv);
  return out;
}
// The collectives of W > 1 GPU ranks: one communicator over the same ranks
// as a host one (MPI) and a device one (NCCL). Each collective goes to the
// one that moves its buffer's memory (gradients and expert rows over NCCL,
// host tensors such as the MoE row keys over MPI); the scalar agreements
// (counts, flags) stay on the host one. Every rank makes the same calls in
// the same order, so each underlying communicator sees one identical
// sequence, and each call completes before the next one starts.
class RoutedCommunicator final : public dist::Communicator {
 public:
  RoutedCommunicator(dist::Communicator& host, dist::Communicator& device) : host_(&host), device_(&device) { check(); }
  RoutedCommunicator(std::unique_ptr<dist::Communicator> host, std::unique_ptr<dist::Communicator> device)
      : host_(host.get()), device_(device.get()), own_host_(std::move(host)), own_device_(std::move(device)) {
    check();
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string name() const override { return host_->name() + " + " + device_->name(); }
  void all_reduce(const Tensor& t, dist::ReduceOp op) override { pick(t).all_reduce(t, op); }
  std::unique_ptr<dist::PendingCollective> all_reduce_start(const Tensor& t, dist::ReduceOp op) override {
    return pick(t).all_reduce_start(t, op);
  }
  double all_reduce_scalar(double v, dist::ReduceOp op) override { return host_->all_reduce_scalar(v, op); }
  int64_t all_reduce_int(int64_t v, dist::ReduceOp op) override { return host_->all_reduce_int(v, op); }
  void all_to_all(const Tensor& send, const Tensor& recv) override { pick(send).all_to_all(send, recv); }
  void all_gather(const Tensor& send, const Tensor& recv) override { pick(send).all_gather(send, recv); }
  void broadcast(const Tensor& t, int root) override { pick(t).broadcast(t, root); }
  void barrier() override { host_->barrier(); }
  // Both halves split the same way (same color and key on each rank).
  std::unique_ptr<dist::Communicator> split(int color, int key) override {
    std::unique_ptr<dist::Communicator> h = host_->split(color, key);
    std::unique_ptr<dist::Communicator> d = device_->split(color, key);
    return std::make_unique<RoutedCommunicator>(std::move(h), std::move(d));
  }

 private:
  void check() const {
    STRATA_CHECK(host_->size() == device_->size() && host_->rank() == device_->rank())
        << "communicators '" << host_->name() << "' (rank " << host_->rank() << " of " << host_->size() << ") and '"
        << device_->name() << "' (rank " << device_->rank() << " of " << device_->size()
        << ") do not span the same ranks";
  }
  dist::Communicator& pick(const Tensor& t) { return t.defined() && t.device().is_cuda() ? *device_ : *host_; }
  dist::Communicator* host_;
  dist::Communicator* device_;
  std::unique_ptr<dist::Communicator> own_host_, own_device_;
};

// Host copies (the tensors themselves when they are on the CPU already).
dist::NamedTensors to_host(const dist::NamedTensors& entries) {
  dist::NamedTensors out;
  out.reserve(entries.size());
  for (const auto& [name, t] : entries) out.emplace_back(name, t.to(Device::cpu()));
  return out;
}

std::string device_description(Device d) {
#ifdef STRATA_WITH_CUDA
  if (d.is_cuda()) {
    cudaDeviceProp prop{};
    STRATA_CUDA_CHECK(cudaGetDeviceProperties(&prop, d.index));
    return d.str() + " (" + prop.name + ")";
  }
#endif
  return d.str();
}

constexpr double kLn2 = 0.69314718055994530942;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

SmoothingForm smoothing_form(config::SmoothingForm f) {
  return f == config::SmoothingForm::Moe ? SmoothingForm::Moe : SmoothingForm::Fairseq;
}

// world_size is informational: a checkpoint resumes on any number of ranks.
std::string state_to_yaml(const TrainerState& s, int world_size, const DynamicLossScaler* scaler) {
  YAML::Emitter e;
  e.SetDoublePrecision(17);
  e << YAML::BeginMap;
  e << YAML::Key << "update" << YAML::Value << s.update;
  e << YAML::Key << "epoch" << YAML::Value << s.epoch;
  e << YAML::Key << "batch_in_epoch" << YAML::Value << s.batch_in_epoch;
  e << YAML::Key << "has_best" << YAML::Value << s.has_best;
  e << YAML::Key << "best_metric" << YAML::Value << s.best_metric;
  e << YAML::Key << "best_update" << YAML::Value << s.best_update;
  e << YAML::Key << "stalls" << YAML::Value << s.stalls;
  e << YAML::Key << "train_seconds" << YAML::Value << s.train_seconds;
  e << YAML::Key << "world_size" << YAML::Value << world_size;
  if (scaler) {  // fp16: the dynamic loss scale resumes where it was
    e << YAML::Key << "loss_scale" << YAML::Value << scaler->scale();
    e << YAML::Key << "loss_scale_good_steps" << YAML::Value << scaler->good_steps();
    e << YAML::Key << "loss_scale_skipped" << YAML::Value << scaler->skipped();
  }
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

TrainerState state_from_yaml(const std::string& path, int* world_size = nullptr,
                             DynamicLossScaler* scaler = nullptr) {
  TrainerState s;
  try {
    YAML::Node n = YAML::LoadFile(path);
    s.update = n["update"].as<int64_t>();
    s.epoch = n["epoch"].as<int64_t>();
    s.batch_in_epoch = n["batch_in_epoch"].as<int64_t>();
    s.has_best = n["has_best"].as<bool>();
    s.best_metric = n["best_metric"].as<double>();
    s.best_update = n["best_update"].as<int64_t>();
    s.stalls = n["stalls"].as<int64_t>();
    s.train_seconds = n["train_seconds"].as<double>();
    if (world_size) *world_size = n["world_size"] ? n["world_size"].as<int>() : 1;
    // A checkpoint written without fp16 has no scale: the scaler keeps its initial one.
    if (scaler && n["loss_scale"])
      scaler->set_state(n["loss_scale"].as<double>(), n["loss_scale_good_steps"].as<int>(),
                        n["loss_scale_skipped"].as<int64_t>());
  } catch (const YAML::Exception& e) {
    STRATA_FAIL() << path << ": unreadable trainer state (" << e.what() << ")";
  }
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  STRATA_CHECK(f.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The batches decode::translate_ids forms from `sources` on one process:
// sentences stably sorted by length, cut where the padded size (longest
// length incl. language token and </s>, capped at max_len, times sentences)
// would pass max_tokens. Validation deals these batches whole to the ranks,
// so every sentence is decoded with the batch-mates it has on one process:
// MoE routing (capacity, evaluation noise) depends on them.
std::vector<std::vector<size_t>> decode_batches(const std::vector<std::vector<int32_t>>& sources,
                                                int64_t max_tokens, int64_t max_len) {
  std::vector<size_t> order(sources.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return sources[a].size() < sources[b].size(); });
  std::vector<std::vector<size_t>> out;
  int64_t longest = 0;
  for (size_t i : order) {
    const int64_t len = std::min<int64_t>(int64_t(sources[i].size()) + 2, max_len);
    const int64_t grown = std::max(longest, len);
    if (out.empty() || grown * int64_t(out.back().size() + 1) > max_tokens) {
      out.emplace_back();
      longest = len;
    } else {
      longest = grown;
    }
    out.back().push_back(i);
  }
  return out;
}

// Reads an integer test-hook variable; unset means `fallback`.
int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long long n = std::strtoll(v, &end, 10);
  STRATA_CHECK(end && *end == '\0') << name << "='" << v << "' is not an integer";
  return n;
}
}  // namespace

uint64_t batch_stream_seed(uint64_t seed, int64_t update, int64_t slot) {
  const uint64_t k = mix_keys(seed, uint64_t(update));
  return slot == 0 ? k : mix_keys(k, uint64_t(slot));
}

std::vector<int64_t> rank_slots(int rank, int world, int update_freq) {
  STRATA_CHECK(world >= 1 && rank >= 0 && rank < world && update_freq >= 1)
      << "rank_slots: rank " << rank << " of " << world << " with update_freq " << update_freq;
  std::vector<int64_t> out;
  for (int k = 0; k < update_freq; ++k) out.push_back(int64_t(k) * world + rank);
  return out;
}

Device select_device(const config::TrainOptions& t, int local_rank) {
#ifdef STRATA_WITH_CUDA
  constexpr bool cuda_build = true;
  const int count = t.device == config::DeviceChoice::Cpu ? 0 : cuda::device_count();
#else
  constexpr bool cuda_build = false;
  const int count = 0;
#endif
  bool use_cuda = false;
  switch (t.device) {
    case config::DeviceChoice::Cpu: break;
    case config::DeviceChoice::Cuda:
      STRATA_CHECK(cuda_build) << "config: device 'cuda' needs a build with CUDA (this one has none: rebuild with "
                                  "CUDA=1, or set device: cpu)";
      STRATA_CHECK(count > 0) << "config: device 'cuda' but no GPU is visible (check the driver and "
                                 "CUDA_VISIBLE_DEVICES, or set device: cpu)";
      use_cuda = true;
      break;
    case config::DeviceChoice::Auto: use_cuda = count > 0; break;
  }
  if (!use_cuda) {
    STRATA_CHECK(t.precision == config::Precision::Fp32)
        << "config: precision '" << config::to_string(t.precision) << "' needs a GPU, but device '"
        << config::to_string(t.device) << "' runs on the CPU here (the CPU trains in fp32)";
    return Device::cpu();
  }
#ifdef STRATA_WITH_CUDA
  // One process per GPU: the ranks of a node take its GPUs in turn.
  const int index = std::max(local_rank, 0) % count;
  cuda::set_device(index);
  return Device::cuda(index);
#else
  return Device::cpu();
#endif
}

DType compute_dtype(config::Precision p) {
  switch (p) {
    case config::Precision::Bf16: return DType::BF16;
    case config::Precision::Fp16: return DType::F16;
    default: return DType::F32;
  }
}

TestHooks TestHooks::from_env() {
  TestHooks h;
  h.fail_rank = int(env_int("STRATA_TEST_FAIL_RANK", -1));
  h.fail_update = env_int("STRATA_TEST_FAIL_UPDATE", 0);
  h.hang_rank = int(env_int("STRATA_TEST_HANG_RANK", -1));
  h.hang_update = env_int("STRATA_TEST_HANG_UPDATE", 0);
  h.perturb_rank = int(env_int("STRATA_TEST_PERTURB_RANK", -1));
  return h;
}

Trainer::Trainer(config::Config cfg, std::ostream& log, dist::Communicator* comm)
    : cfg_(std::move(cfg)), log_(log), comm_(comm ? comm : &dist::world()), hooks_(TestHooks::from_env()) {
  setup();
}
Trainer::~Trainer() = default;

void Trainer::setup() {
  const dist::Environment* env = dist::Environment::current();
  device_ = select_device(cfg_.train, env ? env->info().local_rank : 0);
  compute_dtype_ = compute_dtype(cfg_.train.precision);
  vocab_ = load_vocabulary(cfg_.data);
  int64_t V = vocab_->size();
  STRATA_CHECK(cfg_.model.vocab_size == 0 || cfg_.model.vocab_size == V)
      << "config: vocab_size is " << cfg_.model.vocab_size << " but the vocabulary holds " << V << " symbols";
  cfg_.model.vocab_size = int(V);
  data::BatchOptions bo = batch_options(cfg_);
  train_ = std::make_unique<data::TranslationBatches>(open_directions(cfg_, *vocab_, cfg_.data.train_subset), bo);
  if (cfg_.train.validate_interval_updates > 0)
    valid_ = std::make_unique<data::TranslationBatches>(open_directions(cfg_, *vocab_, cfg_.data.valid_subset), bo);
  const int W = comm_->size();
#ifdef STRATA_WITH_CUDA
  if (W > 1) {
    // Each rank picks its device from what it sees (device: auto,
    // CUDA_VISIBLE_DEVICES), and the device decides the collectives: whether
    // NCCL is created below (itself a collective over comm_) and which library
    // moves each buffer. Mixed ranks would match NCCL's bootstrap broadcast
    // against another collective; agree first and stop with one line instead.
    const int64_t gpu_ranks = comm_->all_reduce_int(device_.is_cuda() ? 1 : 0, dist::ReduceOp::Sum);
    STRATA_CHECK(gpu_ranks == 0 || gpu_ranks == W)
        << "device: " << gpu_ranks << " of " << W << " ranks run on a GPU and the others on the CPU (rank "
        << comm_->rank() << " on " << device_.str() << "); set train.device to cuda or cpu";
  }
  if (device_.is_cuda() && W > 1) {
    // NCCL for device buffers, joined over comm_ (collective); comm_ keeps
    // the host-side agreement.
    nccl_ = dist::NcclCommunicator::create(*comm_);
    collectives_ = std::make_unique<RoutedCommunicator>(*comm_, *nccl_);
  }
#endif
  dist::Communicator& coll = collectives_ ? *collectives_ : *comm_;
  if (cfg_.moe.expert_parallel && W > 1) {
    const int E = cfg_.moe.experts;
    STRATA_CHECK(E >= 1 && (E % W == 0 || W % E == 0))
        << "config: moe.expert_parallel needs experts to be a multiple of the " << W
        << " ranks or the ranks a multiple of the experts (experts " << E << ")";
    STRATA_CHECK(cfg_.train.valid_bleu_sentences == 0)
        << "config: moe.expert_parallel on " << W << " ranks needs train.valid_bleu_sentences 0 (BLEU decoding under expert parallelism is not supported yet)";
    // fairseq's layout (dist/groups.h): E >= W, one all-to-all group of all
    // ranks, E/W experts each; E < W, W/E groups of E consecutive ranks, one
    // expert each, every expert replicated over {e, e+E, ...}.
    groups_ = std::make_unique<dist::ExpertGroups>(dist::make_expert_groups(coll, E));
    model_ = model::build_model(cfg_, V, vocab_->pad(), groups_->expert.get());
  } else {
    model_ = model::build_model(cfg_, V, vocab_->pad());
  }
  // Drawn on the host (the same values on every device), then moved; Adam
  // comes after the move so its state lives where the parameters do.
  model_->init_parameters(uint64_t(cfg_.train.seed));
  model_->to(device_);
  AdamOptions ao;
  ao.beta1 = cfg_.train.adam_beta1;
  ao.beta2 = cfg_.train.adam_beta2;
  ao.eps = cfg_.train.adam_eps;
  ao.weight_decay = cfg_.train.weight_decay;
  adam_ = std::make_unique<Adam>(model_->named_parameters(), ao);
  LrScheduleOptions lo;
  lo.lr = cfg_.train.lr;
  lo.warmup_updates = cfg_.train.warmup_updates;
  lo.warmup_init_lr = cfg_.train.warmup_init_lr;
  schedule_ = std::make_unique<LrSchedule>(lo);
  if (cfg_.train.precision == config::Precision::Fp16)
    scaler_ = std::make_unique<DynamicLossScaler>(cfg_.train.loss_scale_init, 2.0, 0.5, cfg_.train.loss_scale_window);

  log_ << "device " << device_description(device_) << ", precision " << config::to_string(cfg_.train.precision)
       << "\n";
  log_ << "model: " << model::summarize(cfg_, V).str() << "\n";
  log_ << "vocabulary: " << V << " symbols\n";
  for (size_t d = 0; d < train_->directions().size(); ++d) {
    const auto& dir = train_->directions()[d];
    log_ << "train " << dir.name() << ": " << dir.data.size() << " sentences";
    if (train_->skipped()[d] > 0) log_ << " (" << train_->skipped()[d] << " over the length limits skipped)";
    log_ << "\n";
  }
  // Under expert parallelism this rank holds 1/min(E, W) of the expert parameters.
  int64_t held = model_->num_parameters();
  if (expert_parallel(cfg_, *comm_)) {
    int64_t local_expert = 0;
    for (const auto& [name, t] : model_->named_parameters())
      if (is_expert_param(name)) local_expert += t.numel();
    held += local_expert * (groups_->placement.group_size - 1);
  }
  STRATA_CHECK(held == model::count_parameters(cfg_, V))
      << "model: parameter count " << held << " differs from the formula " << model::count_parameters(cfg_, V);
}


std::vector<data::ExampleRef> Trainer::next_batch() {
  if (plan_epoch_ != state_.epoch) {
    plan_ = train_->epoch_plan(state_.epoch);
    plan_epoch_ = state_.epoch;
  }
  if (state_.batch_in_epoch >= int64_t(plan_.size())) {
    ++state_.epoch;
    state_.batch_in_epoch = 0;
    plan_ = train_->epoch_plan(state_.epoch);
    plan_epoch_ = state_.epoch;
  }
  return plan_[size_t(state_.batch_in_epoch++)];
}

std::vector<std::pair<int64_t, std::vector<data::ExampleRef>>> Trainer::window_batches() {
  const int W = comm_->size();
  const std::vector<int64_t> slots = rank_slots(comm_->rank(), W, cfg_.train.update_freq);
  std::vector<std::pair<int64_t, std::vector<data::ExampleRef>>> mine;
  // Every rank walks the whole window so the position stays global (and
  // rank-independent in checkpoints); only this rank's slots are kept.
  size_t next = 0;
  for (int64_t j = 0; j < int64_t(W) * cfg_.train.update_freq; ++j) {
    std::vector<data::ExampleRef> refs = next_batch();
    if (next < slots.size() && slots[next] == j) mine.emplace_back(slots[next++], std::move(refs));
  }
  return mine;
}

void Trainer::apply_test_hooks(int64_t update) const {
  const int R = comm_->rank();
  if (hooks_.fail_rank == R && hooks_.fail_update == update)
    STRATA_FAIL() << "test hook: STRATA_TEST_FAIL_RANK=" << R << " STRATA_TEST_FAIL_UPDATE=" << update
                  << " made this rank fail at the start of update " << update;
  if (hooks_.hang_rank == R && hooks_.hang_update == update) {
    std::cerr << ("strata-train: rank " + std::to_string(R) +
                  ": test hook STRATA_TEST_HANG_RANK: not responding from update " + std::to_string(update) + "\n")
              << std::flush;
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

UpdateStats Trainer::train_update() {
  apply_test_hooks(state_.update + 1);
  UpdateStats st;
  const int64_t V = model_->vocab_size();
  const int64_t update = state_.update;
  if (scaler_) st.loss_scale = scaler_->scale();
  dist::Communicator& coll = collectives_ ? *collectives_ : *comm_;
  // Data parallelism: the last backward of the window starts each gradient
  // bucket's all-reduce as soon as the bucket is complete, so on GPUs the
  // reduction overlaps the rest of the backward. Under expert parallelism
  // the backward runs its own all-to-alls, and a bucket started between two
  // of them on one rank but not on another would deadlock the comm stream,
  // so the buckets go after the backward there (docs/distributed.md, "Overlap").
  dist::GradSyncOptions buckets;
  buckets.bucket_bytes = size_t(cfg_.train.grad_bucket_mb * double(1 << 20));
  std::unique_ptr<dist::GradientReducer> overlapped;
  if (comm_->size() > 1 && !expert_parallel(cfg_, *comm_))
    overlapped = std::make_unique<dist::GradientReducer>(coll, model_->named_parameters(), dist::ParamFilter(), buckets);
  auto batches = window_batches();
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    auto& refs = batches[bi].second;
    const int64_t slot = batches[bi].first;
    Generator gen(batch_stream_seed(uint64_t(cfg_.train.seed), update, slot));
    nn::AuxLosses aux;
    nn::ForwardContext ctx{true, &gen, cfg_.moe.enabled() ? &aux : nullptr};
    // The batch is made on the host; the model moves the ids to its device
    // (with their positions and masks), the target goes where the logits are.
    data::Batch b = train_->make_batch(refs);
    const Tensor target = b.target.to(device_);
    // Forward and backward in the compute dtype (f32: the plain ops).
    nn::AutocastGuard amp(compute_dtype_);
    Tensor logits = model_->forward(b.src, b.prev, ctx);
    const int64_t N = target.numel();
    CrossEntropyResult ce =
        label_smoothed_cross_entropy(reshape(logits, {N, V}), target.reshape({N}), cfg_.train.label_smoothing,
                                     vocab_->pad(), smoothing_form(cfg_.train.label_smoothing_form));
    Tensor loss = ce.loss;
    if (cfg_.moe.enabled()) {
      // total = LS-CE + w_aux * ntokens * mean(block balance) (+ CMR, z-loss): spec 1.5
      Tensor extra = moe::aux_loss_total(aux, ce.tokens, cfg_.moe);
      // With no MoE block in the forward the term is a constant host zero
      // (no gradient to lose by moving it); the loss may be on a GPU.
      if (extra.device() != loss.device()) {
        STRATA_CHECK(!extra.needs_grad()) << "MoE aux loss " << extra.str() << " is not on the loss's device "
                                          << loss.device().str();
        extra = extra.to(loss.device());
      }
      loss = loss + extra;
      st.aux_loss_sum += extra.item();
      st.gate_loss += moe::aux_loss_parts(aux, cfg_.moe).gate_loss;
    }
    // fp16: the scaled loss keeps small gradients representable; the scale is
    // divided out with the token normalisation below.
    if (scaler_) loss = loss * scaler_->scale();
    autograd::LeafReadyFn on_ready;
    if (overlapped && bi + 1 == batches.size())
      on_ready = [&overlapped](const Tensor& leaf) { overlapped->gradient_ready(leaf); };
    autograd::run_backward(loss, Tensor(), on_ready);
    st.loss_sum += ce.loss.item();
    st.nll_sum += ce.nll.item();
    st.tokens += ce.tokens;
    ++st.batches;
  }
  if (comm_->size() > 1) {
    // Global sums: the loss for logging, the token count for the normalisation.
    Tensor s = Tensor::from_vector(std::vector<double>{st.loss_sum, st.nll_sum, double(st.tokens), st.aux_loss_sum,
                                                       st.gate_loss, double(st.batches)},
                                   {6});
    comm_->all_reduce(s, dist::ReduceOp::Sum);
    std::vector<double> v = s.to_vector<double>();
    st.loss_sum = v[0];
    st.nll_sum = v[1];
    st.tokens = std::llround(v[2]);
    st.aux_loss_sum = v[3];
    st.gate_loss = v[4];
    st.batches = std::llround(v[5]);
    // Under expert parallelism an expert's gradient already sums every rank's
    // tokens (the all-to-all's adjoint brought them back): only the shared
    // weights are reduced.
    // With E < W each expert's copies (its replica group) hold the tokens of
    // their own all-to-all groups: summed over the replicas they hold every
    // token, scaled below by the global count like the shared weights.
    if (expert_parallel(cfg_, *comm_)) {
      dist::all_reduce_gradients(coll, model_->named_parameters(), is_shared_param, buckets);
      if (groups_->placement.replicas > 1)
        dist::all_reduce_gradients(*groups_->replica, model_->named_parameters(), is_expert_param, buckets);
    } else {
      const dist::GradSyncStats gs = overlapped->finish();
      if (!overlap_logged_) {
        overlap_logged_ = true;
        log_ << "gradient all-reduce: " << gs.buckets << " buckets, " << overlapped->started_early()
             << " started during the backward" << std::endl;
      }
    }
  }
  if (st.batches > 0) st.gate_loss /= double(st.batches);
  std::vector<Tensor> params = model_->parameters();
  if (scaler_) {
    // fp16: a gradient that overflowed (on any rank) skips the step; every
    // rank sees the same answer, so the replicas stay equal.
    std::vector<Tensor> grads;
    for (const Tensor& p : params)
      if (p.grad().defined()) grads.push_back(p.grad());
    const bool finite = all_finite(grads, comm_);
    if (!scaler_->update(!finite)) {
      adam_->zero_grad();
      ++state_.update;
      st.skipped = true;
      st.grad_norm = std::numeric_limits<double>::infinity();
      log_ << "fp16: overflow at update " << state_.update << ", loss scale now " << scaler_->scale() << " ("
           << scaler_->skipped() << " skipped)" << std::endl;
      if (on_update) on_update(state_.update, st);
      return st;
    }
  }
  // fairseq normalises the summed gradients by the number of target tokens;
  // fp16 divides the loss scale out in the same pass, before clipping.
  const double loss_scale = scaler_ ? st.loss_scale : 1.0;
  scale_grads(params, 1.0 / (double(std::max<int64_t>(st.tokens, 1)) * loss_scale));
  std::function<double(double)> global_norm_sq;
  if (expert_parallel(cfg_, *comm_)) {
    // Global norm: shared_sq (the same on every rank) + the sum over one
    // all-to-all group of its ranks' local experts' squares (each expert
    // counted once; the replicas are equal after the reduction above).
    std::vector<Tensor> experts;
    for (const auto& [name, t] : model_->named_parameters())
      if (is_expert_param(name)) experts.push_back(t);
    const double n = clip_grad_norm(experts, 0.0);  // measures only
    const double expert_sq = n * n;
    global_norm_sq = [this, expert_sq](double local_sq) {
      return local_sq - expert_sq + groups_->expert->all_reduce_scalar(expert_sq, dist::ReduceOp::Sum);
    };
  }
  st.grad_norm = clip_grad_norm(params, cfg_.train.clip_norm, global_norm_sq);
  STRATA_CHECK(std::isfinite(st.grad_norm))
      << "training diverged at update " << state_.update + 1 << ": gradient norm is " << st.grad_norm
      << " (loss " << st.loss_sum / std::max<int64_t>(st.tokens, 1) << "); lower lr or enable clip_norm";
  adam_->step(schedule_->lr_at(state_.update));
  adam_->zero_grad();
  ++state_.update;
  if (on_update) on_update(state_.update, st);
  return st;
}

ValidationResult Trainer::validate() {
  ValidationResult r;
  if (!valid_) return r;
  NoGradGuard ng;
  nn::AutocastGuard amp(compute_dtype_);  // loss and decoding in the training precision
  nn::AuxLosses aux;  // MoE: routing statistics by direction
  aux.collect_stats = true;
  nn::ForwardContext ctx{false, nullptr, cfg_.moe.enabled() ? &aux : nullptr};  // evaluation: no dropout
  const int64_t V = model_->vocab_size();
  const int W = comm_->size(), R = comm_->rank();
  const size_t D = valid_->directions().size();
  // Loss: the batches of all directions dealt round-robin to the ranks, then
  // (loss, nll, tokens) per direction and the nll total (summed batch by batch,
  // in the order one process has always used) summed over the ranks.
  std::vector<double> sums(3 * D + 1, 0.0);
  double nll_total = 0;
  int64_t position = 0;
  for (size_t d = 0; d < D; ++d) {
    for (const auto& refs : valid_->ordered_plan(d)) {
      if (position++ % W != R) continue;
      data::Batch b = valid_->make_batch(refs);
      aux.clear_losses();
      aux.sentence_lang.assign(b.direction.begin(), b.direction.end());
      Tensor logits = model_->forward(b.src, b.prev, ctx);
      const Tensor target = b.target.to(device_);
      const int64_t N = target.numel();
      CrossEntropyResult ce = label_smoothed_cross_entropy(reshape(logits, {N, V}), target.reshape({N}),
                                                           cfg_.train.label_smoothing, vocab_->pad(),
                                                           smoothing_form(cfg_.train.label_smoothing_form));
      sums[3 * d] += ce.loss.item();
      const double batch_nll = ce.nll.item();
      sums[3 * d + 1] += batch_nll;
      nll_total += batch_nll;
      sums[3 * d + 2] += double(ce.tokens);
    }
  }
  sums[3 * D] = nll_total;
  r.routing = aux.stats;
  if (expert_parallel(cfg_, *comm_) && position > 0) {
    // Every rank must join the same number of MoE forward passes (each holds
    // all-to-alls): a rank dealt one batch fewer runs the first batch again
    // and discards it (routing statistics were taken above).
    const int64_t mine = position / W + (R < position % W ? 1 : 0);
    for (int64_t extra = mine; extra < (position + W - 1) / W; ++extra) {
      for (size_t d = 0; d < D; ++d) {
        const auto plan = valid_->ordered_plan(d);
        if (plan.empty()) continue;
        data::Batch b = valid_->make_batch(plan.front());
        aux.clear_losses();
        aux.sentence_lang.assign(b.direction.begin(), b.direction.end());
        model_->forward(b.src, b.prev, ctx);
        break;
      }
    }
  }
  if (W > 1) {
    Tensor t = Tensor::from_vector(sums, {int64_t(sums.size())});
    comm_->all_reduce(t, dist::ReduceOp::Sum);
    sums = t.to_vector<double>();
  }
  double loss = 0;
  const double nll = sums[3 * D];
  for (size_t d = 0; d < D; ++d) {
    const int64_t dt = std::llround(sums[3 * d + 2]);
    loss += sums[3 * d];
    r.tokens += dt;
    r.direction_loss.emplace_back(valid_->directions()[d].name(),
                                  sums[3 * d] / double(std::max<int64_t>(dt, 1)) / kLn2);
  }

  // BLEU: the decoding batches of a direction are dealt round-robin to the
  // ranks; the best hypotheses are gathered to every rank and put back in
  // input order.
  std::vector<std::string> all_hyps;
  std::vector<std::string> all_refs;
  for (size_t d = 0; d < D; ++d) {
    const data::Direction& dir = valid_->directions()[d];
    int64_t n = cfg_.train.valid_bleu_sentences;
    if (n == 0) continue;
    if (n < 0 || n > int64_t(dir.data.size())) n = int64_t(dir.data.size());
    std::vector<std::vector<int32_t>> sources;
    std::vector<std::string> refs;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int32_t> s = dir.data.src->get(size_t(i));
      if (!s.empty() && s.back() == vocab_->eos()) s.pop_back();
      sources.push_back(std::move(s));
      refs.push_back(vocab_->decode(dir.data.tgt->get(size_t(i))));
    }
    const std::vector<std::vector<size_t>> batches =
        decode_batches(sources, cfg_.data.max_tokens, model_->options().max_source_positions);
    decode::TranslateOptions topt;
    topt.search.beam = cfg_.decode.beam;
    topt.moe_capacity_fraction = cfg_.decode.generation_capacity_token_fraction;
    topt.search.lenpen = cfg_.decode.lenpen;
    topt.search.max_len_a = cfg_.decode.max_len_a;
    topt.search.max_len_b = cfg_.decode.max_len_b;
    topt.encoder_langtok = cfg_.data.encoder_langtok == config::LangtokMode::Tgt;
    topt.decoder_langtok = cfg_.data.decoder_langtok;
    std::vector<std::vector<int32_t>> best;  // this rank's batches, in batch order
    for (size_t g = size_t(R); g < batches.size(); g += size_t(W)) {
      std::vector<std::vector<int32_t>> batch_sources;
      for (size_t i : batches[g]) batch_sources.push_back(sources[i]);
      auto hyps =
          decode::translate_ids(*model_, *vocab_, batch_sources, dir.tgt_lang_id, topt, cfg_.data.max_tokens);
      for (auto& h : hyps) {
        std::vector<int32_t> ids;
        if (!h.empty())
          for (int64_t t : h[0].tokens) ids.push_back(int32_t(t));
        best.push_back(std::move(ids));
      }
    }
    std::vector<std::vector<std::vector<int32_t>>> per_rank;
    if (W > 1)
      per_rank = dist::all_gather_sequences(*comm_, best);
    else
      per_rank.push_back(std::move(best));
    std::vector<std::string> texts(static_cast<size_t>(n));
    std::vector<size_t> taken(static_cast<size_t>(W), 0);
    for (size_t g = 0; g < batches.size(); ++g) {
      const auto& from = per_rank.at(g % size_t(W));
      for (size_t i : batches[g]) texts[i] = vocab_->decode(from.at(taken[g % size_t(W)]++));
    }
    r.direction_bleu.emplace_back(dir.name(), eval::corpus_bleu(texts, {refs}).score);
    all_hyps.insert(all_hyps.end(), texts.begin(), texts.end());
    all_refs.insert(all_refs.end(), refs.begin(), refs.end());
  }
  r.loss = loss / double(std::max<int64_t>(r.tokens, 1)) / kLn2;
  r.nll = nll / double(std::max<int64_t>(r.tokens, 1)) / kLn2;
  if (!all_hyps.empty()) {
    r.bleu = eval::corpus_bleu(all_hyps, {all_refs}).score;
    r.chrf = eval::corpus_chrf(all_hyps, {all_refs}).score;
  }
  if (W > 1) {
    // Best-checkpoint and patience decisions use these numbers: make them
    // rank 0's bit for bit on every rank.
    std::vector<double> v{r.loss, r.nll, r.bleu, r.chrf};
    for (auto& x : r.direction_loss) v.push_back(x.second);
    for (auto& x : r.direction_bleu) v.push_back(x.second);
    dist::broadcast_values(*comm_, v, 0);
    size_t k = 0;
    r.loss = v[k++], r.nll = v[k++], r.bleu = v[k++], r.chrf = v[k++];
    for (auto& x : r.direction_loss) x.second = v[k++];
    for (auto& x : r.direction_bleu) x.second = v[k++];
  }
  return r;
}

bool Trainer::better(double metric) const {
  if (!state_.has_best) return true;
  return cfg_.train.maximize_best_metric() ? metric > state_.best_metric : metric < state_.best_metric;
}

nn::NamedTensors Trainer::host_parameters() const {
  return device_.is_cpu() ? model_->named_parameters() : to_host(model_->named_parameters());
}

// Shared weights agree over the world; under expert parallelism experts
// differ between the ranks of an all-to-all group but agree with their copies
// in the replica group.
void Trainer::check_replicas(const std::string& when) {
  if (comm_->size() == 1) return;  // nothing to compare (and no host copy to make)
  const bool ep = expert_parallel(cfg_, *comm_);
  // The hashes read the values on the host; host tensors travel over MPI.
  const dist::NamedTensors params = host_parameters();
  dist::check_replicas_agree(*comm_, params, when, ep ? dist::ParamFilter(is_shared_param) : dist::ParamFilter());
  if (ep && groups_->placement.replicas > 1)
    dist::check_replicas_agree(*groups_->replica, params, when + " (expert replicas)", is_expert_param);
}

void Trainer::save_checkpoint(const ValidationResult* valid) {
  const bool ep = expert_parallel(cfg_, *comm_);
  // Experts differ between the ranks under expert parallelism: only the shared
  // weights are replicas.
  check_replicas("at update " + std::to_string(state_.update));
  // Written (and gathered) from host copies when the model is on a GPU.
  dist::NamedTensors model_entries = host_parameters();
  dist::NamedTensors optimizer_entries = device_.is_cpu() ? adam_->state_dict() : to_host(adam_->state_dict());
  // Rank 0 writes every expert under its global id: the file one process
  // writes. Its all-to-all group (colour 0) holds every expert once; the
  // other groups hold copies and skip the gather.
  if (ep && groups_->placement.expert_group_color(comm_->rank()) == 0) {
    const int L = groups_->placement.local_experts;
    model_entries = gather_experts(*groups_->expert, model_entries, L);
    optimizer_entries = gather_experts(*groups_->expert, optimizer_entries, L);
  }
  if (comm_->rank() != 0) return;
  const std::string& dir = cfg_.train.save_dir;
  {
    CheckpointWriter w(dir, "checkpoint_last");
    w.write_safetensors("model.safetensors", model_entries);
    w.write_safetensors("optimizer.safetensors", optimizer_entries);
    w.write_text("trainer_state.yaml", state_to_yaml(state_, comm_->size(), scaler_.get()));
    w.write_text("config.yaml", config::to_yaml(cfg_));
    w.commit();
  }
  if (valid && state_.best_update == state_.update) copy_checkpoint(dir, "checkpoint_last", "checkpoint_best");
  if (cfg_.train.save_interval_updates > 0 && state_.update % cfg_.train.save_interval_updates == 0 &&
      cfg_.train.keep_last != 0) {
    copy_checkpoint(dir, "checkpoint_last", periodic_checkpoint_name(state_.update));
    if (cfg_.train.keep_last > 0) prune_periodic_checkpoints(dir, cfg_.train.keep_last);
  }
}

void Trainer::try_resume() {
  const std::string& dir = cfg_.train.save_dir;
  const int R = comm_->rank();
  // Rank 0 repairs the save_dir and decides; the broadcast orders every other
  // rank's reading after the repair.
  std::vector<double> found{-1.0};
  if (R == 0) {
    recover_save_dir(dir);
    if (std::optional<std::string> l = find_resumable(dir))
      found[0] = double(state_from_yaml(*l + "/trainer_state.yaml").update);
  }
  dist::broadcast_values(*comm_, found, 0);
  if (found[0] < 0) return;
  std::optional<std::string> last = find_resumable(dir);
  STRATA_CHECK(last) << "resume: rank " << R << " cannot read " << dir
                     << "/checkpoint_last, which rank 0 resumes from (save_dir must be on a filesystem every rank sees)";
  config::Config saved = config::load_config_string(read_file(*last + "/config.yaml"), *last + "/config.yaml");
  config::check_resume_compatible(saved, cfg_, *last);
  model_->load_parameters(load_safetensors(*last + "/model.safetensors").tensors, *last + "/model.safetensors");
  // A checkpoint holds every expert by global id; under expert parallelism
  // this rank takes its own experts' entries (the model ignores the others).
  dist::NamedTensors optimizer_state = load_safetensors(*last + "/optimizer.safetensors").tensors;
  if (expert_parallel(cfg_, *comm_)) optimizer_state = only_names(optimizer_state, adam_->state_dict());
  adam_->load_state_dict(optimizer_state);
  int saved_world = 1;
  state_ = state_from_yaml(*last + "/trainer_state.yaml", &saved_world, scaler_.get());
  STRATA_CHECK(state_.update == std::llround(found[0]))
      << "resume: rank " << R << " reads " << *last << " at update " << state_.update << ", rank 0 at update "
      << std::llround(found[0]) << " (save_dir must be one shared directory)";
  log_ << "resumed from " << *last << " at update " << state_.update << " (epoch " << state_.epoch << ")";
  if (saved_world != comm_->size()) log_ << "; saved by " << saved_world << " rank(s), now " << comm_->size();
  log_ << "\n";
}

int64_t Trainer::run() {
  const bool main_rank = comm_->rank() == 0;
  if (main_rank) {
    std::error_code ec;
    std::filesystem::create_directories(cfg_.train.save_dir, ec);
    STRATA_CHECK(!ec) << "cannot create save_dir '" << cfg_.train.save_dir << "': " << ec.message();
  }
  try_resume();
  if (hooks_.perturb_rank == comm_->rank()) {
    Tensor p = model_->named_parameters().front().second;
    p.detach().fill_(0.125);
  }
  check_replicas("at start (update " + std::to_string(state_.update) + ")");
  if (comm_->size() > 1)
    log_ << "data parallel: " << comm_->size() << " ranks x update_freq " << cfg_.train.update_freq << " = "
         << comm_->size() * cfg_.train.update_freq << " batches per update\n";
  const std::string metrics_path = cfg_.train.save_dir + "/metrics.jsonl";
  std::unique_ptr<MetricsWriter> metrics;
  if (main_rank) {
    rewind_metrics(metrics_path, state_.update);
    metrics = std::make_unique<MetricsWriter>(metrics_path);
  }
  const int64_t start_update = state_.update;
  const double start_train_seconds = state_.train_seconds;
  const auto t0 = Clock::now();
  auto interval_start = Clock::now();
  double int_loss = 0, int_nll = 0;
  int64_t int_tokens = 0, int_updates = 0, last_saved = state_.update;
  bool stop = false;

  while (!stop) {
    if (cfg_.train.max_update > 0 && state_.update >= cfg_.train.max_update) break;
    // A signal may reach only some ranks: leave together.
    if (dist::any_rank(*comm_, stop_requested_)) {
      log_ << "stop requested by a signal at update " << state_.update << ": saving and exiting" << std::endl;
      break;
    }
    UpdateStats st = train_update();
    state_.train_seconds = start_train_seconds + seconds_since(t0);
    int_loss += st.loss_sum;
    int_nll += st.nll_sum;
    int_tokens += st.tokens;
    ++int_updates;
    if (cfg_.train.max_epoch > 0 && state_.epoch > cfg_.train.max_epoch) stop = true;
    // Each rank's clock differs a little: any rank over the budget stops all.
    if (cfg_.train.max_time_minutes > 0 &&
        dist::any_rank(*comm_, state_.train_seconds >= cfg_.train.max_time_minutes * 60))
      stop = true;
    const bool last = stop || (cfg_.train.max_update > 0 && state_.update >= cfg_.train.max_update);

    if (state_.update % std::max(1, cfg_.train.log_interval) == 0 || last) {
      ProgressInfo p;
      p.epoch = state_.epoch;
      p.update = state_.update;
      p.max_update = cfg_.train.max_update;
      p.start_update = start_update;
      p.loss = int_loss / double(std::max<int64_t>(int_tokens, 1)) / kLn2;
      p.ppl = perplexity(p.loss);
      p.lr = schedule_->lr_at(state_.update);
      p.tokens_per_sec = double(int_tokens) / std::max(1e-9, seconds_since(interval_start));
      p.elapsed_s = seconds_since(t0);
      log_ << format_progress(p) << std::endl;
      nlohmann::json rec = progress_record(p);
      rec["kind"] = "train";
      rec["nll"] = int_nll / double(std::max<int64_t>(int_tokens, 1)) / kLn2;
      rec["grad_norm"] = st.grad_norm;
      rec["updates_in_interval"] = int_updates;
      if (cfg_.moe.enabled()) {
        rec["gate_loss"] = st.gate_loss;  // the last update's mean balance loss (1.0 = balanced)
        rec["aux_loss"] = st.aux_loss_sum / double(std::max<int64_t>(st.tokens, 1)) / kLn2;
      }
      if (metrics) metrics->write(rec);
      int_loss = int_nll = 0;
      int_tokens = int_updates = 0;
      interval_start = Clock::now();
    }

    const bool do_valid =
        valid_ && ((cfg_.train.validate_interval_updates > 0 && state_.update % cfg_.train.validate_interval_updates == 0) || last);
    const bool do_save =
        (cfg_.train.save_interval_updates > 0 && state_.update % cfg_.train.save_interval_updates == 0) || last ||
        do_valid;
    ValidationResult v;
    if (do_valid) {
      auto tv = Clock::now();
      v = validate();
      double metric = v.loss;
      switch (cfg_.train.best_checkpoint_metric) {
        case config::BestMetric::Loss: metric = v.loss; break;
        case config::BestMetric::Nll: metric = v.nll; break;
        case config::BestMetric::Chrf: metric = v.chrf; break;
        default: metric = v.bleu; break;
      }
      if (better(metric)) {
        state_.has_best = true;
        state_.best_metric = metric;
        state_.best_update = state_.update;
        state_.stalls = 0;
      } else {
        ++state_.stalls;
      }
      std::ostringstream line;
      line.setf(std::ios::fixed);
      line.precision(3);
      line << "valid | update " << state_.update << " | loss " << v.loss << " | nll " << v.nll << " | ppl "
           << perplexity(v.nll);
      if (v.bleu >= 0) line << " | bleu " << v.bleu << " | chrf " << v.chrf;
      line << " | best " << state_.best_metric << " (update " << state_.best_update << ")"
           << " | " << format_duration(seconds_since(tv));
      log_ << line.str() << std::endl;
      nlohmann::json rec;
      rec["kind"] = "valid";
      rec["update"] = state_.update;
      rec["loss"] = v.loss;
      rec["nll"] = v.nll;
      rec["ppl"] = perplexity(v.nll);
      if (v.bleu >= 0) rec["bleu"] = v.bleu, rec["chrf"] = v.chrf;
      for (auto& [name, l] : v.direction_loss) rec["loss_" + name] = l;
      for (auto& [name, b] : v.direction_bleu) rec["bleu_" + name] = b;
      rec["best"] = state_.best_metric;
      if (!v.routing.empty()) {
        std::vector<std::string> names;
        for (const auto& d : valid_->directions()) names.push_back(d.name());
        rec["moe_routing"] = moe::routing_stats_json(v.routing, names)["moe_routing"];
      }
      if (metrics) metrics->write(rec);
      if (cfg_.train.patience > 0 && state_.stalls >= cfg_.train.patience) {
        log_ << "early stop: no improvement in " << state_.stalls << " validations\n";
        stop = true;
      }
    }
    if (do_save || stop) {
      save_checkpoint(do_valid ? &v : nullptr);
      last_saved = state_.update;
    }
  }
  if (last_saved != state_.update) save_checkpoint(nullptr);
  return state_.update;
}

}  // namespace strata::train
