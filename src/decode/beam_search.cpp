#include "strata/decode/beam_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "strata/autograd/ops.h"
#include "strata/core/grad_mode.h"

namespace strata::decode {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Live {
  std::vector<int64_t> tokens;  // prefix + generated, no BOS
  std::vector<float> scores;    // per token log p
  double sum = 0;
};
struct Sentence {
  int64_t index;        // position in the input batch
  int64_t max_len;      // tokens allowed before EOS (prefix included)
  std::vector<Live> beams;
  std::vector<Hypothesis> finished;
  bool done = false;
};

Hypothesis finish(const Live& l, float eos_lp, size_t prefix_len, double lenpen) {
  Hypothesis h;
  h.tokens.assign(l.tokens.begin() + long(prefix_len), l.tokens.end());
  h.positional_scores = l.scores;
  h.positional_scores.push_back(eos_lp);
  double len = double(l.tokens.size() + 1);
  h.score = (l.sum + eos_lp) / std::pow(len, lenpen);
  return h;
}
}  // namespace

std::vector<std::vector<Hypothesis>> beam_search(model::TransformerModel& model, const Tensor& src_ids,
                                                 const SearchOptions& opt) {
  STRATA_CHECK(opt.beam >= 1) << "beam_search: beam must be >= 1, got " << opt.beam;
  STRATA_CHECK(opt.nbest >= 1 && opt.nbest <= opt.beam)
      << "beam_search: nbest " << opt.nbest << " must be in [1, beam=" << opt.beam << "]";
  STRATA_CHECK(src_ids.dim() == 2) << "beam_search: source ids must be [batch, time], got " << src_ids.str();
  NoGradGuard no_grad;
  nn::ForwardContext ctx;  // evaluation mode
  const int64_t B = src_ids.size(0), K = opt.beam, V = model.vocab_size();
  const size_t P = opt.prefix.size();

  // The search itself runs on the host: the model's device gets the index
  // tensors it needs, and each step's log-probabilities come back as one copy.
  const Device dev = model.device();
  std::vector<Sentence> sents(static_cast<size_t>(B));
  {
    Tensor src = src_ids.to(Device::cpu()).to(DType::I64).contiguous();
    const int64_t S = src.size(1);
    for (int64_t b = 0; b < B; ++b) {
      int64_t len = 0;
      for (int64_t t = 0; t < S; ++t) len += src.data<int64_t>()[b * S + t] != opt.pad;
      int64_t limit = int64_t(opt.max_len_a * double(len)) + opt.max_len_b + int64_t(P);
      limit = std::min<int64_t>(limit, model.options().max_target_positions - 1);
      sents[size_t(b)] = Sentence{b, std::max<int64_t>(limit, int64_t(P) + 1), {Live{}}, {}, false};
    }
  }

  // Encoder once; replicate each sentence K times (row b*K + k).
  model::EncoderOutput enc0 = model.encode(src_ids, ctx);
  std::vector<int64_t> rep;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) rep.push_back(b);
  Tensor rep_idx = Tensor::from_vector(rep, {B * K}).to(dev);
  model::EncoderOutput enc{index_select(enc0.out, 0, rep_idx), index_select(enc0.pad, 0, rep_idx)};
  model::DecoderState state;

  // active[i] = sentence whose K rows sit at rows i*K .. i*K+K-1 of the decoder batch
  std::vector<size_t> active;
  for (size_t b = 0; b < sents.size(); ++b) active.push_back(b);
  std::vector<int64_t> last(size_t(B * K), opt.bos);

  for (int64_t step = 0; !active.empty(); ++step) {
    const int64_t rows = int64_t(active.size()) * K;
    Tensor inp = Tensor::from_vector(last, {rows, 1});
    Tensor logits = model.decode_step(inp, enc, state, ctx);
    Tensor lp = log_softmax(reshape(logits, {rows, V}), -1).contiguous().to(Device::cpu());
    const float* L = lp.data<float>();

    std::vector<int64_t> next_rows;  // decoder row each new live beam continues from
    std::vector<int64_t> next_last;
    std::vector<size_t> still_active;
    for (size_t a = 0; a < active.size(); ++a) {
      Sentence& s = sents[active[a]];
      const int64_t pos = int64_t(s.beams[0].tokens.size());  // tokens so far (same for all beams)
      struct Cand {
        double score;
        int64_t beam, token;
        float lp;
      };
      std::vector<Cand> cands;
      const int64_t nbeams = int64_t(s.beams.size());
      for (int64_t k = 0; k < nbeams; ++k) {
        const float* row = L + (int64_t(a) * K + k) * V;
        const Live& l = s.beams[size_t(k)];
        if (pos < int64_t(P)) {  // forced prefix
          cands.push_back({l.sum + row[opt.prefix[size_t(pos)]], k, opt.prefix[size_t(pos)], row[opt.prefix[size_t(pos)]]});
          continue;
        }
        if (pos >= s.max_len) {  // length limit: only EOS
          cands.push_back({l.sum + row[opt.eos], k, opt.eos, row[opt.eos]});
          continue;
        }
        // the best 2K tokens of this beam are enough to find the best 2K overall
        std::vector<int64_t> idx(static_cast<size_t>(V));
        for (int64_t v = 0; v < V; ++v) idx[size_t(v)] = v;
        auto bad = [&](int64_t v) {
          return v == opt.pad || (v == opt.bos && v != opt.eos) || (!opt.allow_unk && v == opt.unk);
        };
        const int64_t take = std::min<int64_t>(2 * K, V);
        const int64_t sorted = std::min<int64_t>(take + 3, V);  // room for the up to 3 banned tokens
        std::partial_sort(idx.begin(), idx.begin() + sorted, idx.end(),
                          [&](int64_t x, int64_t y) { return row[x] > row[y] || (row[x] == row[y] && x < y); });
        int64_t added = 0;
        for (int64_t j = 0; j < sorted && added < take; ++j) {
          int64_t v = idx[size_t(j)];
          if (bad(v) || row[v] == kNegInf) continue;
          cands.push_back({l.sum + row[v], k, v, row[v]});
          ++added;
        }
      }
      std::stable_sort(cands.begin(), cands.end(), [](const Cand& x, const Cand& y) { return x.score > y.score; });

      std::vector<Live> next;
      for (size_t c = 0; c < cands.size() && int64_t(next.size()) < K; ++c) {
        const Cand& cd = cands[c];
        if (cd.score == -std::numeric_limits<double>::infinity()) break;  // only filler rows remain
        const Live& from = s.beams[size_t(cd.beam)];
        if (cd.token == opt.eos && pos >= int64_t(P)) {
          if (int64_t(c) < K) s.finished.push_back(finish(from, cd.lp, P, opt.lenpen));
          continue;
        }
        Live l = from;
        l.tokens.push_back(cd.token);
        l.scores.push_back(cd.lp);
        l.sum += cd.lp;
        next.push_back(std::move(l));
        next_rows.push_back(int64_t(a) * K + cd.beam);
      }
      bool done = int64_t(s.finished.size()) >= K || next.empty();
      if (done) {
        // drop the rows we just queued for this sentence
        next_rows.resize(next_rows.size() - next.size());
        s.done = true;
        continue;
      }
      // pad the live set to K rows by repeating the last beam (scores kept; duplicates never win twice
      // because they are only used to keep the batch rectangular)
      while (int64_t(next.size()) < K) {
        next.push_back(next.back());
        next.back().sum = -std::numeric_limits<double>::infinity();
        next_rows.push_back(next_rows.back());
      }
      s.beams = std::move(next);
      for (const Live& l : s.beams) next_last.push_back(l.tokens.back());
      still_active.push_back(active[a]);
    }
    if (still_active.empty()) break;
    Tensor order = Tensor::from_vector(next_rows, {int64_t(next_rows.size())}).to(dev);
    state.reorder(order);
    enc.out = index_select(enc.out, 0, order);
    enc.pad = index_select(enc.pad, 0, order);
    active = std::move(still_active);
    last = std::move(next_last);
  }

  std::vector<std::vector<Hypothesis>> out(static_cast<size_t>(B));
  for (Sentence& s : sents) {
    std::stable_sort(s.finished.begin(), s.finished.end(),
                     [](const Hypothesis& x, const Hypothesis& y) { return x.score > y.score; });
    if (int64_t(s.finished.size()) > opt.nbest) s.finished.resize(size_t(opt.nbest));
    out[size_t(s.index)] = std::move(s.finished);
  }
  return out;
}

}  // namespace strata::decode
