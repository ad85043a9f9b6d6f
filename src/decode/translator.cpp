#include "strata/decode/translator.h"

#include <algorithm>
#include <numeric>

#include "strata/model/build.h"

namespace strata::decode {

namespace {
SearchOptions resolved(const TranslateOptions& opt, const data::Vocabulary& vocab, int32_t lang) {
  SearchOptions s = opt.search;
  s.bos = vocab.eos();  // fairseq starts the decoder with </s>
  s.eos = vocab.eos();
  s.pad = vocab.pad();
  s.unk = vocab.unk();
  s.prefix.clear();
  if (opt.decoder_langtok) s.prefix.push_back(lang);
  return s;
}

// Sets the MoE decoding capacity for its lifetime (also when search throws).
class DecodeCapacity {
 public:
  DecodeCapacity(model::TransformerModel& m, double fraction) : m_(m) { model::set_moe_eval_capacity(m_, fraction); }
  ~DecodeCapacity() { model::set_moe_eval_capacity(m_, std::nullopt); }

 private:
  model::TransformerModel& m_;
};
}  // namespace

std::vector<std::vector<Hypothesis>> translate_batch(model::TransformerModel& model, const data::Vocabulary& vocab,
                                                     const data::Batch& batch,
                                                     const std::vector<int32_t>& tgt_lang_ids,
                                                     const TranslateOptions& opt) {
  STRATA_CHECK(int64_t(tgt_lang_ids.size()) == batch.size())
      << "translate: " << tgt_lang_ids.size() << " target languages for " << batch.size() << " sentences";
  DecodeCapacity capacity(model, opt.moe_capacity_fraction);
  // beam search forces one prefix per call: group sentences by target language
  std::vector<std::vector<Hypothesis>> out(tgt_lang_ids.size());
  std::vector<int32_t> langs(tgt_lang_ids);
  std::sort(langs.begin(), langs.end());
  langs.erase(std::unique(langs.begin(), langs.end()), langs.end());
  for (int32_t lang : langs) {
    std::vector<int64_t> rows;
    for (size_t i = 0; i < tgt_lang_ids.size(); ++i)
      if (tgt_lang_ids[i] == lang) rows.push_back(int64_t(i));
    Tensor src = batch.src;
    if (int64_t(rows.size()) != batch.size()) {
      const Tensor host = batch.src.to(Device::cpu());  // the rows are picked on the host
      std::vector<int64_t> flat;
      for (int64_t r : rows) {
        std::vector<int64_t> row = host.select(0, r).to_vector<int64_t>();
        flat.insert(flat.end(), row.begin(), row.end());
      }
      src = Tensor::from_vector(flat, {int64_t(rows.size()), batch.src.size(1)});
    }
    auto hyps = beam_search(model, src, resolved(opt, vocab, lang));
    for (size_t k = 0; k < rows.size(); ++k) out[size_t(rows[k])] = std::move(hyps[k]);
  }
  return out;
}

std::vector<std::vector<Hypothesis>> translate_ids(model::TransformerModel& model, const data::Vocabulary& vocab,
                                                   const std::vector<std::vector<int32_t>>& sources,
                                                   int32_t tgt_lang_id, const TranslateOptions& opt,
                                                   int64_t max_tokens) {
  DecodeCapacity capacity(model, opt.moe_capacity_fraction);
  const int64_t max_len = model.options().max_source_positions;
  std::vector<size_t> order(sources.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return sources[a].size() < sources[b].size(); });
  std::vector<std::vector<Hypothesis>> out(sources.size());
  size_t i = 0;
  while (i < order.size()) {
    // grow the batch while the padded source stays within the budget
    size_t j = i;
    int64_t longest = 0;
    while (j < order.size()) {
      int64_t len = std::min<int64_t>(int64_t(sources[order[j]].size()) + 2, max_len);
      if (j > i && std::max(longest, len) * int64_t(j - i + 1) > max_tokens) break;
      longest = std::max(longest, len);
      ++j;
    }
    const int64_t B = int64_t(j - i);
    Tensor src = Tensor::full({B, longest}, vocab.pad(), DType::I64);
    int64_t* p = src.data<int64_t>();
    for (int64_t r = 0; r < B; ++r) {
      const auto& s = sources[order[i + size_t(r)]];
      int64_t k = 0;
      if (opt.encoder_langtok) p[r * longest + k++] = tgt_lang_id;
      for (size_t t = 0; t < s.size() && k < longest - 1; ++t) p[r * longest + k++] = s[t];  // truncate overlong input
      p[r * longest + k] = vocab.eos();
    }
    auto hyps = beam_search(model, src, resolved(opt, vocab, tgt_lang_id));
    for (int64_t r = 0; r < B; ++r) out[order[i + size_t(r)]] = std::move(hyps[size_t(r)]);
    i = j;
  }
  return out;
}

}  // namespace strata::decode
