#include "strata/train/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "strata/core/error.h"

namespace strata::train {

MetricsWriter::MetricsWriter(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "a");
  STRATA_CHECK(file_ != nullptr) << "MetricsWriter: cannot open " << path << " (" << std::strerror(errno) << ")";
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write(const nlohmann::json& record) {
  STRATA_CHECK(record.is_object()) << "MetricsWriter::write: a metrics record must be a JSON object, got "
                                   << record.type_name();
  // replace: invalid UTF-8 in a string (a mangled language name, say) must
  // not cost the whole record
  std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  bool ok = std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0;
  STRATA_CHECK(ok) << "MetricsWriter::write: cannot write " << path_ << " (" << std::strerror(errno) << ")";
}

size_t rewind_metrics(const std::string& path, int64_t max_update) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  std::string kept, line;
  size_t dropped = 0;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    bool keep = j.is_object();
    if (keep) {
      auto u = j.find("update");
      keep = u == j.end() || !u->is_number() || u->get<double>() <= double(max_update);
    }
    if (keep) {
      kept += line;
      kept.push_back('\n');
    } else {
      ++dropped;
    }
  }
  in.close();
  if (dropped == 0) return 0;
  // New file then rename: a crash here leaves the old file or the new one.
  std::string tmp = path + ".rewind.tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kept;
    out.close();
    STRATA_CHECK(out.good()) << "rewind_metrics: cannot write " << tmp;
  }
  STRATA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0)
      << "rewind_metrics: cannot replace " << path << " (" << std::strerror(errno) << ")";
  return dropped;
}

double perplexity(double loss_base2) {
  double p = std::pow(2.0, loss_base2);
  if (!std::isfinite(p)) return std::isnan(loss_base2) ? p : INFINITY;
  return std::round(p * 100.0) / 100.0;
}

double eta_seconds(const ProgressInfo& p) {
  if (p.max_update <= 0) return -1;
  if (p.update >= p.max_update) return 0;
  const int64_t done = p.update - p.start_update;
  if (done <= 0 || !(p.elapsed_s > 0)) return -1;
  return double(p.max_update - p.update) * p.elapsed_s / double(done);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  int64_t s = int64_t(std::llround(seconds));
  int64_t d = s / 86400;
  s %= 86400;
  char buf[48];
  if (d > 0)
    std::snprintf(buf, sizeof buf, "%lldd %02lld:%02lld:%02lld", (long long)d, (long long)(s / 3600),
                  (long long)(s / 60 % 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                  (long long)(s % 60));
  return buf;
}

std::string format_progress(const ProgressInfo& p) {
  char buf[96];
  std::ostringstream o;
  o << "epoch " << p.epoch << " | update " << p.update;
  if (p.max_update > 0) {
    std::snprintf(buf, sizeof buf, "/%lld (%.1f%%)", (long long)p.max_update, 100.0 * double(p.update) / double(p.max_update));
    o << buf;
  }
  std::snprintf(buf, sizeof buf, " | loss %.3f | ppl %.2f | lr %.3e | %.0f tok/s", p.loss, p.ppl, p.lr,
                p.tokens_per_sec);
  o << buf << " | elapsed " << format_duration(p.elapsed_s);
  if (p.max_update > 0) o << " | eta " << format_duration(eta_seconds(p));
  return o.str();
}

nlohmann::json progress_record(const ProgressInfo& p) {
  nlohmann::json j = {{"epoch", p.epoch},   {"update", p.update},
                      {"loss", p.loss},     {"ppl", p.ppl},
                      {"lr", p.lr},         {"tokens_per_sec", p.tokens_per_sec},
                      {"elapsed_s", p.elapsed_s}};
  double eta = eta_seconds(p);
  if (eta >= 0) j["eta_s"] = eta;
  return j;
}

}  // namespace strata::train
