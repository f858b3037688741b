// Stand-in for CUDA's <cuda_fp16.h> in the CPU build of the CUDA kernels: HIP-CPU's __half, with
// __half2float and __float2half_rn (python_tests/hipcpu_build.py).
#pragma once

#include <hip/hip_fp16.h>
