#include "strata/decode/translate_cli.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>

#include "strata/data/fairseq_dictionary.h"
#include "strata/data/spm_vocab.h"
#include "strata/data/text_input.h"
#include "strata/decode/translator.h"
#include "strata/train/load_model.h"

namespace strata::decode {

namespace {
// Reads every line of `in`; with tsv, keeps the text before the first tab.
std::vector<std::string> read_lines(std::istream& in, const std::string& name, bool tsv) {
  std::vector<std::string> lines;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (tsv) {
      size_t tab = line.find('\t');
      STRATA_CHECK(tab != std::string::npos) << name << ":" << n << ": no tab in a TSV line";
      line.resize(tab);
    }
    lines.push_back(line);
  }
  return lines;
}
}  // namespace

int translate_main(int argc, const char* const* argv) {
  CLI::App app{"Translate text with a trained Strata model"};
  std::string checkpoint, target_lang, input, output;
  bool tsv = false, greedy = false;
  int beam = -1, nbest = 1;
  double lenpen = -1, max_len_a = -1;
  int max_len_b = -1;
  int64_t max_tokens = 4096;
  std::vector<std::string> overrides;
  app.add_option("checkpoint", checkpoint, "checkpoint directory, or a save_dir (checkpoint_best, else _last)")
      ->required();
  app.add_option("--target-lang,-t", target_lang, "target language code (its __xx__ token must be in the vocabulary)")
      ->required();
  app.add_option("-i,--input", input, "input file (default: standard input)");
  app.add_option("-o,--output", output, "output file (default: standard output)");
  app.add_flag("--tsv", tsv, "input is TSV: translate the first column");
  app.add_option("--beam", beam, "beam size (default: the checkpoint config's decode.beam)");
  app.add_option("--lenpen", lenpen, "length penalty (default: decode.lenpen)");
  app.add_flag("--greedy", greedy, "greedy search (beam 1)");
  app.add_option("--nbest", nbest, "hypotheses per input, written as INDEX<TAB>SCORE<TAB>TEXT lines when > 1");
  app.add_option("--max-len-a", max_len_a, "output limit a*source_len+b: a");
  app.add_option("--max-len-b", max_len_b, "output limit a*source_len+b: b");
  app.add_option("--max-tokens", max_tokens, "source tokens per batch");
  app.add_option("--set", overrides, "override a config key of the checkpoint (e.g. data.data_dir=...)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    auto t0 = std::chrono::steady_clock::now();
    train::LoadedModel m = train::load_model(checkpoint, overrides);
    // Raw text -> ids: our SentencePiece vocabularies encode directly; a fairseq
    // data-bin's dict.txt maps the pieces of the SentencePiece model the data-bin
    // was made with (data.spm_model, e.g. the reference's sentencepiece.source.32000.model).
    std::function<std::vector<int32_t>(const std::string&)> encode;
    sentencepiece::SentencePieceProcessor pieces;
    if (auto* spm = dynamic_cast<data::SentencePieceVocab*>(m.vocab.get())) {
      encode = [spm](const std::string& line) { return spm->encode(line); };
    } else if (auto* dict = dynamic_cast<data::FairseqDictionary*>(m.vocab.get())) {
      const std::string& model = m.config.data.spm_model;
      STRATA_CHECK(!model.empty()) << "strata-translate: the model was trained on a fairseq data-bin; set "
                                      "data.spm_model (--set data.spm_model=PATH) to the SentencePiece model of its dictionary";
      auto status = pieces.Load(model);
      STRATA_CHECK(status.ok()) << "strata-translate: cannot load SentencePiece model '" << model << "': " << status.ToString();
      encode = [dict, &pieces](const std::string& line) {
        std::vector<std::string> ps;
        pieces.Encode(line, &ps);
        std::string joined;
        for (size_t i = 0; i < ps.size(); ++i) joined += (i ? " " : "") + ps[i];
        return dict->encode_symbols(joined);
      };
    } else {
      STRATA_FAIL() << "strata-translate: unsupported vocabulary type";
    }
    const int32_t lang = m.vocab->lang_id(target_lang);

    std::vector<std::string> lines;
    if (input.empty()) {
      lines = read_lines(std::cin, "<stdin>", tsv);
    } else {
      std::ifstream in(input);
      STRATA_CHECK(in.good()) << "strata-translate: cannot open input '" << input << "'";
      lines = read_lines(in, input, tsv);
    }
    std::vector<std::vector<int32_t>> sources;
    for (size_t i = 0; i < lines.size(); ++i) {
      STRATA_CHECK(data::is_valid_utf8(lines[i])) << (input.empty() ? "<stdin>" : input) << ":" << i + 1
                                                  << ": invalid UTF-8";
      sources.push_back(encode(lines[i]));
    }

    TranslateOptions opt;
    const config::DecodeOptions& d = m.config.decode;
    opt.search.beam = greedy ? 1 : (beam > 0 ? beam : d.beam);
    opt.search.lenpen = lenpen >= 0 ? lenpen : d.lenpen;
    opt.search.max_len_a = max_len_a >= 0 ? max_len_a : d.max_len_a;
    opt.search.max_len_b = max_len_b >= 0 ? max_len_b : d.max_len_b;
    opt.search.nbest = nbest;
    opt.moe_capacity_fraction = d.generation_capacity_token_fraction;
    opt.encoder_langtok = m.config.data.encoder_langtok == config::LangtokMode::Tgt;
    opt.decoder_langtok = m.config.data.decoder_langtok;
    auto hyps = translate_ids(*m.model, *m.vocab, sources, lang, opt, max_tokens);

    std::ofstream file;
    if (!output.empty()) {
      file.open(output);
      STRATA_CHECK(file.good()) << "strata-translate: cannot write '" << output << "'";
    }
    std::ostream& out = output.empty() ? std::cout : file;
    for (size_t i = 0; i < hyps.size(); ++i) {
      if (nbest <= 1) {
        std::vector<int32_t> ids;
        if (!hyps[i].empty())
          for (int64_t t : hyps[i][0].tokens) ids.push_back(int32_t(t));
        out << m.vocab->decode(ids) << "\n";
      } else {
        for (const Hypothesis& h : hyps[i]) {
          std::vector<int32_t> ids(h.tokens.begin(), h.tokens.end());
          out << i << "\t" << h.score << "\t" << m.vocab->decode(ids) << "\n";
        }
      }
    }
    out.flush();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cerr << "strata-translate: " << lines.size() << " sentences in " << secs << " s" << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "strata-translate: error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace strata::decode
