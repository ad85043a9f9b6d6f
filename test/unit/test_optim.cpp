// Optimisation pieces: Adam against hand-worked steps and a naive reference,
// its state round trip, the learning-rate schedules against values worked out
// by hand, gradient clipping, and the metrics/progress-line helpers.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "strata/train/adam.h"
#include "strata/train/checkpoint.h"
#include "strata/train/grad_clip.h"
#include "strata/train/lr_schedule.h"
#include "strata/train/metrics.h"
#include "test_util.h"

using namespace strata;
using namespace strata::train;
namespace fs = std::filesystem;

namespace {

using test::TempDir;  // shared helper (test_util.h)

Tensor leaf(const std::vector<double>& v) {
  Tensor t = Tensor::from_vector(v, {int64_t(v.size())});
  t.set_requires_grad(true);
  return t;
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

// fairseq's Adam written out plainly in double, one element at a time.
struct RefAdam {
  std::vector<double> p, m, v;
  int64_t t = 0;
  void step(const std::vector<double>& g, double lr, const AdamOptions& o) {
    ++t;
    double bc1 = 1 - std::pow(o.beta1, double(t)), bc2 = 1 - std::pow(o.beta2, double(t));
    double step_size = lr * std::sqrt(bc2) / bc1;
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      p[i] -= o.weight_decay * lr * p[i];
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) + o.eps);
    }
  }
};

}  // namespace

// ---------------------------------------------------------------- Adam

TEST_CASE("Adam matches three hand-worked fairseq steps", "[optim]") {
  // p = [1, -2]; grads [0.5, -1], [0.1, 0.2], [-0.3, 0.4]; lr 0.1, 0.05, 0.02;
  // betas (0.9, 0.98), eps 1e-6. Step 1 by hand: m = 0.1 g = [0.05, -0.1],
  // v = 0.02 g^2 = [0.005, 0.02], bias corrections 0.1 and 0.02, so the step
  // size is 0.1 * sqrt(0.02) / 0.1 = 0.141421356 and
  // p0 = 1 - 0.141421356 * 0.05 / (sqrt(0.005) + 1e-6) = 0.900000141419...
  Tensor p = leaf({1.0, -2.0});
  Adam adam({{"w", p}});
  const std::vector<std::vector<double>> grads = {{0.5, -1.0}, {0.1, 0.2}, {-0.3, 0.4}};
  const std::vector<double> lrs = {0.1, 0.05, 0.02};
  const std::vector<std::vector<double>> want_p = {{0.90000141419356261, -1.9000007071017813},
                                                   {0.85967073679805017, -1.874335550887845},
                                                   {0.85543803499133708, -1.8716326209240921}};
  const std::vector<std::vector<double>> want_m = {{0.05, -0.1}, {0.055, -0.07}, {0.0195, -0.023}};
  const std::vector<std::vector<double>> want_v = {{0.005, 0.02}, {0.0051, 0.0204}, {0.006798, 0.023192}};
  for (int s = 0; s < 3; ++s) {
    INFO("step " << s + 1);
    p.set_grad(Tensor::from_vector(grads[s], {2}));
    adam.step(lrs[s]);
    test::require_close(p, want_p[s], 1e-14, 1e-15);
    NamedTensors st = adam.state_dict();
    test::require_close(st[0].second, want_m[s], 1e-13, 1e-15);
    test::require_close(st[1].second, want_v[s], 1e-13, 1e-15);
    CHECK(st[2].second.item() == s + 1);
  }
}

TEST_CASE("Adam adds eps to the uncorrected sqrt(v) and decays weights decoupled", "[optim]") {
  // eps 0.1 and weight decay 0.5 make both choices visible. Step 1 by hand:
  // p0 = 1 - 0.1*0.5*1 = 0.95, then - 0.141421356*0.05/(0.0707107 + 0.1)
  // = 0.95 - 0.0414214 = 0.9085786 (torch >= 1.x's placement of eps would give 0.8667).
  Tensor p = leaf({1.0, -2.0});
  AdamOptions o;
  o.eps = 0.1;
  o.weight_decay = 0.5;
  Adam adam({{"w", p}}, o);
  const std::vector<std::vector<double>> grads = {{0.5, -1.0}, {0.1, 0.2}, {-0.3, 0.4}};
  const std::vector<double> lrs = {0.1, 0.05, 0.02};
  const std::vector<std::vector<double>> want = {{0.90857864376269049, -1.8414213562373094},
                                                 {0.86906145435048687, -1.7802898094902413},
                                                 {0.8584580392506983, -1.7608553324643739}};
  for (int s = 0; s < 3; ++s) {
    INFO("step " << s + 1);
    p.set_grad(Tensor::from_vector(grads[s], {2}));
    adam.step(lrs[s]);
    test::require_close(p, want[s], 1e-14, 1e-15);
  }
}

