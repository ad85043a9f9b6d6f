// strata-bleu: reading, checking, scoring and printing as sacreBLEU's
// command line does in single-system mode (sacrebleu.py main and
// utils.print_single_results).
#include "strata/eval/cli.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "strata/core/error.h"
#include "strata/eval/bleu.h"
#include "strata/eval/chrf.h"
#include "strata/eval/unicode.h"

namespace strata::eval {

void add_cli_options(CLI::App& app, CliOptions& o) {
  app.description(
      "Corpus BLEU, spBLEU and chrF with sacreBLEU's definitions, defaults and output "
      "(sacreBLEU " + std::string(kSacreBleuCompatVersion) + " compatible).");
  app.add_option("refs", o.refs, "Reference files (given before -i)");
  app.add_option_function<std::string>(
      "-i,--input", [&o](const std::string& s) { o.input = s; }, "Hypothesis file (default: stdin)");
  app.add_option("-m,--metrics", o.metrics, "Metrics to compute (default: bleu)")
      ->check(CLI::IsMember({"bleu", "chrf"}));
  app.add_option("--num-refs", o.num_refs,
                 "Split the reference file's lines on tabs into this many references (-nr)");
  app.add_option("--tokenize", o.tokenize, "BLEU tokenizer (-tok; default: 13a)")
      ->check(CLI::IsMember({"13a", "none", "intl", "char", "spm", "flores101", "flores200"}));
  app.add_option("--spm-model", o.spm_model, "SentencePiece model for --tokenize spm/flores101/flores200");
  app.add_flag("--lowercase", o.lowercase, "Case-insensitive BLEU (-lc)");
  app.add_option("-s,--smooth-method", o.smooth_method, "BLEU smoothing (default: exp)")
      ->check(CLI::IsMember({"none", "floor", "add-k", "exp"}));
  app.add_option_function<double>(
      "--smooth-value", [&o](double v) { o.smooth_value = v; },
      "Smoothing value for floor (default 0.1) and add-k (default 1) (-sv)");
  app.add_option("--chrf-char-order", o.chrf_char_order, "chrF character n-gram order (-cc; default: 6)");
  app.add_option("--chrf-word-order", o.chrf_word_order, "chrF word n-gram order; 2 is chrF++ (-cw; default: 0)");
  app.add_option("--chrf-beta", o.chrf_beta, "chrF beta (default: 2)");
  app.add_flag("--chrf-whitespace", o.chrf_whitespace, "Keep whitespace in chrF character n-grams");
  app.add_flag("--chrf-lowercase", o.chrf_lowercase, "Case-insensitive chrF");
  app.add_flag("--chrf-eps-smoothing", o.chrf_eps_smoothing, "chrF++.py's eps smoothing instead of effective order");
  app.add_flag("-b,--score-only", o.score_only, "Print only the score");
  app.add_option("-w,--width", o.width, "Decimals of the score (default: 1)");
  app.add_flag("--short", o.short_signature, "Abbreviated signature (-sh)");
  app.add_option("-f,--format", o.format, "Output format (default: text)")->check(CLI::IsMember({"text", "json"}));
  app.set_version_flag("-V,--version", std::string("strata-bleu (sacreBLEU ") + kSacreBleuCompatVersion +
                                           " compatible)");
}

std::vector<std::string> normalize_sacrebleu_args(const std::vector<std::string>& args) {
  static const std::map<std::string, std::string> kAliases = {
      {"-lc", "--lowercase"}, {"-tok", "--tokenize"},        {"-sv", "--smooth-value"},
      {"-nr", "--num-refs"},  {"-sh", "--short"},            {"-cc", "--chrf-char-order"},
      {"-cw", "--chrf-word-order"},
  };
  std::vector<std::string> out;
  for (const auto& a : args) {
    auto it = kAliases.find(a);
    out.push_back(it == kAliases.end() ? a : it->second);
  }
  return out;
}

std::vector<std::string> read_lines(std::istream& in, const std::string& name, bool universal_newlines) {
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t end = universal_newlines ? data.find_first_of("\r\n", pos) : data.find('\n', pos);
    size_t next;
    if (end == std::string::npos) {
      end = next = data.size();
    } else {
      next = end + 1;
      if (universal_newlines && data[end] == '\r' && next < data.size() && data[next] == '\n') ++next;
    }
    std::string_view line(data.data() + pos, end - pos);
    size_t bad = 0;
    STRATA_CHECK(unicode::is_valid_utf8(line, &bad))
        << name << " line " << lines.size() + 1 << ": invalid UTF-8 at byte " << bad;
    lines.emplace_back(unicode::rstrip_utf8(line));
    pos = next;
  }
  return lines;
}

