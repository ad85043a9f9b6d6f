// Attention benchmark on one GPU: forward and forward+backward of
// strata::scaled_dot_product_attention through cuDNN's fused flash attention
// (src/backend/cuda/cudnn_attention.cu, STRATA_ATTENTION=cudnn), Strata's
// fused kernels (src/backend/cuda/attention.cu, STRATA_ATTENTION=strata) and
// the composed path (bmm, masked fill, softmax, dropout, bmm through the
// backend ops: what attention costs without a fused kernel), for B*H = 8*16
// heads, T = 32, 64, 128, 256 query and key positions, head dim 64, bf16.
// Prints milliseconds per call, the ratios fused/cuDNN and composed/cuDNN (and
// composed/fused), the largest output differences fused vs composed and cuDNN
// vs fused as a sanity check, and the cuDNN plans built and cache hits of each
// row (the first row pays the plan builds in its untimed calls).
//   build/bench/gpu_attention [--iters 20] [--causal] [--dropout 0.1] [--fp32]
// The cuDNN columns are skipped, with the reason printed, where cuDNN does not
// take the configuration: --fp32 (it takes bf16/f16), --dropout (Strata's
// Philox dropout draws cannot come from cuDNN's RNG), or a graph the runtime
// turns down.
// Timing: 3 untimed calls, then --iters calls between two CUDA events on the
// compute stream (the host may run ahead, as in training); gradients of the
// inputs are dropped after every call so accumulation does not add up.
#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>

#include "../scoped_env.h"
#include "strata/autograd/ops.h"
#include "strata/autograd/ops_attention.h"
#include "strata/backend/cuda/attention.h"
#include "strata/backend/cuda/context.h"
#include "strata/backend/cuda/cudnn_attention.h"
#include "strata/core/grad_mode.h"

using namespace strata;
namespace bc = strata::backend::cuda;

