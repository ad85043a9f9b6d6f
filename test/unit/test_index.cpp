#include <cmath>

#include "strata/autograd/node.h"
#include "strata/autograd/ops_nn.h"
#include "strata/backend/index.h"
#include "test_util.h"

using namespace strata;

namespace {

// Deterministic index values in [0, bound) (bound > 0), as an i32/i64 tensor.
Tensor rand_index(const Shape& s, int64_t bound, uint64_t seed, DType dt = DType::I64) {
  std::vector<float> u = Tensor::uniform(s, seed, 0, 0.0, 1.0).to_vector<float>();
  std::vector<int64_t> v(u.size());
  for (size_t i = 0; i < u.size(); ++i) v[i] = std::min<int64_t>(bound - 1, int64_t(double(u[i]) * double(bound)));
  return Tensor::from_vector(v, s).to(dt);
}

std::vector<int64_t> unravel(int64_t flat, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) {
    idx[size_t(d)] = flat % s[size_t(d)];
    flat /= s[size_t(d)];
  }
  return idx;
}

int64_t ravel(const std::vector<int64_t>& idx, const Shape& s) {
  int64_t flat = 0;
  for (size_t d = 0; d < s.size(); ++d) flat = flat * s[d] + idx[d];
  return flat;
}

int64_t wrap(int64_t axis, size_t rank) { return axis < 0 ? axis + int64_t(rank) : axis; }

Tensor ref_index_select(const Tensor& x, int64_t axis, const Tensor& index) {
  const int64_t a = wrap(axis, x.shape().size());
  std::vector<double> xv = x.to_vector<double>();
  std::vector<int64_t> iv = index.to_vector<int64_t>();
  Shape os = x.shape();
  os[size_t(a)] = int64_t(iv.size());
  std::vector<double> out(size_t(shape_numel(os)));
  for (int64_t f = 0; f < int64_t(out.size()); ++f) {
    std::vector<int64_t> idx = unravel(f, os);
    idx[size_t(a)] = iv[size_t(idx[size_t(a)])];
    out[size_t(f)] = xv[size_t(ravel(idx, x.shape()))];
  }
  return Tensor::from_vector(out, os).to(x.dtype());
}

Tensor ref_index_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& src) {
  const int64_t a = wrap(axis, shape.size());
  std::vector<double> sv = src.to_vector<double>(), out(size_t(shape_numel(shape)), 0.0);
  std::vector<int64_t> iv = index.to_vector<int64_t>();
  for (int64_t f = 0; f < src.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, src.shape());
    idx[size_t(a)] = iv[size_t(idx[size_t(a)])];
    out[size_t(ravel(idx, shape))] += sv[size_t(f)];
  }
  return Tensor::from_vector(out, shape).to(src.dtype());
}

Tensor ref_gather(const Tensor& x, int64_t axis, const Tensor& index) {
  const int64_t a = wrap(axis, x.shape().size());
  std::vector<double> xv = x.to_vector<double>(), out(size_t(index.numel()));
  std::vector<int64_t> iv = index.to_vector<int64_t>();
  for (int64_t f = 0; f < index.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, index.shape());
    idx[size_t(a)] = iv[size_t(f)];
    out[size_t(f)] = xv[size_t(ravel(idx, x.shape()))];
  }
  return Tensor::from_vector(out, index.shape()).to(x.dtype());
}

Tensor ref_scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src) {
  const int64_t a = wrap(axis, x.shape().size());
  std::vector<double> out = x.to_vector<double>(), sv = src.to_vector<double>();
  std::vector<int64_t> iv = index.to_vector<int64_t>();
  for (int64_t f = 0; f < index.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, index.shape());
    idx[size_t(a)] = iv[size_t(f)];
    out[size_t(ravel(idx, x.shape()))] += sv[size_t(f)];
  }
  return Tensor::from_vector(out, x.shape()).to(x.dtype());
}