std::vector<std::string> read_lines_file(const std::string& path, const std::string& role) {
  std::ifstream f(path, std::ios::binary);
  STRATA_CHECK(f.good()) << "cannot open " << role << " file '" << path << "': " << std::strerror(errno);
  return read_lines(f, role + " file '" + path + "'", false);
}

namespace {

// print_single_results: JSON results become a list; text results are
// aligned on their '=' (score-only lines have none and print as they are).
std::string render(const std::vector<std::string>& results, const std::string& format) {
  std::string out;
  if (format == "json") {
    if (results.size() == 1) return results[0] + "\n";
    out = "[\n";
    for (size_t i = 0; i < results.size(); ++i) out += results[i] + (i + 1 < results.size() ? ",\n" : "\n");
    return out + "]\n";
  }
  if (results.size() == 1) return results[0] + "\n";
  std::vector<size_t> lens;
  for (const auto& line : results) {
    size_t eq = line.find('=');
    if (eq == std::string::npos || eq == 0)
      out += line + "\n";
    else
      lens.push_back(eq - 1);
  }
  if (!lens.empty()) {
    size_t w = *std::max_element(lens.begin(), lens.end());
    for (size_t i = 0; i < lens.size(); ++i) {
      std::string left = results[i].substr(0, lens[i]);
      out += std::string(w - left.size(), ' ') + left + results[i].substr(lens[i]) + "\n";
    }
  }
  return out;
}

}  // namespace

std::string evaluate_cli(const CliOptions& o, const std::vector<std::string>& hyps,
                         const std::vector<std::vector<std::string>>& refs) {
  STRATA_CHECK(o.width >= 0) << "--width " << o.width << " must be >= 0";
  std::vector<std::string> names;  // sacreBLEU reports metrics in sorted order, once each
  for (auto m : o.metrics) {
    std::transform(m.begin(), m.end(), m.begin(), ::toupper);
    STRATA_CHECK(m == "BLEU" || m == "CHRF") << "unsupported metric '" << m << "' (expected bleu or chrf)";
    names.push_back(m);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());

  std::vector<std::string> results;
  for (const auto& name : names) {
    MetricScore score;
    if (name == "BLEU") {
      BleuOptions b;
      b.tokenize = o.tokenize;
      b.spm_model = o.spm_model;
      b.lowercase = o.lowercase;
      b.smooth_method = parse_smooth_method(o.smooth_method);
      b.smooth_value = o.smooth_value;
      score = Bleu(b).corpus_score(hyps, refs);
    } else {
      ChrfOptions c;
      c.char_order = o.chrf_char_order;
      c.word_order = o.chrf_word_order;
      c.beta = o.chrf_beta;
      c.whitespace = o.chrf_whitespace;
      c.lowercase = o.chrf_lowercase;
      c.eps_smoothing = o.chrf_eps_smoothing;
      score = Chrf(c).corpus_score(hyps, refs);
    }
    if (o.score_only)
      results.push_back(score.format(o.width, true));
    else if (o.format == "json")
      results.push_back(score.to_json(o.width));
    else
      results.push_back(score.format(o.width, false, o.short_signature));
  }
  return render(results, o.format);
}

