// Mixed precision and device placement on the CPU side: the differentiable
// cast, the autocast switch (nesting, restore, what it casts), Module::to on
// the CPU keeping every handle, the model's buffers, and the device/precision
// choices the trainer refuses on a machine without a GPU. The GPU side is in
// test/cuda/test_train_step.cpp.
#include <cmath>
#include <memory>

#include "strata/autograd/ops.h"
#include "strata/config/config.h"
#include "strata/core/grad_mode.h"
#include "strata/model/build.h"
#include "strata/nn/autocast.h"
#include "strata/nn/layers.h"
#include "strata/train/trainer.h"
#include "test_util.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/context.h"
#endif

using namespace strata;
using Catch::Matchers::Contains;

namespace {
bool gpu_visible() {
#ifdef STRATA_WITH_CUDA
  return cuda::available();
#else
  return false;
#endif
}
}  // namespace

TEST_CASE("cast: values, dtype, identity, and the gradient cast back", "[autocast]") {
  Tensor x = Tensor::from_vector<double>({1.0 / 3.0, -2.5, 1e-40, 3.0}, {2, 2});
  x.set_requires_grad(true);
  SECTION("to the same dtype is the tensor itself") { CHECK(cast(x, DType::F64).same(x)); }
  SECTION("f64 -> f32 rounds like Tensor::to and the gradient comes back in f64") {
    Tensor y = cast(x, DType::F32);
    CHECK(y.dtype() == DType::F32);
    CHECK(y.to_vector<float>() == x.detach().to(DType::F32).to_vector<float>());
    Tensor w = Tensor::from_vector<float>({0.5f, -1.f, 2.f, 0.25f}, {2, 2});
    sum(y * w).backward();
    REQUIRE(x.grad().defined());
    CHECK(x.grad().dtype() == DType::F64);
    CHECK(x.grad().to_vector<double>() == std::vector<double>{0.5, -1.0, 2.0, 0.25});
  }
  SECTION("integer targets are refused for a tensor that needs a gradient") {
    REQUIRE_THROWS_WITH(cast(x, DType::I64), Contains("cast"));
  }
}

TEST_CASE("cast passes gradcheck through an f64 -> f32 -> f64 round trip", "[autocast]") {
  // Values exactly representable in f32 so the round trip is the identity and
  // the finite differences see the smooth function around it; eps is large
  // enough that the f32 rounding of the perturbed inputs stays below rtol.
  Tensor a = Tensor::from_vector<double>({0.5, -1.25, 2.0, 0.75, -0.125, 1.5}, {2, 3});
  a.set_requires_grad(true);
  autograd::GradcheckOptions opt;
  opt.eps = 1e-3;
  opt.atol = 1e-4;
  opt.rtol = 1e-3;
  auto r = autograd::gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor h = cast(in[0], DType::F32);
        return cast(h * h, DType::F64);  // the square in f32, read back in f64
      },
      {a}, opt);
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("AutocastGuard nests, restores, and refuses non-float compute dtypes", "[autocast]") {
  CHECK(nn::autocast_dtype() == DType::F32);
  CHECK_FALSE(nn::autocast_enabled());
  {
    nn::AutocastGuard outer(DType::BF16);
    CHECK(nn::autocast_dtype() == DType::BF16);
    CHECK(nn::autocast_enabled());
    {
      nn::AutocastGuard inner(DType::F32);  // e.g. a region that must stay f32
      CHECK(nn::autocast_dtype() == DType::F32);
      CHECK_FALSE(nn::autocast_enabled());
      {
        nn::AutocastGuard innermost(DType::F16);
        CHECK(nn::autocast_dtype() == DType::F16);
      }
      CHECK(nn::autocast_dtype() == DType::F32);
    }
    CHECK(nn::autocast_dtype() == DType::BF16);
  }
  CHECK(nn::autocast_dtype() == DType::F32);
  REQUIRE_THROWS_WITH(nn::AutocastGuard(DType::F64), Contains("AutocastGuard"));
  REQUIRE_THROWS_WITH(nn::AutocastGuard(DType::I32), Contains("AutocastGuard"));
  CHECK(nn::autocast_dtype() == DType::F32);  // a refused guard changes nothing
}