Tensor ref_embedding_backward(const Tensor& grad, const Tensor& ids, int64_t rows, int64_t pad) {
  const int64_t D = grad.shape().back();
  std::vector<double> gv = grad.to_vector<double>(), out(size_t(rows * D), 0.0);
  std::vector<int64_t> iv = ids.to_vector<int64_t>();
  for (size_t t = 0; t < iv.size(); ++t) {
    if (iv[t] == pad) continue;
    for (int64_t d = 0; d < D; ++d) out[size_t(iv[t] * D + d)] += gv[t * size_t(D) + size_t(d)];
  }
  return Tensor::from_vector(out, {rows, D}).to(grad.dtype());
}

// An index for gather/scatter: x's rank, `n` along the axis, other dims of x shrunk by `shrink`.
Shape index_shape(const Shape& xs, int64_t axis, int64_t n, int64_t shrink) {
  Shape s = xs;
  for (size_t d = 0; d < s.size(); ++d) s[d] = int64_t(d) == axis ? n : std::max<int64_t>(1, s[d] - shrink);
  return s;
}

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {{9}, {7, 5}, {3, 4, 5}, {2, 3, 2, 4}};
  return s;
}

}  // namespace

// ---------------------------------------------------------------- embedding

TEST_CASE("embedding looks up rows of the weight", "[index]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto it = GENERATE(DType::I32, DType::I64);
  auto noncontig = GENERATE(false, true);
  Tensor w = test::rand({11, 6}, 1, dt);
  if (noncontig) w = test::non_contiguous(w);
  for (const Shape& s : {Shape{5}, Shape{3, 4}, Shape{}, Shape{2, 0}}) {
    INFO("ids shape " << shape_str(s));
    Tensor ids = rand_index(s, 11, 2, it);
    Tensor y = backend::embedding(w, ids);
    Shape expect = s;
    expect.push_back(6);
    REQUIRE(y.shape() == expect);
    std::vector<int64_t> iv = ids.to_vector<int64_t>();
    test::require_close(y, ref_index_select(w, 0, Tensor::from_vector(iv, {int64_t(iv.size())})).reshape(expect), 0,
                        0);
  }
}

TEST_CASE("embedding_backward sums repeated ids and skips padding_idx", "[index]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto it = GENERATE(DType::I32, DType::I64);
  auto noncontig = GENERATE(false, true);
  Tensor ids = Tensor::from_vector<int64_t>({3, 1, 3, 0, 2, 3, 1, 2}, {2, 4}).to(it);  // 3 thrice, pad 2 twice
  Tensor g = test::rand({2, 4, 5}, 3, dt);
  if (noncontig) g = test::non_contiguous(g);
  for (int64_t pad : {-1, 2, 4}) {
    INFO("padding_idx " << pad);
    Tensor dw = backend::embedding_backward(g, ids, 6, pad);
    REQUIRE(dw.shape() == Shape{6, 5});
    test::require_close(dw, ref_embedding_backward(g, ids, 6, pad));
  }
  // the padding row's gradient is exactly zero, an unused row's too
  std::vector<double> dw = backend::embedding_backward(g, ids, 6, 2).to_vector<double>();
  for (int d = 0; d < 5; ++d) {
    CHECK(dw[size_t(2 * 5 + d)] == 0.0);
    CHECK(dw[size_t(5 * 5 + d)] == 0.0);
  }
}

TEST_CASE("embedding gradient reaches the weight only, with repeated ids and padding", "[index]") {
  Tensor w = test::rand({7, 4}, 4, DType::F64).set_requires_grad(true);
  Tensor ids = Tensor::from_vector<int32_t>({6, 0, 6, 6, 1, 0}, {3, 2});
  Tensor y = embedding(w, ids, 0);
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(std::string(y.grad_fn()->name()) == "embedding");
  Tensor g = test::rand({3, 2, 4}, 5, DType::F64);
  y.backward(g);
  test::require_close(w.grad(), ref_embedding_backward(g, ids, 7, 0));
  CHECK_FALSE(ids.requires_grad());
  CHECK_FALSE(ids.grad().defined());
}

