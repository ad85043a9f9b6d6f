// strata-preprocess: encodes parallel text with the SentencePiece model into
// Strata binary datasets, one file per (split, pair, side); see docs/data.md.
//
//   strata-preprocess --spm corpus/spm.model --tsv-dir corpus --out data-bin
//   strata-preprocess --spm spm.model --parallel train:raw/train:en-de --out data-bin
//     (reads raw/train.en and raw/train.de)
#include <CLI/CLI.hpp>
#include <cstdio>

#include "strata/core/error.h"
#include "strata/data/corpus_layout.h"
#include "strata/data/preprocess.h"

using namespace strata::data;

int main(int argc, char** argv) {
  CLI::App app{"Encode parallel text into Strata binary datasets (ids + </s>, both sides of each pair)"};
  PreprocessOptions opt;
  std::string tsv_dir;
  std::vector<std::string> tsv_files, parallel;
  app.add_option("--spm", opt.spm_model, "SentencePiece model (from train-spm)")->required();
  app.add_option("--out", opt.out_dir, "output directory")->required();
  app.add_option("--tsv-dir", tsv_dir, "encode every <split>.<a>-<b>.tsv of this directory");
  app.add_option("--tsv", tsv_files, "a <split>.<a>-<b>.tsv file (repeatable)");
  app.add_option("--parallel", parallel, "SPLIT:PREFIX:A-B reads PREFIX.A and PREFIX.B (repeatable)");
  app.add_option("--dtype", opt.dtype, "id type: auto, u16 or i32")->capture_default_str();
  app.add_option("--threads", opt.threads, "encoding threads (0: all cores)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    std::vector<PreprocessInput> inputs;
    std::vector<PairFile> files;
    if (!tsv_dir.empty()) {
      files = find_tsv_files(tsv_dir);
      STRATA_CHECK(!files.empty()) << tsv_dir << ": no <split>.<a>-<b>.tsv files";
    }
    for (const auto& f : tsv_files) {
      auto p = parse_tsv_name(f);
      STRATA_CHECK(p.has_value()) << f << ": TSV file names must look like <split>.<a>-<b>.tsv";
      files.push_back(*p);
    }
    for (const auto& f : files) inputs.push_back({f.split, f.lang_a, f.lang_b, f.path, "", ""});
    for (const auto& spec : parallel) {
      size_t c1 = spec.find(':'), c2 = spec.rfind(':');
      STRATA_CHECK(c1 != std::string::npos && c2 > c1) << "--parallel wants SPLIT:PREFIX:A-B, got '" << spec << "'";
      std::string split = spec.substr(0, c1), prefix = spec.substr(c1 + 1, c2 - c1 - 1), pair = spec.substr(c2 + 1);
      size_t dash = pair.find('-');
      STRATA_CHECK(dash != std::string::npos) << "--parallel wants SPLIT:PREFIX:A-B, got '" << spec << "'";
      std::string a = pair.substr(0, dash), b = pair.substr(dash + 1);
      inputs.push_back({split, a, b, "", prefix + "." + a, prefix + "." + b});
    }
    STRATA_CHECK(!inputs.empty()) << "no input: give --tsv-dir, --tsv or --parallel";
    auto stats = preprocess(inputs, opt);
    std::printf("%-8s %-10s %10s %12s %12s %8s %8s\n", "split", "pair", "sentences", "tokens_a", "tokens_b", "unk_a",
                "unk_b");
    size_t sent = 0;
    uint64_t tok = 0;
    for (const auto& s : stats) {
      std::string pair = s.lang_a + "-" + s.lang_b;
      std::printf("%-8s %-10s %10zu %12llu %12llu %8llu %8llu\n", s.split.c_str(), pair.c_str(), s.sentences,
                  (unsigned long long)s.tokens_a, (unsigned long long)s.tokens_b, (unsigned long long)s.unk_a,
                  (unsigned long long)s.unk_b);
      sent += s.sentences;
      tok += s.tokens_a + s.tokens_b;
    }
    std::printf("strata-preprocess: %zu sentence pairs, %llu tokens -> %s\n", sent, (unsigned long long)tok,
                opt.out_dir.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata-preprocess: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