TEST_CASE("autocast() casts floats to the compute dtype only when autocast is on", "[autocast]") {
  Tensor x = Tensor::from_vector<float>({1.f, 1.00390625f, -3.f, 0.1f}, {4});
  x.set_requires_grad(true);
  CHECK(nn::autocast(x).same(x));  // f32 default: the tensor itself
  CHECK_FALSE(nn::autocast(Tensor()).defined());
  Tensor ids = Tensor::from_vector<int64_t>({1, 2}, {2});
  nn::AutocastGuard amp(DType::BF16);
  CHECK(nn::autocast(ids).same(ids));  // integers are never cast
  Tensor y = nn::autocast(x);
  CHECK(y.dtype() == DType::BF16);
  CHECK(nn::autocast(y).same(y));
  // The gradient reaches the f32 leaf in f32 (bf16-exact weights: no rounding).
  Tensor w = Tensor::from_vector<float>({2.f, -0.5f, 0.25f, 8.f}, {4});
  sum(cast(y, DType::F32) * w).backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().dtype() == DType::F32);
  CHECK(x.grad().to_vector<float>() == w.to_vector<float>());
}

TEST_CASE("Embedding returns the compute dtype under autocast and keeps an f32 gradient", "[autocast]") {
  nn::Embedding emb(5, 4, 1);
  emb.init_parameters(3);
  Tensor ids = Tensor::from_vector<int64_t>({0, 2, 1, 4}, {2, 2});
  Tensor f32 = emb.forward(ids);
  CHECK(f32.dtype() == DType::F32);
  nn::AutocastGuard amp(DType::BF16);
  Tensor b16 = emb.forward(ids);
  CHECK(b16.dtype() == DType::BF16);
  CHECK(b16.to(DType::F32).to_vector<float>() == f32.detach().to(DType::BF16).to(DType::F32).to_vector<float>());
  sum(cast(b16, DType::F32)).backward();
  REQUIRE(emb.weight().grad().defined());
  CHECK(emb.weight().grad().dtype() == DType::F32);
}

TEST_CASE("Linear::forward_relu is relu(forward) bit for bit on the CPU, gradients included", "[autocast]") {
  nn::Linear a(13, 7), b(13, 7);
  a.init_parameters(11);
  b.init_parameters(11);
  Tensor x = test::rand({3, 5, 13}, 4);
  Tensor xa = x.clone(), xb = x.clone();
  xa.set_requires_grad(true);
  xb.set_requires_grad(true);
  Tensor ya = a.forward_relu(xa), yb = relu(b.forward(xb));
  CHECK(ya.to_vector<float>() == yb.to_vector<float>());
  Tensor r = test::rand({3, 5, 7}, 5);
  sum(ya * r).backward();
  sum(yb * r).backward();
  CHECK(xa.grad().to_vector<float>() == xb.grad().to_vector<float>());
  CHECK(a.weight().grad().to_vector<float>() == b.weight().grad().to_vector<float>());
  CHECK(a.bias().grad().to_vector<float>() == b.bias().grad().to_vector<float>());
}

TEST_CASE("Module::to(cpu) on a CPU model is a no-op that keeps every handle", "[autocast]") {
  config::Config c;
  c.model.encoder_layers = 1;
  c.model.decoder_layers = 1;
  c.model.embed_dim = 16;
  c.model.ffn_dim = 32;
  c.model.attention_heads = 2;
  c.model.max_source_positions = 16;
  c.model.max_target_positions = 16;
  c.moe.experts = 2;
  c.moe.strata = {2};
  c.moe.moe_freq = 1;
  auto m = model::build_model(c, 11, 1);
  m->init_parameters(7);
  CHECK(m->device() == Device::cpu());
  const nn::NamedTensors before = m->named_parameters();
  std::vector<const void*> data;
  for (const auto& [n, t] : before) data.push_back(t.raw_data());
  // the sinusoidal table and the experts' stacked blocks are buffers: they move
  // with the model and are never checkpointed
  const nn::NamedTensors buffers = m->named_buffers();
  REQUIRE(buffers.size() == 1 + 2 * 4);  // positions + 4 stacked weight blocks in each of the 2 MoE layers
  CHECK(buffers[0].first == "positions");
  std::vector<const void*> buffer_data;
  for (const auto& [n, t] : buffers) buffer_data.push_back(t.raw_data());

  Tensor src = Tensor::from_vector<int64_t>({4, 5, 2, 6, 2, 1}, {2, 3});
  Tensor prev = Tensor::from_vector<int64_t>({2, 7, 8, 2, 9, 1}, {2, 3});
  Tensor y0 = m->forward(src, prev, nn::ForwardContext{});
  m->to(Device::cpu());
  const nn::NamedTensors after = m->named_parameters();
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    CHECK(after[i].second.same(before[i].second));  // the same handle
    CHECK(after[i].second.raw_data() == data[i]);   // the same memory
    CHECK(after[i].second.requires_grad());
  }
  const nn::NamedTensors buffers_after = m->named_buffers();
  REQUIRE(buffers_after.size() == buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) CHECK(buffers_after[i].second.raw_data() == buffer_data[i]);
  Tensor y1 = m->forward(src, prev, nn::ForwardContext{});
  CHECK(y1.to_vector<float>() == y0.to_vector<float>());
}