TEST_CASE("embedding passes gradcheck with respect to the weight", "[index]") {
  auto noncontig = GENERATE(false, true);
  // padding_idx freezes its row on purpose (not the true gradient), so the
  // check uses a padding row that no id hits; padding is tested above.
  auto pad = GENERATE(-1, 3);
  Tensor ids = Tensor::from_vector<int64_t>({2, 1, 4, 2, 0, 1}, {2, 3});
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return embedding(in[0], ids, pad); },
                          {test::grad_input({5, 3}, 6, noncontig)});
}

// ---------------------------------------------------------------- index_select / index_add

TEST_CASE("index_select matches a reference along every axis", "[index]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto it = GENERATE(DType::I32, DType::I64);
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : shapes()) {
    Tensor x = test::rand(s, 7, dt);
    if (noncontig) x = test::non_contiguous(x);
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      const int64_t bound = s[size_t(wrap(axis, s.size()))];
      for (int64_t n : {0, 1, 6}) {  // 6 > some bounds: repeats
        INFO("shape " << shape_str(s) << " axis " << axis << " n " << n);
        Tensor index = rand_index({n}, bound, uint64_t(8 + n), it);
        test::require_close(backend::index_select(x, axis, index), ref_index_select(x, axis, index), 0, 0);
      }
    }
  }
}

TEST_CASE("index_add sums repeated indices along every axis", "[index]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : shapes()) {
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      const int64_t a = wrap(axis, s.size());
      Shape ss = s;
      ss[size_t(a)] = 7;  // more entries than rows: collisions
      Tensor src = test::rand(ss, 9, dt);
      if (noncontig) src = test::non_contiguous(src);
      Tensor index = rand_index({7}, s[size_t(a)], 10, DType::I32);
      INFO("shape " << shape_str(s) << " axis " << axis);
      test::require_close(backend::index_add(s, axis, index, src), ref_index_add(s, axis, index, src));
    }
  }
}

TEST_CASE("index_select and gather copy every dtype exactly", "[index]") {
  // i32/i64 data matter for token ids; f16/bf16 for storage-type tables.
  auto dt = GENERATE(DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64);
  Tensor x = test::rand({4, 6}, 11, DType::F64, -100, 100).to(DType::I64).to(dt);
  Tensor sel = rand_index({5}, 6, 12);
  Tensor y = backend::index_select(x, 1, sel);
  CHECK(y.dtype() == dt);
  test::require_close(y, ref_index_select(x, 1, sel), 0, 0);
  Tensor gi = rand_index({4, 3}, 6, 13);
  Tensor gy = backend::gather(x, 1, gi);
  CHECK(gy.dtype() == dt);
  test::require_close(gy, ref_gather(x, 1, gi), 0, 0);
  Tensor ids = rand_index({3}, 4, 14);
  test::require_close(backend::embedding(x, ids), ref_index_select(x, 0, ids), 0, 0);
}

TEST_CASE("index_add and scatter_add accumulate integer data", "[index]") {
  auto dt = GENERATE(DType::I32, DType::I64);
  Tensor src = Tensor::ones({6}, dt);
  Tensor index = Tensor::from_vector<int64_t>({0, 2, 2, 1, 2, 0}, {6});
  // a histogram of the index values
  test::require_close(backend::index_add({3}, 0, index, src), {2.0, 1.0, 3.0}, 0, 0);
  test::require_close(backend::scatter_add(Tensor::zeros({3}, dt), 0, index, src), {2.0, 1.0, 3.0}, 0, 0);
}

// ---------------------------------------------------------------- gather / scatter_add

TEST_CASE("gather matches a reference along every axis", "[index]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto it = GENERATE(DType::I32, DType::I64);
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : shapes()) {
    Tensor x = test::rand(s, 15, dt);
    if (noncontig) x = test::non_contiguous(x);
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      const int64_t a = wrap(axis, s.size());
      for (int64_t shrink : {0, 1}) {  // index as large as x, or smaller in the other dims
        INFO("shape " << shape_str(s) << " axis " << axis << " shrink " << shrink);
        Tensor index = rand_index(index_shape(s, a, 4, shrink), s[size_t(a)], uint64_t(16 + shrink), it);
        test::require_close(backend::gather(x, axis, index), ref_gather(x, axis, index), 0, 0);
      }
    }
  }
}

