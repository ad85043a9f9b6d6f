// The expert-parallel form of the MoE block on two "ranks" (threads sharing
// an in-process communicator): the same layer code, with the all-to-all
// exchanging expert buffers, the MIN all-reduce synchronising the SMoE pass
// loop and the MAX all-reduces agreeing on buffer sizes, must give the
// single-process result when nothing is dropped, in the forward and backward.
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "test_moe_block.h"

using namespace strata;
using namespace strata::moe;

namespace {

// World of `size` threads; every collective is two barriers around a shared
// table of per-rank pointers or values.
struct SharedWorld {
  explicit SharedWorld(int n) : size(n), values(size_t(n)), ptrs(size_t(n)) {}
  int size;
  std::mutex m;
  std::condition_variable cv;
  int waiting = 0;
  uint64_t generation = 0;
  std::vector<int64_t> values;
  std::vector<const void*> ptrs;
  void barrier() {
    std::unique_lock<std::mutex> lock(m);
    const uint64_t gen = generation;
    if (++waiting == size) {
      waiting = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen; });
    }
  }
};

class ThreadCommunicator final : public dist::Communicator {
 public:
  ThreadCommunicator(SharedWorld& w, int rank) : w_(w), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return w_.size; }
  std::string name() const override { return "threads"; }
  void all_reduce(const Tensor&, dist::ReduceOp) override { STRATA_FAIL() << "threads: all_reduce is not used here"; }
  double all_reduce_scalar(double v, dist::ReduceOp op) override { return double(all_reduce_int(int64_t(v), op)); }
  int64_t all_reduce_int(int64_t v, dist::ReduceOp op) override {
    ++calls;
    w_.values[size_t(rank_)] = v;
    w_.barrier();
    int64_t r = w_.values[0];
    for (int i = 1; i < w_.size; ++i) {
      const int64_t x = w_.values[size_t(i)];
      r = op == dist::ReduceOp::Max ? std::max(r, x) : op == dist::ReduceOp::Min ? std::min(r, x) : r + x;
    }
    w_.barrier();
    return r;
  }
  void all_to_all(const Tensor& send, const Tensor& recv) override {
    ++calls;
    dist::validate_all_to_all(send, recv, *this);
    w_.ptrs[size_t(rank_)] = send.raw_data();
    w_.barrier();
    const size_t chunk = send.nbytes() / size_t(w_.size);
    for (int src = 0; src < w_.size; ++src)
      std::memcpy(static_cast<char*>(recv.raw_data()) + size_t(src) * chunk,
                  static_cast<const char*>(w_.ptrs[size_t(src)]) + size_t(rank_) * chunk, chunk);
    w_.barrier();
  }
  void all_gather(const Tensor&, const Tensor&) override { STRATA_FAIL() << "threads: all_gather is not used here"; }
  void broadcast(const Tensor&, int) override { STRATA_FAIL() << "threads: broadcast is not used here"; }
  void barrier() override { w_.barrier(); }
  std::unique_ptr<Communicator> split(int, int) override {
    STRATA_FAIL() << "threads: split is not used here";
    return nullptr;
  }
  int calls = 0;

 private:
  SharedWorld& w_;
  int rank_;
};

}  // namespace

