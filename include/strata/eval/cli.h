// The strata-bleu program: sacreBLEU's command line for plain-text files.
//
//   strata-bleu REF [REF ...] [-i HYP] [-m bleu chrf] [-b] [-w N] [-f text|json]
//               [--tokenize 13a|none|intl|char|spm|flores101|flores200] [-lc]
//               [--spm-model PATH] [--chrf-word-order 2] ...
//
// Everything lives here so the program's main stays a one-liner and the
// tests can drive the real command line.
#pragma once
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace strata::eval {

struct CliOptions {
  std::vector<std::string> refs;
  std::optional<std::string> input;  // hypothesis file; stdin when unset
  std::vector<std::string> metrics = {"bleu"};
  int num_refs = 1;  // > 1: one reference file with this many tab-separated references per line
  // BLEU
  std::string tokenize = "13a";
  std::string spm_model;
  bool lowercase = false;
  std::string smooth_method = "exp";
  std::optional<double> smooth_value;
  // chrF
  int chrf_char_order = 6;
  int chrf_word_order = 0;
  int chrf_beta = 2;
  bool chrf_whitespace = false;
  bool chrf_lowercase = false;
  bool chrf_eps_smoothing = false;
  // Reporting
  bool score_only = false;
  int width = 1;
  bool short_signature = false;
  std::string format = "text";  // text | json
};

// Registers sacreBLEU's options on `app`, writing into `opts`.
void add_cli_options(CLI::App& app, CliOptions& opts);

// argparse accepts sacreBLEU's multi-letter single-dash spellings (-lc, -tok,
// -sv, -nr, -sh, -cc, -cw); CLI11 does not, so they become long options.
std::vector<std::string> normalize_sacrebleu_args(const std::vector<std::string>& args);

// Lines as sacreBLEU reads them: UTF-8, split at '\n' (stdin also at "\r\n"
// and '\r', Python's universal newlines), trailing whitespace removed.
// Throws strata::Error naming `name` and the line on invalid UTF-8.
std::vector<std::string> read_lines(std::istream& in, const std::string& name, bool universal_newlines);
std::vector<std::string> read_lines_file(const std::string& path, const std::string& role);

// Scores and renders the results (the lines sacreBLEU would print).
std::string evaluate_cli(const CliOptions& opts, const std::vector<std::string>& hyps,
                         const std::vector<std::vector<std::string>>& refs);

// Reads the files (or `in` for the hypotheses), scores and prints to `out`.
// Errors go to `err` as one line; returns the exit status (0 or 1).
int run_cli(const CliOptions& opts, std::istream& in, std::ostream& out, std::ostream& err);

// The whole program: parse argv, then run_cli.
int bleu_main(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace strata::eval
