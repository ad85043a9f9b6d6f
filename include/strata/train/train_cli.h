// strata-train's command line: `strata-train CONFIG.yaml [--set key=value ...] [--dry-run]`.
#pragma once

namespace strata::train {

// Runs the program; returns the exit status. Errors print one line to stderr.
int train_main(int argc, const char* const* argv);

}  // namespace strata::train