TEST_CASE("Adam on f32 parameters of any layout matches a naive reference", "[optim]") {
  uint64_t seed = GENERATE(1, 2, 3);
  AdamOptions o;
  o.weight_decay = GENERATE(0.0, 0.01);
  const std::vector<Shape> shapes = {{7, 13}, {5}, {3, 4, 5}, {40000}, {300, 130}};  // the last two use OpenMP
  // parameter and gradient layouts vary independently
  bool p_nc = GENERATE(false, true);
  bool g_nc = GENERATE(false, true);
  NamedTensors params;
  std::vector<RefAdam> ref;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor p = test::rand(shapes[i], seed * 10 + i);
    if (p_nc) p = test::non_contiguous(p);
    p.set_requires_grad(true);
    params.emplace_back("p" + std::to_string(i), p);
    ref.push_back({values(p), std::vector<double>(p.numel()), std::vector<double>(p.numel())});
  }
  Adam adam(params, o);
  for (int s = 0; s < 4; ++s) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor g = test::rand(shapes[i], 1000 + seed * 100 + s * 10 + i, DType::F32, -2, 2);
      if (g_nc) g = test::non_contiguous(g);
      params[i].second.set_grad(g);
      ref[i].step(values(g), 1e-3 * (s + 1), o);
    }
    adam.step(1e-3 * (s + 1));
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    INFO("parameter " << params[i].first << " " << params[i].second.str());
    test::require_close(params[i].second, Tensor::from_vector(ref[i].p, shapes[i]), 1e-5, 1e-6);
    CHECK(adam.param_steps(i) == 4);
  }
}

TEST_CASE("Adam skips parameters without a gradient and keeps their step count", "[optim]") {
  Tensor a = leaf({1.0, 2.0}), b = leaf({3.0});
  Adam adam({{"a", a}, {"b", b}});
  a.set_grad(Tensor::from_vector<double>({1.0, 1.0}, {2}));
  adam.step(0.1);
  CHECK(values(b) == std::vector<double>{3.0});
  CHECK(adam.param_steps(0) == 1);
  CHECK(adam.param_steps(1) == 0);
  // b's first step uses t = 1 (bias corrections of step 1), like fairseq's per-parameter state
  b.set_grad(Tensor::from_vector<double>({2.0}, {1}));
  adam.step(0.1);
  CHECK(adam.param_steps(0) == 2);
  CHECK(adam.param_steps(1) == 1);
  test::require_close(b, std::vector<double>{3.0 - 0.1 * 0.2 / (std::sqrt(0.02 * 4.0) + 1e-6) * std::sqrt(0.02) / 0.1},
                      1e-14, 1e-15);
  adam.zero_grad();
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
  std::vector<double> before = values(a);
  adam.step(0.1);  // nothing has a gradient: nothing moves
  CHECK(values(a) == before);
  CHECK(adam.param_steps(0) == 2);
}

TEST_CASE("Adam accepts gradients of another float dtype", "[optim]") {
  Tensor p = test::rand({6}, 4);
  p.set_requires_grad(true);
  Tensor q = p.detach().clone();
  q.set_requires_grad(true);
  Adam a1({{"p", p}}), a2({{"q", q}});
  Tensor g = test::rand({6}, 5);
  p.set_grad(g.to(DType::F64));
  q.set_grad(g);
  a1.step(0.01);
  a2.step(0.01);
  CHECK(values(p) == values(q));
}

