// Stand-in for CUDA's <cuda_bf16.h> in the CPU build of the CUDA kernels (HIP-CPU has no bf16):
// the storage type and the two conversions the kernels use (python_tests/hipcpu_build.py).
#pragma once

#include <cstdint>
#include <cstring>

// bfloat16: the upper 16 bits of an IEEE float32.
struct __nv_bfloat16 {
  std::uint16_t bits;
};
static_assert(sizeof(__nv_bfloat16) == 2, "bf16 is 2 bytes");

inline float __bfloat162float(__nv_bfloat16 v) noexcept {
  const std::uint32_t u = static_cast<std::uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// float -> bf16, rounding to nearest, ties to even (as CUDA's __float2bfloat16_rn and torch's
// conversion); a NaN stays a (quiet) NaN of its sign.
inline __nv_bfloat16 __float2bfloat16_rn(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{static_cast<std::uint16_t>((u >> 16) | 0x0040u)};
  const std::uint32_t lsb = (u >> 16) & 1u;  // ties go to the even neighbour
  u += 0x7fffu + lsb;                        // overflow past the largest finite rounds to inf
  return __nv_bfloat16{static_cast<std::uint16_t>(u >> 16)};
}
