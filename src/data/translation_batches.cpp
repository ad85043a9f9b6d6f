#include "strata/data/translation_batches.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "strata/core/error.h"
#include "strata/core/philox.h"

namespace strata::data {

namespace {
// Deterministic Fisher-Yates shuffle driven by a Philox stream.
template <class T>
void shuffle(std::vector<T>& v, const PhiloxStream& s) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = size_t(s.u32(i) % uint32_t(i));
    std::swap(v[i - 1], v[j]);
  }
}
// Stored sentences end with </s> (fairseq convention); count it once either way.
int64_t body_len(const TokenDataset& d, size_t i, std::vector<int32_t>& buf, int32_t eos) {
  d.get(i, buf);
  int64_t n = int64_t(buf.size());
  if (n > 0 && buf.back() == eos) --n;
  return n;
}
}  // namespace

TranslationBatches::TranslationBatches(std::vector<Direction> directions, BatchOptions options)
    : dirs_(std::move(directions)), opt_(options) {
  STRATA_CHECK(!dirs_.empty()) << "batches: no translation directions given";
  STRATA_CHECK(opt_.max_tokens > 0) << "batches: max_tokens must be > 0, got " << opt_.max_tokens;
  STRATA_CHECK(opt_.temperature > 0) << "batches: sampling temperature must be > 0, got " << opt_.temperature;
  const int64_t extra_src = 1 + (opt_.encoder_langtok ? 1 : 0);  // </s> (+ language token)
  const int64_t extra_tgt = 1 + (opt_.decoder_langtok ? 1 : 0);
  std::vector<int32_t> buf;
  for (size_t d = 0; d < dirs_.size(); ++d) {
    const ParallelDataset& p = dirs_[d].data;
    STRATA_CHECK(p.src && p.tgt) << "batches: direction " << dirs_[d].name() << " has no data";
    std::vector<ExampleRef> ok;
    int64_t skipped = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      int64_t s = body_len(*p.src, i, buf, opt_.eos) + extra_src;
      int64_t t = body_len(*p.tgt, i, buf, opt_.eos) + extra_tgt;
      if (s > opt_.max_source_len || t > opt_.max_target_len || std::max(s, t) > opt_.max_tokens) {
        ++skipped;
        continue;
      }
      ok.push_back({uint32_t(d), uint32_t(i), int32_t(s), int32_t(t)});
    }
    STRATA_CHECK(!ok.empty()) << "batches: every example of " << dirs_[d].name() << " (" << p.src->path()
                              << ") exceeds the length limits";
    usable_.push_back(std::move(ok));
    skipped_.push_back(skipped);
  }
}

int64_t TranslationBatches::num_examples() const {
  int64_t n = 0;
  for (auto& u : usable_) n += int64_t(u.size());
  return n;
}

std::vector<std::vector<ExampleRef>> TranslationBatches::cut(std::vector<ExampleRef> ex, uint64_t tie_seed) const {
  // random tie-break, then a stable sort by padded length
  shuffle(ex, PhiloxStream{tie_seed, 0});
  std::stable_sort(ex.begin(), ex.end(), [](const ExampleRef& a, const ExampleRef& b) {
    int32_t la = std::max(a.src_len, a.tgt_len), lb = std::max(b.src_len, b.tgt_len);
    return la != lb ? la < lb : a.src_len < b.src_len;
  });
  std::vector<std::vector<ExampleRef>> batches;
  std::vector<ExampleRef> cur;
  int64_t longest = 0;
  for (const ExampleRef& e : ex) {
    int64_t l = std::max(e.src_len, e.tgt_len);
    int64_t n = int64_t(cur.size()) + 1;
    bool over = std::max(longest, l) * n > opt_.max_tokens || (opt_.max_sentences > 0 && n > opt_.max_sentences);
    if (over && !cur.empty()) {
      batches.push_back(std::move(cur));
      cur.clear();
      longest = 0;
    }
    cur.push_back(e);
    longest = std::max(longest, l);
  }
  if (!cur.empty()) batches.push_back(std::move(cur));
  return batches;
}