TEST_CASE("expert-parallel MoE blocks on two ranks match one process", "[moe]") {
  struct C {
    const char* name;
    std::vector<int> strata;
  } cases[] = {{"top-2 MoE, 4 experts", {4}}, {"SMoE 2-2", {2, 2}}, {"SMoE 2-4-2", {2, 4, 2}}};
  for (const C& c : cases) {
    SECTION(c.name) {
      BlockSpec spec = test::small_spec(c.strata);  // argmax second expert, evaluation capacity S: no drops
      const int E = spec.experts();
      auto leaves = test::block_leaves(spec, 17);
      Tensor x = test::rand({4, 5, spec.dim}, 3, DType::F64, -2, 2);
      Tensor gy = test::rand({4, 5, spec.dim}, 4, DType::F64);

      // one process
      dist::LocalCommunicator local;
      Tensor xs = x.clone().set_requires_grad(true);
      for (auto& l : leaves) l.zero_grad();
      Tensor want = moe_block_forward(xs, Tensor(), spec, test::block_weights(spec, leaves), nn::ForwardContext{}, local,
                                      ExpertPlacement::of(E, local));
      want.backward(gy);
      const Tensor want_dx = xs.grad();
      std::vector<Tensor> want_dw;
      for (auto& l : leaves) want_dw.push_back(l.grad().clone());

      // two ranks: rank r holds sentences 2r, 2r+1 and experts [r*E/2, (r+1)*E/2)
      SharedWorld world(2);
      Tensor out[2], dx[2];
      std::vector<std::vector<Tensor>> rank_leaves(2);
      std::string error[2];
      int calls[2];
      auto run = [&](int r) {
        try {
          ThreadCommunicator comm(world, r);
          ExpertPlacement place = ExpertPlacement::of(E, comm);
          // each rank owns copies of the weights; its experts are its slice
          for (auto& l : leaves) rank_leaves[size_t(r)].push_back(l.detach().clone().set_requires_grad(true));
          auto& rl = rank_leaves[size_t(r)];
          BlockWeights w = test::block_weights(spec, rl);
          auto global = w.experts;
          w.experts = [global, place](int64_t first, int64_t count) {
            return global(place.first_local + first, count);
          };
          Tensor xr = x.narrow(0, 2 * r, 2).clone().set_requires_grad(true);
          out[r] = moe_block_forward(xr, Tensor(), spec, w, nn::ForwardContext{}, comm, place);
          out[r].backward(gy.narrow(0, 2 * r, 2).contiguous());
          dx[r] = xr.grad();
          calls[r] = comm.calls;
        } catch (const std::exception& e) {
          error[r] = e.what();
        }
      };
      std::thread t0(run, 0), t1(run, 1);
      t0.join();
      t1.join();
      INFO(error[0] << error[1]);
      REQUIRE(error[0].empty());
      REQUIRE(error[1].empty());
      CHECK(calls[0] == calls[1]);  // both ranks made the same collective calls
      test::require_close(concat({out[0].detach(), out[1].detach()}, 0), want.detach(), 1e-12, 1e-12);
      test::require_close(concat({dx[0], dx[1]}, 0), want_dx, 1e-12, 1e-12);
      // expert weights: rank r's slice of its copy got the full gradient of its experts
      const size_t first_expert_leaf = 2 + size_t(spec.num_strata());
      for (size_t k = 0; k < 4; ++k) {
        const Tensor& want_g = want_dw[first_expert_leaf + k];
        for (int r = 0; r < 2; ++r) {
          Tensor g = rank_leaves[size_t(r)][first_expert_leaf + k].grad();
          REQUIRE(g.defined());
          test::require_close(g.narrow(0, r * E / 2, E / 2), want_g.narrow(0, r * E / 2, E / 2), 1e-12, 1e-12);
        }
      }
      // shared weights: the two ranks' gradients sum to the one-process gradient
      for (size_t k = 0; k < first_expert_leaf; ++k) {
        Tensor g0 = rank_leaves[0][k].grad(), g1 = rank_leaves[1][k].grad();
        Tensor sum = g0.defined() && g1.defined() ? g0 + g1 : (g0.defined() ? g0 : g1);
        test::require_close(sum.detach(), want_dw[k], 1e-12, 1e-12);
      }
    }
  }
}

