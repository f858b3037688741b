// Stand-in for CUDA's <cuda_runtime.h> in the CPU build of the CUDA kernels: HIP-CPU's runtime
// plus what the kernels use under their CUDA names (python_tests/hipcpu_build.py).
#pragma once

#include <hip/hip_runtime.h>

#include <cuda_runtime_api.h>  // cudaStream_t (this folder's)

// CUDA's masked shuffle. HIP-CPU has the unmasked form only: every shuffle there is a barrier
// of the whole block, so each thread of the block must reach it (the kernels keep to that).
// With width 32 the lanes exchanged are those of CUDA's 32-lane warp (HIP-CPU's warp is 64).
template <typename T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask, int width = 32) noexcept {
  return __shfl_xor(v, lane_mask, width);
}

namespace flowkern::hipcpu {

// The stream FK_LAUNCH (coupling_kernels.cu) launches on. HIP-CPU's null stream may run
// launches out of order, so the kernels go onto one stream of its own, and each launch is
// waited for (wait_for) before the next: the host reads results right after the launchers return.
inline hipStream_t launch_stream(cudaStream_t /*ignored: the host passes none*/) {
  static const hipStream_t s = [] {
    hipStream_t made = nullptr;
    if (hipStreamCreate(&made) != hipSuccess) made = nullptr;
    return made;
  }();
  return s;
}

inline void wait_for(cudaStream_t st) { (void)hipStreamSynchronize(launch_stream(st)); }

}  // namespace flowkern::hipcpu
