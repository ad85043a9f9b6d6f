// The command line shared by the programs: CONFIG.yaml, --set key=value, --help.
#include <cstring>

#include "strata/config/config.h"
#include "strata/core/error.h"

namespace strata::config {

CommandLine parse_command_line(int argc, const char* const* argv) {
  CommandLine cl;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      cl.help = true;
    } else if (a == "--set") {
      if (i + 1 >= argc) STRATA_FAIL() << "--set needs key=value";
      cl.overrides.push_back(argv[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      cl.overrides.push_back(a.substr(6));
    } else if (a.size() > 1 && a[0] == '-') {
      STRATA_FAIL() << "unknown argument '" << a << "' (expected CONFIG.yaml, --set key=value or --help)";
    } else if (cl.config_path.empty() && cl.positionals.empty()) {
      cl.config_path = a;
    } else {
      cl.positionals.push_back(a);
    }
  }
  return cl;
}

}  // namespace strata::config