TEST_CASE("Adam validates its parameters and options", "[optim]") {
  Tensor a = leaf({1.0});
  REQUIRE_THROWS_WITH(Adam({{"a", a}, {"a", leaf({2.0})}}), Catch::Contains("'a' is listed twice"));
  REQUIRE_THROWS_WITH(Adam({{"i", Tensor::zeros({2}, DType::I64)}}), Catch::Contains("'i'"));
  REQUIRE_THROWS_WITH(Adam({{"h", Tensor::zeros({2}, DType::F16)}}), Catch::Contains("master weights"));
  REQUIRE_THROWS_WITH(Adam({{"u", Tensor()}}), Catch::Contains("'u' is undefined"));
  REQUIRE_THROWS_WITH(Adam({{"", a}}), Catch::Contains("empty name"));
  AdamOptions bad;
  bad.beta2 = 1.0;
  REQUIRE_THROWS_WITH(Adam({{"a", a}}, bad), Catch::Contains("betas"));
  bad = AdamOptions();
  bad.eps = -1;
  REQUIRE_THROWS_WITH(Adam({{"a", a}}, bad), Catch::Contains("eps"));
  bad = AdamOptions();
  bad.weight_decay = NAN;
  REQUIRE_THROWS_WITH(Adam({{"a", a}}, bad), Catch::Contains("weight_decay"));
  Adam ok({{"a", a}});
  REQUIRE_THROWS_WITH(ok.step(NAN), Catch::Contains("learning rate"));
  CHECK(ok.options().beta2 == 0.98);
  CHECK(ok.options().eps == 1e-6);
}

TEST_CASE("Adam state survives a checkpoint: resuming gives the same parameters", "[optim][checkpoint]") {
  TempDir d;
  auto make_params = [] {
    NamedTensors ps;
    for (int i = 0; i < 3; ++i) {
      Tensor p = test::rand({5 + i, 3}, 70 + i);
      p.set_requires_grad(true);
      ps.emplace_back("layer" + std::to_string(i) + ".weight", p);
    }
    return ps;
  };
  auto grads_for = [](int step, size_t i, const Shape& s) { return test::rand(s, 500 + step * 7 + i); };
  auto run_steps = [&](Adam& adam, NamedTensors& ps, int from, int to) {
    for (int s = from; s < to; ++s) {
      for (size_t i = 0; i < ps.size(); ++i)
        if (!(s == 1 && i == 2)) ps[i].second.set_grad(grads_for(s, i, ps[i].second.shape()));  // one skip
      adam.step(1e-2);
      adam.zero_grad();
    }
  };
  // uninterrupted: 6 steps
  NamedTensors straight = make_params();
  Adam a_straight(straight);
  run_steps(a_straight, straight, 0, 6);
  // interrupted after 3 steps, saved, loaded into fresh objects, 3 more
  NamedTensors first = make_params();
  Adam a_first(first);
  run_steps(a_first, first, 0, 3);
  {
    CheckpointWriter w(d.path, kCheckpointLast);
    w.write_safetensors("model.safetensors", first);
    w.write_safetensors("optimizer.safetensors", a_first.state_dict());
    w.commit();
  }
  std::string dir = *find_resumable(d.path);
  SafetensorsFile model = load_safetensors(dir + "/model.safetensors");
  NamedTensors resumed = make_params();
  for (auto& [name, p] : resumed) p.detach().copy_(model.at(name));
  Adam a_resumed(resumed);
  a_resumed.load_state_dict(load_safetensors(dir + "/optimizer.safetensors").tensors);
  CHECK(a_resumed.param_steps(2) == 2);
  run_steps(a_resumed, resumed, 3, 6);
  for (size_t i = 0; i < straight.size(); ++i) CHECK(values(resumed[i].second) == values(straight[i].second));
}

