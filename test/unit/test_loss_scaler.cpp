// Dynamic loss scaling: growth after growth_interval clean steps, backoff on
// overflow, the min_scale floor, state restore, and all_finite over NaN, inf
// and finite tensors (alone and agreed with a peer rank).
#include <cmath>
#include <limits>

#include "strata/train/loss_scaler.h"
#include "test_util.h"

using namespace strata;
using train::DynamicLossScaler;

namespace {

// Two ranks where the other rank's "found a non-finite value" flag is fixed:
// checks that all_finite asks the communicator with a MAX and obeys it.
class PeerFlag final : public dist::Communicator {
 public:
  explicit PeerFlag(int64_t peer) : peer_(peer) {}
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string name() const override { return "peer flag"; }
  void all_reduce(const Tensor&, dist::ReduceOp) override { STRATA_FAIL() << "peer flag: all_reduce unused"; }
  double all_reduce_scalar(double, dist::ReduceOp) override {
    STRATA_FAIL() << "peer flag: all_reduce_scalar unused";
    return 0;
  }
  int64_t all_reduce_int(int64_t v, dist::ReduceOp op) override {
    ++calls;
    REQUIRE(op == dist::ReduceOp::Max);
    return std::max(v, peer_);
  }
  void all_to_all(const Tensor&, const Tensor&) override { STRATA_FAIL() << "peer flag: all_to_all unused"; }
  void all_gather(const Tensor&, const Tensor&) override { STRATA_FAIL() << "peer flag: all_gather unused"; }
  void broadcast(const Tensor&, int) override { STRATA_FAIL() << "peer flag: broadcast unused"; }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return nullptr; }
  int calls = 0;

 private:
  int64_t peer_;
};

}  // namespace

TEST_CASE("DynamicLossScaler grows after growth_interval clean steps", "[optim][loss_scaler]") {
  DynamicLossScaler s(128, 2, 0.5, 3);
  CHECK(s.scale() == 128);
  CHECK(s.update(false));
  CHECK(s.update(false));
  CHECK(s.good_steps() == 2);
  CHECK(s.scale() == 128);
  CHECK(s.update(false));  // third clean step: grows, count restarts
  CHECK(s.scale() == 256);
  CHECK(s.good_steps() == 0);
  for (int i = 0; i < 3; ++i) CHECK(s.update(false));
  CHECK(s.scale() == 512);
  CHECK(s.skipped() == 0);
}

TEST_CASE("DynamicLossScaler backs off on overflow and skips the step", "[optim][loss_scaler]") {
  DynamicLossScaler s(1024, 2, 0.5, 2);
  CHECK(s.update(false));
  CHECK(s.good_steps() == 1);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 512);
  CHECK(s.good_steps() == 0);
  CHECK(s.skipped() == 1);
  // the clean-step count restarted: one more clean step does not grow yet
  CHECK(s.update(false));
  CHECK(s.scale() == 512);
  CHECK(s.update(false));
  CHECK(s.scale() == 1024);
  CHECK_FALSE(s.update(true));
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 256);
  CHECK(s.skipped() == 3);
}

TEST_CASE("DynamicLossScaler never backs off below min_scale", "[optim][loss_scaler]") {
  DynamicLossScaler s(1, 2, 0.25, 100, 0.125);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 0.25);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 0.125);
  CHECK_FALSE(s.update(true));
  CHECK(s.scale() == 0.125);
  CHECK(s.skipped() == 3);
  DynamicLossScaler d;  // defaults: 128, x2, x0.5, 2000, 1/1024
  CHECK(d.scale() == 128);
  CHECK(d.growth_interval() == 2000);
  CHECK(d.min_scale() == 1.0 / 1024);
  for (int i = 0; i < 20; ++i) d.update(true);
  CHECK(d.scale() == 1.0 / 1024);
}