std::vector<std::vector<ExampleRef>> TranslationBatches::epoch_plan(int64_t epoch) const {
  const uint64_t key = mix_keys(opt_.seed, uint64_t(epoch));
  double total = double(num_examples());
  std::vector<double> w;
  for (auto& u : usable_) w.push_back(std::pow(double(u.size()), 1.0 / opt_.temperature));
  double wsum = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<ExampleRef> pool;
  for (size_t d = 0; d < usable_.size(); ++d) {
    const auto& u = usable_[d];
    int64_t want = opt_.temperature == 1.0 ? int64_t(u.size()) : std::llround(total * w[d] / wsum);
    PhiloxStream s{mix_keys(key, d + 1), 1};
    std::vector<ExampleRef> all = u;
    int64_t taken = 0;
    while (taken < want) {  // whole passes over the direction, then a random remainder
      shuffle(all, PhiloxStream{s.seed, s.offset + uint64_t(taken)});
      int64_t n = std::min<int64_t>(want - taken, int64_t(all.size()));
      pool.insert(pool.end(), all.begin(), all.begin() + n);
      taken += n;
    }
  }
  auto batches = cut(std::move(pool), mix_keys(key, 0));
  shuffle(batches, PhiloxStream{mix_keys(key, 0x5eed), 2});
  return batches;
}

std::vector<std::vector<ExampleRef>> TranslationBatches::ordered_plan(size_t direction) const {
  STRATA_CHECK(direction < usable_.size()) << "batches: direction " << direction << " out of range";
  return cut(usable_[direction], mix_keys(opt_.seed, 0xd1ec7));
}

Batch TranslationBatches::make_batch(const std::vector<ExampleRef>& refs) const {
  STRATA_CHECK(!refs.empty()) << "batches: empty batch";
  const int64_t B = int64_t(refs.size());
  int64_t S = 0, T = 0;
  for (const ExampleRef& e : refs) S = std::max<int64_t>(S, e.src_len), T = std::max<int64_t>(T, e.tgt_len);
  Batch b;
  b.src = Tensor::full({B, S}, opt_.pad, DType::I64);
  b.prev = Tensor::full({B, T}, opt_.pad, DType::I64);
  b.target = Tensor::full({B, T}, opt_.pad, DType::I64);
  int64_t* src = b.src.data<int64_t>();
  int64_t* prev = b.prev.data<int64_t>();
  int64_t* tgt = b.target.data<int64_t>();
  std::vector<int32_t> x, y;
  for (int64_t r = 0; r < B; ++r) {
    const ExampleRef& e = refs[size_t(r)];
    const Direction& d = dirs_[e.direction];
    d.data.src->get(e.index, x);
    d.data.tgt->get(e.index, y);
    if (!x.empty() && x.back() == opt_.eos) x.pop_back();
    if (!y.empty() && y.back() == opt_.eos) y.pop_back();
    int64_t* s = src + r * S;
    int64_t k = 0;
    if (opt_.encoder_langtok) s[k++] = d.tgt_lang_id;
    for (int32_t v : x) s[k++] = v;
    s[k++] = opt_.eos;
    int64_t* p = prev + r * T;
    int64_t* t = tgt + r * T;
    k = 0;
    p[0] = opt_.eos;
    if (opt_.decoder_langtok) t[k++] = d.tgt_lang_id;
    for (int32_t v : y) t[k++] = v;
    t[k++] = opt_.eos;
    for (int64_t j = 1; j < k; ++j) p[j] = t[j - 1];
    b.src_tokens += e.src_len;
    b.tgt_tokens += k;
    b.direction.push_back(e.direction);
    b.index.push_back(e.index);
  }
  return b;
}

}  // namespace strata::data
