// The optimizer step on the GPU against its CPU twin: the fused Adam kernel
// (several steps on random parameters and gradients, weight decay on and off,
// strided views, 16-bit gradients, f64, state save/load), the gradient norm
// and clipping, and the finiteness check of loss scaling.
#include <cmath>
#include <cstring>
#include <vector>

#include "cuda_test_util.h"
#include "strata/dist/communicator.h"
#include "strata/train/adam.h"
#include "strata/train/grad_clip.h"
#include "strata/train/loss_scaler.h"

using namespace strata;
using namespace strata::train;

namespace {

Tensor host_rand(const Shape& s, uint64_t seed, double lo = -1, double hi = 1, DType dt = DType::F32) {
  return Tensor::uniform(s, seed, 0, lo, hi, dt);
}

// Number of elements whose bits differ (the kernel is meant to be bit-exact;
// reported, while the check itself holds at 1e-6).
int64_t bit_differences(const Tensor& cpu_t, const Tensor& gpu_t) {
  Tensor a = cpu_t.contiguous(), b = test::cpu(gpu_t).contiguous();
  const size_t es = dtype_size(a.dtype());
  const auto* pa = static_cast<const unsigned char*>(a.raw_data());
  const auto* pb = static_cast<const unsigned char*>(b.raw_data());
  int64_t n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) n += std::memcmp(pa + size_t(i) * es, pb + size_t(i) * es, es) != 0;
  return n;
}

void require_twin(const Tensor& cpu_t, const Tensor& gpu_t, const std::string& what) {
  test::require_close(cpu_t, gpu_t, 1e-6, what);
  const int64_t diff = bit_differences(cpu_t, gpu_t);
  if (diff) WARN(what << ": " << diff << " of " << cpu_t.numel() << " elements differ in their last bits");
}

// A contiguous GPU copy of a GPU tensor that may be a transposed 2-d view
// (through the host, so the test does not depend on GPU copy kernels).
Tensor gpu_contiguous(const Tensor& t) {
  Tensor d = t.detach();
  if (d.is_contiguous()) return d;
  return test::gpu(test::cpu(d.transpose(0, 1)).transpose(0, 1).contiguous());
}

// Runs `steps` Adam steps on CPU and GPU twins of the same parameters and
// gradients, comparing parameters and state after each.
void run_twins(const std::vector<Shape>& shapes, const AdamOptions& o, DType grad_dtype, DType param_dtype,
               bool strided, int steps) {
  NamedTensors cpu_params, gpu_params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor p = host_rand(shapes[i], 100 + i).to(param_dtype);
    Tensor pc = p.clone(), pg = test::gpu(p);
    if (strided && p.dim() == 2) {  // the same values seen through a transposed view on both devices
      pc = p.transpose(0, 1).contiguous().transpose(0, 1);
      pg = test::gpu(p.transpose(0, 1).contiguous()).transpose(0, 1);
    }
    pc.set_requires_grad(true);
    pg.set_requires_grad(true);
    cpu_params.emplace_back("p" + std::to_string(i), pc);
    gpu_params.emplace_back("p" + std::to_string(i), pg);
  }
  Adam cpu_adam(cpu_params, o), gpu_adam(gpu_params, o);
  const std::vector<double> lrs = {1e-3, 5e-4, 2e-3, 1e-4, 7e-4, 3e-3};
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      // gradients of mixed magnitudes, rounded to the gradient dtype on the host
      Tensor g = host_rand(shapes[i], 1000 + 10 * s + i, -0.5 * (i + 1), 0.5 * (i + 1)).to(grad_dtype);
      Tensor gg = test::gpu(g);
      if (strided && g.dim() == 2) gg = test::gpu(g.transpose(0, 1).contiguous()).transpose(0, 1);
      cpu_params[i].second.set_grad(g);
      gpu_params[i].second.set_grad(gg);
    }
    const double lr = lrs[size_t(s) % lrs.size()];
    cpu_adam.step(lr);
    gpu_adam.step(lr);
    NamedTensors cs = cpu_adam.state_dict(), gs = gpu_adam.state_dict();
    for (size_t i = 0; i < shapes.size(); ++i) {
      const std::string n = "step " + std::to_string(s + 1) + " p" + std::to_string(i);
      REQUIRE(gpu_params[i].second.device().is_cuda());
      require_twin(cpu_params[i].second.contiguous(), gpu_contiguous(gpu_params[i].second), n + " param");
      REQUIRE(gs[3 * i].second.device().is_cuda());
      require_twin(cs[3 * i].second, gs[3 * i].second, n + " exp_avg");
      require_twin(cs[3 * i + 1].second, gs[3 * i + 1].second, n + " exp_avg_sq");
      CHECK(gs[3 * i + 2].second.item() == s + 1);
    }
  }
}