TEST_CASE("scatter_add sums colliding indices along every axis", "[index]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : shapes()) {
    Tensor x = test::rand(s, 17, dt);
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      const int64_t a = wrap(axis, s.size());
      for (int64_t shrink : {0, 1}) {
        Shape is = index_shape(s, a, 5, shrink);
        Tensor index = rand_index(is, s[size_t(a)], uint64_t(18 + shrink), DType::I32);
        Tensor src = test::rand(is, 19, dt);
        Tensor xx = x;
        if (noncontig) src = test::non_contiguous(src), xx = test::non_contiguous(x);
        INFO("shape " << shape_str(s) << " axis " << axis << " shrink " << shrink);
        Tensor y = backend::scatter_add(xx, axis, index, src);
        test::require_close(y, ref_scatter_add(x, axis, index, src));
        test::require_close(x, xx);  // the input is not modified
      }
    }
  }
}

TEST_CASE("gather and scatter_add agree with take-along-axis semantics on a small example", "[index]") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor idx = Tensor::from_vector<int64_t>({2, 0, 1, 1}, {2, 2});
  test::require_close(backend::gather(x, 1, idx), {3, 1, 5, 5}, 0, 0);
  Tensor src = Tensor::from_vector<double>({10, 20, 30, 40}, {2, 2});
  test::require_close(backend::scatter_add(x, 1, idx, src), {21, 2, 13, 4, 75, 6}, 0, 0);
  Tensor idx0 = Tensor::from_vector<int64_t>({1, 0, 1}, {1, 3});
  test::require_close(backend::gather(x, 0, idx0), {4, 2, 6}, 0, 0);
}

TEST_CASE("adding index ops on large inputs (threaded path) match the reference", "[index]") {
  // Many collisions on few targets: the race-free split must still sum all.
  Tensor src = test::rand({2000, 70}, 20, DType::F64);
  Tensor index = rand_index({2000}, 50, 21);
  test::require_close(backend::index_add({50, 70}, 0, index, src), ref_index_add({50, 70}, 0, index, src), 1e-12,
                      1e-12);
  Tensor x = test::rand({300, 200}, 22, DType::F32);
  Tensor sidx = rand_index({300, 200}, 5, 23);
  Tensor ssrc = test::rand({300, 200}, 24, DType::F32);
  test::require_close(backend::scatter_add(x, 1, sidx, ssrc), ref_scatter_add(x, 1, sidx, ssrc), 1e-5, 1e-5);
  Tensor g = test::rand({4000, 33}, 25, DType::F32);
  Tensor ids = rand_index({4000}, 40, 26);
  test::require_close(backend::embedding_backward(g, ids, 40, 3), ref_embedding_backward(g, ids, 40, 3), 1e-5, 1e-5);
  // rows wider than one block of inner positions (256), with a partial last block
  Tensor wide = test::rand({100, 600}, 29, DType::F64);
  Tensor widx = rand_index({100}, 20, 30);
  test::require_close(backend::index_add({20, 600}, 0, widx, wide), ref_index_add({20, 600}, 0, widx, wide), 1e-12,
                      1e-12);
  Tensor wg = test::rand({50, 300}, 31, DType::F64);
  Tensor wids = rand_index({50}, 9, 32);
  test::require_close(backend::embedding_backward(wg, wids, 9, 0), ref_embedding_backward(wg, wids, 9, 0), 1e-12,
                      1e-12);
  Tensor big = test::rand({3000, 40}, 27, DType::F32);
  Tensor gi = rand_index({3000, 40}, 40, 28);
  test::require_close(backend::gather(big, 1, gi), ref_gather(big, 1, gi), 0, 0);
}

TEST_CASE("index_select passes gradcheck along every axis", "[index]") {
  auto noncontig = GENERATE(false, true);
  Tensor index = Tensor::from_vector<int64_t>({1, 0, 1, 2}, {4});  // a repeat: gradients add
  for (int64_t axis : {0, 1, -1}) {
    INFO("axis " << axis);
    test::require_gradcheck([&](const std::vector<Tensor>& in) { return index_select(in[0], axis, index); },
                            {test::grad_input({3, 4}, 29, noncontig)});
  }
}