namespace {

std::vector<std::vector<std::string>> read_references(const CliOptions& o) {
  STRATA_CHECK(!o.refs.empty()) << "no reference files given (strata-bleu REF [REF ...] -i HYP)";
  STRATA_CHECK(o.num_refs >= 1) << "--num-refs " << o.num_refs << " must be >= 1";
  STRATA_CHECK(o.num_refs == 1 || o.refs.size() == 1)
      << "--num-refs " << o.num_refs << " splits one tab-separated reference file, but " << o.refs.size()
      << " reference files were given";
  std::vector<std::vector<std::string>> refs;
  if (o.num_refs == 1) {
    for (const auto& path : o.refs) refs.push_back(read_lines_file(path, "reference"));
    return refs;
  }
  refs.resize(static_cast<size_t>(o.num_refs));
  auto lines = read_lines_file(o.refs[0], "reference");
  for (size_t i = 0; i < lines.size(); ++i) {
    // line.split('\t', maxsplit=num_refs - 1)
    std::vector<std::string> fields;
    size_t pos = 0;
    while (static_cast<int>(fields.size()) < o.num_refs - 1) {
      size_t tab = lines[i].find('\t', pos);
      if (tab == std::string::npos) break;
      fields.push_back(lines[i].substr(pos, tab - pos));
      pos = tab + 1;
    }
    fields.push_back(lines[i].substr(pos));
    STRATA_CHECK(static_cast<int>(fields.size()) == o.num_refs)
        << "reference file '" << o.refs[0] << "' line " << i + 1 << ": expected " << o.num_refs
        << " tab-separated references, found " << fields.size();
    for (size_t r = 0; r < fields.size(); ++r) refs[r].push_back(fields[r]);
  }
  return refs;
}

std::string ref_name(const CliOptions& o, size_t r) {
  if (o.num_refs > 1) return "reference " + std::to_string(r + 1) + " of '" + o.refs[0] + "'";
  return "reference '" + o.refs[r] + "'";
}

}  // namespace

int run_cli(const CliOptions& o, std::istream& in, std::ostream& out, std::ostream& err) {
  try {
    auto refs = read_references(o);
    std::vector<std::string> hyps;
    std::string hyp_name;
    if (o.input) {
      hyps = read_lines_file(*o.input, "hypothesis");
      hyp_name = "hypothesis '" + *o.input + "'";
    } else {
      hyps = read_lines(in, "stdin", true);
      hyp_name = "hypothesis (stdin)";
      // sacreBLEU reads tab-separated columns of stdin as several systems.
      for (size_t i = 0; i < hyps.size(); ++i)
        STRATA_CHECK(hyps[i].find('\t') == std::string::npos)
            << "stdin line " << i + 1
            << " has tab-separated fields; multi-system evaluation is not supported (use -i FILE)";
    }
    STRATA_CHECK(!hyps.empty()) << hyp_name << " has no lines: nothing to score";
    for (size_t r = 0; r < refs.size(); ++r)
      STRATA_CHECK(refs[r].size() == hyps.size())
          << "line count mismatch: " << hyp_name << " has " << hyps.size() << " lines but " << ref_name(o, r)
          << " has " << refs[r].size();
    for (size_t i = 0; i < hyps.size(); ++i) {
      bool any = false;
      for (const auto& stream : refs) any |= !stream[i].empty();
      STRATA_CHECK(any) << "line " << i + 1 << " is empty in every reference (" << ref_name(o, 0)
                        << (refs.size() > 1 ? ", ..." : "") << "); sacreBLEU needs a non-empty reference";
    }
    out << evaluate_cli(o, hyps, refs);
    return 0;
  } catch (const Error& e) {
    err << "strata-bleu: error: " << e.what() << "\n";
    return 1;
  }
}

int bleu_main(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err) {
  CLI::App app("strata-bleu", "strata-bleu");
  CliOptions opts;
  add_cli_options(app, opts);
  std::vector<std::string> args(argv + 1, argv + argc);
  args = normalize_sacrebleu_args(args);
  std::reverse(args.begin(), args.end());  // CLI11 consumes a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e, out, err);
    return rc == 0 ? 0 : 1;
  }
  return run_cli(opts, in, out, err);
}

}  // namespace strata::eval
