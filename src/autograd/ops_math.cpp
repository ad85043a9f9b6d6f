#include "strata/autograd/ops_math.h"

#include <cmath>

#include "strata/autograd/node.h"
#include "strata/backend/elementwise.h"
#include "strata/backend/index.h"
#include "strata/backend/reduce.h"

namespace strata {

using autograd::record;
using backend::BinaryOp;
using backend::CompareOp;
using backend::UnaryOp;

namespace {

// A gradient slot for an input that needs none.
const Tensor kNone;

Tensor zero_scalar(DType dt, Device dev) { return Tensor::zeros({}, dt, dev); }

// g (the gradient of a reduction over `axis`) repeated along that axis to `shape`.
Tensor expand_back(const Tensor& g, const Shape& shape, int64_t axis, bool keepdim) {
  Strides st = g.strides();
  if (keepdim) st[size_t(axis)] = 0;
  else st.insert(st.begin() + axis, 0);
  return make_view(g, shape, st, g.offset()).contiguous();
}

// g as a view with a size-1 dim inserted at `axis` (undoes keepdim=false).
Tensor keep_axis(const Tensor& g, int64_t axis) {
  Shape s = g.shape();
  Strides st = g.strides();
  s.insert(s.begin() + axis, 1);
  st.insert(st.begin() + axis, 0);
  return make_view(g, s, st, g.offset());
}

// Gradient of picking elements of a tensor of `shape` along `axis` (max,
// topk): g (same shape as the i64 positions idx) added into zeros at idx.
Tensor scatter_picked(const Tensor& g, const Tensor& idx, const Shape& shape, int64_t axis) {
  return backend::scatter_add(Tensor::zeros(shape, g.dtype(), g.device()), axis, idx, g);
}

// Reverses x along axis as a view (negative stride).
Tensor flip(const Tensor& x, int64_t axis) {
  Strides st = x.strides();
  const int64_t n = x.shape()[size_t(axis)];
  int64_t off = x.offset() + (n > 0 ? (n - 1) * st[size_t(axis)] : 0);
  st[size_t(axis)] = -st[size_t(axis)];
  return make_view(x, x.shape(), st, off);
}

Tensor unary_op(UnaryOp op, const Tensor& x) {
  Tensor y = backend::unary(op, x);
  // Save only what the derivative reads (see unary_backward).
  const bool uses_x = op == UnaryOp::Log || op == UnaryOp::Relu || op == UnaryOp::Gelu || op == UnaryOp::Abs ||
                      op == UnaryOp::Square;
  const bool uses_y = !uses_x && op != UnaryOp::Neg;
  return record(backend::unary_name(op), y, {x},
                [op, xd = uses_x ? x.detach() : Tensor(), yd = uses_y ? y.detach() : Tensor()](
                    const Tensor& g) -> std::vector<Tensor> { return {backend::unary_backward(op, g, xd, yd)}; });
}

// Weight of a's share of the gradient of maximum/minimum: 1 where a wins, 1/2 at ties.
Tensor winner_weight(CompareOp win, const Tensor& a, const Tensor& b) {
  Tensor w = backend::compare(win, a, b);
  Tensor tie = backend::compare(CompareOp::Eq, a, b);
  return backend::binary(BinaryOp::Add, w, backend::binary_scalar(BinaryOp::Mul, tie, 0.5));
}

// The same against a scalar.
Tensor winner_weight_scalar(CompareOp win, const Tensor& a, double s) {
  Tensor w = backend::compare_scalar(win, a, s);
  Tensor tie = backend::compare_scalar(CompareOp::Eq, a, s);
  return backend::binary(BinaryOp::Add, w, backend::binary_scalar(BinaryOp::Mul, tie, 0.5));
}

Tensor binary_op(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor y = backend::binary(op, a, b);
  if (!autograd::any_needs_grad({a, b})) return y;
  const bool na = a.needs_grad(), nb = b.needs_grad();
  const Shape sa = a.shape(), sb = b.shape();
  Tensor ad = a.detach(), bd = b.detach();
  auto reduce = [](const Tensor& t, const Shape& s) { return backend::sum_to_shape(t, s); };
  autograd::BackwardFn fn;
  switch (op) {
    case BinaryOp::Add:
      fn = [=](const Tensor& g) -> std::vector<Tensor> {
        return {na ? reduce(g, sa) : kNone, nb ? reduce(g, sb) : kNone};
      };
      break;
    case BinaryOp::Sub:
      fn = [=](const Tensor& g) -> std::vector<Tensor> {
        return {na ? reduce(g, sa) : kNone, nb ? backend::unary(UnaryOp::Neg, reduce(g, sb)) : kNone};
      };
      break;
    case BinaryOp::Mul:
      fn = [=](const Tensor& g) -> std::vector<Tensor> {
        return {na ? reduce(backend::binary(BinaryOp::Mul, g, bd), sa) : kNone,
                nb ? reduce(backend::binary(BinaryOp::Mul, g, ad), sb) : kNone};
      };
      break;
    case BinaryOp::Div: {
      // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -(1/b) * y
      Tensor yd = nb ? y.detach() : Tensor();
      fn = [=](const Tensor& g) -> std::vector<Tensor> {
        Tensor g_over_b = backend::binary(BinaryOp::Div, g, bd);
        Tensor gb;
        if (nb) gb = backend::unary(UnaryOp::Neg, reduce(backend::binary(BinaryOp::Mul, g_over_b, yd), sb));
        return {na ? reduce(g_over_b, sa) : kNone, gb};
      };
      break;
    }
    case BinaryOp::Maximum:
    case BinaryOp::Minimum: {
      const CompareOp win = op == BinaryOp::Maximum ? CompareOp::Gt : CompareOp::Lt;
      fn = [=](const Tensor& g) -> std::vector<Tensor> {
        Tensor ga_full = backend::binary(BinaryOp::Mul, g, winner_weight(win, ad, bd));
        Tensor gb;
        if (nb) gb = reduce(backend::binary(BinaryOp::Sub, g, ga_full), sb);
        return {na ? reduce(ga_full, sa) : kNone, gb};
      };
      break;
    }
    case BinaryOp::Pow: {
      Tensor yd = nb ? y.detach() : Tensor();
      fn = [=](const Tensor& g) -> std::vector<Tensor> {
        Tensor ga, gb;
        if (na) {  // b * a^(b-1)
          Tensor d = backend::binary(BinaryOp::Mul, bd,
                                     backend::binary(BinaryOp::Pow, ad, backend::binary_scalar(BinaryOp::Sub, bd, 1)));
          ga = reduce(backend::binary(BinaryOp::Mul, g, d), sa);
        }
        if (nb) {  // y * log(a), taken as 0 where a == 0 (0 * -inf would give NaN)
          Tensor d = backend::binary(BinaryOp::Mul, yd, backend::unary(UnaryOp::Log, ad));
          d = backend::masked_fill(d, backend::compare_scalar(CompareOp::Eq, ad, 0.0), 0.0);
          gb = reduce(backend::binary(BinaryOp::Mul, g, d), sb);
        }
        return {ga, gb};
      };
      break;
    }
  }
  return record(backend::binary_name(op), y, {a, b}, std::move(fn));
}

Tensor compare_op(CompareOp op, const Tensor& a, const Tensor& b) { return backend::compare(op, a, b); }

}  // namespace

// ---------------------------------------------------------------- binary

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Minimum, a, b); }
Tensor pow(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Pow, a, b); }