TEST_CASE("an f32 AutocastGuard leaves the model's forward and backward bit-identical", "[autocast]") {
  config::Config c;
  c.model.encoder_layers = 1;
  c.model.decoder_layers = 1;
  c.model.embed_dim = 16;
  c.model.ffn_dim = 32;
  c.model.attention_heads = 4;
  c.model.max_source_positions = 16;
  c.model.max_target_positions = 16;
  auto run = [&](bool guard) {
    auto m = model::build_model(c, 13, 1);
    m->init_parameters(5);
    Tensor src = Tensor::from_vector<int64_t>({4, 5, 2, 6, 2, 1}, {2, 3});
    Tensor prev = Tensor::from_vector<int64_t>({2, 7, 8, 2, 9, 1}, {2, 3});
    std::unique_ptr<nn::AutocastGuard> g;
    if (guard) g = std::make_unique<nn::AutocastGuard>(DType::F32);
    Tensor y = m->forward(src, prev, nn::ForwardContext{});
    sum(square(y)).backward();
    std::vector<float> out = y.to_vector<float>();
    for (const auto& [n, t] : m->named_parameters()) {
      auto gv = t.grad().to_vector<float>();
      out.insert(out.end(), gv.begin(), gv.end());
    }
    return out;
  };
  CHECK(run(true) == run(false));
}

TEST_CASE("device and precision: what a machine without a GPU refuses", "[autocast]") {
  using config::DeviceChoice;
  using config::Precision;
  SECTION("the config refuses 16-bit precision on device cpu") {
    REQUIRE_THROWS_WITH(config::load_config_string("device: cpu\nprecision: fp16\n", "config.yaml"),
                        "config.yaml: precision 'fp16' needs device cuda (the CPU trains in fp32)");
    config::Config c;
    c.train.device = DeviceChoice::Cpu;
    c.train.precision = Precision::Bf16;
    REQUIRE_THROWS_WITH(config::validate_config(c), Contains("precision 'bf16' needs device cuda"));
  }
  SECTION("select_device") {
    config::TrainOptions t;
    t.device = DeviceChoice::Cpu;
    CHECK(train::select_device(t, 0) == Device::cpu());
    CHECK(train::compute_dtype(Precision::Fp32) == DType::F32);
    CHECK(train::compute_dtype(Precision::Bf16) == DType::BF16);
    CHECK(train::compute_dtype(Precision::Fp16) == DType::F16);
    if (gpu_visible()) return;  // the refusals below need a machine without a GPU
    t.device = DeviceChoice::Auto;
    CHECK(train::select_device(t, 0) == Device::cpu());
    t.precision = Precision::Bf16;
    REQUIRE_THROWS_WITH(train::select_device(t, 0),
                        "config: precision 'bf16' needs a GPU, but device 'auto' runs on the CPU here (the CPU "
                        "trains in fp32)");
    t.device = DeviceChoice::Cuda;
    t.precision = Precision::Fp32;
#ifdef STRATA_WITH_CUDA
    REQUIRE_THROWS_WITH(train::select_device(t, 0), Contains("config: device 'cuda' but no GPU is visible"));
#else
    REQUIRE_THROWS_WITH(train::select_device(t, 0), Contains("config: device 'cuda' needs a build with CUDA"));
#endif
  }
}
