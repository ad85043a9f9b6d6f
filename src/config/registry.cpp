// OptionRegistry: key lookup (with aliases and "section." prefixes) and the
// typo suggestions behind every "unknown key" message.
#include "strata/config/registry.h"

#include <algorithm>

#include "strata/core/error.h"

namespace strata::config {

std::string normalize_key(const std::string& key) {
  std::string k = key;
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  // Optimal string alignment: insert, delete, substitute, swap neighbours.
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  std::string best;
  size_t best_d = limit + 1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  if (!best.empty()) return best;
  // A shortened or extended spelling ("lenpenalty", "encoder") is far by edit
  // distance but obvious to a reader: take the candidate that one of the two
  // starts with, closest in length, when they share at least 4 characters.
  size_t best_gap = std::string::npos;
  for (const auto& c : candidates) {
    const std::string& shorter = c.size() < word.size() ? c : word;
    const std::string& longer = c.size() < word.size() ? word : c;
    if (shorter.size() < 4 || longer.compare(0, shorter.size(), shorter) != 0) continue;
    size_t gap = longer.size() - shorter.size();
    if (gap < best_gap) {
      best_gap = gap;
      best = c;
    }
  }
  return best;
}

std::string ChoiceBase::expects() const {
  std::string s = "one of ";
  auto names = canonical_names();
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

std::string ChoiceBase::hint(const RawValue& v) const {
  if (v.kind != RawValue::Kind::Scalar) return "";
  std::string m = closest_match(v.scalar, all_names());
  return m.empty() ? "" : "did you mean '" + m + "'?";
}

void OptionRegistry::section(const std::string& name, const std::string& help) {
  STRATA_CHECK(!is_section(name)) << "config: section '" << name << "' registered twice";
  sections_.emplace_back(name, help);
}

std::string OptionRegistry::current_section() const {
  STRATA_CHECK(!sections_.empty()) << "config: options must be added after a section() call";
  return sections_.back().first;
}

Option& OptionRegistry::insert(std::unique_ptr<Option> o) {
  // Keys are unique across sections so that flat YAML and --set need no
  // section; a clash is a programming error caught by the first test run.
  STRATA_CHECK(find(o->key()) == nullptr && !is_section(o->key()))
      << "config: key '" << o->key() << "' registered twice";
  options_.push_back(std::move(o));
  return *options_.back();
}

void OptionRegistry::alias(const std::string& name, const std::string& key) {
  STRATA_CHECK(find(key) != nullptr) << "config: alias '" << name << "' names unknown key '" << key << "'";
  STRATA_CHECK(find(name) == nullptr) << "config: alias '" << name << "' clashes with a key";
  aliases_.emplace_back(normalize_key(name), key);
}

bool OptionRegistry::is_section(const std::string& name) const {
  for (const auto& s : sections_)
    if (s.first == name) return true;
  return false;
}

std::string OptionRegistry::alias_target(const std::string& name) const {
  std::string k = normalize_key(name);
  for (const auto& [a, key] : aliases_)
    if (a == k) return key;
  return "";
}

std::vector<std::string> OptionRegistry::aliases_of(const std::string& key) const {
  std::vector<std::string> out;
  for (const auto& [a, k] : aliases_)
    if (k == key) out.push_back(a);
  return out;
}

Option* OptionRegistry::find(const std::string& key) const {
  std::string k = normalize_key(key);
  std::string section;
  if (size_t dot = k.find('.'); dot != std::string::npos) {
    section = k.substr(0, dot);
    k = k.substr(dot + 1);
  }
  if (std::string target = alias_target(k); !target.empty()) k = target;
  for (const auto& o : options_)
    if (o->key() == k) return section.empty() || section == o->section() ? o.get() : nullptr;
  return nullptr;
}

std::string OptionRegistry::suggest(const std::string& key) const {
  std::string k = normalize_key(key);
  if (size_t dot = k.find('.'); dot != std::string::npos) k = k.substr(dot + 1);
  std::vector<std::string> names;
  for (const auto& o : options_) names.push_back(o->key());
  for (const auto& a : aliases_) names.push_back(a.first);
  for (const auto& s : sections_) names.push_back(s.first);
  std::string m = closest_match(k, names);
  if (std::string target = alias_target(m); !target.empty()) return target;
  return m;
}

std::string OptionRegistry::unknown_key_message(const std::string& key) const {
  std::string k = normalize_key(key);
  // A known key under the wrong section prefix ("model.beam") deserves a
  // precise answer rather than a spelling guess.
  if (size_t dot = k.find('.'); dot != std::string::npos)
    if (Option* o = find(k.substr(dot + 1)))
      return "key '" + key + "': '" + o->key() + "' belongs to section '" + o->section() + "', not '" +
             k.substr(0, dot) + "'";
  std::string msg = "unknown key '" + key + "'";
  std::string s = suggest(key);
  return s.empty() ? msg + " (see --help for the list of options)" : msg + " (did you mean '" + s + "'?)";
}

}  // namespace strata::config