// ---------------------------------------------------------------- with a scalar

Tensor add(const Tensor& a, double s) {
  return record("add_scalar", backend::binary_scalar(BinaryOp::Add, a, s), {a},
                [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
}

Tensor sub(const Tensor& a, double s) {
  return record("sub_scalar", backend::binary_scalar(BinaryOp::Sub, a, s), {a},
                [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
}

Tensor sub(double s, const Tensor& a) {
  return record("rsub_scalar", backend::scalar_binary(BinaryOp::Sub, s, a), {a},
                [](const Tensor& g) -> std::vector<Tensor> { return {backend::unary(UnaryOp::Neg, g)}; });
}

Tensor mul(const Tensor& a, double s) {
  return record("mul_scalar", backend::binary_scalar(BinaryOp::Mul, a, s), {a},
                [s](const Tensor& g) -> std::vector<Tensor> { return {backend::binary_scalar(BinaryOp::Mul, g, s)}; });
}

Tensor div(const Tensor& a, double s) {
  return record("div_scalar", backend::binary_scalar(BinaryOp::Div, a, s), {a},
                [s](const Tensor& g) -> std::vector<Tensor> { return {backend::binary_scalar(BinaryOp::Div, g, s)}; });
}

Tensor div(double s, const Tensor& a) {
  Tensor y = backend::scalar_binary(BinaryOp::Div, s, a);
  // d(s/a)/da = -s/a^2 = -y/a
  return record("rdiv_scalar", y, {a}, [ad = a.detach(), yd = y.detach()](const Tensor& g) -> std::vector<Tensor> {
    Tensor t = backend::binary(BinaryOp::Div, backend::binary(BinaryOp::Mul, g, yd), ad);
    return {backend::unary(UnaryOp::Neg, t)};
  });
}

Tensor pow(const Tensor& a, double p) {
  return record("pow_scalar", backend::binary_scalar(BinaryOp::Pow, a, p), {a},
                [p, ad = a.detach()](const Tensor& g) -> std::vector<Tensor> {
                  if (p == 0.0) return {Tensor::zeros(ad.shape(), ad.dtype(), ad.device())};
                  Tensor d = backend::binary_scalar(BinaryOp::Mul, backend::binary_scalar(BinaryOp::Pow, ad, p - 1), p);
                  return {backend::binary(BinaryOp::Mul, g, d)};
                });
}

Tensor pow(double s, const Tensor& a) {
  Tensor y = backend::scalar_binary(BinaryOp::Pow, s, a);
  const double log_s = std::log(s);
  return record("rpow_scalar", y, {a}, [log_s, yd = y.detach()](const Tensor& g) -> std::vector<Tensor> {
    return {backend::binary_scalar(BinaryOp::Mul, backend::binary(BinaryOp::Mul, g, yd), log_s)};
  });
}

Tensor maximum(const Tensor& a, double s) {
  return record("maximum_scalar", backend::binary_scalar(BinaryOp::Maximum, a, s), {a},
                [s, ad = a.detach()](const Tensor& g) -> std::vector<Tensor> {
                  return {backend::binary(BinaryOp::Mul, g, winner_weight_scalar(CompareOp::Gt, ad, s))};
                });
}

Tensor minimum(const Tensor& a, double s) {
  return record("minimum_scalar", backend::binary_scalar(BinaryOp::Minimum, a, s), {a},
                [s, ad = a.detach()](const Tensor& g) -> std::vector<Tensor> {
                  return {backend::binary(BinaryOp::Mul, g, winner_weight_scalar(CompareOp::Lt, ad, s))};
                });
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  STRATA_CHECK(lo <= hi) << "clamp: lower bound " << lo << " is above upper bound " << hi;
  Tensor y = backend::binary_scalar(BinaryOp::Minimum, backend::binary_scalar(BinaryOp::Maximum, x, lo), hi);
  return record("clamp", y, {x}, [lo, hi, xd = x.detach()](const Tensor& g) -> std::vector<Tensor> {
    Tensor inside = backend::binary(BinaryOp::Mul, backend::compare_scalar(CompareOp::Ge, xd, lo),
                                    backend::compare_scalar(CompareOp::Le, xd, hi));
    return {backend::binary(BinaryOp::Mul, g, inside)};
  });
}

// ---------------------------------------------------------------- unary

Tensor neg(const Tensor& x) { return unary_op(UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::Log, x); }
Tensor tanh(const Tensor& x) { return unary_op(UnaryOp::Tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary_op(UnaryOp::Sigmoid, x); }
Tensor relu(const Tensor& x) { return unary_op(UnaryOp::Relu, x); }
Tensor gelu(const Tensor& x) { return unary_op(UnaryOp::Gelu, x); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op(UnaryOp::Rsqrt, x); }
Tensor abs(const Tensor& x) { return unary_op(UnaryOp::Abs, x); }
Tensor square(const Tensor& x) { return unary_op(UnaryOp::Square, x); }
Tensor reciprocal(const Tensor& x) { return unary_op(UnaryOp::Reciprocal, x); }

// ---------------------------------------------------------------- operators

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double s) { return add(a, s); }
Tensor operator+(double s, const Tensor& a) { return add(a, s); }
Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
Tensor operator-(double s, const Tensor& a) { return sub(s, a); }
Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
Tensor operator/(const Tensor& a, double s) { return div(a, s); }
Tensor operator/(double s, const Tensor& a) { return div(s, a); }

// ---------------------------------------------------------------- comparisons

Tensor eq(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare_op(CompareOp::Ge, a, b); }
Tensor eq(const Tensor& a, double s) { return backend::compare_scalar(CompareOp::Eq, a, s); }
Tensor ne(const Tensor& a, double s) { return backend::compare_scalar(CompareOp::Ne, a, s); }
Tensor lt(const Tensor& a, double s) { return backend::compare_scalar(CompareOp::Lt, a, s); }
Tensor le(const Tensor& a, double s) { return backend::compare_scalar(CompareOp::Le, a, s); }
Tensor gt(const Tensor& a, double s) { return backend::compare_scalar(CompareOp::Gt, a, s); }
Tensor ge(const Tensor& a, double s) { return backend::compare_scalar(CompareOp::Ge, a, s); }

// ---------------------------------------------------------------- selection

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Tensor y = backend::where(cond, a, b);
  const bool na = a.needs_grad(), nb = b.needs_grad();
  return record("where", y, {a, b},
                [na, nb, sa = a.shape(), sb = b.shape(), cd = cond.detach()](const Tensor& g) -> std::vector<Tensor> {
                  Tensor z = zero_scalar(g.dtype(), g.device());
                  return {na ? backend::sum_to_shape(backend::where(cd, g, z), sa) : kNone,
                          nb ? backend::sum_to_shape(backend::where(cd, z, g), sb) : kNone};
                });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  return record("masked_fill", backend::masked_fill(x, mask, value), {x},
                [md = mask.detach()](const Tensor& g) -> std::vector<Tensor> {
                  return {backend::masked_fill(g, md, 0.0)};
                });
}

// ---------------------------------------------------------------- reductions

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) {
  Tensor y = backend::sum(x, axis, keepdim);
  const int64_t ax = wrap_dim(axis, x.dim(), "sum");
  return record("sum", y, {x}, [ax, keepdim, s = x.shape()](const Tensor& g) -> std::vector<Tensor> {
    return {expand_back(g, s, ax, keepdim)};
  });
}

Tensor sum(const Tensor& x) {
  return record("sum_all", backend::sum_all(x), {x}, [s = x.shape()](const Tensor& g) -> std::vector<Tensor> {
    return {make_view(g, s, Strides(s.size(), 0), g.offset()).contiguous()};
  });
}

Tensor mean(const Tensor& x, int64_t axis, bool keepdim) {
  Tensor y = backend::mean(x, axis, keepdim);
  const int64_t ax = wrap_dim(axis, x.dim(), "mean");
  return record("mean", y, {x}, [ax, keepdim, s = x.shape()](const Tensor& g) -> std::vector<Tensor> {
    Tensor gs = backend::binary_scalar(BinaryOp::Div, g, double(s[size_t(ax)]));
    return {expand_back(gs, s, ax, keepdim)};
  });
}

Tensor mean(const Tensor& x) {
  STRATA_CHECK(is_floating(x.dtype())) << "mean: expected a floating tensor, got " << x.str();
  const double n = double(x.numel());
  Tensor y = backend::binary_scalar(BinaryOp::Div, backend::sum_all(x), n);
  return record("mean_all", y, {x}, [n, s = x.shape()](const Tensor& g) -> std::vector<Tensor> {
    Tensor gs = backend::binary_scalar(BinaryOp::Div, g, n);
    return {make_view(gs, s, Strides(s.size(), 0), gs.offset()).contiguous()};
  });
}

Tensor max(const Tensor& x, int64_t axis, bool keepdim) {
  auto [values, indices] = backend::max(x, axis, keepdim);
  const int64_t ax = wrap_dim(axis, x.dim(), "max");
  return record("max", values, {x},
                [ax, keepdim, s = x.shape(), id = indices](const Tensor& g) -> std::vector<Tensor> {
                  Tensor gk = keepdim ? g : keep_axis(g, ax);
                  Tensor ik = keepdim ? id : keep_axis(id, ax);
                  return {scatter_picked(gk, ik, s, ax)};
                });
}

Tensor argmax(const Tensor& x, int64_t axis, bool keepdim) { return backend::argmax(x, axis, keepdim); }

Tensor cumsum(const Tensor& x, int64_t axis) {
  Tensor y = backend::cumsum(x, axis);
  const int64_t ax = wrap_dim(axis, x.dim(), "cumsum");
  // dL/dx_i = sum_{j >= i} g_j: a prefix sum of g taken from the end
  return record("cumsum", y, {x}, [ax](const Tensor& g) -> std::vector<Tensor> {
    return {flip(backend::cumsum(flip(g, ax), ax), ax).contiguous()};
  });
}

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t axis) {
  auto [values, indices] = backend::topk(x, k, axis);
  const int64_t ax = wrap_dim(axis, x.dim(), "topk");
  values = record("topk", values, {x}, [ax, s = x.shape(), id = indices](const Tensor& g) -> std::vector<Tensor> {
    return {scatter_picked(g, id, s, ax)};
  });
  return {values, indices};
}

// ---------------------------------------------------------------- concat / split

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  Tensor y = backend::concat(xs, axis);
  const int64_t ax = wrap_dim(axis, y.dim(), "concat");
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) sizes.push_back(x.shape()[size_t(ax)]);
  return record("concat", y, xs, [ax, sizes](const Tensor& g) -> std::vector<Tensor> {
    return backend::split(g, sizes, ax);
  });
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  std::vector<Tensor> pieces = backend::split(x, sizes, axis);
  const int64_t ax = wrap_dim(axis, x.dim(), "split");
  int64_t pos = 0;
  for (size_t k = 0; k < pieces.size(); ++k) {
    pieces[k] = record("split", pieces[k], {x},
                       [ax, pos, s = x.shape(), dt = x.dtype()](const Tensor& g) -> std::vector<Tensor> {
                         Tensor z = Tensor::zeros(s, dt, g.device());
                         make_view(z, g.shape(), z.strides(), pos * z.strides()[size_t(ax)]).copy_(g);
                         return {z};
                       });
    pos += sizes[k];
  }
  return pieces;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t axis) {
  const int64_t ax = wrap_dim(axis, x.dim(), "chunk");
  const int64_t len = x.shape()[size_t(ax)];
  STRATA_CHECK(n > 0 && len % n == 0) << "chunk: axis " << axis << " of " << shape_str(x.shape())
                                      << " does not split into " << n << " equal pieces";
  return split(x, std::vector<int64_t>(size_t(n), len / n), axis);
}

}  // namespace strata
