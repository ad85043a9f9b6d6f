// Attention benchmark on one GPU: forward and forward+backward of
// strata::scaled_dot_product_attention through the fused kernels
// (src/backend/cuda/attention.cu) against the composed path (bmm, masked
// fill, softmax, dropout, bmm through the backend ops: what attention costs
// without the fused kernels), for B*H = 8*16 heads, T = 32, 64, 128, 256
// query and key positions, head dim 64, bf16. Prints milliseconds per call
// and the composed/fused ratio, plus the largest output difference of the
// two paths as a sanity check.
//   build/bench/gpu_attention [--iters 20] [--causal] [--dropout 0.1] [--fp32]
// cuDNN's fused attention (the cudnn_frontend SDPA graphs) is not measured:
// the cuDNN frontend headers are not available in this build, and the plain
// cuDNN backend API has no attention op, so the comparison is fused vs
// composed only.
// Timing: 3 untimed calls, then --iters calls between two CUDA events on the
// compute stream (the host may run ahead, as in training); gradients of the
// inputs are dropped after every call so accumulation does not add up.
#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "strata/autograd/ops.h"
#include "strata/autograd/ops_attention.h"
#include "strata/backend/cuda/attention.h"
#include "strata/backend/cuda/context.h"
#include "strata/core/grad_mode.h"

using namespace strata;

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
    std::printf("gpu_attention: B*H = %lld*%lld, D = %lld, %s, causal %d, dropout %.2f, %d iters\n",
                (long long)B, (long long)H, (long long)D, dtype_name(dt), int(causal), p, iters);
    std::printf("%6s %12s %12s %8s %14s %14s %8s %12s\n", "T", "fused fwd", "comp fwd", "ratio", "fused fwd+bwd",
                "comp fwd+bwd", "ratio", "max |diff|");
    for (int64_t T : {32, 64, 128, 256}) {
      auto input = [&](uint64_t seed) {
        Tensor t = Tensor::uniform({B, H, T, D}, seed, 0, -1, 1, DType::F32).to(dt).to(dev);
        t.set_requires_grad(true);
        return t;
      };
      Tensor q = input(1), k = input(2), v = input(3);
      const Tensor g = Tensor::uniform({B, H, T, D}, 4, 0, -1, 1, DType::F32).to(dt).to(dev);
      STRATA_CHECK(backend::cuda::fused_attention_supported(q, k, v)) << "gpu_attention: fused kernels refuse the inputs";
      using Fn = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool, int64_t, double,
                            const PhiloxStream&, bool, double);
      auto call = [&](Fn fn) { return fn(q, k, v, Tensor(), causal, 0, p, stream, true, scale); };
      auto forward = [&](Fn fn) {
        return [&, fn] {
          NoGradGuard ng;
          call(fn);
        };
      };
      auto step = [&](Fn fn) {
        return [&, fn] {
          call(fn).backward(g);
          q.zero_grad();
          k.zero_grad();
          v.zero_grad();
        };
      };
      const Fn fused = &scaled_dot_product_attention;
      const Fn composed = &scaled_dot_product_attention_composed;
      const double ff = time_ms(forward(fused), iters), cf = time_ms(forward(composed), iters);
      const double fs = time_ms(step(fused), iters), cs = time_ms(step(composed), iters);
      double diff = 0;
      {
        NoGradGuard ng;
        diff = max_abs_diff(call(fused), call(composed));
      }
      std::printf("%6lld %12.4f %12.4f %8.2f %14.4f %14.4f %8.2f %12.3g\n", (long long)T, ff, cf, cf / ff, fs, cs,
                  cs / fs, diff);
    }
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
