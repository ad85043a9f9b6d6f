// Training metrics: metrics.jsonl (one JSON object per line, flushed per line,
// so plots and `tail -f` see every record and a crash loses at most the line
// being written) and the human progress line printed by rank 0.
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace strata::train {

class MetricsWriter {
 public:
  // Opens `path` for appending (a resumed run continues the same file).
  explicit MetricsWriter(const std::string& path);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Writes `record` (must be a JSON object) as one line and flushes it.
  // Non-finite numbers are written as null (JSON has no NaN).
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Rewrites `path` (atomically) without the records of updates after
// `max_update` and without lines that do not parse (a line torn by a crash),
// so a run resumed from the checkpoint at `max_update` does not log those
// updates twice. Returns the number of lines dropped; a missing file is fine.
size_t rewind_metrics(const std::string& path, int64_t max_update);

struct ProgressInfo {
  int64_t epoch = 0;
  int64_t update = 0;        // updates done
  int64_t max_update = 0;    // 0: no limit known, no ETA
  int64_t start_update = 0;  // updates done when this process started (resume), for the rate
  double loss = 0;           // base 2, as fairseq logs it
  double ppl = 0;
  double lr = 0;
  double tokens_per_sec = 0;
  double elapsed_s = 0;  // wall time of this process so far
};

// fairseq's get_perplexity: 2^loss rounded to 2 decimals, inf when it overflows.
double perplexity(double loss_base2);
// Seconds to max_update at this process's average rate; < 0 when unknown.
double eta_seconds(const ProgressInfo& p);
// "00:00:07", "13:20:00", "2d 03:04:05"; "?" for negative or non-finite.
std::string format_duration(double seconds);
// "epoch 3 | update 1500/100000 (1.5%) | loss 5.123 | ppl 34.85 | lr 4.000e-04 |
//  12345 tok/s | elapsed 00:12:34 | eta 13:20:00"
std::string format_progress(const ProgressInfo& p);
// The same fields as a metrics record (plus "eta_s" when known).
nlohmann::json progress_record(const ProgressInfo& p);

}  // namespace strata::train
