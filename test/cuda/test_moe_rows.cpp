// GPU MoE row movement: the kernels of strata/backend/cuda/moe_rows.h on
// their own, and moe::dispatch_rows / combine_rows / replace_rows on GPU
// tensors through autograd, against the CPU ops on the same SlotMap (built
// with make_slot_map from a random Routing): top-1 and top-2, dropped
// choices, empty slots, odd row widths, f32/f64/f16/bf16, strided inputs,
// and bit-identical reruns.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "strata/backend/cuda/moe_rows.h"
#include "strata/moe/dispatch.h"
#include "strata/moe/routing.h"

using namespace strata;
using namespace strata::moe;
using strata::test::cpu;
using strata::test::gpu;
using strata::test::require_close;
namespace bc = strata::backend::cuda;

namespace {

// A routing of n rows over V experts with capacity C (small C drops choices),
// as test/unit/test_moe_ops.cpp builds it.
Routing random_routing(int64_t n, int64_t V, int64_t C, uint64_t seed, bool top1) {
  std::vector<double> logits = Tensor::uniform({n, V}, seed, 0, -2, 2, DType::F64).to_vector<double>();
  std::vector<double> probs(logits.size());
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t e = 0; e < V; ++e) s += std::exp(logits[size_t(i * V + e)]);
    for (int64_t e = 0; e < V; ++e) probs[size_t(i * V + e)] = std::exp(logits[size_t(i * V + e)]) / s;
  }
  RouteOptions ro;
  ro.top1 = top1;
  ro.policy = config::SecondExpertPolicy::Argmax;
  return route<double>(probs.data(), logits.data(), n, V, C, ro, nullptr);
}

// spare: the experts sit at offset 1 of a buffer with 2 more experts and 2
// more slots each, so many slots stay empty.
std::shared_ptr<const SlotMap> map_of(const Routing& r, bool spare) {
  if (spare) return std::make_shared<const SlotMap>(make_slot_map(r, 1, r.experts + 2, r.used_capacity() + 2));
  return std::make_shared<const SlotMap>(make_slot_map(r, 0, r.experts, r.used_capacity()));
}

Tensor dev_vec(const std::vector<int64_t>& v) { return gpu(Tensor::from_vector(v, {int64_t(v.size())})); }

Tensor rand_f32(const Shape& shape, uint64_t seed) { return Tensor::uniform(shape, seed, 0, -1.0, 1.0, DType::F32); }

// The CPU twin's input for a GPU tensor of dtype dt holding x: the values
// the GPU holds (x rounded to dt), in f64. The CPU ops then compute nearly
// exactly, so a comparison measures only the GPU's own rounding (its f32
// accumulation and the final rounding to dt) and not the difference between
// two f32 summation orders.
Tensor ref_input(const Tensor& x, DType dt) { return x.to(dt).to(DType::F64); }

// Tolerance for the weight gradients: dot products over d summed by a warp
// (lane partial sums, then a shuffle tree). In f32 their rounding error is
// absolute, ~1e-6 of the typical magnitude, which tolerance_for(F32) does not
// leave room for where a dot product nearly cancels.
double dot_tol(DType dt) { return dt == DType::F32 ? 1e-4 : test::tolerance_for(dt); }

// Combine weights as the gate makes them: positive (no cancellation between a
// row's two weighted slots, which would turn 16-bit rounding of the slot
// gradients into large relative errors of their sum).
Tensor rand_weights(const Shape& shape, uint64_t seed) {
  return Tensor::uniform(shape, seed, 0, 0.1, 1.0, DType::F32);
}

// A GPU view [a, b] with a non-unit inner stride holding x's values (x [a, b], dtype dt).
Tensor gpu_strided(const Tensor& x, DType dt) { return gpu(x.to(dt).transpose(0, 1).contiguous()).transpose(0, 1); }

std::vector<uint8_t> bytes_of(const Tensor& g) {
  Tensor c = cpu(g);
  std::vector<uint8_t> b(c.nbytes());
  if (!b.empty()) std::memcpy(b.data(), c.raw_data(), b.size());
  return b;
}

Tensor leaf(const Tensor& t) {
  Tensor l = t.detach();
  l.set_requires_grad(true);
  return l;
}

// CPU references through the CPU ops and their autograd.
Tensor ref_dispatch_grad(const Tensor& x, const std::shared_ptr<const SlotMap>& m, const Tensor& g) {
  Tensor xl = leaf(x.clone());
  dispatch_rows(xl, m).backward(g);
  return xl.grad();
}

std::pair<Tensor, Tensor> ref_combine_grads(const Tensor& y, const Tensor& w, const std::shared_ptr<const SlotMap>& m,
                                            const Tensor& g) {
  Tensor yl = leaf(y.clone()), wl = leaf(w.clone());
  combine_rows(yl, wl, m).backward(g);
  return {yl.grad(), wl.grad()};
}

