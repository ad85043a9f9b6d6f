// Errors: every failed check throws strata::Error carrying a one-line message
// that names the op and the offending values. Programs catch it in main and
// exit non-zero; nothing in the library aborts or prints on its own.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace strata {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
// Collects the streamed message and throws when the statement ends. The
// destructor may throw because the builder only ever lives as a temporary in
// STRATA_CHECK, where no other exception can be in flight.
class ErrorBuilder {
 public:
  ErrorBuilder(const char* file, int line, const char* cond);
  ErrorBuilder(const ErrorBuilder&) = delete;
  ~ErrorBuilder() noexcept(false);
  template <class T>
  ErrorBuilder& operator<<(const T& v) {
    msg_ << v;
    return *this;
  }

 private:
  std::ostringstream msg_;
  const char* file_;
  int line_;
  const char* cond_;
};
}  // namespace detail
}  // namespace strata

// STRATA_CHECK(cond) << "op: what was expected, got " << value;
#define STRATA_CHECK(cond) \
  if (cond) {              \
  } else                   \
    ::strata::detail::ErrorBuilder(__FILE__, __LINE__, #cond)

// Unconditional failure with the same message conventions.
#define STRATA_FAIL() ::strata::detail::ErrorBuilder(__FILE__, __LINE__, nullptr)