TEST_CASE("gather passes gradcheck along every axis", "[index]") {
  auto noncontig = GENERATE(false, true);
  for (int64_t axis : {0, 1, 2}) {
    INFO("axis " << axis);
    Tensor index = rand_index(index_shape({3, 4, 2}, axis, 3, 0), Shape{3, 4, 2}[size_t(axis)], 30);
    test::require_gradcheck([&](const std::vector<Tensor>& in) { return gather(in[0], axis, index); },
                            {test::grad_input({3, 4, 2}, 31, noncontig)});
  }
}

TEST_CASE("scatter_add passes gradcheck with respect to x and src", "[index]") {
  auto noncontig = GENERATE(false, true);
  for (int64_t axis : {0, 1}) {
    INFO("axis " << axis);
    Shape is = index_shape({3, 4}, axis, 5, 1);
    Tensor index = rand_index(is, Shape{3, 4}[size_t(axis)], 32);
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) { return scatter_add(in[0], axis, index, in[1]); },
        {test::grad_input({3, 4}, 33, noncontig), test::grad_input(is, 34, noncontig)});
  }
}

TEST_CASE("index ops record named nodes only when an input needs a gradient", "[index]") {
  Tensor x = test::rand({3, 4}, 35, DType::F64);
  Tensor idx = Tensor::from_vector<int64_t>({0, 2}, {2});
  Tensor gi = Tensor::from_vector<int64_t>({0, 1, 2, 0, 1, 2, 0, 1}, {2, 4});
  CHECK(index_select(x, 0, idx).grad_fn() == nullptr);
  CHECK(gather(x, 0, gi).grad_fn() == nullptr);
  x.set_requires_grad(true);
  CHECK(std::string(index_select(x, 0, idx).grad_fn()->name()) == "index_select");
  CHECK(std::string(gather(x, 0, gi).grad_fn()->name()) == "gather");
  CHECK(std::string(scatter_add(x, 0, gi, test::rand({2, 4}, 36, DType::F64)).grad_fn()->name()) == "scatter_add");
  // index_select's gradient is index_add of the incoming gradient
  Tensor y = index_select(x, 0, idx);
  Tensor g = test::rand({2, 4}, 37, DType::F64);
  y.backward(g);
  test::require_close(x.grad(), ref_index_add({3, 4}, 0, idx, g));
}

// ---------------------------------------------------------------- errors

TEST_CASE("index ops reject out-of-range indices naming the op, the value and the bound", "[index]") {
  Tensor x = test::rand({5, 3}, 38);
  Tensor big = Tensor::from_vector<int64_t>({1, 7}, {2});
  Tensor neg = Tensor::from_vector<int32_t>({-1, 0}, {2});
  REQUIRE_THROWS_WITH(backend::embedding(x, big),
                      Catch::Contains("embedding") && Catch::Contains("index 7") && Catch::Contains("[0, 5)"));
  REQUIRE_THROWS_WITH(backend::embedding(x, neg), Catch::Contains("embedding") && Catch::Contains("index -1"));
  REQUIRE_THROWS_WITH(embedding(x, big), Catch::Contains("embedding") && Catch::Contains("index 7"));
  REQUIRE_THROWS_WITH(backend::index_select(x, 1, big),
                      Catch::Contains("index_select") && Catch::Contains("index 7") && Catch::Contains("[0, 3)"));
  REQUIRE_THROWS_WITH(backend::index_select(x, 0, neg), Catch::Contains("index_select") && Catch::Contains("-1"));
  REQUIRE_THROWS_WITH(backend::index_add({5, 3}, 1, big, test::rand({5, 2}, 1)),
                      Catch::Contains("index_add") && Catch::Contains("index 7"));
  Tensor gi = Tensor::from_vector<int64_t>({0, 3, 1}, {1, 3});
  REQUIRE_THROWS_WITH(backend::gather(x, 1, gi),
                      Catch::Contains("gather") && Catch::Contains("index 3") && Catch::Contains("[0, 3)"));
  REQUIRE_THROWS_WITH(backend::scatter_add(x, 1, gi, test::rand({1, 3}, 1)),
                      Catch::Contains("scatter_add") && Catch::Contains("index 3"));
  REQUIRE_THROWS_WITH(backend::embedding_backward(test::rand({2, 3}, 1), big, 5),
                      Catch::Contains("embedding_backward") && Catch::Contains("index 7"));
}