const DType kTypes[] = {DType::F32, DType::F64, DType::F16, DType::BF16};

}  // namespace

TEST_CASE("GPU slot maps: the test routings drop choices and leave slots empty", "[cuda][moe_rows]") {
  for (bool top1 : {true, false}) {
    Routing r = random_routing(13, 4, top1 ? 2 : 4, 1, top1);
    auto m = map_of(r, true);
    CHECK(m->k == (top1 ? 1 : 2));
    bool dropped = false, empty = false;
    for (int64_t s : m->row_slot) dropped = dropped || s < 0;
    for (int64_t s : m->slot_src) empty = empty || s < 0;
    CHECK(dropped);
    CHECK(empty);
  }
}

TEST_CASE("GPU gather_to_slots and sum_slots_to_rows match CPU dispatch and its gradient", "[cuda][moe_rows]") {
  uint64_t seed = 1;
  for (bool top1 : {true, false}) {
    for (bool spare : {false, true}) {
      Routing r = random_routing(13, 4, top1 ? 2 : 4, seed, top1);
      auto m = map_of(r, spare);
      const Tensor slot_src = dev_vec(m->slot_src), row_slot = dev_vec(m->row_slot);
      for (int64_t d : {1, 7, 513}) {
        for (DType dt : kTypes) {
          CAPTURE(top1, spare, d, dtype_name(dt));
          ++seed;
          Tensor x = rand_f32({m->rows, d}, seed), g = rand_f32({m->slots, d}, seed + 100);
          const double tol = test::tolerance_for(dt);
          // forward: a copy, exact in every dtype
          Tensor want = dispatch_rows(ref_input(x, dt), m);
          require_close(want, bc::gather_to_slots(gpu(x.to(dt)), slot_src, m->k), 0.0, "dispatch");
          require_close(want, bc::gather_to_slots(gpu_strided(x, dt), slot_src, m->k), 0.0, "dispatch, strided");
          // backward: each row sums its <= k slots
          Tensor want_dx = ref_dispatch_grad(ref_input(x, dt), m, ref_input(g, dt));
          Tensor dx = bc::sum_slots_to_rows(gpu(g.to(dt)), row_slot, m->k);
          require_close(want_dx, dx, tol, "dispatch backward");
          require_close(want_dx, bc::sum_slots_to_rows(gpu_strided(g, dt), row_slot, m->k), tol,
                        "dispatch backward, strided");
          CHECK(bytes_of(dx) == bytes_of(bc::sum_slots_to_rows(gpu(g.to(dt)), row_slot, m->k)));
        }
      }
    }
  }
}

TEST_CASE("GPU combine_slots and its backward match CPU combine and its gradients", "[cuda][moe_rows]") {
  uint64_t seed = 200;
  for (bool top1 : {true, false}) {
    for (bool spare : {false, true}) {
      Routing r = random_routing(13, 4, top1 ? 2 : 4, seed, top1);
      auto m = map_of(r, spare);
      const Tensor slot_src = dev_vec(m->slot_src), row_slot = dev_vec(m->row_slot);
      for (int64_t d : {1, 7, 513}) {
        for (DType dt : kTypes) {
          CAPTURE(top1, spare, d, dtype_name(dt));
          ++seed;
          Tensor y = rand_f32({m->slots, d}, seed), w = rand_weights({m->rows, m->k}, seed + 1);
          Tensor g = rand_f32({m->rows, d}, seed + 2);
          const double tol = test::tolerance_for(dt);
          Tensor want = combine_rows(ref_input(y, dt), ref_input(w, dt), m);
          require_close(want, bc::combine_slots(gpu(y.to(dt)), gpu(w.to(dt)), row_slot), tol, "combine");
          require_close(want, bc::combine_slots(gpu_strided(y, dt), gpu_strided(w, dt), row_slot), tol,
                        "combine, strided");
          auto want_g = ref_combine_grads(ref_input(y, dt), ref_input(w, dt), m, ref_input(g, dt));
          auto got = bc::combine_slots_backward(gpu(g.to(dt)), gpu(y.to(dt)), gpu(w.to(dt)), row_slot, slot_src);
          require_close(want_g.first, got.first, tol, "combine backward, expert rows");
          require_close(want_g.second, got.second, dot_tol(dt), "combine backward, weights");
          auto got_s = bc::combine_slots_backward(gpu_strided(g, dt), gpu_strided(y, dt), gpu_strided(w, dt),
                                                  row_slot, slot_src);
          require_close(want_g.first, got_s.first, tol, "combine backward strided, expert rows");
          require_close(want_g.second, got_s.second, dot_tol(dt), "combine backward strided, weights");
          // one writer per element, fixed order: the same bits again
          auto again = bc::combine_slots_backward(gpu(g.to(dt)), gpu(y.to(dt)), gpu(w.to(dt)), row_slot, slot_src);
          CHECK(bytes_of(got.first) == bytes_of(again.first));
          CHECK(bytes_of(got.second) == bytes_of(again.second));
        }
      }
    }
  }
}

