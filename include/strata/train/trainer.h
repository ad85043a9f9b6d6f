// The training loop: batches -> forward -> label-smoothed loss -> backward ->
// gradient normalisation by target tokens -> clipping -> Adam with the
// inverse-sqrt schedule; validation (loss per direction, BLEU on a dev
// sample), checkpoint_last / checkpoint_best / periodic checkpoints, early
// stopping, progress lines and metrics.jsonl. Starting again with the same
// save_dir resumes from checkpoint_last and reproduces the uninterrupted
// run's losses exactly (dropout streams are keyed by the update number and
// the batch's position in the update, the data order by (seed, epoch)).
//
// Data parallel (docs/distributed.md): on W ranks every update consumes the
// next W * update_freq batches of the global plan; rank r takes the batches
// at positions r, r + W, r + 2W, ... of that window, so W ranks with
// update_freq U make exactly the update one process makes with update_freq
// W * U (same batches, same dropout masks: they are keyed by the update and
// the batch's position in the window, not by the rank). Losses and token
// counts are summed over the ranks, gradients all-reduced in buckets and
// divided by the global target-token count, clipping sees the global norm.
// Rank 0 writes checkpoints and metrics; every rank reads checkpoint_last to
// resume, on any number of ranks. Stop decisions (signals, max_time,
// patience, max_epoch) are agreed so every rank leaves the loop together.
//
// Devices and precision (docs/training.md, "GPU training"): train.device
// picks the CPU or a GPU (select_device); the model is moved there after
// initialisation and Adam's state is created there. Batches are made on the
// host; the model moves the ids and the loss target follows the logits.
// train.precision bf16/fp16 runs forward and backward under an
// nn::AutocastGuard with f32 master weights; fp16 multiplies the loss by a
// DynamicLossScaler's scale, divides it out of the gradients before
// clipping and skips updates whose gradients overflow. On W > 1 GPUs the
// gradient all-reduce and the expert all-to-all go through NCCL (host
// buffers, e.g. agreement counts and replica checks, stay on MPI).
// Checkpoints are written from host copies and resume onto the device.
#pragma once
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "strata/config/options.h"
#include "strata/core/device.h"
#include "strata/data/translation_batches.h"
#include "strata/data/vocabulary.h"
#include "strata/dist/communicator.h"
#include "strata/dist/groups.h"
#include "strata/model/transformer_model.h"
#include "strata/moe/routing_stats.h"
#include "strata/train/adam.h"
#include "strata/train/loss_scaler.h"
#include "strata/train/lr_schedule.h"

