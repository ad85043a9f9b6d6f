#include "strata/train/train_cli.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "strata/config/config.h"
#include "strata/dist/environment.h"
#include "strata/model/build.h"
#include "strata/train/trainer.h"

namespace strata::train {

namespace {
Trainer* g_trainer = nullptr;
// SIGTERM (Slurm's end of job) and SIGUSR1 (its warning signal) ask the
// trainer to checkpoint at the next update boundary and exit cleanly. Under
// MPI the ranks agree on it, so a signal that reaches one rank stops all.
extern "C" void on_stop_signal(int) {
  if (g_trainer) g_trainer->request_stop();
}

void usage(std::ostream& os) {
  os << "usage: strata-train CONFIG.yaml [--set key=value ...] [--dry-run]\n"
        "  Trains the model the config describes; resumes from <save_dir>/checkpoint_last when it exists.\n"
        "  Under MPI (mpirun -np N strata-train ...) every rank trains on its share of each update's batches.\n"
        "  --dry-run  print the resolved config and the model summary, then exit without reading data\n"
        "  --help     list every option with its default\n";
}

// OpenMP threads per process: train.threads when set; otherwise, with several
// ranks on a node and no OMP_NUM_THREADS, the node's cores divided among them
// (every rank using every core would oversubscribe the node many times).
int choose_threads(const config::Config& cfg, const dist::ProcessInfo& p) {
  if (cfg.train.threads > 0) return cfg.train.threads;
  const char* env = std::getenv("OMP_NUM_THREADS");
  if ((env && *env) || p.local_size <= 1) return omp_get_max_threads();
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  return std::max(1, cores / p.local_size);
}

// Writes one whole line to stderr in a single call: std::cerr is unbuffered,
// so piecewise output of several ranks interleaves mid-line in a shared log.
void print_line(const std::string& line) { std::cerr << (line + "\n") << std::flush; }

// Prints the one-line reason and ends the process (the whole job under MPI).
int fail(const dist::ProcessInfo& p, const std::string& what) {
  if (p.size > 1) {
    print_line("strata-train: rank " + std::to_string(p.rank) + ": error: " + what);
    dist::abort_job(1);
  }
  print_line("strata-train: error: " + what);
  return 1;
}
}  // namespace

int train_main(int argc, const char* const* argv) {
  std::unique_ptr<dist::Environment> env;
  try {
    env = std::make_unique<dist::Environment>();
  } catch (const std::exception& e) {
    print_line(std::string("strata-train: error: ") + e.what());
    return 1;
  }
  const dist::ProcessInfo proc = env->info();
  const bool main_rank = proc.rank == 0;
  try {
    std::vector<const char*> args;
    bool dry_run = false;
    for (int i = 0; i < argc; ++i) {
      if (i > 0 && std::strcmp(argv[i], "--dry-run") == 0) dry_run = true;
      else args.push_back(argv[i]);
    }
    config::CommandLine cl = config::parse_command_line(int(args.size()), args.data());
    if (cl.help) {
      if (main_rank) {
        usage(std::cout);
        config::print_help(std::cout);
      }
      return 0;
    }
    if (cl.config_path.empty()) {
      if (main_rank) usage(std::cerr);
      return 2;
    }
    STRATA_CHECK(cl.positionals.empty()) << "strata-train: unexpected argument '" << cl.positionals[0] << "'";
    config::Config cfg = config::load_config(cl.config_path, cl.overrides);
    if (main_rank) config::print_config(std::cout, cfg);
    if (dry_run) {
      STRATA_CHECK(cfg.model.vocab_size > 0) << "--dry-run reads no data, so it needs the vocabulary size: set vocab_size in the config or add --set vocab_size=N";
      if (main_rank) std::cout << "model: " << model::summarize(cfg, cfg.model.vocab_size).str() << std::endl;
      return 0;
    }
    const int threads = choose_threads(cfg, proc);
    omp_set_num_threads(threads);
    if (proc.size > 1) {  // one line per rank: where it runs (the MPI tests read the pid)
      std::ostringstream os;
      os << "strata-train: rank " << proc.rank << "/" << proc.size << " pid " << getpid() << " on " << proc.host
         << " (local rank " << proc.local_rank << "/" << proc.local_size << ", " << threads << " threads)";
      print_line(os.str());
    }
    std::ostream null_stream(nullptr);  // ranks other than 0 log nothing
    Trainer trainer(cfg, main_rank ? std::cout : null_stream, &env->world());
    g_trainer = &trainer;
    struct Unregister {  // before `trainer` dies, however this scope ends
      ~Unregister() { g_trainer = nullptr; }
    } unregister;
    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGUSR1, on_stop_signal);
    int64_t updates = trainer.run();
    if (main_rank) std::cout << "done: " << updates << " updates, checkpoints in " << cfg.train.save_dir << std::endl;
    return 0;
  } catch (const std::exception& e) {
    return fail(proc, e.what());
  }
}

}  // namespace strata::train