TEST_CASE("a rank without tokens at a stratum still joins every collective of the pass", "[moe]") {
  // rank 1 holds a single token, so most passes find no local tokens there
  BlockSpec spec = test::small_spec({1, 1, 2});
  auto leaves = test::block_leaves(spec, 23);
  Tensor xa = test::rand({1, 9, spec.dim}, 5, DType::F64, -2, 2), xb = test::rand({1, 1, spec.dim}, 6, DType::F64, -2, 2);
  dist::LocalCommunicator local;
  Tensor want_a = moe_block_forward(xa, Tensor(), spec, test::block_weights(spec, leaves), nn::ForwardContext{}, local,
                                    ExpertPlacement::of(4, local));
  Tensor want_b = moe_block_forward(xb, Tensor(), spec, test::block_weights(spec, leaves), nn::ForwardContext{}, local,
                                    ExpertPlacement::of(4, local));
  SharedWorld world(2);
  Tensor out[2];
  std::string error[2];
  auto run = [&](int r) {
    try {
      ThreadCommunicator comm(world, r);
      ExpertPlacement place = ExpertPlacement::of(4, comm);
      BlockWeights w = test::block_weights(spec, leaves);
      auto global = w.experts;
      w.experts = [global, place](int64_t first, int64_t count) { return global(place.first_local + first, count); };
      nn::AuxLosses aux;
      out[r] = moe_block_forward(r == 0 ? xa : xb, Tensor(), spec, w, nn::ForwardContext{false, nullptr, &aux}, comm,
                                 place);
    } catch (const std::exception& e) {
      error[r] = e.what();
    }
  };
  std::thread t0(run, 0), t1(run, 1);
  t0.join();
  t1.join();
  INFO(error[0] << error[1]);
  REQUIRE(error[0].empty());
  REQUIRE(error[1].empty());
  test::require_close(out[0].detach(), want_a.detach(), 1e-12, 1e-12);
  test::require_close(out[1].detach(), want_b.detach(), 1e-12, 1e-12);
  SECTION("experts must split evenly over the ranks") {
    SharedWorld w3(3);
    ThreadCommunicator c(w3, 0);
    REQUIRE_THROWS_WITH(ExpertPlacement::of(4, c), Catch::Contains("do not split evenly"));
  }
}