TEST_CASE("index ops reject non-integer index tensors", "[index]") {
  Tensor x = test::rand({5, 3}, 39);
  Tensor fidx = Tensor::from_vector<float>({0, 1}, {2});
  REQUIRE_THROWS_WITH(backend::embedding(x, fidx), Catch::Contains("embedding") && Catch::Contains("i32 or i64"));
  REQUIRE_THROWS_WITH(backend::embedding_backward(test::rand({2, 3}, 1), fidx, 5),
                      Catch::Contains("embedding_backward"));
  REQUIRE_THROWS_WITH(backend::index_select(x, 0, fidx), Catch::Contains("index_select"));
  REQUIRE_THROWS_WITH(backend::index_add({5, 3}, 0, fidx, test::rand({2, 3}, 1)), Catch::Contains("index_add"));
  REQUIRE_THROWS_WITH(backend::gather(x, 0, test::rand({2, 3}, 1)), Catch::Contains("gather"));
  REQUIRE_THROWS_WITH(backend::scatter_add(x, 0, test::rand({2, 3}, 1), test::rand({2, 3}, 1)),
                      Catch::Contains("scatter_add"));
}

TEST_CASE("index ops reject bad axes and mismatched shapes", "[index]") {
  Tensor x = test::rand({5, 3}, 40);
  Tensor idx = Tensor::from_vector<int64_t>({0, 1}, {2});
  Tensor gi = Tensor::from_vector<int64_t>({0, 1, 0}, {1, 3});
  REQUIRE_THROWS_WITH(backend::index_select(x, 2, idx), Catch::Contains("index_select") && Catch::Contains("axis 2"));
  REQUIRE_THROWS_WITH(backend::index_select(x, -3, idx), Catch::Contains("index_select"));
  REQUIRE_THROWS_WITH(backend::index_select(x, 0, gi), Catch::Contains("index_select") && Catch::Contains("1-D"));
  REQUIRE_THROWS_WITH(backend::index_add({5, 3}, 0, idx, test::rand({2, 4}, 1)), Catch::Contains("index_add"));
  REQUIRE_THROWS_WITH(backend::index_add({5, 3}, 2, idx, test::rand({2, 3}, 1)), Catch::Contains("index_add"));
  REQUIRE_THROWS_WITH(backend::gather(x, 2, gi), Catch::Contains("gather") && Catch::Contains("axis 2"));
  REQUIRE_THROWS_WITH(backend::gather(x, 0, idx), Catch::Contains("gather"));  // rank mismatch
  REQUIRE_THROWS_WITH(backend::gather(x, 0, Tensor::zeros({1, 4}, DType::I64)), Catch::Contains("gather"));
  REQUIRE_THROWS_WITH(backend::scatter_add(x, 0, gi, test::rand({1, 2}, 1)), Catch::Contains("scatter_add"));
  REQUIRE_THROWS_WITH(backend::scatter_add(x, 0, gi, test::rand({1, 3}, 1, DType::F64)),
                      Catch::Contains("scatter_add"));
  REQUIRE_THROWS_WITH(backend::scatter_add(x, -3, gi, test::rand({1, 3}, 1)), Catch::Contains("scatter_add"));
  REQUIRE_THROWS_WITH(backend::embedding(test::rand({5}, 1), idx), Catch::Contains("embedding"));
  REQUIRE_THROWS_WITH(backend::embedding_backward(test::rand({3, 3}, 1), idx, 5),
                      Catch::Contains("embedding_backward"));
  REQUIRE_THROWS_WITH(backend::embedding_backward(test::rand({2, 3}, 1), idx, 5, 5),
                      Catch::Contains("embedding_backward") && Catch::Contains("padding_idx"));
  REQUIRE_THROWS_WITH(embedding(x, idx, 5), Catch::Contains("embedding") && Catch::Contains("padding_idx"));
}
