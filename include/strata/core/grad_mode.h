// The thread-local switch that tells ops whether to record the autograd tape.
// It lives in core (not autograd) because Tensor's raw view methods consult it.
#pragma once

namespace strata {

class GradMode {
 public:
  static bool enabled();
  static void set_enabled(bool on);
};

// Disables recording for its scope (inference, optimizer updates, backward closures).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace strata
