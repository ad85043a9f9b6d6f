// Loading, validating, printing and storing a Config.
//
// A config file is YAML. Keys may be written flat (`encoder_layers: 6`) or
// inside their section (`model: {encoder_layers: 6}`); both read the same
// because every key is unique across sections. `include: other.yaml` (path
// relative to the including file) loads another file first, so a file can
// hold only its differences from a base. Dumps (to_yaml, config.yaml in a
// checkpoint) are always sectioned and complete, with no include.
//
// Every error is a strata::Error with a one-line message naming the file:
//   cannot open config file 'x.yaml'
//   x.yaml:3: unknown key 'encoder_layer' (did you mean 'encoder_layers'?)
//   x.yaml:7: key 'dropout' expects a number in [0, 1), got 'high'
//   --set: key 'beam' expects an integer > 0, got '2.5'
//   x.yaml: strata 4,4 sum to 8, but experts is 16
#pragma once
#include <iosfwd>
#include <string>
#include <vector>

#include "strata/config/options.h"
#include "strata/config/registry.h"

namespace strata::config {

// A registry bound to the fields of `c` (see registry.h).
OptionRegistry registry_for(Config& c);

// Defaults, then the file at `path` ("" = no file), then each "key=value" of
// `overrides` in order; then normalises and validates. Throws strata::Error.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text; `source` names it in error messages.
Config load_config_string(const std::string& yaml, const std::string& source,
                          const std::vector<std::string>& overrides = {});

// Applies one "key=value" override to `c` (no validation). Values of list
// options may be "4,4,8" or "[4,4,8]".
void apply_override(Config& c, const std::string& assignment);

// Fills what the user may leave implicit (strata [] -> [experts]) and then
// checks the rules that involve several options (strata sum to experts, CMR
// with one stratum, heads divide embed_dim, ...). load_config calls both; call
// them yourself on a Config built in code.
void normalize_config(Config& c);
void validate_config(const Config& c);

// The complete config as sectioned YAML; load_config_string(to_yaml(c)) == c.
std::string to_yaml(const Config& c);
// The same YAML, with "# default: X" after every value that is not the default.
void print_config(std::ostream& os, const Config& c);
// Every option by section: key, value type, default and help (--help).
void print_help(std::ostream& os);

// One line "key: A -> B" per option whose value differs, in registry order.
std::vector<std::string> config_diff(const Config& a, const Config& b);
// Throws if `wanted` changes any option that shapes the model's parameters
// (layers, widths, experts, strata, ...) relative to the checkpoint's `saved`:
// "cannot resume from DIR: encoder_layers is 6 in the checkpoint, 3 in the config".
void check_resume_compatible(const Config& saved, const Config& wanted, const std::string& checkpoint_dir);

// The command line every program shares:
//   PROG [CONFIG.yaml] [--set key=value]... [--set=key=value] [--help|-h] [ARGS...]
struct CommandLine {
  std::string config_path;               // the first positional argument, if any
  std::vector<std::string> overrides;    // the --set assignments, in order
  std::vector<std::string> positionals;  // positional arguments after the config path
  bool help = false;
};
CommandLine parse_command_line(int argc, const char* const* argv);

}  // namespace strata::config
