// GPU softmax, layer norm, dropout and cross-entropy against their CPU twins.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "strata/backend/cross_entropy.h"
#include "strata/backend/cuda/dropout.h"
#include "strata/backend/dropout.h"
#include "strata/backend/layer_norm.h"
#include "strata/backend/softmax.h"

using namespace strata;
using test::cpu;
using test::gpu;
using test::require_close;

namespace {

Tensor rand_t(const Shape& s, uint64_t seed, double lo = -3, double hi = 3, DType dt = DType::F32) {
  return Tensor::uniform(s, seed, 0, lo, hi, dt);
}

// x rounded to a 16-bit type and back: the CPU twin's input for a 16-bit GPU run.
Tensor rounded(const Tensor& x, DType dt) { return x.to(dt).to(DType::F32); }

// Same dtype, shape and bytes (a is on the CPU, b on either device).
bool same_bits(const Tensor& a, const Tensor& b_any) {
  const Tensor b = b_any.device().is_cpu() ? b_any.contiguous() : cpu(b_any);
  const Tensor ac = a.contiguous();
  return ac.dtype() == b.dtype() && ac.shape() == b.shape() &&
         std::memcmp(ac.raw_data(), b.raw_data(), ac.nbytes()) == 0;
}

std::string tag(const std::string& what, const Shape& s, int64_t axis) {
  return what + " " + shape_str(s) + " axis " + std::to_string(axis);
}

constexpr float kInf = std::numeric_limits<float>::infinity();

}  // namespace

// ---------------------------------------------------------------- softmax

TEST_CASE("cuda softmax and log_softmax match the CPU along every axis", "[cuda][nn]") {
  const std::vector<Shape> shapes = {{1, 1}, {1, 7}, {7, 13}, {13, 33}, {3, 1025}, {2, 3, 5}, {7, 1}};
  for (DType dt : {DType::F32, DType::F64}) {
    uint64_t seed = 1;
    for (const Shape& s : shapes) {
      const Tensor x = rand_t(s, seed++, -5, 5, dt);
      const Tensor xg = gpu(x);
      for (int64_t a = 0; a < int64_t(s.size()); ++a) {
        require_close(backend::softmax(x, a), backend::softmax(xg, a), -1, tag("softmax", s, a));
        require_close(backend::log_softmax(x, a), backend::log_softmax(xg, a), -1, tag("log_softmax", s, a));
      }
      require_close(backend::softmax(x, -1), backend::softmax(xg, -1), -1, tag("softmax", s, -1));
    }
  }
}

TEST_CASE("cuda softmax handles strided views, broadcast inputs and many strided lanes", "[cuda][nn]") {
  const Tensor x = rand_t({13, 33}, 11, -4, 4);
  const Tensor xg = gpu(x);
  SECTION("transposed view") {
    for (int64_t a = 0; a < 2; ++a) {
      require_close(backend::softmax(x.transpose(0, 1), a), backend::softmax(xg.transpose(0, 1), a), -1,
                    tag("softmax^T", {33, 13}, a));
      require_close(backend::log_softmax(x.transpose(0, 1), a), backend::log_softmax(xg.transpose(0, 1), a), -1,
                    tag("log_softmax^T", {33, 13}, a));
    }
  }
  SECTION("sliced view with a step") {
    for (int64_t a = 0; a < 2; ++a)
      require_close(backend::softmax(x.slice(1, 1, 32, 3), a), backend::softmax(xg.slice(1, 1, 32, 3), a), -1,
                    tag("softmax slice", {13, 11}, a));
  }
  SECTION("broadcast input (stride 0)") {
    const Tensor b = rand_t({5, 1}, 12);
    for (int64_t a = 0; a < 2; ++a)
      require_close(backend::softmax(b.expand({5, 40}), a), backend::softmax(gpu(b).expand({5, 40}), a), -1,
                    tag("softmax expand", {5, 40}, a));
  }
  SECTION("one thread per lane: 2048 strided lanes") {
    const Tensor w = rand_t({33, 2048}, 13, -6, 6);
    const Tensor wg = gpu(w);
    require_close(backend::softmax(w, 0), backend::softmax(wg, 0), -1, "softmax [33, 2048] axis 0");
    require_close(backend::log_softmax(w, 0), backend::log_softmax(wg, 0), -1, "log_softmax [33, 2048] axis 0");
    const Tensor w3 = rand_t({4, 5, 300}, 14);
    require_close(backend::softmax(w3, 1), backend::softmax(gpu(w3), 1), -1, "softmax [4, 5, 300] axis 1");
  }
}

