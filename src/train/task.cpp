#include "strata/train/task.h"

#include "strata/data/fairseq_dictionary.h"
#include "strata/data/spm_vocab.h"

namespace strata::train {

std::shared_ptr<data::Vocabulary> load_vocabulary(const config::DataOptions& o) {
  STRATA_CHECK(!o.data_dir.empty() || !o.spm_model.empty()) << "config: data_dir is not set";
  if (o.format == config::DataFormat::Fairseq) {
    auto d = std::make_shared<data::FairseqDictionary>(data::FairseqDictionary::load(o.data_dir + "/dict.txt"));
    d->add_lang_tokens(o.langs);
    return d;
  }
  std::string path = o.spm_model.empty() ? o.data_dir + "/spm.model" : o.spm_model;
  return std::make_shared<data::SentencePieceVocab>(path);
}

std::vector<data::Direction> open_directions(const config::Config& cfg, const data::Vocabulary& vocab,
                                             const std::string& split) {
  std::vector<data::Direction> dirs;
  for (const auto& [src, tgt] : config::parse_lang_pairs(cfg.data)) {
    data::Direction d;
    d.data = data::open_parallel(cfg.data.data_dir, split, src, tgt);
    d.tgt_lang_id = vocab.lang_id(tgt);
    d.data.src->check_ids(vocab.size());
    d.data.tgt->check_ids(vocab.size());
    dirs.push_back(std::move(d));
  }
  STRATA_CHECK(!dirs.empty()) << "config: lang_pairs is empty; list the training directions, e.g. en-de,de-en";
  return dirs;
}

data::BatchOptions batch_options(const config::Config& cfg) {
  data::BatchOptions b;
  b.max_tokens = cfg.data.max_tokens;
  b.max_sentences = cfg.data.max_sentences;
  b.max_source_len = cfg.effective_max_source_len();
  b.max_target_len = cfg.effective_max_target_len();
  b.temperature = cfg.data.sampling_temperature;
  b.seed = uint64_t(cfg.train.seed);
  STRATA_CHECK(cfg.data.encoder_langtok != config::LangtokMode::Src)
      << "config: encoder_langtok: src is not supported (the reference prepends the target token); use tgt or none";
  b.encoder_langtok = cfg.data.encoder_langtok == config::LangtokMode::Tgt;
  b.decoder_langtok = cfg.data.decoder_langtok;
  return b;
}

}  // namespace strata::train
