#include "strata/autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "strata/core/dispatch.h"
#include "strata/core/grad_mode.h"

namespace strata::autograd {

namespace {
// Storage offsets of every logical element of t, row-major.
std::vector<int64_t> element_offsets(const Tensor& t) {
  std::vector<int64_t> offs;
  offs.reserve(size_t(t.numel()));
  std::vector<int64_t> idx(size_t(t.dim()), 0);
  for (int64_t n = 0; n < t.numel(); ++n) {
    int64_t o = t.offset();
    for (int64_t d = 0; d < t.dim(); ++d) o += idx[d] * t.strides()[d];
    offs.push_back(o);
    for (int64_t d = t.dim() - 1; d >= 0; --d) {
      if (++idx[d] < t.shape()[d]) break;
      idx[d] = 0;
    }
  }
  return offs;
}

double contract(const Tensor& out, const std::vector<double>& r) {
  std::vector<double> v = out.to_vector<double>();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += v[i] * r[i];
  return s;
}
}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  GradcheckResult res;
  std::ostringstream rep;
  for (const Tensor& x : inputs) {
    if (!x.defined() || !x.requires_grad()) continue;
    STRATA_CHECK(x.grad_fn() == nullptr) << "gradcheck: inputs must be leaves";
    // The numeric side writes the input's elements through host pointers.
    STRATA_CHECK(x.device().is_cpu()) << "gradcheck: input " << x.str() << " is not on the CPU (gradcheck is CPU only)";
    for (int64_t d = 0; d < x.dim(); ++d)
      STRATA_CHECK(x.strides()[d] != 0 || x.shape()[d] <= 1) << "gradcheck: input " << x.str() << " is expanded";
    x.zero_grad();
  }

  Tensor out = f(inputs);
  STRATA_CHECK(out.requires_grad() || out.grad_fn()) << "gradcheck: output " << out.str() << " does not require grad";
  Tensor r = Tensor::normal(out.shape(), opt.seed, 0, 0.0, 1.0, out.dtype());
  std::vector<double> rv = r.to_vector<double>();
  out.backward(r);

  int reported = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor analytic = x.grad();
    std::vector<double> av =
        analytic.defined() ? analytic.to_vector<double>() : std::vector<double>(size_t(x.numel()), 0.0);
    std::vector<int64_t> offs = element_offsets(x);
    dispatch_float(x.dtype(), "gradcheck", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* base = static_cast<T*>(x.impl().storage->data());
      for (size_t i = 0; i < offs.size(); ++i) {
        T orig = base[offs[i]];
        double num;
        {
          NoGradGuard ng;
          base[offs[i]] = T(double(orig) + opt.eps);
          double fp = contract(f(inputs), rv);
          base[offs[i]] = T(double(orig) - opt.eps);
          double fm = contract(f(inputs), rv);
          base[offs[i]] = orig;
          num = (fp - fm) / (2 * opt.eps);
        }
        double err = std::fabs(num - av[i]);
        res.max_abs_error = std::max(res.max_abs_error, err);
        if (err > opt.atol + opt.rtol * std::fabs(num)) {
          res.ok = false;
          if (reported++ < 5)
            rep << "input " << k << " element " << i << ": analytic " << av[i] << " numeric " << num << "\n";
        }
      }
    });
  }
  res.report = rep.str();
  return res;
}

}  // namespace strata::autograd
