#include "strata/train/train_cli.h"

#include <csignal>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "strata/config/config.h"
#include "strata/model/build.h"
#include "strata/train/trainer.h"

namespace strata::train {

namespace {
Trainer* g_trainer = nullptr;
// SIGTERM (Slurm's end of job) and SIGUSR1 (its warning signal) ask the
// trainer to checkpoint at the next update boundary and exit cleanly.
extern "C" void on_stop_signal(int) {
  if (g_trainer) g_trainer->request_stop();
}

void usage(std::ostream& os) {
  os << "usage: strata-train CONFIG.yaml [--set key=value ...] [--dry-run]\n"
        "  Trains the model the config describes; resumes from <save_dir>/checkpoint_last when it exists.\n"
        "  --dry-run  print the resolved config and the model summary, then exit without reading data\n"
        "  --help     list every option with its default\n";
}
}  // namespace

int train_main(int argc, const char* const* argv) {
  try {
    std::vector<const char*> args;
    bool dry_run = false;
    for (int i = 0; i < argc; ++i) {
      if (i > 0 && std::strcmp(argv[i], "--dry-run") == 0) dry_run = true;
      else args.push_back(argv[i]);
    }
    config::CommandLine cl = config::parse_command_line(int(args.size()), args.data());
    if (cl.help) {
      usage(std::cout);
      config::print_help(std::cout);
      return 0;
    }
    if (cl.config_path.empty()) {
      usage(std::cerr);
      return 2;
    }
    STRATA_CHECK(cl.positionals.empty()) << "strata-train: unexpected argument '" << cl.positionals[0] << "'";
    config::Config cfg = config::load_config(cl.config_path, cl.overrides);
    config::print_config(std::cout, cfg);
    if (dry_run) {
      STRATA_CHECK(cfg.model.vocab_size > 0) << "--dry-run needs the vocabulary size: set vocab_size in the config";
      std::cout << "model: " << model::summarize(cfg, cfg.model.vocab_size).str() << std::endl;
      return 0;
    }
    Trainer trainer(cfg, std::cout);
    g_trainer = &trainer;
    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGUSR1, on_stop_signal);
    int64_t updates = trainer.run();
    g_trainer = nullptr;
    std::cout << "done: " << updates << " updates, checkpoints in " << cfg.train.save_dir << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "strata-train: error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace strata::train
