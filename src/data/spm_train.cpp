#include "strata/data/spm_train.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "strata/core/error.h"
#include "strata/data/binary_dataset.h"
#include "strata/data/text_input.h"
#include "strata/data/vocabulary.h"

extern char** environ;

namespace strata::data {

std::map<std::string, std::vector<std::string>> collect_sentences(const std::vector<PairFile>& files) {
  std::map<std::string, std::vector<std::string>> out;
  std::map<std::string, std::unordered_set<std::string>> seen;
  for (const auto& f : files) {
    ParallelText t = read_tsv(f.path);
    for (size_t i = 0; i < t.size(); ++i) {
      if (seen[f.lang_a].insert(t.src[i]).second) out[f.lang_a].push_back(t.src[i]);
      if (seen[f.lang_b].insert(t.tgt[i]).second) out[f.lang_b].push_back(t.tgt[i]);
    }
  }
  return out;
}

std::vector<std::string> balanced_sample(const std::vector<std::string>& sentences, size_t cap, uint64_t seed) {
  if (cap == 0 || sentences.size() <= cap) return sentences;
  // Partial Fisher-Yates over indices with our own draws (std::shuffle and the
  // std distributions differ between standard libraries; mt19937_64 does not).
  std::mt19937_64 rng(seed);
  std::vector<size_t> idx(sentences.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  for (size_t i = 0; i < cap; ++i) {
    size_t j = i + size_t(rng() % (idx.size() - i));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(cap);
  std::sort(idx.begin(), idx.end());
  std::vector<std::string> out;
  out.reserve(cap);
  for (size_t i : idx) out.push_back(sentences[i]);
  return out;
}

namespace {

// Runs argv, with stdout+stderr written to log_path when it is non-empty (else
// inherited); returns the exit status, or -1 when it could not start.
int run_program(const std::vector<std::string>& argv, const std::string& log_path, std::string* why) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (!log_path.empty()) {
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  pid_t pid;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    *why = std::strerror(rc);
    return -1;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      *why = std::strerror(errno);
      return -1;
    }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  *why = "killed by signal " + std::to_string(WTERMSIG(status));
  return -1;
}

std::string last_lines(const std::string& path, size_t n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string l;
  while (std::getline(in, l))
    if (!l.empty()) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) out += (out.empty() ? "" : " | ") + lines[i];
  return out;
}

std::string fmt_double(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

}  // namespace

SpmTrainReport train_spm(const std::map<std::string, std::vector<std::string>>& by_lang,
                         const std::string& model_prefix, const SpmTrainOptions& opt) {
  STRATA_CHECK(!by_lang.empty()) << "train_spm: no sentences";
  STRATA_CHECK(opt.vocab_size > kNumSpecial) << "train_spm: vocab_size " << opt.vocab_size << " is too small";
  STRATA_CHECK(opt.model_type == "unigram" || opt.model_type == "bpe")
      << "train_spm: model_type must be unigram or bpe, got " << opt.model_type;
  STRATA_CHECK(opt.character_coverage > 0 && opt.character_coverage <= 1)
      << "train_spm: character_coverage must be in (0, 1], got " << opt.character_coverage;
  SpmTrainReport rep;
  rep.model_path = model_prefix + ".model";
  rep.vocab_path = model_prefix + ".vocab";

  std::set<std::string> langs;
  for (const auto& [lang, _] : by_lang) langs.insert(lang);
  for (const auto& l : opt.extra_langs) langs.insert(l);
  for (const auto& l : langs) {
    STRATA_CHECK(is_valid_lang_code(l)) << "train_spm: bad language code '" << l << "'";
    rep.lang_tokens.push_back(lang_token(l));
  }

  // The sample file, one sentence a line; the per-language seed keeps each sample
  // independent of which other languages take part.
  std::string sample_path = model_prefix + ".sample.txt", log_path = model_prefix + ".train.log";
  {
    std::ofstream out(sample_path, std::ios::binary);
    STRATA_CHECK(out.good()) << "train_spm: cannot write " << sample_path;
    for (const auto& [lang, sents] : by_lang) {
      uint64_t seed = opt.seed ^ fnv1a64(lang.data(), lang.size());
      std::vector<std::string> s = balanced_sample(sents, opt.max_lines_per_lang, seed);
      rep.available[lang] = sents.size();
      rep.sampled[lang] = s.size();
      for (const auto& line : s) {
        STRATA_CHECK(line.find('\n') == std::string::npos) << "train_spm: a " << lang << " sentence holds a newline";
        out << line << '\n';
      }
    }
    STRATA_CHECK(out.good()) << "train_spm: write error on " << sample_path;
  }

  std::string user_symbols;
  for (const auto& t : rep.lang_tokens) user_symbols += (user_symbols.empty() ? "" : ",") + t;
  int threads = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::string> argv = {
      opt.spm_train,
      "--input=" + sample_path,
      "--model_prefix=" + model_prefix,
      "--vocab_size=" + std::to_string(opt.vocab_size),
      "--model_type=" + opt.model_type,
      "--character_coverage=" + fmt_double(opt.character_coverage),
      "--byte_fallback=" + std::string(opt.byte_fallback ? "true" : "false"),
      "--hard_vocab_limit=" + std::string(opt.soft_vocab_limit ? "false" : "true"),
      "--bos_id=0", "--pad_id=1", "--eos_id=2", "--unk_id=3",
      "--bos_piece=<s>", "--pad_piece=<pad>", "--eos_piece=</s>", "--unk_piece=<unk>",
      "--user_defined_symbols=" + user_symbols,
      "--input_sentence_size=0",  // we sampled already: use every line given
      "--random_seed=" + std::to_string(uint32_t(opt.seed)),
      "--num_threads=" + std::to_string(threads),
      "--minloglevel=" + std::string(opt.quiet ? "1" : "0"),
  };
  std::string why;
  int rc = run_program(argv, opt.quiet ? log_path : "", &why);
  std::remove(sample_path.c_str());
  STRATA_CHECK(rc != -1) << "train_spm: cannot run " << opt.spm_train << ": " << why
                         << " (install Debian's sentencepiece package)";
  STRATA_CHECK(rc == 0) << "train_spm: " << opt.spm_train << " exited with " << rc << ": "
                        << (opt.quiet ? last_lines(log_path, 2) : std::string("see its log above"));
  std::remove(log_path.c_str());
  return rep;
}

}  // namespace strata::data
