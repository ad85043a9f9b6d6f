// Option registry: one place per option struct that names each key, binds it to
// its field, and carries its type, help text and value check. Loading YAML,
// `--set key=value`, `--help`, dumping YAML and the error messages are all
// driven from the registry, so adding a field to an options struct and one
// `r.add(...)` line is all a module has to do.
//
//   void describe(OptionRegistry& r, ModelOptions& o) {
//     r.section("model", "encoder-decoder architecture");
//     r.add("encoder_layers", o.encoder_layers, "number of encoder layers", positive<int>()).arch();
//   }
//
// A registry binds references to ONE struct instance; build a fresh one for
// every Config you want to read or write (it is cheap).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

namespace strata::config {

// A value as written by the user, before it is checked against the option's
// type: a YAML null, one scalar (YAML scalar or the text after `key=`), or a
// YAML sequence of scalars.
struct RawValue {
  enum class Kind { Null, Scalar, List };
  Kind kind = Kind::Null;
  std::string scalar;
  std::vector<std::string> items;

  static RawValue null() { return {}; }
  static RawValue of(std::string s) { return {Kind::Scalar, std::move(s), {}}; }
  static RawValue list(std::vector<std::string> v) { return {Kind::List, {}, std::move(v)}; }
  // How the value reads back in an error message: the scalar, "[a, b]" or "null".
  std::string text() const;
};

// A value check with the words that describe it, so an error can say what was
// expected: "expects a number in [0, 1)".
template <class T>
struct Check {
  std::string desc;                   // e.g. "in [0, 1)", "> 0"; empty = none
  std::function<bool(const T&)> ok;  // null = accept every value of the type
};

template <class T>
Check<T> positive() {
  return {"> 0", [](const T& v) { return v > T(0); }};
}
template <class T>
Check<T> non_negative() {
  return {">= 0", [](const T& v) { return v >= T(0); }};
}
template <class T>
Check<T> at_least(T lo) {
  return {">= " + std::to_string(lo), [lo](const T& v) { return v >= lo; }};
}
// [lo, hi) or [lo, hi] on doubles; the bounds print in the shortest exact form.
Check<double> in_range(double lo, double hi, bool hi_inclusive);
// Every element of a list passes `c` ("a list of integers > 0").
template <class T>
Check<std::vector<T>> each(Check<T> c) {
  return {c.desc, [ok = c.ok](const std::vector<T>& v) {
            for (const T& x : v)
              if (!ok(x)) return false;
            return true;
          }};
}

// Parsers and printers of the supported value types. Parsing is strict: the
// whole text must be the value ("12abc" is not an integer). Lists take a YAML
// sequence, a comma-separated scalar ("4,4,8", optionally in brackets) or a
// single scalar (a one-element list). Doubles print in the shortest form that
// reads back to the same bits, so to_yaml -> load is exact.
bool parse_value(const RawValue& v, int& out);
bool parse_value(const RawValue& v, int64_t& out);
bool parse_value(const RawValue& v, double& out);
bool parse_value(const RawValue& v, bool& out);
bool parse_value(const RawValue& v, std::string& out);
bool parse_value(const RawValue& v, std::vector<int>& out);
bool parse_value(const RawValue& v, std::vector<std::string>& out);
std::string format_value(int v);
std::string format_value(int64_t v);
std::string format_value(double v);
std::string format_value(bool v);
std::string format_value(const std::string& v);
std::string format_value(const std::vector<int>& v);
std::string format_value(const std::vector<std::string>& v);
const char* type_name(const int*);
const char* type_name(const int64_t*);
const char* type_name(const double*);
const char* type_name(const bool*);
const char* type_name(const std::string*);
const char* type_name(const std::vector<int>*);
const char* type_name(const std::vector<std::string>*);

// Levenshtein distance with adjacent transpositions counted as one edit (the
// common typo "encdoer"); used to suggest the closest valid key or value.
size_t edit_distance(const std::string& a, const std::string& b);
// The candidate closest to `word`, or "" when none is close enough to be a
// plausible typo: edit distance <= max(2, |word|/3), else one being a prefix
// of the other with at least 4 shared characters ("lenpenalty" -> "lenpen").
// Ties go to the earlier candidate.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

// One registered option, type-erased.
class Option {
 public:
  Option(std::string key, std::string section, std::string help)
      : key_(std::move(key)), section_(std::move(section)), help_(std::move(help)) {}
  virtual ~Option() = default;

  const std::string& key() const { return key_; }
  const std::string& section() const { return section_; }
  const std::string& help() const { return help_; }
  // The value description used in errors and --help: "a number in [0, 1)".
  virtual std::string expects() const = 0;
  // Parses and checks `v`; on success stores it in the field and returns true,
  // otherwise leaves the field unchanged and returns false.
  virtual bool assign(const RawValue& v) = 0;
  // The current value as text that assign() accepts back ("4,4,8", "0.1").
  virtual std::string str() const = 0;
  // Lists are written as YAML sequences; these are their items.
  virtual bool is_list() const { return false; }
  virtual std::vector<std::string> items() const { return {}; }
  // Extra words for a rejected value, e.g. "did you mean 'eom'?"; "" if none.
  virtual std::string hint(const RawValue&) const { return ""; }

  // Architecture options change the shape of the model's parameters, so a
  // checkpoint cannot be resumed under a different value.
  Option& arch() {
    arch_ = true;
    return *this;
  }
  bool is_arch() const { return arch_; }

