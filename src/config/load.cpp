// Reading YAML files and --set overrides into a Config through its registry.
// Every error is one line that names the file (and line), the key and what
// was expected.
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "strata/config/config.h"
#include "strata/core/error.h"
#include "validate.h"

namespace strata::config {
namespace {

namespace fs = std::filesystem;

// "x.yaml:12" when yaml-cpp knows the line, else "x.yaml".
std::string where(const std::string& source, const YAML::Mark& m) {
  return m.line >= 0 ? source + ":" + std::to_string(m.line + 1) : source;
}

// How a rejected value reads in "..., got X".
std::string got(const RawValue& v) {
  switch (v.kind) {
    case RawValue::Kind::Null:
      return "nothing";
    default:
      return "'" + v.text() + "'";
  }
}

[[noreturn]] void fail_value(const std::string& at, const Option& o, const RawValue& v) {
  std::string hint = o.hint(v);
  throw Error(at + ": key '" + o.key() + "' expects " + o.expects() + ", got " + got(v) +
              (hint.empty() ? "" : " (" + hint + ")"));
}

class YamlLoader {
 public:
  explicit YamlLoader(OptionRegistry& r) : r_(r) {}

  void load_file(const std::string& path) {
    std::error_code ec;
    fs::path canon = fs::weakly_canonical(path, ec);
    if (ec) canon = path;
    for (const auto& open : stack_)
      if (open == canon) {
        std::string chain;
        for (const auto& s : shown_) chain += s + " -> ";
        STRATA_FAIL() << shown_.back() << ": include cycle: " << chain << path;
      }
    if (fs::is_directory(path, ec)) STRATA_FAIL() << "cannot open config file '" << path << "' (it is a directory)";
    std::ifstream in(path);
    if (!in) STRATA_FAIL() << "cannot open config file '" << path << "'";
    std::stringstream text;
    text << in.rdbuf();
    stack_.push_back(canon);
    shown_.push_back(path);
    load_text(text.str(), path, fs::path(path).parent_path());
    stack_.pop_back();
    shown_.pop_back();
  }

  void load_text(const std::string& text, const std::string& source, const fs::path& dir) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      STRATA_FAIL() << where(source, e.mark) << ": invalid YAML: " << e.msg;
    }
    if (root.IsNull()) return;  // an empty file keeps every default
    if (!root.IsMap()) STRATA_FAIL() << where(source, root.Mark()) << ": expected 'key: value' lines at the top level";

    // Includes first, so that this file's own keys override the base's.
    if (YAML::Node inc = root["include"]) {
      std::vector<std::string> files;
      if (inc.IsScalar()) files.push_back(inc.Scalar());
      else if (inc.IsSequence())
        for (const auto& f : inc) {
          if (!f.IsScalar()) STRATA_FAIL() << where(source, f.Mark()) << ": include expects file names";
          files.push_back(f.Scalar());
        }
      else STRATA_FAIL() << where(source, inc.Mark()) << ": include expects a file name or a list of them";
      for (const auto& f : files) load_file(fs::path(f).is_absolute() ? f : (dir / f).string());
    }

    std::map<std::string, int> seen;  // canonical key -> line, to catch a key set twice
    for (const auto& kv : root) {
      const std::string key = kv.first.Scalar();
      if (key == "include") continue;
      const std::string at = where(source, kv.first.Mark());
      if (r_.is_section(key)) {
        if (kv.second.IsNull()) continue;  // "model:" with nothing under it
        if (!kv.second.IsMap())
          STRATA_FAIL() << at << ": section '" << key << "' expects a mapping of its options, got '"
                        << (kv.second.IsScalar() ? kv.second.Scalar() : "a list") << "'";
        for (const auto& inner : kv.second)
          assign(key + "." + inner.first.Scalar(), inner.first.Scalar(), inner.second,
                 where(source, inner.first.Mark()), source, seen, inner.first.Mark().line);
      } else {
        assign(key, key, kv.second, at, source, seen, kv.first.Mark().line);
      }
    }
  }

 private:
  void assign(const std::string& lookup, const std::string& shown_key, const YAML::Node& value,
              const std::string& at, const std::string& source, std::map<std::string, int>& seen, int line) {
    Option* o = r_.find(lookup);
    if (!o) {
      // A section prefix that is wrong gets the precise "belongs to" message.
      std::string msg = r_.find(shown_key) ? r_.unknown_key_message(lookup) : r_.unknown_key_message(shown_key);
      STRATA_FAIL() << at << ": " << msg;
    }
    auto [it, fresh] = seen.emplace(o->key(), line);
    if (!fresh)
      STRATA_FAIL() << at << ": key '" << o->key() << "' is set twice (first at line " << it->second + 1 << ")";
    RawValue v;
    switch (value.Type()) {
      case YAML::NodeType::Scalar:
        v = RawValue::of(value.Scalar());
        break;
      case YAML::NodeType::Sequence: {
        std::vector<std::string> items;
        for (const auto& x : value) {
          if (!x.IsScalar())
            STRATA_FAIL() << at << ": key '" << o->key() << "' expects " << o->expects() << ", got a nested list";
          items.push_back(x.Scalar());
        }
        v = RawValue::list(std::move(items));
        break;
      }
      case YAML::NodeType::Map:
        STRATA_FAIL() << at << ": key '" << o->key() << "' expects " << o->expects() << ", got a mapping";
        break;
      default:
        v = RawValue::null();
    }
    if (!o->assign(v)) fail_value(at, *o, v);
    o->origin = source;
  }

  OptionRegistry& r_;
  std::vector<fs::path> stack_;
  std::vector<std::string> shown_;
};

void apply_assignment(OptionRegistry& r, const std::string& assignment, const std::string& source) {
  size_t eq = assignment.find('=');
  std::string key = eq == std::string::npos ? "" : assignment.substr(0, eq);
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(0, 1);
  if (key.empty()) STRATA_FAIL() << source << ": expected key=value, got '" << assignment << "'";
  Option* o = r.find(key);
  if (!o) STRATA_FAIL() << source << ": " << r.unknown_key_message(key);
  RawValue v = RawValue::of(assignment.substr(eq + 1));
  if (!o->assign(v)) fail_value(source, *o, v);
  o->origin = source;
}

Config load(const std::string* path, const std::string* text, const std::string& source,
            const std::vector<std::string>& overrides) {
  Config c;
  OptionRegistry r = registry_for(c);
  YamlLoader loader(r);
  if (path && !path->empty()) loader.load_file(*path);
  if (text) loader.load_text(*text, source, fs::current_path());
  for (const auto& o : overrides) apply_assignment(r, o, "--set");
  normalize_config(c);
  validate_config(c, [&](const std::string& key) { return r.find(key)->origin; });
  return c;
}

}  // namespace

OptionRegistry registry_for(Config& c) {
  OptionRegistry r;
  describe(r, c);
  return r;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return load(&path, nullptr, path, overrides);
}

Config load_config_string(const std::string& yaml, const std::string& source,
                          const std::vector<std::string>& overrides) {
  return load(nullptr, &yaml, source, overrides);
}

void apply_override(Config& c, const std::string& assignment) {
  OptionRegistry r = registry_for(c);
  apply_assignment(r, assignment, "--set");
}

}  // namespace strata::config
