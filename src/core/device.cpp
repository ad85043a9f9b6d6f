#include "strata/core/device.h"

namespace strata {

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

}  // namespace strata