TEST_CASE("cuda softmax gives zeros / -inf on fully masked lanes and exact zeros for -inf logits", "[cuda][nn]") {
  const std::vector<float> v = {-kInf, -kInf, -kInf, -kInf,  // fully masked
                                1.f,   -kInf, 2.f,   -kInf,  // partly masked
                                1e4f,  3e4f,  -1e4f, 3e4f};  // huge logits
  const Tensor x = Tensor::from_vector<float>(v, {3, 4});
  const Tensor xg = gpu(x);
  for (int64_t a = 0; a < 2; ++a) {
    require_close(backend::softmax(x, a), backend::softmax(xg, a), -1, tag("masked softmax", {3, 4}, a));
    require_close(backend::log_softmax(x, a), backend::log_softmax(xg, a), -1, tag("masked log_softmax", {3, 4}, a));
  }
  const std::vector<float> y = cpu(backend::softmax(xg, 1)).to_vector<float>();
  for (int i = 0; i < 4; ++i) CHECK(y[size_t(i)] == 0.f);
  CHECK(y[5] == 0.f);
  CHECK(y[7] == 0.f);
  const std::vector<float> ly = cpu(backend::log_softmax(xg, 1)).to_vector<float>();
  for (int i = 0; i < 4; ++i) CHECK(ly[size_t(i)] == -kInf);
}

TEST_CASE("cuda softmax propagates NaN to its lane only", "[cuda][nn]") {
  const Tensor x = Tensor::from_vector<float>({1.f, std::nanf(""), 2.f, 0.5f, 1.5f, -1.f}, {2, 3});
  for (bool log : {false, true}) {
    const Tensor y = cpu(log ? backend::log_softmax(gpu(x), 1) : backend::softmax(gpu(x), 1));
    const std::vector<float> v = y.to_vector<float>();
    for (int i = 0; i < 3; ++i) CHECK(std::isnan(v[size_t(i)]));
    const Tensor ref = log ? backend::log_softmax(x, 1) : backend::softmax(x, 1);
    require_close(ref.slice(0, 1, 2), gpu(y.slice(0, 1, 2).contiguous()), -1, "clean lane next to a NaN lane");
  }
}

TEST_CASE("cuda softmax_backward and log_softmax_backward match the CPU", "[cuda][nn]") {
  const std::vector<Shape> shapes = {{1, 1}, {7, 13}, {3, 1025}, {2, 3, 5}, {33, 2048}};
  for (DType dt : {DType::F32, DType::F64}) {
    uint64_t seed = 40;
    for (const Shape& s : shapes) {
      const Tensor x = rand_t(s, seed++, -4, 4, dt);
      const Tensor g = rand_t(s, seed++, -1, 1, dt);
      for (int64_t a = 0; a < int64_t(s.size()); ++a) {
        const Tensor y = backend::softmax(x, a), ly = backend::log_softmax(x, a);
        require_close(backend::softmax_backward(g, y, a), backend::softmax_backward(gpu(g), gpu(y), a), -1,
                      tag("softmax_backward", s, a));
        require_close(backend::log_softmax_backward(g, ly, a), backend::log_softmax_backward(gpu(g), gpu(ly), a), -1,
                      tag("log_softmax_backward", s, a));
      }
    }
  }
  SECTION("broadcast and transposed gradients") {
    const Tensor x = rand_t({7, 13}, 50);
    const Tensor y = backend::softmax(x, 1), ly = backend::log_softmax(x, 1);
    const Tensor g = rand_t({1, 13}, 51);
    require_close(backend::softmax_backward(g.expand({7, 13}), y, 1),
                  backend::softmax_backward(gpu(g).expand({7, 13}), gpu(y), 1), -1, "broadcast g");
    const Tensor gt = rand_t({13, 7}, 52);
    require_close(backend::log_softmax_backward(gt.transpose(0, 1), ly, 1),
                  backend::log_softmax_backward(gpu(gt).transpose(0, 1), gpu(ly), 1), -1, "transposed g");
  }
}