  // Where the current value came from: "default", a file name, or "--set".
  std::string origin = "default";

 private:
  std::string key_, section_, help_;
  bool arch_ = false;
};

template <class T>
class ValueOption final : public Option {
 public:
  ValueOption(std::string key, std::string section, std::string help, T& field, Check<T> check)
      : Option(std::move(key), std::move(section), std::move(help)), field_(field), check_(std::move(check)) {}
  std::string expects() const override {
    std::string s = type_name(static_cast<const T*>(nullptr));
    return check_.desc.empty() ? s : s + " " + check_.desc;
  }
  bool assign(const RawValue& v) override {
    T tmp{};
    if (!parse_value(v, tmp)) return false;
    if (check_.ok && !check_.ok(tmp)) return false;
    field_ = std::move(tmp);
    return true;
  }
  std::string str() const override { return format_value(field_); }
  bool is_list() const override { return is_list_type; }
  std::vector<std::string> items() const override {
    std::vector<std::string> out;
    if constexpr (is_list_type)
      for (const auto& x : field_) out.push_back(format_value(x));
    return out;
  }

 private:
  static constexpr bool is_list_type =
      std::is_same_v<T, std::vector<int>> || std::is_same_v<T, std::vector<std::string>>;
  T& field_;
  Check<T> check_;
};

// An enumeration written as one of a fixed set of names. The first name given
// for a value is its canonical spelling (the one printed); later ones are
// accepted spellings (e.g. fairseq's "all" for argmax).
class ChoiceBase : public Option {
 public:
  using Option::Option;
  std::string expects() const override;
  std::string hint(const RawValue& v) const override;

 protected:
  virtual std::vector<std::string> canonical_names() const = 0;
  virtual std::vector<std::string> all_names() const = 0;
};

template <class E>
class ChoiceOption final : public ChoiceBase {
 public:
  ChoiceOption(std::string key, std::string section, std::string help, E& field,
               std::vector<std::pair<std::string, E>> names)
      : ChoiceBase(std::move(key), std::move(section), std::move(help)), field_(field), names_(std::move(names)) {}
  bool assign(const RawValue& v) override {
    if (v.kind != RawValue::Kind::Scalar) return false;
    for (const auto& [name, value] : names_)
      if (name == v.scalar) {
        field_ = value;
        return true;
      }
    return false;
  }
  std::string str() const override {
    for (const auto& [name, value] : names_)
      if (value == field_) return name;
    return "?";  // unreachable for values set through the registry
  }

 protected:
  std::vector<std::string> canonical_names() const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < names_.size(); ++i) {
      bool first = true;
      for (size_t j = 0; j < i; ++j) first = first && !(names_[j].second == names_[i].second);
      if (first) out.push_back(names_[i].first);
    }
    return out;
  }
  std::vector<std::string> all_names() const override {
    std::vector<std::string> out;
    for (const auto& n : names_) out.push_back(n.first);
    return out;
  }

 private:
  E& field_;
  std::vector<std::pair<std::string, E>> names_;
};

class OptionRegistry {
 public:
  OptionRegistry() = default;
  OptionRegistry(OptionRegistry&&) = default;
  OptionRegistry& operator=(OptionRegistry&&) = default;

  // Options added after this call belong to `name` (the YAML section and the
  // --help heading).
  void section(const std::string& name, const std::string& help);

  template <class T>
  Option& add(const std::string& key, T& field, const std::string& help, Check<T> check = {}) {
    return insert(std::make_unique<ValueOption<T>>(key, current_section(), help, field, std::move(check)));
  }
  template <class E>
  Option& add_choice(const std::string& key, E& field, std::vector<std::pair<std::string, E>> names,
                     const std::string& help) {
    return insert(std::make_unique<ChoiceOption<E>>(key, current_section(), help, field, std::move(names)));
  }
  // `name` is accepted wherever `key` is (the reference's fairseq spelling).
  void alias(const std::string& name, const std::string& key);

  // Looks up a key as the user wrote it: dashes read as underscores, and an
  // optional "section." prefix must name the option's section. nullptr if unknown.
  Option* find(const std::string& key) const;
  // The canonical key an alias stands for, or "" if `name` is no alias.
  std::string alias_target(const std::string& name) const;
  // Aliases of a canonical key, for --help.
  std::vector<std::string> aliases_of(const std::string& key) const;
  bool is_section(const std::string& name) const;

  // The closest known key or section to a misspelt one (aliases map to their
  // key), or "" when nothing is close.
  std::string suggest(const std::string& key) const;
  // "unknown key 'encoder_layer' (did you mean 'encoder_layers'?)"
  std::string unknown_key_message(const std::string& key) const;

  const std::vector<std::unique_ptr<Option>>& options() const { return options_; }
  // Section names with their help, in registration order.
  const std::vector<std::pair<std::string, std::string>>& sections() const { return sections_; }

 private:
  Option& insert(std::unique_ptr<Option> o);
  std::string current_section() const;

  std::vector<std::unique_ptr<Option>> options_;
  std::vector<std::pair<std::string, std::string>> sections_;
  std::vector<std::pair<std::string, std::string>> aliases_;  // (alias, key)
};

// Keys as users may type them: "encoder-layers" == "encoder_layers".
std::string normalize_key(const std::string& key);

}  // namespace strata::config