namespace {

double time_ms(const std::function<void()>& f, int iters) {
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t start, stop;
  STRATA_CUDA_CHECK(cudaEventCreate(&start));
  STRATA_CUDA_CHECK(cudaEventCreate(&stop));
  cudaStream_t s = cuda::compute_stream();
  STRATA_CUDA_CHECK(cudaEventRecord(start, s));
  for (int i = 0; i < iters; ++i) f();
  STRATA_CUDA_CHECK(cudaEventRecord(stop, s));
  STRATA_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  STRATA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  STRATA_CUDA_CHECK(cudaEventDestroy(start));
  STRATA_CUDA_CHECK(cudaEventDestroy(stop));
  return double(ms) / iters;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to(Device::cpu()).to(DType::F32).to_vector<float>();
  const auto y = b.to(Device::cpu()).to(DType::F32).to_vector<float>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::fmax(m, std::fabs(double(x[i]) - double(y[i])));
  return m;
}

// STRATA_ATTENTION for the duration of one measurement.
struct ScopedPolicy : test::ScopedEnv {
  explicit ScopedPolicy(const char* value) : ScopedEnv("STRATA_ATTENTION", value) {}
};

std::string cell(const std::optional<double>& v, const char* fmt) {
  if (!v) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, *v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 20;
  bool causal = false;
  double p = 0.0;
  DType dt = DType::BF16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--iters" && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else if (a == "--causal") {
      causal = true;
    } else if (a == "--dropout" && i + 1 < argc) {
      p = std::atof(argv[++i]);
    } else if (a == "--fp32") {
      dt = DType::F32;
    } else {
      std::fprintf(stderr, "usage: gpu_attention [--iters N] [--causal] [--dropout P] [--fp32]\n");
      return 2;
    }
  }
  if (!cuda::available()) {
    std::fprintf(stderr, "gpu_attention: no CUDA device visible\n");
    return 1;
  }
  try {
    const int64_t B = 8, H = 16, D = 64;
    const double scale = 1.0 / std::sqrt(double(D));
    const PhiloxStream stream{1234, 0};
    const Device dev = Device::cuda(0);
    const int64_t ver = bc::cudnn_runtime_version();
    std::printf("gpu_attention: B*H = %lld*%lld, D = %lld, %s, causal %d, dropout %.2f, %d iters, cuDNN %lld.%lld.%lld\n",
                (long long)B, (long long)H, (long long)D, dtype_name(dt), int(causal), p, iters,
                (long long)(ver / 10000), (long long)(ver / 100 % 100), (long long)(ver % 100));
    std::printf("%5s | %9s %9s %9s %7s %7s | %9s %9s %9s %7s %7s | %10s %10s | %5s %5s\n", "T", "fused", "cudnn",
                "comp", "f/cud", "c/cud", "fused", "cudnn", "comp", "f/cud", "c/cud", "|fus-comp|", "|cud-fus|",
                "plans", "hits");
    std::printf("%5s | %-49s | %-49s |\n", "", "forward ms", "forward+backward ms");
    bool told = false;  // the reason cuDNN is skipped, printed once
    for (int64_t T : {32, 64, 128, 256}) {
      auto input = [&](uint64_t seed) {
        Tensor t = Tensor::uniform({B, H, T, D}, seed, 0, -1, 1, DType::F32).to(dt).to(dev);
        t.set_requires_grad(true);
        return t;
      };
      Tensor q = input(1), k = input(2), v = input(3);
      const Tensor g = Tensor::uniform({B, H, T, D}, 4, 0, -1, 1, DType::F32).to(dt).to(dev);
      STRATA_CHECK(bc::fused_attention_supported(q, k, v)) << "gpu_attention: fused kernels refuse the inputs";
      using Fn = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool, int64_t, double,
                            const PhiloxStream&, bool, double);
      auto call = [&](Fn fn) { return fn(q, k, v, Tensor(), causal, 0, p, stream, true, scale); };
      auto forward = [&](Fn fn, const char* policy) {
        return [&, fn, policy] {
          ScopedPolicy pol(policy);
          NoGradGuard ng;
          call(fn);
        };
      };
      auto step = [&](Fn fn, const char* policy) {
        return [&, fn, policy] {
          ScopedPolicy pol(policy);
          call(fn).backward(g);
          q.zero_grad();
          k.zero_grad();
          v.zero_grad();
        };
      };
      const Fn op = &scaled_dot_product_attention;
      const Fn composed = &scaled_dot_product_attention_composed;

      // Does cuDNN take this configuration, forward and backward? (The calls
      // build the plans; the row's untimed warm-up calls would do it anyway.)
      bc::AttentionMask mask;
      mask.causal = causal;
      std::string why = bc::cudnn_attention_refusal(q, k, v, mask, p);
      const bc::CudnnAttentionCounters c0 = bc::cudnn_attention_counters();
      if (why.empty()) {
        NoGradGuard ng;
        const auto f = bc::cudnn_attention_forward(q.detach(), k.detach(), v.detach(), mask, scale, &why);
        if (f && !bc::cudnn_attention_backward(g, q.detach(), k.detach(), v.detach(), f->out, f->lse, mask, scale,
                                               &why))
          why = "backward: " + why;
        else if (f)
          why.clear();
      }
      const bool with_cudnn = why.empty();
      if (!with_cudnn && !told) {
        std::printf("gpu_attention: cuDNN columns skipped: %s\n", why.c_str());
        told = true;
      }

      const double ff = time_ms(forward(op, "strata"), iters), cf = time_ms(forward(composed, "strata"), iters);
      const double fs = time_ms(step(op, "strata"), iters), cs = time_ms(step(composed, "strata"), iters);
      std::optional<double> nf, ns, diff_cudnn;
      if (with_cudnn) {
        nf = time_ms(forward(op, "cudnn"), iters);
        ns = time_ms(step(op, "cudnn"), iters);
      }
      const bc::CudnnAttentionCounters c1 = bc::cudnn_attention_counters();
      double diff = 0;
      {
        NoGradGuard ng;
        Tensor fused_out;
        {
          ScopedPolicy pol("strata");
          fused_out = call(op);
        }
        diff = max_abs_diff(fused_out, call(composed));
        if (with_cudnn) {
          ScopedPolicy pol("cudnn");
          diff_cudnn = max_abs_diff(call(op), fused_out);
        }
      }
      auto ratio = [](double a, const std::optional<double>& b) -> std::optional<double> {
        if (!b) return std::nullopt;
        return a / *b;
      };
      std::printf("%5lld | %9.4f %9s %9.4f %7s %7s | %9.4f %9s %9.4f %7s %7s | %10.3g %10s | %5lld %5lld\n",
                  (long long)T, ff, cell(nf, "%.4f").c_str(), cf, cell(ratio(ff, nf), "%.2f").c_str(),
                  cell(ratio(cf, nf), "%.2f").c_str(), fs, cell(ns, "%.4f").c_str(), cs,
                  cell(ratio(fs, ns), "%.2f").c_str(), cell(ratio(cs, ns), "%.2f").c_str(), diff,
                  cell(diff_cudnn, "%.3g").c_str(), (long long)(c1.plans_built - c0.plans_built),
                  (long long)(c1.cache_hits - c0.cache_hits));
      std::printf("%5s   composed/fused: forward %.2f, forward+backward %.2f\n", "", cf / ff, cs / fs);
    }
    const bc::CudnnAttentionCounters c = bc::cudnn_attention_counters();
    std::printf("gpu_attention: cuDNN plans built %lld (%.2f s), cache hits %lld, graphs turned down %lld\n",
                (long long)c.plans_built, c.build_seconds, (long long)c.cache_hits, (long long)c.build_failures);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_attention: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

#else  // built without CUDA: the Makefile builds every test/bench/*.cpp, so this still links

#include <cstdio>

int main() {
  std::printf("gpu_attention: built without CUDA\n");
  return 1;
}

#endif
