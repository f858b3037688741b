// Math policy of csrc/common/coupling_math.h for at::vec::Vectorized<float|double>.
//
// Included by coupling_kernels.h inside one instruction-set build: FK_ISA names the
// namespace (base / avx2 / avx512), so each ISA gets its own, ODR-distinct policy,
// just as at::vec::Vectorized lives in at::vec::CPU_CAPABILITY.
//
// float exp and tanh are inline here (the two transcendentals of the hot tanh / exp
// scales): exp(x) = 2^n e^f with n = round(x / ln 2), f = x - n ln 2 (Cody-Waite, |f| <=
// ln2 / 2) and e^f by its degree-7 Taylor polynomial (truncation < 6e-9 relative), and
// tanh(u) = -m / (2 + m) with m = expm1(-2|u|) = 2^n (e^f - 1) + (2^n - 1), which keeps
// full relative accuracy near 0. Both are within a few ulp, propagate NaN, and inline
// into the kernels (so unused results are dropped and the loops stay in registers).
// Everything else, and all of double, is Sleef's u10 (1-ulp) or libm lane by lane.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <c10/macros/Macros.h>

#include <cmath>

namespace flowkern::cpu::FK_ISA {

namespace fast {
using VF = at::vec::Vectorized<float>;

// v * 2^n for integral-valued n in [-150, 130] (inf / 0 / denormal outside the float range)
C10_ALWAYS_INLINE VF ldexp(const VF& v, const VF& n) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_scalef_ps(v, n);
#elif defined(CPU_CAPABILITY_AVX2)
  // 2^n as two normal factors 2^(n/2) 2^(n - n/2), so the whole range stays exact
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h = _mm256_srai_epi32(ni, 1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
  const __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(v, p1), p2);
#else
  alignas(64) float a[VF::size()], e[VF::size()];
  v.store(a);
  n.store(e);
  for (int i = 0; i < VF::size(); ++i) a[i] = std::ldexp(a[i], std::isnan(e[i]) ? 0 : static_cast<int>(e[i]));
  return VF::loadu(a);
#endif
}

// (n, f) with x = n ln2 + f, |f| <= ln2 / 2 (x already clamped to [-104, 89])
C10_ALWAYS_INLINE void reduce(const VF& x, VF& n, VF& f) {
  n = (x * VF(1.44269504088896341f)).round();
  f = at::vec::fmadd(n, VF(-0.693359375f), x);  // ln 2 = 0.693359375 - 2.12194440e-4
  f = at::vec::fmadd(n, VF(2.12194440e-4f), f);
}

// e^f - 1 for |f| <= ln2 / 2: f (1 + f/2 + f^2/6 + ... + f^6/5040)
C10_ALWAYS_INLINE VF expm1_reduced(const VF& f) {
  VF p = at::vec::fmadd(f, VF(1.f / 5040.f), VF(1.f / 720.f));
  p = at::vec::fmadd(p, f, VF(1.f / 120.f));
  p = at::vec::fmadd(p, f, VF(1.f / 24.f));
  p = at::vec::fmadd(p, f, VF(1.f / 6.f));
  p = at::vec::fmadd(p, f, VF(0.5f));
  p = at::vec::fmadd(p, f, VF(1.f));
  return p * f;
}

// max(x, lo) and min(x, hi) that return x when it is NaN (so NaN propagates)
C10_ALWAYS_INLINE VF max_nan(const VF& x, float lo) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_max_ps(_mm512_set1_ps(lo), x);  // maxps returns its 2nd operand on NaN
#elif defined(CPU_CAPABILITY_AVX2)
  return _mm256_max_ps(_mm256_set1_ps(lo), x);
#else
  return at::vec::maximum(x, VF(lo));
#endif
}

C10_ALWAYS_INLINE VF min_nan(const VF& x, float hi) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_min_ps(_mm512_set1_ps(hi), x);
#elif defined(CPU_CAPABILITY_AVX2)
  return _mm256_min_ps(_mm256_set1_ps(hi), x);
#else
  return at::vec::minimum(x, VF(hi));
#endif
}

C10_ALWAYS_INLINE VF clamp(const VF& x, float lo, float hi) { return min_nan(max_nan(x, lo), hi); }

// e^x: below -104 the result rounds to 0, above 89 to inf
C10_ALWAYS_INLINE VF exp(const VF& x) {
  VF n, f;
  reduce(clamp(x, -104.f, 89.f), n, f);
  return ldexp(expm1_reduced(f) + VF(1.f), n);
}

// tanh(u) = sign(u) * -m / (2 + m),  m = expm1(-2|u|) (|u| > 15 gives m = -1 exactly)
C10_ALWAYS_INLINE VF tanh(const VF& u) {
  VF n, f;
  reduce(max_nan(VF(-2.f) * u.abs(), -30.f), n, f);
  const VF p2 = ldexp(VF(1.f), n);
  const VF m = at::vec::fmadd(p2, expm1_reduced(f), p2 - VF(1.f));
  const VF th = (VF(0.f) - m) / (m + VF(2.f));
  return th | (u & VF(-0.f));  // |th| with the sign of u
}
}  // namespace fast

// exp/tanh/atan/log/log1p are Sleef's u10 (1-ulp) routines on AVX2/AVX512 and the
// libm functions lane by lane in the default build; NaN/Inf propagate in both.
template <typename T>
struct VecMath {
  using V = at::vec::Vectorized<T>;
  static V splat(T v) { return V(v); }
  static C10_ALWAYS_INLINE V exp(const V& v) {
    if constexpr (std::is_same_v<T, float>) return fast::exp(v);
    else return v.exp();
  }
  static C10_ALWAYS_INLINE V tanh(const V& v) {
    if constexpr (std::is_same_v<T, float>) return fast::tanh(v);
    else return v.tanh();
  }
  static V atan(const V& v) { return v.atan(); }
  static V log(const V& v) { return v.log(); }
  static V log1p(const V& v) { return v.log1p(); }
  static V abs(const V& v) { return v.abs(); }
  static V max0(const V& v) { return at::vec::maximum(v, V(T(0))); }
};

}  // namespace flowkern::cpu::FK_ISA