TEST_CASE("GPU replace_rows and its backward match the CPU op", "[cuda][moe_rows]") {
  const std::vector<int64_t> rows{5, 0, 2};
  for (int64_t d : {1, 7, 513}) {
    for (DType dt : kTypes) {
      CAPTURE(d, dtype_name(dt));
      Tensor base = rand_f32({6, d}, 300 + uint64_t(d)), vals = rand_f32({3, d}, 301), g = rand_f32({6, d}, 302);
      Tensor bl = leaf(ref_input(base, dt)), vl = leaf(ref_input(vals, dt));
      Tensor want = replace_rows(bl, rows, vl);
      want.backward(ref_input(g, dt));
      const Tensor rd = dev_vec(rows);
      require_close(want.detach(), bc::replace_rows(gpu(base.to(dt)), rd, gpu(vals.to(dt))), 0.0, "forward");
      require_close(want.detach(), bc::replace_rows(gpu_strided(base, dt), rd, gpu_strided(vals, dt)), 0.0,
                    "forward, strided");
      auto got = bc::replace_rows_backward(gpu_strided(g, dt), rd);
      require_close(bl.grad(), got.first, 0.0, "backward, base");
      require_close(vl.grad(), got.second, 0.0, "backward, values");
    }
  }
}

TEST_CASE("moe dispatch, combine and replace_rows run on GPU tensors through autograd", "[cuda][moe_rows]") {
  for (bool top1 : {true, false}) {
    Routing r = random_routing(11, 3, top1 ? 3 : 4, top1 ? 5 : 6, top1);
    auto m = map_of(r, !top1);
    for (DType dt : {DType::F32, DType::BF16}) {
      CAPTURE(top1, dtype_name(dt));
      const int64_t d = 9;
      const double tol = test::tolerance_for(dt);
      Tensor x = rand_f32({m->rows, d}, 400), w = rand_weights({m->rows, m->k}, 401);
      Tensor g = rand_f32({m->rows, d}, 402);
      // CPU: out = combine(dispatch(x) , w), gradients to x and w
      Tensor xc = leaf(ref_input(x, dt)), wc = leaf(ref_input(w, dt));
      Tensor want = combine_rows(dispatch_rows(xc, m), wc, m);
      want.backward(ref_input(g, dt));
      // GPU: the same graph (dispatch and combine share one uploaded slot map)
      Tensor xg = leaf(gpu(x.to(dt))), wg = leaf(gpu(w.to(dt)));
      Tensor buf = dispatch_rows(xg, m);
      REQUIRE(buf.device().is_cuda());
      Tensor got = combine_rows(buf, wg, m);
      require_close(want.detach(), got.detach(), tol, "forward");
      got.backward(gpu(g.to(dt)));
      require_close(xc.grad(), xg.grad(), tol, "gradient of x");
      require_close(wc.grad(), wg.grad(), dot_tol(dt), "gradient of the weights");
    }
  }
  SECTION("replace_rows") {
    Tensor base = rand_f32({6, 5}, 410), vals = rand_f32({2, 5}, 411), g = rand_f32({6, 5}, 412);
    Tensor bc_ = leaf(base), vc = leaf(vals);
    Tensor want = replace_rows(bc_, {4, 1}, vc);
    want.backward(g);
    Tensor bg = leaf(gpu(base)), vg = leaf(gpu(vals));
    Tensor got = replace_rows(bg, {4, 1}, vg);
    require_close(want.detach(), got.detach(), 0.0, "forward");
    got.backward(gpu(g));
    require_close(bc_.grad(), bg.grad(), 0.0, "gradient of base");
    require_close(vc.grad(), vg.grad(), 0.0, "gradient of values");
    REQUIRE_THROWS_WITH(replace_rows(gpu(base), {1, 1}, gpu(vals)), Catch::Contains("twice"));
  }
  SECTION("errors") {
    Routing r = random_routing(5, 2, 4, 7, false);
    auto m = map_of(r, false);
    Tensor y = gpu(rand_f32({m->slots, 3}, 1));
    REQUIRE_THROWS_WITH(combine_rows(y, rand_f32({5, 2}, 2), m), Catch::Contains("moe combine"));
    REQUIRE_THROWS_WITH(combine_rows(y, gpu(rand_f32({5, 2}, 2).to(DType::F64)), m), Catch::Contains("dtype"));
    REQUIRE_THROWS_WITH(dispatch_rows(gpu(rand_f32({6, 3}, 3)), m), Catch::Contains("moe dispatch"));
    REQUIRE_THROWS_WITH(bc::gather_to_slots(gpu(rand_f32({5, 3}, 3)), gpu(Tensor::zeros({2}, DType::I32)), 2),
                        Catch::Contains("moe dispatch"));
  }
}