TEST_CASE("Adam state_dict has stable names and load_state_dict checks them", "[optim]") {
  Tensor a = leaf({1.0, 2.0}), b = test::rand({2, 3}, 9, DType::F64);
  b.set_requires_grad(true);
  Adam adam({{"enc.a", a}, {"dec.b", b}});
  NamedTensors st = adam.state_dict();
  std::vector<std::string> names;
  for (auto& kv : st) names.push_back(kv.first);
  CHECK(names == std::vector<std::string>{"enc.a.exp_avg", "enc.a.exp_avg_sq", "enc.a.step", "dec.b.exp_avg",
                                          "dec.b.exp_avg_sq", "dec.b.step"});
  CHECK(st[3].second.shape() == Shape{2, 3});
  CHECK(st[2].second.dtype() == DType::I64);
  auto with = [&](const std::string& name, const Tensor& t) {
    NamedTensors s = adam.state_dict();
    for (auto& kv : s)
      if (kv.first == name) kv.second = t;
    return s;
  };
  auto without = [&](const std::string& name) {
    NamedTensors s;
    for (auto& kv : adam.state_dict())
      if (kv.first != name) s.push_back(kv);
    return s;
  };
  REQUIRE_THROWS_WITH(adam.load_state_dict(without("dec.b.exp_avg_sq")),
                      Catch::Contains("'dec.b.exp_avg_sq'") && Catch::Contains("parameter 'dec.b'"));
  REQUIRE_THROWS_WITH(adam.load_state_dict(with("dec.b.exp_avg", Tensor::zeros({3, 2}, DType::F64))),
                      Catch::Contains("parameter 'dec.b'"));
  REQUIRE_THROWS_WITH(adam.load_state_dict(with("enc.a.step", Tensor::scalar(-1, DType::I64))),
                      Catch::Contains("'enc.a.step'"));
  REQUIRE_THROWS_WITH(adam.load_state_dict(with("enc.a.step", Tensor::scalar(1, DType::F32))),
                      Catch::Contains("'enc.a.step'"));
  NamedTensors extra = adam.state_dict();
  extra.emplace_back("enc.c.exp_avg", Tensor::zeros({1}));
  REQUIRE_THROWS_WITH(adam.load_state_dict(extra), Catch::Contains("unexpected entry 'enc.c.exp_avg'"));
  // a failed load changes nothing
  a.set_grad(Tensor::ones({2}, DType::F64));
  adam.step(0.1);
  std::vector<double> m_before = values(adam.state_dict()[0].second);
  NamedTensors bad = adam.state_dict();
  bad[0].second = Tensor::full({2}, 5.0, DType::F64);
  bad.pop_back();
  REQUIRE_THROWS(adam.load_state_dict(bad));
  CHECK(values(adam.state_dict()[0].second) == m_before);
  // a good load copies the values (f32 state into f64 parameters converts)
  NamedTensors good = adam.state_dict();
  good[0].second = Tensor::full({2}, 0.25, DType::F32);
  good[2].second = Tensor::scalar(41, DType::I64);
  adam.load_state_dict(good);
  CHECK(values(adam.state_dict()[0].second) == std::vector<double>{0.25, 0.25});
  CHECK(adam.param_steps(0) == 41);
}

// ---------------------------------------------------------------- schedules

TEST_CASE("inverse_sqrt warms up linearly then decays as 1/sqrt(update)", "[optim]") {
  LrSchedule s(LrScheduleOptions{});  // the SMoE runs: lr 8e-4, 8000 warm-up updates from 1e-7
  CHECK(s.lr_at(0) == Approx(1e-7).epsilon(1e-12));
  CHECK(s.lr_at(1) == Approx(1e-7 + 7.999e-4 / 8000).epsilon(1e-12));
  CHECK(s.lr_at(4000) == Approx(4.0005e-4).epsilon(1e-12));
  CHECK(s.lr_at(7999) == Approx(1e-7 + 7999 * 7.999e-4 / 8000).epsilon(1e-12));
  CHECK(s.lr_at(8000) == Approx(8e-4).epsilon(1e-12));
  CHECK(s.lr_at(32000) == Approx(4e-4).epsilon(1e-12));             // sqrt(8000/32000) = 1/2
  CHECK(s.lr_at(100000) == Approx(2.2627416997969522e-4).epsilon(1e-12));  // 8e-4 * sqrt(0.08)
  CHECK(s.lr_at(8001) < s.lr_at(8000));
  REQUIRE_THROWS_WITH(s.lr_at(-1), Catch::Contains("negative"));
  LrScheduleOptions o;
  o.warmup_init_lr = -1;  // fairseq's default: start from 0
  o.lr = 5e-4;
  o.warmup_updates = 4000;
  LrSchedule f(o);
  CHECK(f.lr_at(0) == 0.0);
  CHECK(f.lr_at(1000) == Approx(1.25e-4).epsilon(1e-12));
  CHECK(f.lr_at(16000) == Approx(2.5e-4).epsilon(1e-12));
  o.warmup_updates = 0;
  REQUIRE_THROWS_WITH(LrSchedule(o), Catch::Contains("warmup_updates >= 1"));
}