TEST_CASE("expert-parallel training draws the masks one process draws for the same micro-batch", "[moe]") {
  // Rank r trains micro-batch r with the generator that micro-batch has on one process
  // (update_freq 2 there): gate noise, EOM and the dropouts inside the experts must
  // match, although the experts see the rows in another buffer layout on another rank.
  struct C {
    const char* name;
    std::vector<int> strata;
    int64_t rank1_tokens;
  } cases[] = {{"top-2 MoE, 4 experts", {4}, 6},
               {"SMoE 2-2", {2, 2}, 6},
               {"SMoE 1-1-2, one token on rank 1 (passes without local rows draw nothing)", {1, 1, 2}, 1}};
  for (const C& c : cases) {
    SECTION(c.name) {
      BlockSpec spec = test::small_spec(c.strata);
      spec.gate.policy = config::SecondExpertPolicy::Sampling;
      spec.gate.capacity_factor = 16.0;  // nothing dropped, whichever rank sizes the buffers
      spec.dropout = 0.3;
      spec.activation_dropout = 0.2;
      spec.eom_rate = 0.25;
      const int E = spec.experts();
      auto leaves = test::block_leaves(spec, 29);
      const Tensor x[2] = {test::rand({2, 5, spec.dim}, 3, DType::F64, -2, 2),
                           test::rand({1, c.rank1_tokens, spec.dim}, 4, DType::F64, -2, 2)};
      const Tensor gy[2] = {test::rand({2, 5, spec.dim}, 5, DType::F64),
                            test::rand({1, c.rank1_tokens, spec.dim}, 6, DType::F64)};
      const uint64_t seeds[2] = {101, 202};

      // one process: the two micro-batches in sequence, gradients accumulated
      dist::LocalCommunicator local;
      for (auto& l : leaves) l.zero_grad();
      Tensor want[2], want_dx[2];
      uint64_t want_offset[2];
      for (int r = 0; r < 2; ++r) {
        Generator gen(seeds[r]);
        Tensor xs = x[r].clone().set_requires_grad(true);
        want[r] = moe_block_forward(xs, Tensor(), spec, test::block_weights(spec, leaves),
                                    nn::ForwardContext{true, &gen, nullptr}, local, ExpertPlacement::of(E, local));
        want[r].backward(gy[r]);
        want_dx[r] = xs.grad();
        want_offset[r] = gen.next_offset();
      }
      std::vector<Tensor> want_dw;
      for (auto& l : leaves) want_dw.push_back(l.grad().defined() ? l.grad().clone() : Tensor());

      SharedWorld world(2);
      Tensor out[2], dx[2];
      uint64_t offset[2] = {0, 0};
      std::vector<std::vector<Tensor>> rank_leaves(2);
      std::string error[2];
      int calls[2] = {0, 0};
      auto run = [&](int r) {
        try {
          ThreadCommunicator comm(world, r);
          ExpertPlacement place = ExpertPlacement::of(E, comm);
          for (auto& l : leaves) rank_leaves[size_t(r)].push_back(l.detach().clone().set_requires_grad(true));
          BlockWeights w = test::block_weights(spec, rank_leaves[size_t(r)]);
          auto global = w.experts;
          w.experts = [global, place](int64_t first, int64_t count) {
            return global(place.first_local + first, count);
          };
          Generator gen(seeds[r]);
          Tensor xr = x[r].clone().set_requires_grad(true);
          out[r] = moe_block_forward(xr, Tensor(), spec, w, nn::ForwardContext{true, &gen, nullptr}, comm, place);
          out[r].backward(gy[r]);
          dx[r] = xr.grad();
          offset[r] = gen.next_offset();
          calls[r] = comm.calls;
        } catch (const std::exception& e) {
          error[r] = e.what();
        }
      };
      std::thread t0(run, 0), t1(run, 1);
      t0.join();
      t1.join();
      INFO(error[0] << error[1]);
      REQUIRE(error[0].empty());
      REQUIRE(error[1].empty());
      CHECK(calls[0] == calls[1]);
      for (int r = 0; r < 2; ++r) {
        INFO("rank " << r);
        CHECK(offset[r] == want_offset[r]);  // the streams that follow the block are the same too
        test::require_close(out[r].detach(), want[r].detach(), 1e-12, 1e-12);
        test::require_close(dx[r], want_dx[r], 1e-12, 1e-12);
      }
      const size_t first_expert_leaf = 2 + size_t(spec.num_strata());
      for (size_t k = 0; k < 4; ++k)
        for (int r = 0; r < 2; ++r) {
          Tensor g = rank_leaves[size_t(r)][first_expert_leaf + k].grad();
          REQUIRE(g.defined());
          test::require_close(g.narrow(0, r * E / 2, E / 2), want_dw[first_expert_leaf + k].narrow(0, r * E / 2, E / 2),
                              1e-12, 1e-12);
        }
      for (size_t k = 0; k < first_expert_leaf; ++k) {
        Tensor g0 = rank_leaves[0][k].grad(), g1 = rank_leaves[1][k].grad();
        if (!want_dw[k].defined()) continue;
        Tensor sum = g0.defined() && g1.defined() ? g0 + g1 : (g0.defined() ? g0 : g1);
        REQUIRE(sum.defined());
        test::require_close(sum.detach(), want_dw[k], 1e-12, 1e-12);
      }
      // the dropouts are in effect: without them the output differs
      BlockSpec plain = spec;
      plain.dropout = plain.activation_dropout = 0;
      Generator gen(seeds[0]);
      Tensor y0 = moe_block_forward(x[0], Tensor(), plain, test::block_weights(plain, leaves),
                                    nn::ForwardContext{true, &gen, nullptr}, local, ExpertPlacement::of(E, local));
      std::vector<double> a = y0.detach().to_vector<double>(), b = want[0].detach().to_vector<double>();
      double diff = 0;
      for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(a[i] - b[i]));
      CHECK(diff > 1e-3);
    }
  }
}
