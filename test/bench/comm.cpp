// Communication benchmark for CPU data/expert parallelism over MPI:
//  1. gradient all-reduce (dist::all_reduce_gradients) for the parameter sets
//     of the demo model (3+3 layers, d 256, 8k vocabulary) and the M4 dense
//     model (6+6, d 512, 32k), by bucket size, polled and blocking waits;
//  2. all-to-all of MoE-like expert buffers [E * C, d], C = 2 ceil(S / E)
//     (top-2 capacity for S tokens per rank), and the latency of the small
//     MIN/MAX all-reduce the SMoE pass loop makes per pass;
//  3. weak scaling: the same per-process batch on 1 process x W threads, then
//     on W processes x 1 thread each (forward, backward, gradient all-reduce,
//     Adam); efficiency = W-process throughput / 1-process throughput.
// Run: mpirun -np 2 build/bench/comm [--model demo|m4] [--steps 4] [--tokens 1024] [--skip-weak]
// One process runs too (collectives are then copies; the numbers show the floor).
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "strata/autograd/ops.h"
#include "strata/dist/environment.h"
#include "strata/dist/grad_sync.h"
#include "strata/model/build.h"
#include "strata/train/adam.h"
#include "strata/train/grad_clip.h"
#ifdef STRATA_WITH_MPI
#include "strata/dist/mpi_communicator.h"
#endif

using namespace strata;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

config::Config model_config(const std::string& name) {
  config::Config c;
  if (name == "demo") {
    c.model.encoder_layers = c.model.decoder_layers = 3;
    c.model.embed_dim = 256;
    c.model.ffn_dim = 1024;
    c.model.attention_heads = 4;
    c.model.vocab_size = 8000;
  } else {  // M4 dense, transformer_base with a 32k vocabulary
    c.model.encoder_layers = c.model.decoder_layers = 6;
    c.model.embed_dim = 512;
    c.model.ffn_dim = 2048;
    c.model.attention_heads = 8;
    c.model.vocab_size = 32000;
  }
  c.model.dropout = 0.1;
  return c;
}

// Median of `reps` timed calls of f() (after one warm-up), every rank in step.
template <class F>
double median_seconds(dist::Communicator& c, int reps, F f) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    c.barrier();
    auto t0 = Clock::now();
    f();
    // the slowest rank's time is the collective's time
    t.push_back(c.all_reduce_scalar(since(t0), dist::ReduceOp::Max));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct WaitMode {
  std::string name;
  dist::Communicator* comm;
};

void bench_gradients(const std::vector<WaitMode>& modes, const std::vector<std::string>& models, bool root) {
  if (root) {
    std::printf("\n## gradient all-reduce (all_reduce_gradients, f32, median of 5)\n");
    std::printf("%-5s %9s %8s %-6s %9s %8s %10s %10s\n", "model", "params", "MB", "wait", "bucket", "buckets",
                "ms", "busbw GB/s");
  }
  for (const auto& m : models) {
    config::Config cfg = model_config(m);
    auto model = model::build_model(cfg, cfg.model.vocab_size, 1);
    dist::NamedTensors params = model->named_parameters();
    for (auto& [n, p] : params) p.set_grad(Tensor::uniform(p.shape(), 7, 0, -1, 1));
    const double mb = double(model->num_parameters()) * 4 / 1e6;
    for (const WaitMode& w : modes) {
      const int W = w.comm->size();
      for (size_t bucket_mb : {1, 4, 25, 100}) {
        dist::GradSyncOptions o;
        o.bucket_bytes = bucket_mb << 20;
        dist::GradSyncStats st;
        double s = median_seconds(*w.comm, 5, [&] { st = dist::all_reduce_gradients(*w.comm, params, {}, o); });
        // ring all-reduce moves 2 (W-1)/W of the data through every link
        const double bus = W > 1 ? 2.0 * (W - 1) / W * mb / 1e3 / s : 0.0;
        if (root)
          std::printf("%-5s %8.2fM %8.1f %-6s %7zuMB %8lld %10.2f %10.2f\n", m.c_str(),
                      model->num_parameters() / 1e6, mb, w.name.c_str(), bucket_mb, (long long)st.buckets, 1e3 * s,
                      bus);
      }
    }
  }
}

