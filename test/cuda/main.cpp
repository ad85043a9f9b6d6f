// Catch2's main for the GPU tests. Without a visible GPU the binary reports
// that it skipped and exits 0 (CI compiles it but has no GPU), unless
// STRATA_REQUIRE_GPU=1 (the device check) makes that a failure.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "strata/backend/cuda/context.h"

int main(int argc, char** argv) {
  if (!strata::cuda::available()) {
    const char* req = std::getenv("STRATA_REQUIRE_GPU");
    if (req && std::string(req) == "1") {
      std::fprintf(stderr, "strata-cuda-tests: STRATA_REQUIRE_GPU=1 but no CUDA device is visible\n");
      return 1;
    }
    std::printf("strata-cuda-tests: no CUDA device visible: skipped (run test/cuda/device_check.sh on a GPU machine)\n");
    return 0;
  }
  strata::cuda::set_allocation_poison(true);  // unwritten outputs read as NaN / -1 and fail
  return Catch::Session().run(argc, argv);
}