TEST_CASE("the fixed schedule warms up from 1/warmup like fairseq's", "[optim]") {
  LrScheduleOptions o;
  o.scheduler = "fixed";
  o.lr = 1e-3;
  o.warmup_updates = 4;
  LrSchedule s(o);
  CHECK(s.lr_at(0) == Approx(2.5e-4));
  CHECK(s.lr_at(2) == Approx(7.5e-4));
  CHECK(s.lr_at(3) == Approx(1e-3));
  CHECK(s.lr_at(4) == 1e-3);
  CHECK(s.lr_at(1000000) == 1e-3);
  o.warmup_updates = 0;
  LrSchedule flat(o);
  CHECK(flat.lr_at(0) == 1e-3);
  CHECK(flat.lr_at(7) == 1e-3);
}

TEST_CASE("polynomial_decay warms up from 0 and decays to end_learning_rate", "[optim]") {
  LrScheduleOptions o;
  o.scheduler = "polynomial_decay";
  o.lr = 1e-3;
  o.warmup_updates = 10;
  o.total_num_update = 110;
  o.end_learning_rate = 1e-5;
  LrSchedule lin(o);
  CHECK(lin.lr_at(0) == 0.0);
  CHECK(lin.lr_at(5) == Approx(5e-4));
  CHECK(lin.lr_at(10) == Approx(1e-3));
  CHECK(lin.lr_at(60) == Approx(5.05e-4));  // half way: (1e-3 - 1e-5)/2 + 1e-5
  CHECK(lin.lr_at(109) == Approx(9.9e-4 / 100 + 1e-5));
  CHECK(lin.lr_at(110) == 1e-5);
  CHECK(lin.lr_at(500) == 1e-5);
  o.power = 2;
  LrSchedule quad(o);
  CHECK(quad.lr_at(60) == Approx(9.9e-4 * 0.25 + 1e-5));
  o.total_num_update = 10;
  REQUIRE_THROWS_WITH(LrSchedule(o), Catch::Contains("total_num_update"));
}

TEST_CASE("schedule options are validated", "[optim]") {
  LrScheduleOptions o;
  o.scheduler = "cosine";
  REQUIRE_THROWS_WITH(LrSchedule(o), Catch::Contains("unknown scheduler 'cosine'"));
  o = LrScheduleOptions();
  o.lr = -1;
  REQUIRE_THROWS_WITH(LrSchedule(o), Catch::Contains("lr must be"));
  o = LrScheduleOptions();
  o.warmup_updates = -5;
  REQUIRE_THROWS_WITH(LrSchedule(o), Catch::Contains("warmup_updates"));
  o = LrScheduleOptions();
  o.scheduler = "polynomial_decay";
  o.warmup_updates = 0;
  o.power = 0;
  REQUIRE_THROWS_WITH(LrSchedule(o), Catch::Contains("power"));
}

// ---------------------------------------------------------------- clipping

