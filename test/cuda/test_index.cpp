// GPU index ops, concat and split against their CPU twins: every dtype,
// i32/i64 indices, strided inputs, odd sizes, repeated indices (the adding
// ops must also be bit-reproducible), padding_idx, and the range errors.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "strata/backend/index.h"

using namespace strata;
using strata::test::cpu;
using strata::test::gpu;
using strata::test::require_close;

namespace {

// Index values in [lo, hi) as an i32/i64 tensor on the CPU.
Tensor rand_ids(const Shape& shape, int64_t lo, int64_t hi, uint64_t seed, DType dt) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int64_t> dist(lo, hi - 1);
  std::vector<int64_t> v(size_t(shape_numel(shape)));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, shape).to(dt);
}

Tensor rand_f32(const Shape& shape, uint64_t seed) { return Tensor::uniform(shape, seed, 0, -1.0, 1.0, DType::F32); }

// The values of x after a round trip through dt (what a GPU tensor of dtype dt holds), in f32.
Tensor rounded(const Tensor& x, DType dt) { return x.to(dt).to(DType::F32); }

// A GPU view [a, b] with a non-unit inner stride holding the values of the CPU tensor x [a, b].
Tensor gpu_transposed_view(const Tensor& x) { return gpu(x.transpose(0, 1).contiguous()).transpose(0, 1); }

// The raw bytes of a GPU tensor (for bit-identity checks).
std::vector<uint8_t> bytes_of(const Tensor& g) {
  Tensor c = cpu(g);
  std::vector<uint8_t> b(c.nbytes());
  if (!b.empty()) std::memcpy(b.data(), c.raw_data(), b.size());
  return b;
}

const DType kFloatTypes[] = {DType::F32, DType::F64, DType::F16, DType::BF16};

}  // namespace

TEST_CASE("GPU embedding copies rows of the weight exactly", "[cuda][index]") {
  for (DType dt : kFloatTypes) {
    for (DType it : {DType::I32, DType::I64}) {
      for (int64_t D : {1, 7, 513}) {
        CAPTURE(dtype_name(dt), dtype_name(it), D);
        const int64_t V = 37;
        Tensor w = rand_f32({V, D}, 1 + uint64_t(D)).to(dt);
        Tensor ids = rand_ids({3, 5}, 0, V, 2, it);
        Tensor want = backend::embedding(w, ids);
        require_close(want, backend::embedding(gpu(w), gpu(ids)), 0.0, "contiguous");
        // strided weight and ids views
        Tensor wt = gpu_transposed_view(w);
        Tensor idt = gpu_transposed_view(ids.transpose(0, 1).contiguous());  // [5, 3] view of ids^T
        require_close(backend::embedding(w, ids.transpose(0, 1)), backend::embedding(wt, idt), 0.0, "strided");
      }
    }
  }
  SECTION("a 0-d id and an empty id tensor") {
    Tensor w = rand_f32({4, 3}, 3);
    Tensor id0 = Tensor::from_vector(std::vector<int64_t>{2}, {});
    require_close(backend::embedding(w, id0), backend::embedding(gpu(w), gpu(id0)), 0.0);
    Tensor e = backend::embedding(gpu(w), gpu(Tensor::empty({0, 2}, DType::I64)));
    CHECK(e.shape() == Shape{0, 2, 3});
  }
}

TEST_CASE("GPU embedding reports out-of-range ids like the CPU", "[cuda][index]") {
  Tensor w = gpu(rand_f32({5, 4}, 1));
  for (DType it : {DType::I32, DType::I64}) {
    Tensor hi = gpu(Tensor::from_vector(std::vector<int64_t>{0, 5, 2, 9}, {4}).to(it));
    REQUIRE_THROWS_WITH(backend::embedding(w, hi),
                        Catch::Contains("embedding") && Catch::Contains("index 9 out of range [0, 5)"));
    Tensor lo = gpu(Tensor::from_vector(std::vector<int64_t>{0, 7, -3, -1}, {4}).to(it));
    REQUIRE_THROWS_WITH(backend::embedding(w, lo), Catch::Contains("index -3 out of range [0, 5)"));
    REQUIRE_THROWS_WITH(backend::embedding_backward(gpu(rand_f32({4, 4}, 2)), hi, 5),
                        Catch::Contains("embedding_backward") && Catch::Contains("index 9 out of range"));
  }
  // the stream is usable after the error
  Tensor ok = gpu(Tensor::from_vector(std::vector<int64_t>{4, 0}, {2}));
  CHECK(backend::embedding(w, ok).shape() == Shape{2, 4});
  REQUIRE_THROWS_WITH(backend::embedding(w, Tensor::from_vector(std::vector<int64_t>{1}, {1})),
                      Catch::Contains("embedding"));
  REQUIRE_THROWS_WITH(backend::embedding(w, gpu(rand_f32({2}, 3))), Catch::Contains("i32 or i64"));
}