TEST_CASE("cuda softmax in bf16/f16 matches the CPU in f32 on rounded inputs", "[cuda][nn]") {
  for (DType dt : {DType::BF16, DType::F16}) {
    for (const Shape& s : std::vector<Shape>{{7, 1025}, {13, 33}, {3, 2048}}) {
      const Tensor x = rand_t(s, 60, -4, 4);
      const Tensor x16 = gpu(x.to(dt));
      const Tensor xr = rounded(x, dt);
      for (int64_t a = 0; a < 2; ++a) {
        const Tensor y16 = backend::softmax(x16, a);
        REQUIRE(y16.dtype() == dt);
        require_close(backend::softmax(xr, a), y16, -1, tag("softmax 16-bit", s, a));
        const Tensor ly16 = backend::log_softmax(x16, a);
        require_close(backend::log_softmax(xr, a), ly16, -1, tag("log_softmax 16-bit", s, a));
        // backward on the same 16-bit y and g on both sides
        const Tensor g16 = gpu(rand_t(s, 61, -1, 1).to(dt));
        const Tensor g32 = cpu(g16).to(DType::F32);
        require_close(backend::softmax_backward(g32, cpu(y16).to(DType::F32), a), backend::softmax_backward(g16, y16, a),
                      -1, tag("softmax_backward 16-bit", s, a));
        require_close(backend::log_softmax_backward(g32, cpu(ly16).to(DType::F32), a),
                      backend::log_softmax_backward(g16, ly16, a), -1, tag("log_softmax_backward 16-bit", s, a));
      }
    }
  }
}

TEST_CASE("cuda softmax rejects bad axes, integer tensors, mismatched gradients and mixed devices", "[cuda][nn]") {
  const Tensor x = rand_t({2, 3}, 70);
  const Tensor xg = gpu(x);
  REQUIRE_THROWS_WITH(backend::softmax(xg, 2), Catch::Contains("softmax") && Catch::Contains("axis 2"));
  REQUIRE_THROWS_WITH(backend::log_softmax(gpu(Tensor::zeros({3}, DType::I32)), 0), Catch::Contains("log_softmax"));
  const Tensor yg = backend::softmax(xg, 1);
  REQUIRE_THROWS_WITH(backend::softmax_backward(gpu(rand_t({3, 2}, 1)), yg, 1), Catch::Contains("softmax_backward"));
  REQUIRE_THROWS_WITH(backend::softmax_backward(x, yg, 1), Catch::Contains("softmax_backward"));
  REQUIRE_THROWS_WITH(backend::log_softmax_backward(yg, cpu(yg), 1), Catch::Contains("log_softmax_backward"));
}

TEST_CASE("cuda softmax of an empty tensor is empty", "[cuda][nn]") {
  const Tensor y = backend::softmax(gpu(Tensor::zeros({0, 5})), 1);
  CHECK(y.shape() == Shape{0, 5});
  CHECK(y.device().is_cuda());
}

// ---------------------------------------------------------------- layer norm

TEST_CASE("cuda layer_norm forward matches the CPU with and without affine parameters", "[cuda][nn]") {
  const std::vector<Shape> shapes = {{1, 1}, {7, 13}, {13, 1025}, {3, 5, 33}, {1, 4096}};
  for (DType dt : {DType::F32, DType::F64}) {
    uint64_t seed = 100;
    for (const Shape& s : shapes) {
      const int64_t D = s.back();
      const Tensor x = rand_t(s, seed++, -2, 3, dt);
      const Tensor gamma = rand_t({D}, seed++, 0.5, 1.5, dt), beta = rand_t({D}, seed++, -1, 1, dt);
      for (int affine = 0; affine < 4; ++affine) {
        const Tensor g = (affine & 1) ? gamma : Tensor(), b = (affine & 2) ? beta : Tensor();
        const backend::LayerNormForward c = backend::layer_norm_forward(x, g, b, 1e-5);
        const backend::LayerNormForward r = backend::layer_norm_forward(
            gpu(x), g.defined() ? gpu(g) : Tensor(), b.defined() ? gpu(b) : Tensor(), 1e-5);
        const std::string w = "layer_norm " + shape_str(s) + " affine " + std::to_string(affine);
        REQUIRE(r.mean.dtype() == dt);
        REQUIRE(r.rstd.dtype() == dt);
        require_close(c.y, r.y, -1, w + " y");
        require_close(c.mean, r.mean, -1, w + " mean");
        require_close(c.rstd, r.rstd, -1, w + " rstd");
      }
    }
  }
}

