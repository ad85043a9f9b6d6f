// GEMM benchmark: GFLOP/s of Strata's backend::matmul against a direct
// cblas_sgemm call (OpenBLAS with its own default threading) and Eigen's GEMM
// on the same inputs in the same run, for square sizes and the transformer
// shapes of a 512 -> 2048 feed-forward layer over 4096 tokens (forward and
// the two transposed products of its backward pass). A second table times a
// GEMM followed by an OpenMP element-wise loop, the pattern of a training
// step, where the threading policy matters more than the kernel.
//   build/bench/gemm [--quick]     (threads: OMP_NUM_THREADS, default all cores)
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

// GCC 12 reports false maybe-uninitialized warnings inside Eigen's AVX-512
// packet code when it is instantiated with -march=native.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "strata/backend/gemm.h"
#include "strata/core/tensor.h"

using namespace strata;

namespace {

using Clock = std::chrono::steady_clock;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Case {
  const char* name;
  int64_t M, N, K;
  bool ta, tb;
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Median over `reps` timings of a batch of calls sized to last >= min_s each,
// after a warm-up; returns seconds per call.
double median_time(const std::function<void()>& f, int reps, double min_s) {
  for (int i = 0; i < 2; ++i) f();
  auto t0 = Clock::now();
  f();
  const double once = std::max(seconds_since(t0), 1e-7);
  const int batch = std::max(1, int(min_s / once));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto s = Clock::now();
    for (int i = 0; i < batch; ++i) f();
    t.push_back(seconds_since(s) / batch);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Lets spinning worker threads (OpenBLAS's pool, OpenMP's team) go idle so
// one contender's threads do not slow down the next one's measurement.
void settle() { usleep(200000); }

// Times every contender in `rounds` alternating rounds (median_time each) and
// returns the per-contender median over rounds, so load that comes and goes
// during the run hits all contenders alike. `before[i]` runs untimed first.
std::vector<double> compare(const std::vector<std::function<void()>>& fns,
                            const std::vector<std::function<void()>>& before, int rounds, int reps, double min_s) {
  std::vector<std::vector<double>> t(fns.size());
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < fns.size(); ++i) {
      if (before[i]) before[i]();
      t[i].push_back(median_time(fns[i], reps, min_s));
      settle();
    }
  std::vector<double> med;
  for (auto& v : t) {
    std::sort(v.begin(), v.end());
    med.push_back(v[v.size() / 2]);
  }
  return med;
}

float max_abs_diff(const float* x, const float* y, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

// Direct OpenBLAS call with OpenBLAS's own threading.
void sgemm(const Case& c, const float* a, const float* b, float* out) {
  cblas_sgemm(CblasRowMajor, c.ta ? CblasTrans : CblasNoTrans, c.tb ? CblasTrans : CblasNoTrans, int(c.M),
              int(c.N), int(c.K), 1.0f, a, int(c.ta ? c.M : c.K), b, int(c.tb ? c.K : c.N), 0.0f, out, int(c.N));
}

void eigen_gemm(const Case& c, const float* a, const float* b, float* out) {
  Eigen::Map<const RowMat> A(a, c.ta ? c.K : c.M, c.ta ? c.M : c.K);
  Eigen::Map<const RowMat> B(b, c.tb ? c.N : c.K, c.tb ? c.K : c.N);
  Eigen::Map<RowMat> C(out, c.M, c.N);
  if (c.ta && c.tb) C.noalias() = A.transpose() * B.transpose();
  else if (c.ta) C.noalias() = A.transpose() * B;
  else if (c.tb) C.noalias() = A * B.transpose();
  else C.noalias() = A * B;
}

// Mean number of processes other than this one that were runnable, over ten
// samples in 0.5 s (/proc/stat procs_running counts this thread too).
double other_runnable() {
  int total = 0;
  for (int i = 0; i < 10; ++i) {
    FILE* f = std::fopen("/proc/stat", "r");
    if (!f) return 0;
    char line[256];
    while (std::fgets(line, sizeof line, f))
      if (std::strncmp(line, "procs_running ", 14) == 0) total += std::max(0, std::atoi(line + 14) - 1);
    std::fclose(f);
    usleep(50000);
  }
  return total / 10.0;
}

std::string cpu_model() {
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (!f) return "unknown";
  char line[512];
  std::string model = "unknown";
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "model name", 10) == 0) {
      const char* p = std::strchr(line, ':');
      if (p) model = std::string(p + 2, std::strcspn(p + 2, "\n"));
      break;
    }
  }
  std::fclose(f);
  return model;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rounds = quick ? 1 : 5, reps = quick ? 3 : 5;
  const double min_s = quick ? 0.01 : 0.03;
  // OpenBLAS's own thread count as configured at load (OPENBLAS_NUM_THREADS,
  // OMP_NUM_THREADS or all cores); Strata's matmul pins it to 1 on each call,
  // so the direct timings restore it first.
  const int blas_threads = openblas_get_num_threads();
  const std::function<void()> restore_blas_threads = [blas_threads] { openblas_set_num_threads(blas_threads); };
  std::printf("CPU: %s, %d cores\n", cpu_model().c_str(), int(sysconf(_SC_NPROCESSORS_ONLN)));
  std::printf("OpenBLAS: %s (core %s, %s threading, %d threads); OpenMP threads: %d; Eigen %d.%d.%d\n\n",
              openblas_get_config(), openblas_get_corename(),
              openblas_get_parallel() == 2 ? "OpenMP" : openblas_get_parallel() == 1 ? "pthread" : "no",
              blas_threads, omp_get_max_threads(), EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION);
  const double busy = other_runnable();
  if (busy >= 0.5)
    std::printf("warning: %.1f other processes on average were runnable: timings are unreliable\n", busy);
  if (std::string(openblas_get_corename()) == "Haswell" && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    std::printf("note: this CPU has AVX-512 but OpenBLAS chose its AVX2 (Haswell) kernels; "
                "OPENBLAS_CORETYPE=SkylakeX selects the AVX-512 ones\n");
  std::printf("\n");

  std::vector<Case> cases = {
      {"256^3", 256, 256, 256, false, false},
      {"512^3", 512, 512, 512, false, false},
      {"1024^3", 1024, 1024, 1024, false, false},
      {"2048^3", 2048, 2048, 2048, false, false},
      {"[4096,512] @ [512,2048]", 4096, 2048, 512, false, false},
      {"[4096,512]^T @ [4096,2048]", 512, 2048, 4096, true, false},
      {"[4096,2048] @ [512,2048]^T", 4096, 512, 2048, false, true},
  };
  std::printf("%-30s %10s %10s %7s %10s %8s\n", "C = op(A) @ op(B)", "Strata", "sgemm", "ratio", "Eigen",
              "Eigen/sg");
  std::printf("%-30s %10s %10s %7s %10s %8s\n", "", "GFLOP/s", "GFLOP/s", "", "GFLOP/s", "");
  bool ok = true;
  for (const Case& c : cases) {
    Tensor a = Tensor::uniform(c.ta ? Shape{c.K, c.M} : Shape{c.M, c.K}, 1, 0, -1, 1);
    Tensor b = Tensor::uniform(c.tb ? Shape{c.N, c.K} : Shape{c.K, c.N}, 2, 0, -1, 1);
    std::vector<float> c_blas(size_t(c.M * c.N)), c_eigen(size_t(c.M * c.N));
    const double flops = 2.0 * double(c.M) * double(c.N) * double(c.K);
    Tensor c_strata;
    const std::vector<double> t = compare(
        {[&] { c_strata = backend::matmul(a, b, c.ta, c.tb); },
         [&] { sgemm(c, a.data<float>(), b.data<float>(), c_blas.data()); },
         [&] { eigen_gemm(c, a.data<float>(), b.data<float>(), c_eigen.data()); }},
        {nullptr, restore_blas_threads, nullptr}, rounds, reps, min_s);
    const double t_strata = t[0], t_blas = t[1], t_eigen = t[2];

    // All three must have computed the same product.
    const float tol = 1e-5f * float(c.K);
    const float d1 = max_abs_diff(c_strata.data<float>(), c_blas.data(), c_blas.size());
    const float d2 = max_abs_diff(c_eigen.data(), c_blas.data(), c_blas.size());
    if (d1 > tol || d2 > tol) {
      std::printf("%-30s results differ: Strata %g, Eigen %g (tolerance %g)\n", c.name, d1, d2, tol);
      ok = false;
    }
    const double g_s = flops / t_strata / 1e9, g_b = flops / t_blas / 1e9, g_e = flops / t_eigen / 1e9;
    std::printf("%-30s %10.1f %10.1f %6.0f%% %10.1f %7.0f%%\n", c.name, g_s, g_b, 100 * g_s / g_b, g_e,
                100 * g_e / g_b);
    std::fflush(stdout);
  }

  // A training step interleaves GEMMs with OpenMP element-wise ops. OpenBLAS's
  // pthread pool keeps spinning after a call and competes with the OpenMP team;
  // Strata's matmul runs on the OpenMP team itself.
  const int64_t n = 512, elems = int64_t(1) << 20;
  Tensor a = Tensor::uniform({n, n}, 3, 0, -1, 1), b = Tensor::uniform({n, n}, 4, 0, -1, 1);
  std::vector<float> x(static_cast<size_t>(elems), 0.5f), y(static_cast<size_t>(elems)), c_blas(static_cast<size_t>(n * n));
  auto elementwise = [&] {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < elems; ++i) y[size_t(i)] = std::tanh(x[size_t(i)]);
  };
  const Case sq{"", n, n, n, false, false};
  auto strata_mm = [&] { backend::matmul(a, b); };
  auto direct_mm = [&] { sgemm(sq, a.data<float>(), b.data<float>(), c_blas.data()); };
  std::printf("\n512^3 GEMM then tanh over 2^20 floats (OpenMP), ms per step:\n");
  std::printf("%-22s %8s %8s %8s %10s\n", "GEMM by", "GEMM", "tanh", "both", "overhead");
  const std::vector<double> t = compare(
      {strata_mm, elementwise, [&] { strata_mm(); elementwise(); }, direct_mm, [&] { direct_mm(); elementwise(); }},
      {nullptr, nullptr, nullptr, restore_blas_threads, restore_blas_threads}, rounds, reps, min_s);
  const double te = t[1];
  for (int k = 0; k < 2; ++k) {
    const double tm = t[size_t(k == 0 ? 0 : 3)], tb = t[size_t(k == 0 ? 2 : 4)];
    std::printf("%-22s %8.3f %8.3f %8.3f %9.0f%%\n", k == 0 ? "Strata matmul" : "direct sgemm (pool)", tm * 1e3,
                te * 1e3, tb * 1e3, 100 * (tb / (tm + te) - 1));
  }
  return ok ? 0 : 1;
}