TEST_CASE("clip_grad_norm scales all gradients by max_norm / (norm + 1e-6)", "[optim]") {
  Tensor a = leaf({0, 0}), b = leaf({0}), c = leaf({5});
  a.set_grad(Tensor::from_vector<double>({3, 4}, {2}));
  b.set_grad(Tensor::from_vector<double>({12}, {1}));
  NamedTensors ps = {{"a", a}, {"b", b}, {"c", c}};  // c has no gradient
  SECTION("clipping") {
    double norm = clip_grad_norm(ps, 6.5);
    CHECK(norm == 13.0);
    double coef = 6.5 / (13.0 + 1e-6);
    test::require_close(a.grad(), std::vector<double>{3 * coef, 4 * coef}, 1e-15, 0);
    test::require_close(b.grad(), std::vector<double>{12 * coef}, 1e-15, 0);
    CHECK(std::sqrt(grad_norm_sq({a, b})) == Approx(6.5).epsilon(1e-6));
    CHECK_FALSE(c.grad().defined());
  }
  SECTION("a norm under the limit changes nothing") {
    CHECK(clip_grad_norm(ps, 20.0) == 13.0);
    CHECK(values(a.grad()) == std::vector<double>{3, 4});
  }
  SECTION("max_norm 0 only measures") {
    CHECK(clip_grad_norm(ps, 0.0) == 13.0);
    CHECK(values(b.grad()) == std::vector<double>{12});
  }
  SECTION("the aggregate hook sees and replaces the sum of squares") {
    double seen = -1;
    double norm = clip_grad_norm(ps, 13.0, [&](double sq) {
      seen = sq;
      return sq * 4;  // as if three more ranks held the same gradients
    });
    CHECK(seen == 169.0);
    CHECK(norm == 26.0);
    test::require_close(a.grad(), std::vector<double>{3 * 13 / (26 + 1e-6), 4 * 13 / (26 + 1e-6)}, 1e-15, 0);
  }
  SECTION("a non-finite norm leaves the gradients for the trainer to skip") {
    b.set_grad(Tensor::from_vector<double>({INFINITY}, {1}));
    CHECK(std::isinf(clip_grad_norm(ps, 1.0)));
    CHECK(values(a.grad()) == std::vector<double>{3, 4});
    b.set_grad(Tensor::from_vector<double>({NAN}, {1}));
    CHECK(std::isnan(clip_grad_norm(ps, 1.0)));
  }
}

TEST_CASE("gradient norms are exact in double over large, strided and 16-bit gradients", "[optim]") {
  uint64_t seed = GENERATE(1, 2);
  Tensor p1 = test::rand({300, 257}, seed), p2 = test::rand({7, 13}, seed + 1), p3 = test::rand({33}, seed + 2);
  for (Tensor* p : {&p1, &p2, &p3}) p->set_requires_grad(true);
  Tensor g1 = test::rand({300, 257}, seed + 10), g2 = test::non_contiguous(test::rand({7, 13}, seed + 11));
  Tensor g3 = test::rand({33}, seed + 12).to(DType::BF16);
  p1.set_grad(g1);
  p2.set_grad(g2);
  p3.set_grad(g3);
  double want = 0;
  for (const Tensor& g : {g1, g2, g3})
    for (double v : g.to(DType::F64).to_vector<double>()) want += v * v;
  CHECK(grad_norm_sq({p1, p2, p3}) == Approx(want).epsilon(1e-13));
  std::vector<double> before2 = values(g2), before3 = values(g3.to(DType::F64));
  double norm = clip_grad_norm(std::vector<Tensor>{p1, p2, p3}, 1.0);
  CHECK(norm == Approx(std::sqrt(want)).epsilon(1e-13));
  double coef = 1.0 / (norm + 1e-6);
  std::vector<double> after2 = values(p2.grad());
  for (size_t i = 0; i < after2.size(); ++i) REQUIRE(after2[i] == Approx(before2[i] * coef).epsilon(1e-6));
  std::vector<double> after3 = values(p3.grad().to(DType::F64));
  for (size_t i = 0; i < after3.size(); ++i) REQUIRE(after3[i] == Approx(before3[i] * coef).epsilon(1e-2).margin(1e-4));
  CHECK(std::sqrt(grad_norm_sq({p1, p2})) <= 1.0);
  CHECK(p3.grad().dtype() == DType::BF16);
}

// ---------------------------------------------------------------- metrics