TEST_CASE("GPU embedding_backward sums repeated ids, skips padding_idx and is bit-reproducible", "[cuda][index]") {
  for (DType dt : kFloatTypes) {
    for (int64_t D : {1, 7, 513}) {
      for (int64_t pad : {-1, 2}) {
        CAPTURE(dtype_name(dt), D, pad);
        const int64_t V = 6;  // few rows: every id repeats many times
        Tensor g = rand_f32({4, 11, D}, 10 + uint64_t(D));
        Tensor ids = rand_ids({4, 11}, 0, V, 11, D == 7 ? DType::I32 : DType::I64);
        const bool narrow = dt == DType::F16 || dt == DType::BF16;
        // 16-bit: the GPU sums in f32 and rounds once; compare with the f32 sum of the rounded inputs
        Tensor want = backend::embedding_backward(narrow ? rounded(g, dt) : g.to(dt), ids, V, pad);
        Tensor gg = gpu(g.to(dt)), gi = gpu(ids);
        Tensor got = backend::embedding_backward(gg, gi, V, pad);
        require_close(want, got, test::tolerance_for(dt), "contiguous");
        CHECK(bytes_of(got) == bytes_of(backend::embedding_backward(gg, gi, V, pad)));
        if (pad >= 0) {
          std::vector<double> row = cpu(got).to(DType::F64).to_vector<double>();
          for (int64_t c = 0; c < D; ++c) REQUIRE(row[size_t(pad * D + c)] == 0.0);
        }
        // a strided gradient: the [4, 11, D] values seen through a permuted layout
        Tensor gs = gpu(g.to(dt).permute({2, 0, 1}).contiguous()).permute({1, 2, 0});
        require_close(want, backend::embedding_backward(gs, gi, V, pad), test::tolerance_for(dt), "strided");
      }
    }
  }
  SECTION("many ids over a larger table") {
    Tensor g = rand_f32({5000, 129}, 20);
    Tensor ids = rand_ids({5000}, 0, 300, 21, DType::I64);
    Tensor got = backend::embedding_backward(gpu(g), gpu(ids), 301, 7);
    require_close(backend::embedding_backward(g, ids, 301, 7), got);
    CHECK(bytes_of(got) == bytes_of(backend::embedding_backward(gpu(g), gpu(ids), 301, 7)));
  }
}

TEST_CASE("GPU index_select matches the CPU along every axis", "[cuda][index]") {
  const Shape shape{4, 5, 6};
  for (DType dt : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64}) {
    Tensor x = Tensor::uniform(shape, 30, 0, -50.0, 50.0, DType::F32).to(dt);
    Tensor gx = gpu(x);
    Tensor strided = gpu(x.permute({2, 1, 0}).contiguous()).permute({2, 1, 0});  // x's values, reversed strides
    for (int64_t axis = 0; axis < 3; ++axis) {
      for (DType it : {DType::I32, DType::I64}) {
        CAPTURE(dtype_name(dt), axis, dtype_name(it));
        Tensor idx = rand_ids({9}, 0, shape[size_t(axis)], 31 + uint64_t(axis), it);  // repeats
        Tensor want = backend::index_select(x, axis, idx);
        require_close(want, backend::index_select(gx, axis, gpu(idx)), 0.0, "contiguous");
        require_close(want, backend::index_select(strided, axis, gpu(idx)), 0.0, "strided x");
        // a strided index: every other element of a longer vector
        Tensor idx2 = rand_ids({18}, 0, shape[size_t(axis)], 32, it);
        Tensor sidx = gpu(idx2).slice(0, 1, 18, 2);
        require_close(backend::index_select(x, axis, idx2.slice(0, 1, 18, 2)),
                      backend::index_select(gx, -3 + axis, sidx), 0.0, "strided index");
      }
    }
  }
  SECTION("odd sizes") {
    for (Shape s : {Shape{1, 1}, Shape{7, 13}, Shape{3, 1025}}) {
      Tensor x = rand_f32(s, 33);
      Tensor idx = rand_ids({5}, 0, s[1], 34, DType::I64);
      require_close(backend::index_select(x, 1, idx), backend::index_select(gpu(x), 1, gpu(idx)), 0.0);
    }
  }
  REQUIRE_THROWS_WITH(backend::index_select(gpu(rand_f32({3, 4}, 1)), 1, gpu(rand_ids({2}, 4, 6, 1, DType::I64))),
                      Catch::Contains("index_select") && Catch::Contains("out of range [0, 4)"));
}