const std::vector<Shape> kShapes = {{7, 13}, {1, 1}, {3, 1025}, {257, 129}, {5}};

}  // namespace

TEST_CASE("fused Adam on the GPU matches the CPU loop over several steps", "[cuda][adam]") {
  AdamOptions o;
  o.weight_decay = GENERATE(0.0, 0.01);
  INFO("weight_decay " << o.weight_decay);
  run_twins(kShapes, o, DType::F32, DType::F32, false, 5);
}

TEST_CASE("fused Adam takes strided parameters and gradients", "[cuda][adam]") {
  AdamOptions o;
  o.weight_decay = 0.1;
  run_twins({{7, 13}, {33, 65}}, o, DType::F32, DType::F32, true, 3);
}

TEST_CASE("fused Adam widens bf16 and f16 gradients into f32 master weights", "[cuda][adam]") {
  const DType gd = GENERATE(DType::BF16, DType::F16);
  INFO(dtype_name(gd));
  AdamOptions o;
  o.weight_decay = 0.01;
  run_twins(kShapes, o, gd, DType::F32, false, 4);
}

TEST_CASE("fused Adam in f64 and with other betas/eps", "[cuda][adam]") {
  AdamOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.999;
  o.eps = 1e-8;
  o.weight_decay = 0.05;
  SECTION("f64 parameters, f32 gradients") { run_twins({{7, 13}, {1025}}, o, DType::F32, DType::F64, false, 3); }
  SECTION("f32") { run_twins({{7, 13}, {1025}}, o, DType::F32, DType::F32, false, 3); }
}

TEST_CASE("GPU Adam skips parameters without a gradient and resumes from saved state", "[cuda][adam]") {
  Tensor a = test::gpu(host_rand({4, 5}, 1)), b = test::gpu(host_rand({6}, 2));
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  Adam adam({{"a", a}, {"b", b}});
  const std::vector<float> b_before = b.to_vector<float>();
  a.set_grad(test::gpu(host_rand({4, 5}, 3)));
  adam.step(1e-2);
  CHECK(adam.param_steps(0) == 1);
  CHECK(adam.param_steps(1) == 0);
  CHECK(b.to_vector<float>() == b_before);
  a.set_grad(test::gpu(host_rand({4, 5}, 4)));
  b.set_grad(test::gpu(host_rand({6}, 5)));
  adam.step(1e-2);

  // Save to the host, load into a fresh optimizer over copies of the weights:
  // the next step gives the same bits on both.
  NamedTensors saved;
  for (const auto& [n, t] : adam.state_dict()) saved.emplace_back(n, test::cpu(t));
  Tensor a2 = test::gpu(test::cpu(a)), b2 = test::gpu(test::cpu(b));
  a2.set_requires_grad(true);
  b2.set_requires_grad(true);
  Adam resumed({{"a", a2}, {"b", b2}});
  resumed.load_state_dict(saved);
  CHECK(resumed.param_steps(0) == 2);
  CHECK(resumed.param_steps(1) == 1);
  Tensor ga = host_rand({4, 5}, 6), gb = host_rand({6}, 7);
  a.set_grad(test::gpu(ga));
  b.set_grad(test::gpu(gb));
  a2.set_grad(test::gpu(ga));
  b2.set_grad(test::gpu(gb));
  adam.step(5e-3);
  resumed.step(5e-3);
  CHECK(a.to_vector<float>() == a2.to_vector<float>());
  CHECK(b.to_vector<float>() == b2.to_vector<float>());
}

TEST_CASE("GPU Adam refuses a gradient on another device", "[cuda][adam]") {
  Tensor p = test::gpu(host_rand({3}, 1));
  p.set_requires_grad(true);
  Adam adam({{"w", p}});
  p.set_grad(host_rand({3}, 2));  // left on the CPU
  REQUIRE_THROWS_WITH(adam.step(1e-3), Catch::Contains("Adam::step") && Catch::Contains("'w'"));
}

