// Whole-library smoke tests through the public API: small multi-layer
// perceptrons learn XOR and a 1-D regression with autograd and Adam.
#include <cmath>

#include "strata/autograd/ops.h"
#include "strata/core/grad_mode.h"
#include "strata/nn/layers.h"
#include "strata/train/adam.h"
#include "test_util.h"

using namespace strata;

namespace {
struct Mlp : nn::Module {
  nn::Linear fc1, fc2;
  Mlp(int64_t in, int64_t hidden, int64_t out) : fc1(in, hidden), fc2(hidden, out) {
    register_module("fc1", &fc1);
    register_module("fc2", &fc2);
  }
  Tensor forward(const Tensor& x) { return fc2.forward(tanh(fc1.forward(x))); }
};

double mean_squared_error_step(Mlp& net, train::Adam& opt, const Tensor& x, const Tensor& y, double lr) {
  Tensor diff = net.forward(x) - y;
  Tensor loss = mean(diff * diff);
  loss.backward();
  opt.step(lr);
  opt.zero_grad();
  return loss.item();
}
}  // namespace

TEST_CASE("a two-layer perceptron learns XOR", "[mlp]") {
  auto seed = GENERATE(1u, 2u, 3u);
  Mlp net(2, 8, 1);
  net.init_parameters(seed);
  train::Adam opt(net.named_parameters());
  Tensor x = Tensor::from_vector<float>({0, 0, 0, 1, 1, 0, 1, 1}, {4, 2});
  Tensor y = Tensor::from_vector<float>({0, 1, 1, 0}, {4, 1});
  double first = 0, last = 0;
  for (int step = 0; step < 400; ++step) {
    last = mean_squared_error_step(net, opt, x, y, 0.05);
    if (step == 0) first = last;
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < 1e-3);
  NoGradGuard ng;
  std::vector<float> p = net.forward(x).to_vector<float>();
  CHECK(p[0] < 0.1f);
  CHECK(p[1] > 0.9f);
  CHECK(p[2] > 0.9f);
  CHECK(p[3] < 0.1f);
}

TEST_CASE("a perceptron fits a sine on [-pi, pi]", "[mlp]") {
  const int64_t n = 64;
  std::vector<float> xs(n), ys(n);
  for (int64_t i = 0; i < n; ++i) {
    xs[size_t(i)] = float(-M_PI + 2 * M_PI * double(i) / double(n - 1));
    ys[size_t(i)] = std::sin(xs[size_t(i)]);
  }
  Tensor x = Tensor::from_vector(xs, {n, 1}), y = Tensor::from_vector(ys, {n, 1});
  Mlp net(1, 32, 1);
  net.init_parameters(7);
  train::Adam opt(net.named_parameters());
  double loss = 0;
  for (int step = 0; step < 1500; ++step) loss = mean_squared_error_step(net, opt, x, y, 0.01);
  CHECK(loss < 2e-3);
}
