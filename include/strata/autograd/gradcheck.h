// Finite-difference gradient check. f maps the inputs to one output tensor;
// the check contracts the output with a fixed random tensor R, so it compares
// d(sum(f(x)*R))/dx from backward() against central differences, element by
// element. Run it in f64: eps 1e-6 then gives ~1e-9 truncation error.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::autograd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string report;  // the first mismatches, naming input and element
};

// Inputs to check must be leaves with requires_grad set; any strides are fine
// (elements are perturbed through the view). Inputs without requires_grad are
// held constant. Inputs with stride-0 (expanded) dims are rejected.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {});

}  // namespace strata::autograd