TEST_CASE("DynamicLossScaler stops growing before the scale overflows", "[optim][loss_scaler]") {
  DynamicLossScaler s(std::numeric_limits<double>::max() / 2, 4, 0.5, 1);
  CHECK(s.update(false));
  CHECK(std::isfinite(s.scale()));
  CHECK(s.scale() == std::numeric_limits<double>::max() / 2);
}

TEST_CASE("DynamicLossScaler restores and validates its state", "[optim][loss_scaler]") {
  DynamicLossScaler s(128, 2, 0.5, 4);
  s.set_state(32, 3, 7);
  CHECK(s.scale() == 32);
  CHECK(s.good_steps() == 3);
  CHECK(s.skipped() == 7);
  CHECK(s.update(false));
  CHECK(s.scale() == 64);
  REQUIRE_THROWS_WITH(s.set_state(-1, 0, 0), Catch::Contains("scale"));
  REQUIRE_THROWS_WITH(s.set_state(NAN, 0, 0), Catch::Contains("scale"));
  REQUIRE_THROWS_WITH(s.set_state(8, -1, 0), Catch::Contains("good_steps"));
  s.set_state(8, 9, 0);  // saved under a longer growth_interval: the next clean step grows
  CHECK(s.update(false));
  CHECK(s.scale() == 16);
  CHECK(s.good_steps() == 0);
  REQUIRE_THROWS_WITH(s.set_state(8, 0, -1), Catch::Contains("skipped"));
  REQUIRE_THROWS_WITH(DynamicLossScaler(0), Catch::Contains("scale"));
  REQUIRE_THROWS_WITH(DynamicLossScaler(128, 0.5), Catch::Contains("growth_factor"));
  REQUIRE_THROWS_WITH(DynamicLossScaler(128, 2, 1.0), Catch::Contains("backoff_factor"));
  REQUIRE_THROWS_WITH(DynamicLossScaler(128, 2, 0.5, 0), Catch::Contains("growth_interval"));
  REQUIRE_THROWS_WITH(DynamicLossScaler(128, 2, 0.5, 10, 0), Catch::Contains("min_scale"));
  REQUIRE_THROWS_WITH(DynamicLossScaler(1.0 / 4096), Catch::Contains("min_scale"));
}

TEST_CASE("all_finite finds NaN and inf in any float dtype and layout", "[optim][loss_scaler]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16, DType::F16);
  INFO(dtype_name(dt));
  Tensor a = test::rand({7, 13}, 1, dt), b = test::rand({33}, 2, dt);
  CHECK(train::all_finite({a, b}, nullptr));
  CHECK(train::all_finite({}, nullptr));
  CHECK(train::all_finite({Tensor(), Tensor::zeros({0}, dt)}, nullptr));
  for (double bad : {double(NAN), double(INFINITY), -double(INFINITY)}) {
    INFO(bad);
    Tensor c = b.clone();
    c.narrow(0, 32, 1).fill_(bad);  // the last element only
    CHECK_FALSE(train::all_finite({a, c}, nullptr));
    Tensor v = test::non_contiguous(a);  // a strided view
    v.select(0, 6).narrow(0, 12, 1).fill_(bad);
    CHECK_FALSE(train::all_finite({v, b}, nullptr));
  }
  // integer tensors cannot overflow and are skipped
  CHECK(train::all_finite({Tensor::full({3}, -1, DType::I64)}, nullptr));
}

TEST_CASE("all_finite agrees over the ranks with a MAX all-reduce", "[optim][loss_scaler]") {
  Tensor good = test::rand({5}, 3), bad = good.clone();
  bad.narrow(0, 2, 1).fill_(NAN);
  dist::LocalCommunicator local;
  CHECK(train::all_finite({good}, &local));
  CHECK_FALSE(train::all_finite({bad}, &local));
  PeerFlag clean(0), overflowed(1);
  CHECK(train::all_finite({good}, &clean));
  CHECK_FALSE(train::all_finite({bad}, &clean));
  CHECK_FALSE(train::all_finite({good}, &overflowed));  // the other rank overflowed: skip together
  CHECK(clean.calls == 2);
  CHECK(overflowed.calls == 1);
}
