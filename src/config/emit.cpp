// Writing a Config out: YAML (checkpoints, the start-of-run print), the
// --help listing, differences between two configs, and the resume check.
#include <yaml-cpp/yaml.h>

#include <ostream>

#include "strata/config/config.h"
#include "strata/core/error.h"

namespace strata::config {
namespace {

void emit_value(YAML::Emitter& out, const Option& o) {
  if (o.is_list()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& x : o.items()) out << x;
    out << YAML::EndSeq;
  } else {
    out << o.str();
  }
}

// A value as people read it in messages: lists in brackets, '' for empty.
std::string display(const Option& o) {
  if (o.is_list()) {
    std::string s = "[";
    auto items = o.items();
    for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
    return s + "]";
  }
  std::string v = o.str();
  return v.empty() ? "''" : v;
}

// Compares items too, so list entries that contain commas cannot collide.
bool same(const Option& a, const Option& b) { return a.str() == b.str() && a.items() == b.items(); }

// Sectioned YAML of every option; with `defaults`, values that differ from
// them carry a "# default: X" comment.
std::string emit(const Config& c, const Config* defaults) {
  Config copy = c;  // the registry binds mutable references
  OptionRegistry r = registry_for(copy);
  Config dcopy = defaults ? *defaults : Config{};
  OptionRegistry dr = registry_for(dcopy);
  YAML::Emitter out;
  out << YAML::Comment("Strata config: every option, resolved (see docs/config.md)");
  out << YAML::BeginMap;
  for (const auto& [section, help] : r.sections()) {
    out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    for (size_t i = 0; i < r.options().size(); ++i) {
      const Option& o = *r.options()[i];
      if (o.section() != section) continue;
      out << YAML::Key << o.key() << YAML::Value;
      emit_value(out, o);
      const Option& d = *dr.options()[i];
      if (defaults && !same(d, o)) out << YAML::Comment("default: " + display(d));
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  STRATA_CHECK(out.good()) << "config: YAML emitter failed: " << out.GetLastError();
  return std::string(out.c_str()) + "\n";
}

}  // namespace

std::string to_yaml(const Config& c) { return emit(c, nullptr); }

void print_config(std::ostream& os, const Config& c) {
  Config defaults;
  os << emit(c, &defaults);
}

void print_help(std::ostream& os) {
  Config c;
  OptionRegistry r = registry_for(c);
  os << "Options: write them in the YAML config (flat, or under their section) or pass\n"
        "--set key=value (repeatable; lists as 4,4,8). Values shown are the defaults.\n";
  for (const auto& [section, help] : r.sections()) {
    os << "\n" << section << ": " << help << "\n";
    for (const auto& o : r.options()) {
      if (o->section() != section) continue;
      os << "  " << o->key() << " = " << display(*o) << "   [" << o->expects() << "]\n";
      os << "      " << o->help();
      auto aliases = r.aliases_of(o->key());
      if (!aliases.empty()) {
        os << " (also:";
        for (const auto& a : aliases) os << " " << a;
        os << ")";
      }
      os << "\n";
    }
  }
}

std::vector<std::string> config_diff(const Config& a, const Config& b) {
  Config ca = a, cb = b;
  OptionRegistry ra = registry_for(ca), rb = registry_for(cb);
  std::vector<std::string> out;
  for (size_t i = 0; i < ra.options().size(); ++i) {
    const Option& x = *ra.options()[i];
    const Option& y = *rb.options()[i];
    if (!same(x, y)) out.push_back(x.key() + ": " + display(x) + " -> " + display(y));
  }
  return out;
}

void check_resume_compatible(const Config& saved, const Config& wanted, const std::string& checkpoint_dir) {
  Config cs = saved, cw = wanted;
  OptionRegistry rs = registry_for(cs), rw = registry_for(cw);
  std::string changes;
  for (size_t i = 0; i < rs.options().size(); ++i) {
    const Option& s = *rs.options()[i];
    const Option& w = *rw.options()[i];
    if (s.is_arch() && !same(s, w))
      changes += std::string(changes.empty() ? "" : "; ") + s.key() + " is " + display(s) + " in the checkpoint, " +
                 display(w) + " in the config";
  }
  if (!changes.empty()) STRATA_FAIL() << "cannot resume from " << checkpoint_dir << ": " << changes;
}

}  // namespace strata::config