TEST_CASE("gradient norm and clipping on the GPU match the CPU", "[cuda][adam]") {
  const uint64_t seed = GENERATE(1, 2);
  // f32 large, f32 strided (a transposed view), bf16 and f16 gradients
  std::vector<Tensor> host_g = {host_rand({300, 257}, seed + 10), host_rand({13, 7}, seed + 11),
                                host_rand({33}, seed + 12).to(DType::BF16),
                                host_rand({1025}, seed + 13).to(DType::F16), host_rand({1, 1}, seed + 14)};
  std::vector<Tensor> cpu_p, gpu_p;
  for (size_t i = 0; i < host_g.size(); ++i) {
    Tensor cg = host_g[i], gg = test::gpu(host_g[i]);
    if (i == 1) {  // the same values as a [7, 13] strided view on both devices
      cg = cg.transpose(0, 1);
      gg = gg.transpose(0, 1);
    }
    Tensor cp = Tensor::zeros(cg.shape(), DType::F32), gp = test::gpu(Tensor::zeros(cg.shape(), DType::F32));
    cp.set_requires_grad(true);
    gp.set_requires_grad(true);
    cp.set_grad(cg);
    gp.set_grad(gg);
    cpu_p.push_back(cp);
    gpu_p.push_back(gp);
  }
  Tensor no_grad = test::gpu(Tensor::zeros({4}));  // skipped, like on the CPU
  no_grad.set_requires_grad(true);
  gpu_p.push_back(no_grad);

  const double cpu_sq = grad_norm_sq(cpu_p), gpu_sq = grad_norm_sq(gpu_p);
  CHECK(gpu_sq == Approx(cpu_sq).epsilon(1e-9));  // both in f64, summed in different orders
  CHECK(grad_norm_sq(gpu_p) == gpu_sq);  // deterministic: the same bits every call

  const double cpu_norm = clip_grad_norm(cpu_p, 1.0), gpu_norm = clip_grad_norm(gpu_p, 1.0);
  CHECK(gpu_norm == Approx(cpu_norm).epsilon(1e-9));
  for (size_t i = 0; i < cpu_p.size(); ++i) {
    Tensor g = gpu_p[i].grad();
    REQUIRE(g.device().is_cuda());
    REQUIRE(g.dtype() == cpu_p[i].grad().dtype());
    test::require_close(cpu_p[i].grad().contiguous(), gpu_contiguous(g), test::tolerance_for(g.dtype()),
                        "clipped grad " + std::to_string(i));
  }
  CHECK(std::sqrt(grad_norm_sq(gpu_p)) <= 1.0 + 1e-6);

  SECTION("a non-finite norm leaves the gradients alone") {
    Tensor bad = host_rand({5}, 9);
    bad.narrow(0, 3, 1).fill_(INFINITY);
    Tensor p = test::gpu(Tensor::zeros({5}));
    p.set_requires_grad(true);
    p.set_grad(test::gpu(bad));
    std::vector<Tensor> ps = {gpu_p[0], p};
    const std::vector<float> before = gpu_p[0].grad().to_vector<float>();
    CHECK(std::isinf(clip_grad_norm(ps, 1e-3)));
    CHECK(gpu_p[0].grad().to_vector<float>() == before);
  }
}

TEST_CASE("all_finite on GPU tensors finds NaN and inf in every float dtype", "[cuda][adam]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16, DType::F16);
  INFO(dtype_name(dt));
  Tensor a = host_rand({7, 13}, 1).to(dt), b = host_rand({3, 1025}, 2).to(dt);
  dist::LocalCommunicator local;
  CHECK(all_finite({test::gpu(a), test::gpu(b)}, &local));
  CHECK(all_finite({test::gpu(a), Tensor(), test::gpu(Tensor::zeros({0}, dt))}, nullptr));
  for (double bad : {double(NAN), double(INFINITY), -double(INFINITY)}) {
    INFO(bad);
    Tensor c = b.clone();
    c.select(0, 2).narrow(0, 1024, 1).fill_(bad);  // the very last element
    CHECK_FALSE(all_finite({test::gpu(a), test::gpu(c)}, &local));
    // a strided GPU view holding the bad value
    Tensor t = a.transpose(0, 1).contiguous();
    t.select(0, 12).narrow(0, 6, 1).fill_(bad);
    CHECK_FALSE(all_finite({test::gpu(t).transpose(0, 1)}, nullptr));
    // CPU and GPU tensors together
    CHECK_FALSE(all_finite({c, test::gpu(a)}, nullptr));
    CHECK_FALSE(all_finite({a, test::gpu(c)}, nullptr));
  }
  CHECK(all_finite({a, test::gpu(b), test::gpu(Tensor::full({3}, 7, DType::I64))}, nullptr));
}