TEST_CASE("GPU index_add matches the CPU along every axis and is bit-reproducible", "[cuda][index]") {
  const Shape shape{4, 5, 6};
  for (DType dt : kFloatTypes) {
    for (int64_t axis = 0; axis < 3; ++axis) {
      CAPTURE(dtype_name(dt), axis);
      Shape ss = shape;
      ss[size_t(axis)] = 13;  // 13 indices into 4..6 positions: many collisions
      Tensor src = rand_f32(ss, 40 + uint64_t(axis));
      Tensor idx = rand_ids({13}, 0, shape[size_t(axis)], 41, axis == 1 ? DType::I32 : DType::I64);
      const bool narrow = dt == DType::F16 || dt == DType::BF16;
      Tensor want = backend::index_add(shape, axis, idx, narrow ? rounded(src, dt) : src.to(dt));
      Tensor gs = gpu(src.to(dt)), gi = gpu(idx);
      Tensor got = backend::index_add(shape, axis, gi, gs);
      require_close(want, got, test::tolerance_for(dt), "contiguous");
      CHECK(bytes_of(got) == bytes_of(backend::index_add(shape, axis, gi, gs)));
      Tensor strided = gpu(src.to(dt).permute({2, 0, 1}).contiguous()).permute({1, 2, 0});
      require_close(want, backend::index_add(shape, axis, gi, strided), test::tolerance_for(dt), "strided");
    }
  }
  SECTION("integer data and an empty index") {
    Tensor src = Tensor::uniform({3, 8}, 42, 0, -100.0, 100.0, DType::F32).to(DType::I32);
    Tensor idx = rand_ids({8}, 0, 3, 43, DType::I64);
    require_close(backend::index_add({3, 3}, 1, idx, src), backend::index_add({3, 3}, 1, gpu(idx), gpu(src)), 0.0);
    Tensor e = backend::index_add({3, 4}, 1, gpu(Tensor::empty({0}, DType::I64)), gpu(Tensor::empty({3, 0})));
    require_close(Tensor::zeros({3, 4}), e, 0.0);
  }
  REQUIRE_THROWS_WITH(
      backend::index_add({3, 4}, 0, gpu(rand_ids({2}, 3, 5, 1, DType::I64)), gpu(rand_f32({2, 4}, 2))),
      Catch::Contains("index_add") && Catch::Contains("out of range [0, 3)"));
}

TEST_CASE("GPU gather matches the CPU along every axis", "[cuda][index]") {
  const Shape xs{4, 5, 6};
  for (DType dt : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64}) {
    Tensor x = Tensor::uniform(xs, 50, 0, -50.0, 50.0, DType::F32).to(dt);
    Tensor strided = gpu(x.permute({1, 2, 0}).contiguous()).permute({2, 0, 1});
    for (int64_t axis = 0; axis < 3; ++axis) {
      CAPTURE(dtype_name(dt), axis);
      Shape is{3, 4, 5};  // smaller than x in the other dims
      is[size_t(axis)] = 7;
      Tensor idx = rand_ids(is, 0, xs[size_t(axis)], 51 + uint64_t(axis), axis == 2 ? DType::I32 : DType::I64);
      Tensor want = backend::gather(x, axis, idx);
      require_close(want, backend::gather(gpu(x), axis, gpu(idx)), 0.0, "contiguous");
      Tensor sidx = gpu(idx.permute({2, 0, 1}).contiguous()).permute({1, 2, 0});
      require_close(want, backend::gather(strided, axis, sidx), 0.0, "strided x and index");
    }
  }
  REQUIRE_THROWS_WITH(backend::gather(gpu(rand_f32({3, 4}, 1)), 1, gpu(rand_ids({3, 2}, -2, 0, 1, DType::I64))),
                      Catch::Contains("gather") && Catch::Contains("out of range [0, 4)"));
}

