#include <cmath>

#include "strata/core/allocator.h"
#include "strata/core/dispatch.h"
#include "strata/core/grad_mode.h"
#include "test_util.h"

using namespace strata;

namespace {
// Reads element (multi-index) of a view through its strides, as double.
double at(const Tensor& t, const std::vector<int64_t>& idx) {
  int64_t o = t.offset();
  for (size_t d = 0; d < idx.size(); ++d) o += idx[d] * t.strides()[d];
  return dispatch_dtype(t.dtype(), "at", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return double(to_compute(static_cast<const T*>(t.impl().storage->data())[o]));
  });
}
}  // namespace

TEST_CASE("a new tensor is contiguous with row-major strides", "[tensor]") {
  Tensor t = Tensor::zeros({2, 3, 4});
  CHECK(t.dim() == 3);
  CHECK(t.numel() == 24);
  CHECK(t.strides() == Strides{12, 4, 1});
  CHECK(t.is_contiguous());
  CHECK(t.dtype() == DType::F32);
  CHECK(t.device().is_cpu());
  CHECK(t.str() == "f32[2, 3, 4] cpu");
  CHECK(t.size(-1) == 4);
  CHECK(t.nbytes() == 96);
  Tensor s = Tensor::scalar(2.5);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item() == 2.5);
  Tensor e = Tensor::empty({0, 3});
  CHECK(e.numel() == 0);
}

TEST_CASE("creation helpers fill the requested values", "[tensor]") {
  CHECK(Tensor::ones({3}, DType::F64).to_vector<double>() == std::vector<double>{1, 1, 1});
  CHECK(Tensor::full({2}, -4, DType::I32).to_vector<int32_t>() == std::vector<int32_t>{-4, -4});
  CHECK(Tensor::arange(4).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});
  Tensor f = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(at(f, {1, 2}) == 6);
  REQUIRE_THROWS_WITH(Tensor::from_vector<float>({1, 2}, {3}), Catch::Contains("from_vector"));
  REQUIRE_THROWS_WITH(Tensor::empty({2, -1}), Catch::Contains("negative"));
}

TEST_CASE("transpose, permute and slice are views with the right elements", "[tensor]") {
  Tensor base = Tensor::arange(60, DType::F32).view({3, 4, 5});
  SECTION("transpose") {
    Tensor t = base.transpose(0, 2);
    CHECK(t.shape() == Shape{5, 4, 3});
    CHECK(!t.is_contiguous());
    CHECK(t.impl().storage == base.impl().storage);
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t j = 0; j < 4; ++j)
        for (int64_t k = 0; k < 3; ++k) REQUIRE(at(t, {i, j, k}) == at(base, {k, j, i}));
  }
  SECTION("permute") {
    Tensor p = base.permute({1, 2, 0});
    CHECK(p.shape() == Shape{4, 5, 3});
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 5; ++j)
        for (int64_t k = 0; k < 3; ++k) REQUIRE(at(p, {i, j, k}) == at(base, {k, i, j}));
    REQUIRE_THROWS_WITH(base.permute({0, 0, 1}), Catch::Contains("repeated"));
    REQUIRE_THROWS_WITH(base.permute({0, 1}), Catch::Contains("permute"));
  }
  SECTION("slice with a step and negative bounds") {
    Tensor s = base.slice(2, 1, -1, 2);  // columns 1, 3
    CHECK(s.shape() == Shape{3, 4, 2});
    CHECK(at(s, {2, 3, 1}) == at(base, {2, 3, 3}));
    Tensor n = base.narrow(1, 1, 2);
    CHECK(n.shape() == Shape{3, 2, 5});
    CHECK(at(n, {0, 0, 0}) == 5);
    REQUIRE_THROWS_WITH(base.narrow(1, 3, 2), Catch::Contains("narrow"));
    REQUIRE_THROWS_WITH(base.slice(5, 0, 1), Catch::Contains("axis 5 out of range"));
  }
  SECTION("select drops the axis") {
    Tensor s = base.select(1, -1);
    CHECK(s.shape() == Shape{3, 5});
    CHECK(at(s, {1, 2}) == at(base, {1, 3, 2}));
    REQUIRE_THROWS_WITH(base.select(0, 3), Catch::Contains("select"));
  }
}

TEST_CASE("expand broadcasts size-1 dims with stride 0", "[tensor]") {
  Tensor a = Tensor::from_vector<float>({1, 2, 3}, {3, 1});
  Tensor e = a.expand({2, 3, 4});
  CHECK(e.shape() == Shape{2, 3, 4});
  CHECK(e.strides()[0] == 0);
  CHECK(e.strides()[2] == 0);
  CHECK(at(e, {1, 2, 3}) == 3);
  CHECK(a.expand({-1, 5}).shape() == Shape{3, 5});
  REQUIRE_THROWS_WITH(a.expand({2, 4}), Catch::Contains("expand"));
}

