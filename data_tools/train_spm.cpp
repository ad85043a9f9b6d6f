// train-spm: trains Strata's joint SentencePiece model on a language-balanced
// sample of TSV pair files (fetch_lohelp's output) and/or plain text files.
//
//   train-spm --tsv-dir corpus --model-prefix corpus/spm --vocab-size 8000
//   train-spm --text en:mono.en --text de:mono.de --model-prefix spm --vocab-size 500
//
// Special ids: <s>=0 <pad>=1 </s>=2 <unk>=3, then __xx__ language tokens (sorted)
// from id 4. See docs/data.md.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "strata/core/error.h"
#include "strata/data/spm_train.h"
#include "strata/data/spm_vocab.h"
#include "strata/data/text_input.h"

using namespace strata::data;

int main(int argc, char** argv) {
  CLI::App app{"Train a joint SentencePiece model with language tokens on a balanced sample"};
  std::string tsv_dir, split = "train", prefix;
  std::vector<std::string> tsv_files, texts;
  std::string extra;
  SpmTrainOptions opt;
  opt.quiet = true;
  bool verbose = false;
  app.add_option("--tsv-dir", tsv_dir, "directory of <split>.<a>-<b>.tsv files");
  app.add_option("--split", split, "which split's TSV files --tsv-dir uses")->capture_default_str();
  app.add_option("--tsv", tsv_files, "a <split>.<a>-<b>.tsv file (repeatable)");
  app.add_option("--text", texts, "LANG:FILE, one sentence a line (repeatable)");
  app.add_option("--model-prefix", prefix, "writes PREFIX.model and PREFIX.vocab")->required();
  app.add_option("--vocab-size", opt.vocab_size, "vocabulary size incl. specials and language tokens")
      ->capture_default_str();
  app.add_option("--max-lines-per-lang", opt.max_lines_per_lang, "balance cap per language (0: no cap)")
      ->capture_default_str();
  app.add_option("--model-type", opt.model_type, "unigram or bpe")->capture_default_str();
  app.add_option("--character-coverage", opt.character_coverage, "share of characters the model covers")
      ->capture_default_str();
  app.add_flag("--byte-fallback", opt.byte_fallback, "encode uncovered characters as byte pieces");
  app.add_flag("--soft-vocab-limit", opt.soft_vocab_limit, "allow fewer pieces than --vocab-size (tiny corpora)");
  app.add_option("--extra-langs", extra, "comma-separated language tokens to add without text");
  app.add_option("--seed", opt.seed, "sampling and trainer seed")->capture_default_str();
  app.add_option("--threads", opt.threads, "trainer threads (0: all cores)")->capture_default_str();
  app.add_option("--spm-train", opt.spm_train, "SentencePiece's trainer program")->capture_default_str();
  app.add_flag("--verbose", verbose, "show the trainer's log");
  CLI11_PARSE(app, argc, argv);
  opt.quiet = !verbose;

  try {
    std::vector<PairFile> files;
    if (!tsv_dir.empty()) files = find_tsv_files(tsv_dir, split);
    for (const auto& f : tsv_files) {
      auto p = parse_tsv_name(f);
      STRATA_CHECK(p.has_value()) << f << ": TSV file names must look like <split>.<a>-<b>.tsv";
      files.push_back(*p);
    }
    STRATA_CHECK(!files.empty() || !texts.empty())
        << "no input: give --tsv-dir (with " << split << ".<a>-<b>.tsv files), --tsv or --text";
    auto by_lang = collect_sentences(files);
    for (const auto& t : texts) {
      size_t colon = t.find(':');
      STRATA_CHECK(colon != std::string::npos && colon > 0) << "--text wants LANG:FILE, got '" << t << "'";
      auto lines = read_text_lines(t.substr(colon + 1));
      auto& dst = by_lang[t.substr(0, colon)];
      dst.insert(dst.end(), lines.begin(), lines.end());
    }
    for (size_t b = 0, e; b < extra.size(); b = e + 1) {
      e = extra.find(',', b);
      if (e == std::string::npos) e = extra.size();
      if (e > b) opt.extra_langs.push_back(extra.substr(b, e - b));
    }
    SpmTrainReport rep = train_spm(by_lang, prefix, opt);
    SentencePieceVocab vocab(rep.model_path);
    std::printf("%-12s %10s %10s\n", "lang", "distinct", "sampled");
    for (const auto& [lang, n] : rep.available) std::printf("%-12s %10zu %10zu\n", lang.c_str(), n, rep.sampled[lang]);
    std::printf("train-spm: wrote %s (%d pieces; <s>=0 <pad>=1 </s>=2 <unk>=3", rep.model_path.c_str(), vocab.size());
    for (const auto& t : rep.lang_tokens) std::printf(" %s=%d", t.c_str(), vocab.id(t));
    std::printf(")\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train-spm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
