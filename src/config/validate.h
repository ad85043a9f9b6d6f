// Internal: validation that can say where each value came from.
#pragma once
#include <functional>
#include <string>

#include "strata/config/options.h"

namespace strata::config {

// `origin(key)` names where the value of `key` was set ("x.yaml", "--set",
// "default"); error messages start with the origins of the keys they involve.
void validate_config(const Config& c, const std::function<std::string(const std::string&)>& origin);

}  // namespace strata::config