TEST_CASE("view and reshape follow the layout and copy only when they must", "[tensor]") {
  Tensor base = Tensor::arange(24, DType::F64).view({2, 3, 4});
  Tensor v = base.view({6, -1});
  CHECK(v.shape() == Shape{6, 4});
  CHECK(v.impl().storage == base.impl().storage);
  REQUIRE_THROWS_WITH(base.view({5, -1}), Catch::Contains("cannot infer"));
  REQUIRE_THROWS_WITH(base.view({-1, -1}), Catch::Contains("more than one -1"));
  Tensor t = base.transpose(1, 2);  // [2,4,3], not contiguous
  REQUIRE_THROWS_WITH(t.view({24}), Catch::Contains("without a copy"));
  Tensor r = t.reshape({24});
  CHECK(r.is_contiguous());
  CHECK(r.impl().storage != base.impl().storage);
  CHECK(at(r, {1}) == at(base, {0, 1, 0}));
  // merging dims that stay contiguous inside a non-contiguous tensor needs no copy
  Tensor p = base.permute({1, 0, 2});  // [3,2,4]: last dim contiguous
  Tensor pv = p.view({3, 2, 2, 2});
  CHECK(pv.impl().storage == base.impl().storage);
  CHECK(at(pv, {2, 1, 1, 1}) == at(base, {1, 2, 3}));
  CHECK(base.unsqueeze(1).shape() == Shape{2, 1, 3, 4});
  CHECK(base.unsqueeze(-1).shape() == Shape{2, 3, 4, 1});
  CHECK(base.unsqueeze(0).squeeze(0).shape() == base.shape());
  REQUIRE_THROWS_WITH(base.squeeze(1), Catch::Contains("expected 1"));
}

TEST_CASE("contiguous, clone and copy_ preserve values through any layout", "[tensor]") {
  Tensor x = test::rand({5, 7, 3}, 1);
  Tensor nc = test::non_contiguous(x);
  CHECK(!nc.is_contiguous());
  test::require_close(nc, x, 0, 0);
  Tensor c = nc.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.to_vector<float>() == x.to_vector<float>());
  CHECK(x.contiguous().same(x));
  Tensor cl = x.clone();
  CHECK(!cl.same(x));
  cl.fill_(0);
  CHECK(x.to_vector<float>() != cl.to_vector<float>());
  Tensor dst = Tensor::zeros({3, 7, 5}).transpose(0, 2);
  dst.copy_(x);
  test::require_close(dst, x, 0, 0);
  REQUIRE_THROWS_WITH(dst.copy_(Tensor::zeros({2})), Catch::Contains("copy_"));
  // fill through a strided view touches only the view
  Tensor z = Tensor::zeros({4, 4});
  z.slice(1, 0, 4, 2).fill_(1);
  CHECK(z.to_vector<float>() == std::vector<float>{1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0});
}

TEST_CASE("casts convert between every dtype", "[tensor]") {
  Tensor x = Tensor::from_vector<float>({-2.5f, -1, 0, 1.5f, 3, 65504}, {6});
  CHECK(x.to(DType::F64).to_vector<double>() == std::vector<double>{-2.5, -1, 0, 1.5, 3, 65504});
  CHECK(x.to(DType::I32).to_vector<int32_t>() == std::vector<int32_t>{-2, -1, 0, 1, 3, 65504});
  CHECK(x.to(DType::I64).to(DType::F32).to_vector<float>() == std::vector<float>{-2, -1, 0, 1, 3, 65504});
  CHECK(x.to(DType::F16).to(DType::F32).to_vector<float>() == x.to_vector<float>());
  CHECK(x.to(DType::BF16).to(DType::F32).to_vector<float>() == std::vector<float>{-2.5f, -1, 0, 1.5f, 3, 65536});
  Tensor nc = test::non_contiguous(test::rand({3, 4}, 2));
  test::require_close(nc.to(DType::F64), nc, 1e-7);
  CHECK(dtype_from_name("bfloat16") == DType::BF16);
  REQUIRE_THROWS_WITH(dtype_from_name("f8"), Catch::Contains("unknown dtype 'f8'"));
}

TEST_CASE("data<T>() checks the dtype", "[tensor]") {
  Tensor x = Tensor::zeros({2});
  REQUIRE_THROWS_WITH(x.data<double>(), Catch::Contains("tensor is f32, asked for f64"));
  REQUIRE_THROWS_WITH(Tensor::zeros({2}).item(), Catch::Contains("expected 1"));
  REQUIRE_THROWS_WITH(Tensor().shape(), Catch::Contains("undefined"));
}

TEST_CASE("raw views refuse tensors that take part in autograd", "[tensor]") {
  Tensor w = Tensor::zeros({2, 3}).set_requires_grad();
  REQUIRE_THROWS_WITH(w.transpose(0, 1), Catch::Contains("strata::transpose"));
  CHECK(w.detach().transpose(0, 1).shape() == Shape{3, 2});
  {
    NoGradGuard ng;
    CHECK(w.transpose(0, 1).shape() == Shape{3, 2});
  }
  REQUIRE_THROWS_WITH(Tensor::zeros({2}, DType::I64).set_requires_grad(), Catch::Contains("floating"));
}

TEST_CASE("wrong devices give a clear error in a CPU-only path", "[tensor]") {
#ifndef STRATA_WITH_CUDA
  REQUIRE_THROWS_WITH(Tensor::empty({2}, DType::F32, Device::cuda(0)), Catch::Contains("no CUDA backend"));
#endif
  CHECK(Device::cuda(1).str() == "cuda:1");
  CHECK(Device::cpu().str() == "cpu");
}

TEST_CASE("shapes broadcast numpy-style", "[tensor]") {
  CHECK(broadcast_shapes({3, 1, 5}, {4, 5}, "op") == Shape{3, 4, 5});
  CHECK(broadcast_shapes({}, {2}, "op") == Shape{2});
  REQUIRE_THROWS_WITH(broadcast_shapes({3}, {4}, "add"), Catch::Contains("add: shapes [3] and [4] do not broadcast"));
  CHECK(wrap_dim(-1, 3, "op") == 2);
  REQUIRE_THROWS_WITH(wrap_dim(3, 3, "sum"), Catch::Contains("sum: axis 3 out of range"));
}
