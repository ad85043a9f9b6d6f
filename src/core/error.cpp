#include "strata/core/error.h"

namespace strata::detail {

ErrorBuilder::ErrorBuilder(const char* file, int line, const char* cond)
    : file_(file), line_(line), cond_(cond) {}

ErrorBuilder::~ErrorBuilder() noexcept(false) {
  std::string m = msg_.str();
  if (m.empty()) {
    m = std::string("internal check failed: ") + (cond_ ? cond_ : "failure") + " at " + file_ + ":" +
        std::to_string(line_);
  }
  throw Error(m);
}

}  // namespace strata::detail