void bench_all_to_all(const std::vector<WaitMode>& modes, bool root) {
  if (root) {
    std::printf("\n## all-to-all of expert buffers [E*C, d] f32, C = 2*ceil(S/E) (median of 9)\n");
    std::printf("%-6s %6s %4s %5s %9s %10s %12s\n", "wait", "S", "E", "d", "MB/rank", "ms", "GB/s/rank");
  }
  for (const WaitMode& w : modes) {
    const int W = w.comm->size();
    for (int64_t S : {1024, 4096})
      for (int64_t d : {256, 512}) {
        const int64_t E = 8, C = 2 * ((S + E - 1) / E);
        int64_t rows = E * C;
        rows = (rows + W - 1) / W * W;  // whole chunks per rank
        Tensor send = Tensor::uniform({rows, d}, 3, 0, -1, 1), recv = Tensor::empty({rows, d});
        double s = median_seconds(*w.comm, 9, [&] { w.comm->all_to_all(send, recv); });
        const double mbytes = double(rows * d * 4) / 1e6;
        // every rank sends (W-1)/W of its buffer away
        const double gbs = W > 1 ? mbytes * (W - 1) / W / 1e3 / s : 0.0;
        if (root)
          std::printf("%-6s %6lld %4lld %5lld %9.2f %10.3f %12.2f\n", w.name.c_str(), (long long)S, (long long)E,
                      (long long)d, mbytes, 1e3 * s, gbs);
      }
    double lat = median_seconds(*w.comm, 101, [&] { w.comm->all_reduce_int(w.comm->rank(), dist::ReduceOp::Min); });
    if (root) std::printf("%-6s SMoE pass agreement (all_reduce_int MIN): %.1f us\n", w.name.c_str(), 1e6 * lat);
  }
}

// One training step on a fixed synthetic batch; returns target tokens.
struct StepModel {
  config::Config cfg;
  std::unique_ptr<model::TransformerModel> model;
  std::unique_ptr<train::Adam> adam;
  Tensor src, prev, target;
  int64_t tokens = 0;

  StepModel(const std::string& name, int64_t batch_tokens, uint64_t seed) : cfg(model_config(name)) {
    model = model::build_model(cfg, cfg.model.vocab_size, 1);
    model->init_parameters(1);
    adam = std::make_unique<train::Adam>(model->named_parameters());
    const int64_t T = 32, B = std::max<int64_t>(1, batch_tokens / T);
    auto ids = [&](uint64_t s) {
      Tensor u = Tensor::uniform({B, T}, seed, s, 4, double(cfg.model.vocab_size) - 1, DType::F64);
      std::vector<double> v = u.to_vector<double>();
      std::vector<int64_t> out(v.begin(), v.end());
      return Tensor::from_vector(out, {B, T});
    };
    src = ids(1);
    prev = ids(2);
    target = ids(3);
    tokens = B * T;
  }
  void step(dist::Communicator* comm, uint64_t key) {
    Generator gen(key);
    nn::ForwardContext ctx{true, &gen, nullptr};
    Tensor logits = model->forward(src, prev, ctx);
    const int64_t N = target.numel(), V = cfg.model.vocab_size;
    CrossEntropyResult ce = label_smoothed_cross_entropy(reshape(logits, {N, V}), target.reshape({N}), 0.1, 1);
    ce.loss.backward();
    double total = double(ce.tokens);
    if (comm) {
      total = comm->all_reduce_scalar(total, dist::ReduceOp::Sum);
      dist::all_reduce_gradients(*comm, model->named_parameters());
    }
    train::scale_grads(model->parameters(), 1.0 / total);
    adam->step(1e-4);
    adam->zero_grad();
  }
};