TEST_CASE("GPU scatter_add matches the CPU along every axis and is bit-reproducible", "[cuda][index]") {
  const Shape xs{4, 5, 6};
  for (DType dt : kFloatTypes) {
    for (int64_t axis = 0; axis < 3; ++axis) {
      CAPTURE(dtype_name(dt), axis);
      Tensor x = rand_f32(xs, 60);
      Shape is{3, 4, 5};
      is[size_t(axis)] = 9;  // collisions along the axis
      Tensor idx = rand_ids(is, 0, xs[size_t(axis)], 61 + uint64_t(axis), DType::I64);
      Tensor src = rand_f32(is, 62);
      // both sides add in index order and round each sum to dt: the CPU result in dt is the reference
      Tensor want = backend::scatter_add(x.to(dt), axis, idx, src.to(dt));
      Tensor gx = gpu(x.to(dt)), gi = gpu(idx), gs = gpu(src.to(dt));
      Tensor got = backend::scatter_add(gx, axis, gi, gs);
      require_close(want, got, test::tolerance_for(dt), "contiguous");
      CHECK(bytes_of(got) == bytes_of(backend::scatter_add(gx, axis, gi, gs)));
      Tensor sx = gpu(x.to(dt).permute({2, 0, 1}).contiguous()).permute({1, 2, 0});
      Tensor ss = gpu(src.to(dt).permute({1, 2, 0}).contiguous()).permute({2, 0, 1});
      require_close(want, backend::scatter_add(sx, axis, gi, ss), test::tolerance_for(dt), "strided");
    }
  }
  SECTION("the input is not modified") {
    Tensor x = rand_f32({3, 4}, 63);
    Tensor gx = gpu(x);
    backend::scatter_add(gx, 1, gpu(rand_ids({3, 2}, 0, 4, 64, DType::I64)), gpu(rand_f32({3, 2}, 65)));
    require_close(x, gx, 0.0);
  }
  REQUIRE_THROWS_WITH(backend::scatter_add(gpu(rand_f32({3, 4}, 1)), 0, gpu(rand_ids({1, 4}, 3, 4, 1, DType::I32)),
                                           gpu(rand_f32({1, 4}, 2))),
                      Catch::Contains("scatter_add") && Catch::Contains("index 3 out of range [0, 3)"));
  REQUIRE_THROWS_WITH(backend::scatter_add(gpu(rand_f32({3, 4}, 1)), 0, rand_ids({1, 4}, 0, 3, 1, DType::I32),
                                           gpu(rand_f32({1, 4}, 2))),
                      Catch::Contains("scatter_add"));
}

TEST_CASE("GPU concat matches the CPU along every axis; split gives views", "[cuda][concat][index]") {
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32}) {
    for (int64_t axis = 0; axis < 3; ++axis) {
      CAPTURE(dtype_name(dt), axis);
      Shape s0{2, 3, 4}, s1{2, 3, 4}, s2{2, 3, 4};
      s0[size_t(axis)] = 3;
      s1[size_t(axis)] = 0;  // an empty piece
      s2[size_t(axis)] = 5;
      Tensor a = Tensor::uniform(s0, 70, 0, -9.0, 9.0, DType::F32).to(dt);
      Tensor b = Tensor::empty(s1, dt);
      Tensor c = Tensor::uniform(s2, 71, 0, -9.0, 9.0, DType::F32).to(dt);
      Tensor want = backend::concat({a, b, c}, axis);
      Tensor cs = gpu(c.permute({2, 1, 0}).contiguous()).permute({2, 1, 0});  // strided piece
      Tensor got = backend::concat({gpu(a), gpu(b), cs}, axis - 3);
      require_close(want, got, 0.0, "concat");
      // split of the GPU result: views whose copies equal the CPU pieces
      std::vector<Tensor> pieces = backend::split(got, {3, 0, 5}, axis);
      REQUIRE(pieces.size() == 3);
      CHECK(pieces[0].impl().storage == got.impl().storage);
      require_close(a, backend::concat({pieces[0]}, axis), 0.0, "piece 0");
      require_close(c, backend::concat({pieces[2]}, axis), 0.0, "piece 2");
    }
  }
  SECTION("odd sizes") {
    Tensor a = rand_f32({3, 1025}, 72), b = rand_f32({3, 1}, 73);
    require_close(backend::concat({a, b}, 1), backend::concat({gpu(a), gpu(b)}, 1), 0.0);
    Tensor c = rand_f32({7, 13}, 74);
    require_close(backend::concat({c, c.transpose(0, 1).contiguous().transpose(0, 1)}, 0),
                  backend::concat({gpu(c), gpu_transposed_view(c)}, 0), 0.0);
  }
  REQUIRE_THROWS_WITH(backend::concat({gpu(rand_f32({2, 3}, 1)), rand_f32({2, 3}, 2)}, 0),
                      Catch::Contains("concat"));
  REQUIRE_THROWS_WITH(backend::concat({gpu(rand_f32({2, 3}, 1)), gpu(rand_f32({2, 4}, 2))}, 0),
                      Catch::Contains("concat"));
}

TEST_CASE("GPU index ops reject tensors on different devices", "[cuda][index]") {
  Tensor x = rand_f32({3, 4}, 1);
  Tensor idx = rand_ids({2}, 0, 3, 2, DType::I64);
  REQUIRE_THROWS_WITH(backend::index_select(gpu(x), 0, idx), Catch::Contains("index_select"));
  REQUIRE_THROWS_WITH(backend::index_add({3, 4}, 0, gpu(idx), rand_f32({2, 4}, 3)), Catch::Contains("index_add"));
  REQUIRE_THROWS_WITH(backend::gather(x, 0, gpu(rand_ids({1, 4}, 0, 3, 4, DType::I64))), Catch::Contains("gather"));
  REQUIRE_THROWS_WITH(backend::embedding_backward(gpu(rand_f32({2, 4}, 5)), idx, 3), Catch::Contains("embedding"));
}