TEST_CASE("cuda layer_norm takes strided inputs and parameters", "[cuda][nn]") {
  const Tensor xt = rand_t({33, 13}, 110);  // transposed: the normalised axis has stride 13
  const Tensor gamma = rand_t({66}, 111, 0.5, 1.5), beta = rand_t({99}, 112);
  const Tensor g = gamma.slice(0, 0, 66, 2), b = beta.slice(0, 1, 99, 3);
  const backend::LayerNormForward c = backend::layer_norm_forward(xt.transpose(0, 1), g, b, 1e-5);
  const backend::LayerNormForward r = backend::layer_norm_forward(
      gpu(xt).transpose(0, 1), gpu(gamma).slice(0, 0, 66, 2), gpu(beta).slice(0, 1, 99, 3), 1e-5);
  require_close(c.y, r.y, -1, "strided y");
  require_close(c.mean, r.mean, -1, "strided mean");
  require_close(c.rstd, r.rstd, -1, "strided rstd");
  const Tensor dy = rand_t({13, 33}, 113);
  const backend::LayerNormBackward cb = backend::layer_norm_backward(dy, xt.transpose(0, 1), g, c);
  const backend::LayerNormBackward rb =
      backend::layer_norm_backward(gpu(dy), gpu(xt).transpose(0, 1), gpu(gamma).slice(0, 0, 66, 2), r);
  require_close(cb.dx, rb.dx, -1, "strided dx");
  require_close(cb.dgamma, rb.dgamma, -1, "strided dgamma");
  require_close(cb.dbeta, rb.dbeta, -1, "strided dbeta");
}

TEST_CASE("cuda layer_norm statistics stay accurate when the mean dwarfs the spread", "[cuda][nn]") {
  const Tensor x = backend::layer_norm_forward(rand_t({5, 300}, 120, -1, 1), Tensor(), Tensor(), 0).y;  // unit rows
  const Tensor shifted = Tensor::from_vector<float>(
      [&] {
        std::vector<float> v = x.to_vector<float>();
        for (float& e : v) e = 1e4f + e;
        return v;
      }(),
      {5, 300});
  const backend::LayerNormForward c = backend::layer_norm_forward(shifted, Tensor(), Tensor(), 1e-5);
  const backend::LayerNormForward r = backend::layer_norm_forward(gpu(shifted), Tensor(), Tensor(), 1e-5);
  require_close(c.y, r.y, -1, "y with mean 1e4");
  require_close(c.rstd, r.rstd, -1, "rstd with mean 1e4");
}

TEST_CASE("cuda layer_norm backward matches the CPU", "[cuda][nn]") {
  const std::vector<Shape> shapes = {{1, 1}, {1, 13}, {7, 13}, {13, 1025}, {300, 33}, {2, 150, 7}};
  for (DType dt : {DType::F32, DType::F64}) {
    uint64_t seed = 130;
    for (const Shape& s : shapes) {
      const int64_t D = s.back();
      const Tensor x = rand_t(s, seed++, -2, 3, dt), dy = rand_t(s, seed++, -1, 1, dt);
      const Tensor gamma = rand_t({D}, seed++, 0.5, 1.5, dt), beta = rand_t({D}, seed++, -1, 1, dt);
      for (bool affine : {false, true}) {
        const Tensor g = affine ? gamma : Tensor(), b = affine ? beta : Tensor();
        const Tensor gg = affine ? gpu(gamma) : Tensor(), bg = affine ? gpu(beta) : Tensor();
        const backend::LayerNormForward c = backend::layer_norm_forward(x, g, b, 1e-5);
        const backend::LayerNormForward r = backend::layer_norm_forward(gpu(x), gg, bg, 1e-5);
        const backend::LayerNormBackward cb = backend::layer_norm_backward(dy, x, g, c);
        const backend::LayerNormBackward rb = backend::layer_norm_backward(gpu(dy), gpu(x), gg, r);
        const std::string w = "layer_norm_backward " + shape_str(s) + (affine ? " affine" : "");
        require_close(cb.dx, rb.dx, -1, w + " dx");
        require_close(cb.dgamma, rb.dgamma, -1, w + " dgamma");
        require_close(cb.dbeta, rb.dbeta, -1, w + " dbeta");
      }
    }
  }
  SECTION("broadcast gradient (stride 0)") {
    const Tensor x = rand_t({9, 17}, 150), dy = rand_t({1, 17}, 151), gamma = rand_t({17}, 152, 0.5, 1.5);
    const backend::LayerNormForward c = backend::layer_norm_forward(x, gamma, Tensor(), 1e-5);
    const backend::LayerNormForward r = backend::layer_norm_forward(gpu(x), gpu(gamma), Tensor(), 1e-5);
    const backend::LayerNormBackward cb = backend::layer_norm_backward(dy.expand({9, 17}), x, gamma, c);
    const backend::LayerNormBackward rb =
        backend::layer_norm_backward(gpu(dy).expand({9, 17}), gpu(x), gpu(gamma), r);
    require_close(cb.dx, rb.dx, -1, "broadcast dy: dx");
    require_close(cb.dgamma, rb.dgamma, -1, "broadcast dy: dgamma");
    require_close(cb.dbeta, rb.dbeta, -1, "broadcast dy: dbeta");
  }
}

