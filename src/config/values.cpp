// Strict parsing and exact printing of option values (see registry.h).
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "strata/config/registry.h"

namespace strata::config {
namespace {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

template <class I>
bool parse_integer(const RawValue& v, I& out) {
  if (v.kind != RawValue::Kind::Scalar) return false;
  std::string s = trim(v.scalar);
  const char* b = s.data();
  if (!s.empty() && s[0] == '+') ++b;  // from_chars rejects a leading '+'
  const char* e = s.data() + s.size();
  if (b == e) return false;
  I parsed{};  // from_chars writes partial parses ("12abc"); keep `out` for whole ones
  auto [p, ec] = std::from_chars(b, e, parsed);
  if (ec != std::errc() || p != e) return false;
  out = parsed;
  return true;
}

// Lists come as YAML sequences or as one comma-separated scalar, optionally
// in brackets (the form a shell user types after --set).
bool split_list(const RawValue& v, std::vector<std::string>& items) {
  items.clear();
  if (v.kind == RawValue::Kind::Null) return true;
  if (v.kind == RawValue::Kind::List) {
    for (const auto& x : v.items) items.push_back(trim(x));
    return true;
  }
  std::string s = trim(v.scalar);
  if (!s.empty() && s.front() == '[') {
    if (s.back() != ']') return false;
    s = trim(s.substr(1, s.size() - 2));
  }
  if (s.empty()) return true;
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    items.push_back(trim(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  // "4,,8" and "4,8," are typos, not lists with empty entries.
  return std::none_of(items.begin(), items.end(), [](const std::string& x) { return x.empty(); });
}

}  // namespace

std::string RawValue::text() const {
  switch (kind) {
    case Kind::Null:
      return "null";
    case Kind::Scalar:
      return scalar;
    case Kind::List: {
      std::string s = "[";
      for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
      return s + "]";
    }
  }
  return "";
}

bool parse_value(const RawValue& v, int& out) { return parse_integer(v, out); }
bool parse_value(const RawValue& v, int64_t& out) { return parse_integer(v, out); }

bool parse_value(const RawValue& v, double& out) {
  if (v.kind != RawValue::Kind::Scalar) return false;
  std::string s = trim(v.scalar);
  if (s.empty()) return false;
  // strtod also reads "inf", "nan" and hex floats; none is a sensible setting.
  std::string l = lower(s);
  if (l.find("inf") != std::string::npos || l.find("nan") != std::string::npos || l.find("0x") != std::string::npos)
    return false;
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  // Overflow gives inf (rejected); underflow and subnormals read as themselves.
  if (end != s.c_str() + s.size() || !std::isfinite(d)) return false;
  out = d;
  return true;
}

bool parse_value(const RawValue& v, bool& out) {
  if (v.kind != RawValue::Kind::Scalar) return false;
  std::string s = lower(trim(v.scalar));
  // YAML 1.1 spellings plus 1/0, which fairseq users pass for flags.
  if (s == "true" || s == "yes" || s == "on" || s == "1") {
    out = true;
    return true;
  }
  if (s == "false" || s == "no" || s == "off" || s == "0") {
    out = false;
    return true;
  }
  return false;
}

bool parse_value(const RawValue& v, std::string& out) {
  if (v.kind == RawValue::Kind::List) return false;
  out = v.kind == RawValue::Kind::Null ? std::string() : v.scalar;
  return true;
}

bool parse_value(const RawValue& v, std::vector<int>& out) {
  std::vector<std::string> items;
  if (!split_list(v, items)) return false;
  std::vector<int> r;
  for (const auto& x : items) {
    int i = 0;
    if (!parse_value(RawValue::of(x), i)) return false;
    r.push_back(i);
  }
  out = std::move(r);
  return true;
}

bool parse_value(const RawValue& v, std::vector<std::string>& out) {
  std::vector<std::string> items;
  if (!split_list(v, items)) return false;
  out = std::move(items);
  return true;
}

std::string format_value(int v) { return std::to_string(v); }
std::string format_value(int64_t v) { return std::to_string(v); }

std::string format_value(double v) {
  // Shortest text that reads back to the same double (general = fixed or
  // scientific, whichever %g would pick): 0.1, 0.0008, 1e-07.
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  return std::string(buf, ec == std::errc() ? p : buf);
}

std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(const std::string& v) { return v; }

std::string format_value(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::string format_value(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + v[i];
  return s;
}

const char* type_name(const int*) { return "an integer"; }
const char* type_name(const int64_t*) { return "an integer"; }
const char* type_name(const double*) { return "a number"; }
const char* type_name(const bool*) { return "true or false"; }
const char* type_name(const std::string*) { return "a string"; }
const char* type_name(const std::vector<int>*) { return "a list of integers"; }
const char* type_name(const std::vector<std::string>*) { return "a list of strings"; }

Check<double> in_range(double lo, double hi, bool hi_inclusive) {
  std::string d = "in [" + format_value(lo) + ", " + format_value(hi) + (hi_inclusive ? "]" : ")");
  return {d, [=](const double& v) { return v >= lo && (hi_inclusive ? v <= hi : v < hi); }};
}

}  // namespace strata::config