namespace strata::train {

struct TrainerState {
  int64_t update = 0;           // updates done
  int64_t epoch = 1;            // current epoch (1-based)
  int64_t batch_in_epoch = 0;   // batches of the current epoch already consumed
  double best_metric = 0;
  bool has_best = false;
  int64_t best_update = 0;
  int64_t stalls = 0;           // validations since the last new best
  double train_seconds = 0;     // wall time spent training, over all runs
};

struct ValidationResult {
  double loss = 0, nll = 0;  // base 2, per target token
  int64_t tokens = 0;
  double bleu = -1, chrf = -1;  // -1: not computed
  std::vector<std::pair<std::string, double>> direction_loss;
  std::vector<std::pair<std::string, double>> direction_bleu;
  moe::RoutingStats routing;  // MoE blocks' routing on the validation batches (this rank's share)
};

struct UpdateStats {
  double loss_sum = 0, nll_sum = 0;  // natural log, summed over tokens (of every rank)
  int64_t tokens = 0;                // target tokens of every rank
  double grad_norm = 0;
  // MoE: the weighted aux term added to the loss (summed like loss_sum) and
  // the unweighted mean balance loss over the update's batches (of every rank).
  double aux_loss_sum = 0, gate_loss = 0;
  int64_t batches = 0;
  // fp16: the gradients overflowed and the optimizer step was skipped (the
  // update still counts: its batches are consumed, the schedule moves on).
  bool skipped = false;
  double loss_scale = 1;  // the scale this update's loss was multiplied by (fp16)
};

// The device train.device asks for: Cpu; Cuda (throws a one-line error when
// this build has no CUDA or no GPU is visible); Auto = the GPU when the build
// has CUDA and one is visible. On a GPU it selects device local_rank % count
// (several GPUs per node, one process each) for this process. Also refuses
// precision bf16/fp16 when the choice ends up on the CPU.
Device select_device(const config::TrainOptions& train, int local_rank);

// The autocast compute dtype of a precision: F32, BF16 or F16.
DType compute_dtype(config::Precision precision);

// Seed of the dropout (and other training randomness) stream of the batch at
// position `slot` (0-based) of update `update`'s window of batches. Slot 0
// uses mix_keys(seed, update), the key single-process training always used.
uint64_t batch_stream_seed(uint64_t seed, int64_t update, int64_t slot);

// Positions in one update's window of world * update_freq batches that rank
// `rank` trains on: rank, rank + world, ... (update_freq of them).
std::vector<int64_t> rank_slots(int rank, int world, int update_freq);

// Failure injection for the MPI tests, read from the environment once at
// construction (documented in docs/distributed.md as test hooks; unset in
// normal runs):
//   STRATA_TEST_FAIL_RANK=R STRATA_TEST_FAIL_UPDATE=U  rank R throws at the start of update U
//   STRATA_TEST_HANG_RANK=R STRATA_TEST_HANG_UPDATE=U  rank R stops responding at update U
//   STRATA_TEST_PERTURB_RANK=R                         rank R changes one weight after start
struct TestHooks {
  int fail_rank = -1;
  int64_t fail_update = 0;
  int hang_rank = -1;
  int64_t hang_update = 0;
  int perturb_rank = -1;
  static TestHooks from_env();
};

class Trainer {
 public:
  // `comm` is the data-parallel world; null means dist::world(). Only rank 0
  // should get a log stream that prints (the others usually get a null one).
  Trainer(config::Config cfg, std::ostream& log, dist::Communicator* comm = nullptr);
  ~Trainer();
  // Trains until max_update / max_epoch / max_time / patience; returns the updates done.
  int64_t run();
  // One optimizer update over this rank's update_freq batches of the next
  // window (public for tests). Collective.
  UpdateStats train_update();
  // Sharded over the ranks; every rank returns rank 0's numbers. Collective.
  ValidationResult validate();
  // Rank 0 writes; every rank first checks that the replicas agree. Collective.
  void save_checkpoint(const ValidationResult* valid);

  const TrainerState& state() const { return state_; }
  model::TransformerModel& model() { return *model_; }
  dist::Communicator& comm() { return *comm_; }
  Device device() const { return device_; }
  const data::Vocabulary& vocab() const { return *vocab_; }
  // Called after every update with its stats (tests record the loss sequence).
  std::function<void(int64_t update, const UpdateStats&)> on_update;
  // Asks run() to checkpoint and return at the next update boundary (signals).
  void request_stop() { stop_requested_ = true; }

 private:
  void setup();
  void try_resume();
  void check_replicas(const std::string& when);
  std::vector<data::ExampleRef> next_batch();
  // This rank's (slot, batch) pairs of the next window; advances the global position.
  std::vector<std::pair<int64_t, std::vector<data::ExampleRef>>> window_batches();
  bool better(double metric) const;
  void apply_test_hooks(int64_t update) const;
  // Parameters as the host sees them: the live tensors on the CPU, host
  // copies when the model is on a GPU (replica hashes, checkpoints).
  nn::NamedTensors host_parameters() const;

  config::Config cfg_;
  std::ostream& log_;
  dist::Communicator* comm_;
  TestHooks hooks_;
  Device device_;
  DType compute_dtype_ = DType::F32;
  // W > 1 ranks on GPUs: the NCCL communicator over comm_'s ranks, and the
  // communicator gradients and expert groups use (device buffers over NCCL,
  // host buffers and counts over comm_). Null otherwise: comm_ does it all.
  std::unique_ptr<dist::Communicator> nccl_;
  std::unique_ptr<dist::Communicator> collectives_;
  std::shared_ptr<data::Vocabulary> vocab_;
  std::unique_ptr<data::TranslationBatches> train_, valid_;
  // Expert parallelism: the all-to-all and replica groups (null otherwise).
  // Declared before model_, whose MoE blocks hold the expert group: it must
  // outlive them.
  std::unique_ptr<dist::ExpertGroups> groups_;
  std::unique_ptr<model::TransformerModel> model_;
  std::unique_ptr<Adam> adam_;
  std::unique_ptr<DynamicLossScaler> scaler_;  // fp16 only
  bool overlap_logged_ = false;  // the first update logs how many buckets overlapped the backward
  std::unique_ptr<LrSchedule> schedule_;
  TrainerState state_;
  std::vector<std::vector<data::ExampleRef>> plan_;  // current epoch's batches
  int64_t plan_epoch_ = -1;
  volatile bool stop_requested_ = false;
};

}  // namespace strata::train