void bench_weak_scaling(dist::Communicator& world, const std::string& name, int64_t batch_tokens, int steps,
                        bool root) {
  const int W = world.size();
  const int threads = omp_get_max_threads();
  // A: rank 0 alone with W x threads (the others sleep in a polled barrier)
  double a_tps = 0;
  if (root) {
    omp_set_num_threads(W * threads);
    StepModel m(name, batch_tokens, 11);
    m.step(nullptr, 0);
    auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i) m.step(nullptr, uint64_t(i + 1));
    a_tps = double(m.tokens) * steps / since(t0);
  }
  world.barrier();
  // B: every rank with `threads` threads, its own batch of the same size
  omp_set_num_threads(threads);
  StepModel m(name, batch_tokens, 11 + uint64_t(world.rank()));
  m.step(&world, 0);
  world.barrier();
  auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) m.step(&world, uint64_t(i + 1));
  const double b_s = world.all_reduce_scalar(since(t0), dist::ReduceOp::Max);
  const double b_tps = double(m.tokens) * W * steps / b_s;
  if (root) {
    std::printf("\n## weak scaling: %s model, %lld target tokens per process and step, %d steps\n", name.c_str(),
                (long long)m.tokens, steps);
    std::printf("1 process x %d threads : %10.0f tok/s\n", W * threads, a_tps);
    std::printf("%d processes x %d threads: %10.0f tok/s (forward, backward, all-reduce, Adam)\n", W, threads,
                b_tps);
    std::printf("efficiency (W-process / 1-process throughput, same cores): %.2f\n", b_tps / a_tps);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Strata communication benchmark: gradient all-reduce, all-to-all, weak scaling (run under mpirun)"};
  std::string which = "all", weak_model = "demo";
  int steps = 4;
  int64_t tokens = 1024;
  bool skip_weak = false;
  app.add_option("--model", which, "gradient sets: demo | m4 | all");
  app.add_option("--weak-model", weak_model, "model of the weak-scaling steps: demo | m4");
  app.add_option("--steps", steps, "timed weak-scaling steps");
  app.add_option("--tokens", tokens, "target tokens per process and step (weak scaling)");
  app.add_flag("--skip-weak", skip_weak, "skip the weak-scaling part");
  CLI11_PARSE(app, argc, argv);
  std::unique_ptr<dist::Environment> envp;
  try {
    envp = std::make_unique<dist::Environment>();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm: error: %s\n", e.what());
    return 1;
  }
  dist::Environment& env = *envp;
  try {
    dist::Communicator& world = env.world();
    const bool root = world.rank() == 0;
    if (root)
      std::printf("# comm benchmark: %d rank(s), %d OpenMP thread(s) per rank, %s\n", world.size(),
                  omp_get_max_threads(), env.info().mpi ? "MPI" : "no MPI (local)");
    std::vector<WaitMode> modes{{env.info().mpi ? "poll" : "local", &world}};
#ifdef STRATA_WITH_MPI
    std::unique_ptr<dist::MpiCommunicator> blocking;
    if (env.info().mpi) {
      dist::MpiOptions o = dist::MpiOptions::from_env();
      o.wait = dist::MpiOptions::Wait::Block;
      blocking = dist::MpiCommunicator::world(o);
      modes.push_back({"block", blocking.get()});
    }
#endif
    std::vector<std::string> models = which == "all" ? std::vector<std::string>{"demo", "m4"}
                                                     : std::vector<std::string>{which};
    bench_gradients(modes, models, root);
    bench_all_to_all(modes, root);
    if (!skip_weak) bench_weak_scaling(world, weak_model, tokens, steps, root);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm: rank %d: error: %s\n", env.info().rank, e.what());
    dist::abort_job(1);  // the other ranks may be waiting in a collective
  }
  return 0;
}