TEST_CASE("metrics.jsonl gets one flushed JSON object per line", "[optim][metrics]") {
  TempDir d;
  std::string path = d.file("metrics.jsonl");
  {
    MetricsWriter w(path);
    w.write({{"update", 1}, {"loss", 7.5}, {"lang", "deu"}});
    // flushed: readable while the writer is still open
    std::ifstream in(path);
    std::string line;
    REQUIRE(std::getline(in, line));
    CHECK(nlohmann::json::parse(line) == nlohmann::json({{"update", 1}, {"loss", 7.5}, {"lang", "deu"}}));
    w.write({{"update", 2}, {"loss", NAN}, {"routing", {{"layer", 2}, {"load", {0.5, 0.25, 0.25}}}}});
    REQUIRE_THROWS_WITH(w.write(nlohmann::json::array({1, 2})), Catch::Contains("must be a JSON object"));
  }
  {
    MetricsWriter again(path);  // appends
    again.write({{"update", 3}});
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  REQUIRE(lines.size() == 3);
  CHECK(lines[1]["loss"].is_null());
  CHECK(lines[1]["routing"]["load"][0] == 0.5);
  CHECK(lines[2]["update"] == 3);
  REQUIRE_THROWS_WITH(MetricsWriter(d.file("no/dir/m.jsonl")), Catch::Contains("cannot open"));
}

TEST_CASE("rewinding metrics drops updates after the resumed checkpoint and torn lines", "[optim][metrics]") {
  TempDir d;
  std::string path = d.file("metrics.jsonl");
  CHECK(rewind_metrics(path, 10) == 0);  // no file yet
  {
    std::ofstream out(path);
    out << R"({"update": 5, "loss": 3})" << "\n"
        << R"({"event": "start"})" << "\n"
        << R"({"update": 10, "valid_loss": 2})" << "\n"
        << R"({"update": 11, "loss": 2})" << "\n"
        << R"({"update": 12, "lo)";  // torn by a crash
  }
  CHECK(rewind_metrics(path, 10) == 2);
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == 3);
  CHECK(nlohmann::json::parse(lines[2])["update"] == 10);
  CHECK(rewind_metrics(path, 10) == 0);
  CHECK_FALSE(fs::exists(path + ".rewind.tmp"));
}

TEST_CASE("progress lines show rate, perplexity, elapsed time and ETA", "[optim][metrics]") {
  CHECK(format_duration(0) == "00:00:00");
  CHECK(format_duration(7.4) == "00:00:07");
  CHECK(format_duration(3600 * 13 + 20 * 60) == "13:20:00");
  CHECK(format_duration(2 * 86400 + 3 * 3600 + 4 * 60 + 5) == "2d 03:04:05");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(NAN) == "?");
  CHECK(perplexity(5.0) == 32.0);
  CHECK(perplexity(1.2345) == 2.35);  // 2^1.2345 = 2.3530..., rounded to 2 decimals
  CHECK(std::isinf(perplexity(5000)));

  ProgressInfo p;
  p.epoch = 3;
  p.update = 1500;
  p.max_update = 100000;
  p.start_update = 1000;  // resumed at 1000: 500 updates in 754 s
  p.loss = 5.1234;
  p.ppl = perplexity(4.9);
  p.lr = 4e-4;
  p.tokens_per_sec = 12345.4;
  p.elapsed_s = 754;
  CHECK(eta_seconds(p) == Approx(148538));  // 98500 updates left * 754 s / 500 = 1d 17:15:38
  CHECK(format_progress(p) ==
        "epoch 3 | update 1500/100000 (1.5%) | loss 5.123 | ppl 29.86 | lr 4.000e-04 | 12345 tok/s | "
        "elapsed 00:12:34 | eta 1d 17:15:38");
  nlohmann::json j = progress_record(p);
  CHECK(j["update"] == 1500);
  CHECK(j["epoch"] == 3);
  CHECK(j["lr"] == 4e-4);
  CHECK(j["eta_s"].get<double>() == Approx(148538));
  // no limit known, or no progress yet: no ETA
  p.max_update = 0;
  CHECK(eta_seconds(p) < 0);
  CHECK(format_progress(p) ==
        "epoch 3 | update 1500 | loss 5.123 | ppl 29.86 | lr 4.000e-04 | 12345 tok/s | elapsed 00:12:34");
  CHECK_FALSE(progress_record(p).contains("eta_s"));
  p.max_update = 2000;
  p.update = 1000;
  CHECK(eta_seconds(p) < 0);
  CHECK(format_progress(p).find("eta ?") != std::string::npos);
  p.update = 2000;
  CHECK(eta_seconds(p) == 0);
}