TEST_CASE("cuda layer_norm is bit-identical across repeated runs", "[cuda][nn]") {
  const Tensor x = gpu(rand_t({1000, 257}, 160)), dy = gpu(rand_t({1000, 257}, 161));
  const Tensor gamma = gpu(rand_t({257}, 162, 0.5, 1.5)), beta = gpu(rand_t({257}, 163));
  const backend::LayerNormForward f1 = backend::layer_norm_forward(x, gamma, beta, 1e-5);
  const backend::LayerNormForward f2 = backend::layer_norm_forward(x, gamma, beta, 1e-5);
  CHECK(same_bits(cpu(f1.y), f2.y));
  CHECK(same_bits(cpu(f1.rstd), f2.rstd));
  const backend::LayerNormBackward b1 = backend::layer_norm_backward(dy, x, gamma, f1);
  const backend::LayerNormBackward b2 = backend::layer_norm_backward(dy, x, gamma, f2);
  CHECK(same_bits(cpu(b1.dx), b2.dx));
  CHECK(same_bits(cpu(b1.dgamma), b2.dgamma));
  CHECK(same_bits(cpu(b1.dbeta), b2.dbeta));
}

TEST_CASE("cuda layer_norm in bf16/f16 keeps f32 statistics and matches the CPU on rounded inputs", "[cuda][nn]") {
  for (DType dt : {DType::BF16, DType::F16}) {
    for (const Shape& s : std::vector<Shape>{{7, 13}, {13, 1025}, {300, 33}}) {
      const int64_t D = s.back();
      const Tensor x = rand_t(s, 170, -2, 3), dy = rand_t(s, 171, -1, 1);
      const Tensor gamma = rand_t({D}, 172, 0.5, 1.5), beta = rand_t({D}, 173, -1, 1);
      const backend::LayerNormForward c =
          backend::layer_norm_forward(rounded(x, dt), rounded(gamma, dt), rounded(beta, dt), 1e-5);
      const Tensor x16 = gpu(x.to(dt)), g16 = gpu(gamma.to(dt)), b16 = gpu(beta.to(dt));
      const backend::LayerNormForward r = backend::layer_norm_forward(x16, g16, b16, 1e-5);
      const std::string w = std::string("layer_norm ") + dtype_name(dt) + " " + shape_str(s);
      REQUIRE(r.y.dtype() == dt);
      REQUIRE(r.mean.dtype() == DType::F32);
      REQUIRE(r.rstd.dtype() == DType::F32);
      require_close(c.y, r.y, -1, w + " y");
      require_close(c.mean, r.mean, -1, w + " mean");
      require_close(c.rstd, r.rstd, -1, w + " rstd");
      const backend::LayerNormBackward cb =
          backend::layer_norm_backward(rounded(dy, dt), rounded(x, dt), rounded(gamma, dt), c);
      const backend::LayerNormBackward rb = backend::layer_norm_backward(gpu(dy.to(dt)), x16, g16, r);
      REQUIRE(rb.dx.dtype() == dt);
      require_close(cb.dx, rb.dx, -1, w + " dx");
      require_close(cb.dgamma, rb.dgamma, -1, w + " dgamma");
      require_close(cb.dbeta, rb.dbeta, -1, w + " dbeta");
    }
  }
}

