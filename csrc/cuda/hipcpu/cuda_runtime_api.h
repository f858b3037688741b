// Stand-in for CUDA's <cuda_runtime_api.h> in the CPU build of the CUDA kernels (HIP-CPU; see
// python_tests/hipcpu_build.py). This folder is first on that build's include path only.
//
// Host code (csrc/cuda/coupling_launch.h, coupling_host.h) needs only the stream type. It stays
// an opaque pointer here, so host translation units, which include torch headers, include no
// HIP header; the kernels' translation unit maps it onto HIP-CPU's stream (cuda_runtime.h).
// The type has its own name, so the launchers of this build never share a symbol with those of
// the real CUDA extension (flowkern._C_cuda) in one process.
#pragma once

struct FlowkernHipCpuStream;
using cudaStream_t = FlowkernHipCpuStream*;
