// Math policy of csrc/common/coupling_math.h for at::vec::Vectorized<float|double>.
//
// Included by coupling_kernels.h inside one instruction-set build: FK_ISA names the
// namespace (base / avx2 / avx512), so each ISA gets its own, ODR-distinct policy,
// just as at::vec::Vectorized lives in at::vec::CPU_CAPABILITY.
#pragma once

#include <ATen/cpu/vec/vec.h>

namespace flowkern::cpu::FK_ISA {

// exp/tanh/atan/log/log1p are Sleef's u10 (1-ulp) routines on AVX2/AVX512 and the
// libm functions lane by lane in the default build; NaN/Inf propagate in both.
template <typename T>
struct VecMath {
  using V = at::vec::Vectorized<T>;
  static V splat(T v) { return V(v); }
  static V exp(const V& v) { return v.exp(); }
  static V tanh(const V& v) { return v.tanh(); }
  static V atan(const V& v) { return v.atan(); }
  static V log(const V& v) { return v.log(); }
  static V log1p(const V& v) { return v.log1p(); }
  static V abs(const V& v) { return v.abs(); }
  static V max0(const V& v) { return at::vec::maximum(v, V(T(0))); }
};

}  // namespace flowkern::cpu::FK_ISA