TEST_CASE("cuda layer_norm of an input without rows gives zero parameter gradients", "[cuda][nn]") {
  const Tensor x = gpu(Tensor::zeros({0, 5})), gamma = gpu(Tensor::ones({5}));
  const backend::LayerNormForward f = backend::layer_norm_forward(x, gamma, Tensor(), 1e-5);
  CHECK(f.y.shape() == Shape{0, 5});
  CHECK(f.mean.shape() == Shape{0});
  const backend::LayerNormBackward b = backend::layer_norm_backward(x, x, gamma, f);
  CHECK(b.dx.shape() == Shape{0, 5});
  CHECK(cpu(b.dgamma).to_vector<float>() == std::vector<float>(5, 0.f));
  CHECK(cpu(b.dbeta).to_vector<float>() == std::vector<float>(5, 0.f));
}

TEST_CASE("cuda layer_norm rejects mismatched parameters, statistics and devices", "[cuda][nn]") {
  const Tensor x = gpu(rand_t({3, 4}, 180));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(x, gpu(rand_t({5}, 1)), Tensor(), 1e-5),
                      Catch::Contains("layer_norm") && Catch::Contains("gamma"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(x, rand_t({4}, 1), Tensor(), 1e-5), Catch::Contains("layer_norm"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(x, Tensor(), Tensor(), -1.0), Catch::Contains("layer_norm"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(gpu(Tensor::zeros({3, 4}, DType::I32)), Tensor(), Tensor(), 1e-5),
                      Catch::Contains("layer_norm"));
  backend::LayerNormForward f = backend::layer_norm_forward(x, Tensor(), Tensor(), 1e-5);
  REQUIRE_THROWS_WITH(backend::layer_norm_backward(gpu(rand_t({4, 3}, 1)), x, Tensor(), f),
                      Catch::Contains("layer_norm_backward"));
  backend::LayerNormForward wrong = f;
  wrong.rstd = gpu(rand_t({4}, 2));
  REQUIRE_THROWS_WITH(backend::layer_norm_backward(x, x, Tensor(), wrong), Catch::Contains("layer_norm_backward"));
  wrong.rstd = cpu(f.rstd);
  REQUIRE_THROWS_WITH(backend::layer_norm_backward(x, x, Tensor(), wrong), Catch::Contains("layer_norm_backward"));
}

// ---------------------------------------------------------------- dropout

TEST_CASE("cuda dropout masks are bit-identical to the CPU masks", "[cuda][nn]") {
  const std::vector<Shape> shapes = {{1}, {7, 13}, {3, 1025}, {1000003}};
  const std::vector<PhiloxStream> streams = {PhiloxStream{0, 0}, PhiloxStream{42, 7},
                                             PhiloxStream{0x0123456789abcdefull, 5000000000ull}};
  for (DType dt : {DType::F32, DType::F64}) {
    for (const Shape& s : shapes) {
      for (const PhiloxStream& st : streams) {
        for (double p : {0.0, 0.1, 0.5, 0.9, 1.0}) {
          const Tensor c = backend::dropout_mask(s, dt, p, st);
          const Tensor g = backend::cuda::dropout_mask(s, dt, p, st, Device::cuda(0));
          INFO("dropout " << dtype_name(dt) << " " << shape_str(s) << " p " << p << " seed " << st.seed << " offset "
                          << st.offset);
          REQUIRE(g.device().is_cuda());
          REQUIRE(same_bits(c, g));
        }
      }
    }
  }
}

TEST_CASE("cuda dropout masks in bf16/f16 are the CPU f32 mask rounded", "[cuda][nn]") {
  const PhiloxStream st{1234, 99};
  for (DType dt : {DType::BF16, DType::F16}) {
    for (double p : {0.1, 0.3}) {
      const Tensor c = backend::dropout_mask({13, 1025}, DType::F32, p, st).to(dt);
      const Tensor g = backend::cuda::dropout_mask({13, 1025}, dt, p, st, Device::cuda(0));
      REQUIRE(same_bits(c, g));
    }
  }
}

TEST_CASE("cuda dropout rejects p outside [0, 1] and integer dtypes", "[cuda][nn]") {
  REQUIRE_THROWS_WITH(backend::cuda::dropout_mask({3}, DType::F32, 1.5, PhiloxStream{}, Device::cuda(0)),
                      Catch::Contains("dropout"));
  REQUIRE_THROWS_WITH(backend::cuda::dropout_mask({3}, DType::I64, 0.5, PhiloxStream{}, Device::cuda(0)),
                      Catch::Contains("dropout"));
}

// ---------------------------------------------------------------- cross-entropy

namespace {

// Targets with every fourth row (from row 1) set to ignore_index.
Tensor make_targets(int64_t N, int64_t V, int64_t ignore_index, DType dt = DType::I64) {
  std::vector<int64_t> t(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) t[size_t(i)] = i % 4 == 1 ? ignore_index : (i * 7919 + 3) % V;
  return Tensor::from_vector(t, {N}).to(dt);
}

// The MoE criterion's smoothing: a = 1 - eps, b = eps / V.
void ce_check(const Tensor& logits_c, const Tensor& logits_g, const Tensor& target_c, const Tensor& target_g,
              double eps, int64_t ignore, const std::string& w, double tol = -1) {
  const double V = double(logits_c.size(1));
  const double a = 1 - eps, b = eps / V;
  const backend::CrossEntropyForward c = backend::label_smoothed_ce_forward(logits_c, target_c, a, b, ignore);
  const backend::CrossEntropyForward g = backend::label_smoothed_ce_forward(logits_g, target_g, a, b, ignore);
  CHECK(g.tokens == c.tokens);
  require_close(c.loss_sum, g.loss_sum, tol, w + " loss_sum");
  require_close(c.nll_sum, g.nll_sum, tol, w + " nll_sum");
  require_close(c.lse, g.lse, tol, w + " lse");
  const Tensor grad_c = Tensor::scalar(0.37, c.loss_sum.dtype());
  const Tensor dc = backend::label_smoothed_ce_backward(grad_c, logits_c, target_c, c.lse, a, b, ignore);
  const Tensor dg = backend::label_smoothed_ce_backward(gpu(Tensor::scalar(0.37, g.loss_sum.dtype())), logits_g,
                                                        target_g, g.lse, a, b, ignore);
  REQUIRE(dg.dtype() == logits_g.dtype());
  require_close(dc, dg, -1, w + " grad");
}

}  // namespace

TEST_CASE("cuda label-smoothed cross-entropy matches the CPU", "[cuda][nn]") {
  for (DType dt : {DType::F32, DType::F64}) {
    for (int64_t N : {1, 7, 13}) {
      for (int64_t V : {1, 33, 1025, 32003}) {
        for (double eps : {0.0, 0.1}) {
          const Tensor logits = rand_t({N, V}, uint64_t(200 + N + V), -6, 6, dt);
          const int64_t ignore = -100;
          const Tensor t64 = make_targets(N, V, ignore);
          const std::string w = std::string("ce ") + dtype_name(dt) + " [" + std::to_string(N) + ", " +
                                std::to_string(V) + "] eps " + std::to_string(eps);
          ce_check(logits, gpu(logits), t64, gpu(t64), eps, ignore, w);
          const Tensor t32 = t64.to(DType::I32);
          ce_check(logits, gpu(logits), t32, gpu(t32), eps, ignore, w + " i32 targets");
        }
      }
    }
  }
  SECTION("ignore_index that is also a class id") {
    const Tensor logits = rand_t({13, 33}, 230, -4, 4);
    const Tensor t = make_targets(13, 33, 0);
    ce_check(logits, gpu(logits), t, gpu(t), 0.1, 0, "ignore_index 0");
  }
  SECTION("every row ignored") {
    const Tensor logits = rand_t({5, 33}, 231);
    const Tensor t = Tensor::from_vector<int64_t>(std::vector<int64_t>(5, -100), {5});
    const backend::CrossEntropyForward g = backend::label_smoothed_ce_forward(gpu(logits), gpu(t), 0.9, 0.1 / 33, -100);
    CHECK(g.tokens == 0);
    CHECK(cpu(g.loss_sum).item() == 0.0);
    CHECK(cpu(g.nll_sum).item() == 0.0);
  }
}

TEST_CASE("cuda cross-entropy takes strided logits and targets", "[cuda][nn]") {
  const int64_t N = 13, V = 1025;
  const Tensor lt = rand_t({V, N}, 240, -5, 5);  // transposed view: vocab stride N
  const Tensor tl = make_targets(2 * N, V, -100).slice(0, 0, 2 * N, 2);
  const Tensor tlg = gpu(make_targets(2 * N, V, -100)).slice(0, 0, 2 * N, 2);
  ce_check(lt.transpose(0, 1), gpu(lt).transpose(0, 1), tl, tlg, 0.1, -100, "strided ce");
}

TEST_CASE("cuda cross-entropy in bf16/f16 keeps f32 statistics and matches the CPU on rounded logits",
          "[cuda][nn]") {
  for (DType dt : {DType::BF16, DType::F16}) {
    for (int64_t V : {33, 32003}) {
      const int64_t N = 7;
      const Tensor logits = rand_t({N, V}, 250, -6, 6);
      const Tensor l16 = gpu(logits.to(dt)), lr = rounded(logits, dt);
      const Tensor t = make_targets(N, V, -100);
      const double eps = 0.1, a = 1 - eps, b = eps / double(V);
      const backend::CrossEntropyForward c = backend::label_smoothed_ce_forward(lr, t, a, b, -100);
      const backend::CrossEntropyForward g = backend::label_smoothed_ce_forward(l16, gpu(t), a, b, -100);
      const std::string w = std::string("ce ") + dtype_name(dt) + " V " + std::to_string(V);
      REQUIRE(g.lse.dtype() == DType::F32);
      REQUIRE(g.loss_sum.dtype() == DType::F32);
      CHECK(g.tokens == c.tokens);
      require_close(c.loss_sum, g.loss_sum, -1, w + " loss_sum");
      require_close(c.nll_sum, g.nll_sum, -1, w + " nll_sum");
      require_close(c.lse, g.lse, -1, w + " lse");
      const Tensor dc = backend::label_smoothed_ce_backward(Tensor::scalar(2.0), lr, t, c.lse, a, b, -100);
      const Tensor dg = backend::label_smoothed_ce_backward(gpu(Tensor::scalar(2.0)), l16, gpu(t), g.lse, a, b, -100);
      REQUIRE(dg.dtype() == dt);
      require_close(dc, dg, -1, w + " grad");
    }
  }
}

TEST_CASE("cuda cross-entropy sums are bit-identical across repeated runs", "[cuda][nn]") {
  const Tensor logits = gpu(rand_t({257, 1025}, 260, -8, 8));
  const Tensor t = gpu(make_targets(257, 1025, -100));
  const backend::CrossEntropyForward f1 = backend::label_smoothed_ce_forward(logits, t, 0.9, 0.1 / 1025, -100);
  const backend::CrossEntropyForward f2 = backend::label_smoothed_ce_forward(logits, t, 0.9, 0.1 / 1025, -100);
  CHECK(same_bits(cpu(f1.loss_sum), f2.loss_sum));
  CHECK(same_bits(cpu(f1.nll_sum), f2.nll_sum));
  CHECK(same_bits(cpu(f1.lse), f2.lse));
}

TEST_CASE("cuda cross-entropy rejects targets outside the vocabulary and mixed devices", "[cuda][nn]") {
  const Tensor logits = gpu(rand_t({3, 5}, 270));
  const Tensor bad = gpu(Tensor::from_vector<int64_t>({0, 5, -100}, {3}));
  REQUIRE_THROWS_WITH(backend::label_smoothed_ce_forward(logits, bad, 1, 0, -100),
                      Catch::Contains("label_smoothed_cross_entropy") && Catch::Contains("row 1"));
  const Tensor neg = gpu(Tensor::from_vector<int64_t>({0, 1, -3}, {3}));
  REQUIRE_THROWS_WITH(backend::label_smoothed_ce_forward(logits, neg, 1, 0, -100),
                      Catch::Contains("outside the vocabulary"));
  const Tensor ok = Tensor::from_vector<int64_t>({0, 1, 2}, {3});
  REQUIRE_THROWS_WITH(backend::label_smoothed_ce_forward(logits, ok, 1, 0, -100),
                      Catch::Contains("label_smoothed_cross_entropy"));
}
