#include "strata/eval/score.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "strata/core/error.h"

namespace strata::eval {

void Signature::add(std::string key, std::string abbr, std::string value) {
  entries_.push_back({std::move(key), std::move(abbr), std::move(value)});
}

std::string Signature::format(bool short_form) const {
  std::string out;
  auto append = [&](const std::string& k, const std::string& v) {
    if (!out.empty()) out += '|';
    out += k + ":" + v;
  };
  for (const auto& e : entries_) append(short_form ? e.abbr : e.key, e.value);
  append(short_form ? "v" : "version", kSacreBleuCompatVersion);
  return out;
}

std::string format_fixed(double x, int width) {
  STRATA_CHECK(width >= 0 && width <= 30) << "format score: width " << width << " must be in [0, 30]";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", width, x);
  return buf;
}

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "NaN";  // what json.dumps writes
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  // Shortest %.{p}e that reads back exactly, then laid out like repr: plain
  // digits for exponents in [-4, 16), else d.ddde+XX.
  char buf[64];
  for (int p = 0; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*e", p, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string s = buf;
  bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  size_t e = s.find('e');
  int exp = std::atoi(s.c_str() + e + 1);
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (s[i] != '.') digits += s[i];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out = digits + std::string(static_cast<size_t>(exp + 1) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<size_t>(exp + 1)) + "." + digits.substr(static_cast<size_t>(exp + 1));
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return neg ? "-" + out : out;
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string MetricScore::format(int width, bool score_only, bool short_signature) const {
  std::string sc = format_fixed(score, width);
  if (score_only) return sc;
  std::string line = name + "|" + signature.format(short_signature) + " = " + sc;
  if (!verbose.empty()) line += " " + verbose;
  return line;
}

std::string MetricScore::to_json(int width) const {
  // Score.format(is_json=True): the rounded score read back as a float, then
  // every signature field as its own string-valued key.
  double rounded = std::strtod(format_fixed(score, width).c_str(), nullptr);
  std::vector<std::pair<std::string, std::string>> fields = {
      {"name", json_quote(name)},
      {"score", python_float_repr(rounded)},
      {"signature", json_quote(signature.format(false))},
  };
  if (!verbose.empty()) fields.push_back({"verbose_score", json_quote(verbose)});
  for (const auto& e : signature.entries()) fields.push_back({e.key, json_quote(e.value)});
  fields.push_back({"version", json_quote(kSacreBleuCompatVersion)});
  std::string out = "{\n";
  for (size_t i = 0; i < fields.size(); ++i) {
    out += " " + json_quote(fields[i].first) + ": " + fields[i].second;
    out += i + 1 < fields.size() ? ",\n" : "\n";
  }
  return out + "}";
}

std::string nrefs_value(const std::vector<size_t>& per_segment_counts) {
  std::set<size_t> distinct(per_segment_counts.begin(), per_segment_counts.end());
  if (distinct.size() == 1) return std::to_string(*distinct.begin());
  return "var";
}

}  // namespace strata::eval
