// Fresh outputs of the CPU kernels, with large ones recycled.
//
// A new multi-MiB CPU tensor is mapped memory that the kernel zero-fills page by page on
// first touch: for a 64 MiB output that costs as much as the coupling kernel itself, on
// every call (glibc returns blocks above 32 MiB to the OS on free, so nothing is reused).
// Outputs of at least kMinCachedBytes therefore come from a cache of freed blocks (2 MiB
// aligned, transparent huge pages hinted), at most FLOWKERN_CPU_CACHE_MB (default 1024) MiB
// held free at a time. The kernels write every element of their outputs, so stale contents
// are never observed. Smaller outputs use ATen's default allocator.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace flowkern::cpu {

// at::empty(sizes, opt) (contiguous, CPU), from the cache when large.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& opt);

// Bytes of freed blocks the cache holds; drop them all (returns the bytes released).
int64_t output_cache_bytes();
int64_t output_cache_clear();

}  // namespace flowkern::cpu
