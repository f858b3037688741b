// Per-element math of the fused actnorm + affine coupling op, shared by the CPU
// (at::vec::Vectorized) and CUDA kernels so that both run the same arithmetic.
//
// Notation (README "The op"):
//   z = x * a + b                      (actnorm, per channel)
//   s = f(s_raw)                       (scale function, below)
//   y_active = z_active * exp(s) + t   y_passive = z_passive
//   logdet   = prod(S) * sum_c log|a_c| + sum_{active, S} s
//
// Every function is templated on a math policy M that names the value type
// M::V (float, double or a SIMD vector) and provides splat/exp/tanh/atan/log/
// log1p/abs/max0. ScalarMath below is the policy for plain float/double; the CPU
// backend adds one for at::vec::Vectorized<float|double>. Nothing here includes
// torch headers, so nvcc compiles it in seconds.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FK_HD __host__ __device__ __forceinline__
#else
#define FK_HD inline
#endif

namespace flowkern {

// The scale function s = f(s_raw) (scale_value below). The ops name it by a string ("exp",
// "tanh", "atan", "sigmoid"), which parse_config (csrc/ops_check.h) turns into this.
enum class ScaleFn : int { Exp, Tanh, Atan, Sigmoid };

// The configuration of one coupling call, shared by the CPU and CUDA backends; built and
// checked from the op's arguments by parse_config (csrc/ops_check.h).
struct CouplingConfig {
  int64_t split;       // x[:, :split] / x[:, split:] are the two halves
  bool passive_first;  // the first half is passive (actnorm only), the second active
  ScaleFn scale;
  double clamp;   // tanh / atan: bound of |s|
  double atan_k;  // atan: s = clamp * atan_k * atan(s_raw / clamp)
  double eps;     // sigmoid: s = log(sigmoid(s_raw + 2) + eps)
};

// Scalar parameters of the scale function, in the accumulation type T.
template <typename T>
struct ScaleParams {
  T clamp;      // tanh / atan: output bound
  T inv_clamp;  // 1 / clamp (0 when clamp is 0: unused then)
  T atan_k;     // atan: s = clamp * atan_k * atan(s_raw / clamp)
  T eps;        // sigmoid: s = log(sigmoid(s_raw + 2) + eps)
};

template <typename T>
FK_HD ScaleParams<T> scale_params(const CouplingConfig& c) {
  return ScaleParams<T>{static_cast<T>(c.clamp), c.clamp != 0.0 ? static_cast<T>(1.0 / c.clamp) : T(0),
                        static_cast<T>(c.atan_k), static_cast<T>(c.eps)};
}

template <typename T>
struct ScalarMath;

template <>
struct ScalarMath<float> {
  using V = float;
  static FK_HD float splat(float v) { return v; }
  static FK_HD float exp(float v) { return ::expf(v); }
  static FK_HD float tanh(float v) { return ::tanhf(v); }
  static FK_HD float atan(float v) { return ::atanf(v); }
  static FK_HD float log(float v) { return ::logf(v); }
  static FK_HD float log1p(float v) { return ::log1pf(v); }
  static FK_HD float abs(float v) { return ::fabsf(v); }
  static FK_HD float max0(float v) { return v > 0.f ? v : 0.f; }
};

template <>
struct ScalarMath<double> {
  using V = double;
  static FK_HD double splat(double v) { return v; }
  static FK_HD double exp(double v) { return ::exp(v); }
  static FK_HD double tanh(double v) { return ::tanh(v); }
  static FK_HD double atan(double v) { return ::atan(v); }
  static FK_HD double log(double v) { return ::log(v); }
  static FK_HD double log1p(double v) { return ::log1p(v); }
  static FK_HD double abs(double v) { return ::fabs(v); }
  static FK_HD double max0(double v) { return v > 0.0 ? v : 0.0; }
};

// s = f(s_raw):
//   exp:     s = s_raw
//   tanh:    s = clamp * tanh(s_raw / clamp)
//   atan:    s = (clamp * atan_k) * atan(s_raw / clamp)
//   sigmoid: s = log(sigmoid(s_raw + 2) + eps); for eps == 0 evaluated as
//            -softplus(-(s_raw + 2)) = -(max(-u, 0) + log1p(exp(-|u|))), finite for all u.
template <ScaleFn F, class M, typename T>
FK_HD typename M::V scale_value(typename M::V r, const ScaleParams<T>& p) {
  using V = typename M::V;
  if constexpr (F == ScaleFn::Exp) {
    return r;
  } else if constexpr (F == ScaleFn::Tanh) {
    return M::splat(p.clamp) * M::tanh(r * M::splat(p.inv_clamp));
  } else if constexpr (F == ScaleFn::Atan) {
    return M::splat(p.clamp * p.atan_k) * M::atan(r * M::splat(p.inv_clamp));
  } else {
    const V u = r + M::splat(T(2));
    if (p.eps == T(0)) {
      const V neg_u = M::splat(T(0)) - u;
      return M::splat(T(0)) - (M::max0(neg_u) + M::log1p(M::exp(M::splat(T(0)) - M::abs(u))));
    }
    const V sig = M::splat(T(1)) / (M::splat(T(1)) + M::exp(M::splat(T(0)) - u));
    return M::log(sig + M::splat(p.eps));
  }
}

// ds/ds_raw, given s_raw, s = f(s_raw) and es = exp(s):
//   exp: 1;  tanh: sech^2(s_raw / clamp);  atan: atan_k / (1 + (s_raw / clamp)^2);
//   sigmoid: sigma(u) sigma(-u) / (sigma(u) + eps), u = s_raw + 2 (= sigma(-u) when eps == 0).
template <ScaleFn F, class M, typename T>
FK_HD typename M::V scale_deriv(typename M::V r, typename M::V s, typename M::V es,
                                const ScaleParams<T>& p) {
  using V = typename M::V;
  if constexpr (F == ScaleFn::Exp) {
    return M::splat(T(1));
  } else if constexpr (F == ScaleFn::Tanh) {
    // 1 - tanh(q)^2 = sech(q)^2 = 4 e / (1 + e)^2 with e = exp(-2|q|): no cancellation
    // near saturation, where 1 - th*th would magnify the rounding error of tanh.
    const V e = M::exp(M::splat(T(-2)) * M::abs(r * M::splat(p.inv_clamp)));
    const V one_e = M::splat(T(1)) + e;
    return M::splat(T(4)) * e / (one_e * one_e);
  } else if constexpr (F == ScaleFn::Atan) {
    const V q = r * M::splat(p.inv_clamp);
    return M::splat(p.atan_k) / (M::splat(T(1)) + q * q);
  } else {
    // sigma(u) and 1 - sigma(u) = sigma(-u) straight from u = s_raw + 2 (each finite for
    // every u), not from es - eps, which cancels when sigma(u) << eps or sigma(u) ~ 1.
    const V u = r + M::splat(T(2));
    const V om = M::splat(T(1)) / (M::splat(T(1)) + M::exp(u));
    if (p.eps == T(0)) return om;
    const V sig = M::splat(T(1)) / (M::splat(T(1)) + M::exp(M::splat(T(0)) - u));
    return sig * om / (sig + M::splat(p.eps));
  }
}

// ---- affine pieces -------------------------------------------------------
// forward, active channel:  y = (x a + b) e^s + t
template <class V>
FK_HD V affine_fwd(V x, V a, V b, V es, V t) { return (x * a + b) * es + t; }
// inverse, active channel:  x = ((y - t) e^{-s} - b) / a    (inv_a = 1 / a)
template <class V>
FK_HD V affine_inv(V y, V inv_a, V b, V ies, V t) { return ((y - t) * ies - b) * inv_a; }
// passive channel: y = x a + b  and  x = (y - b) / a
template <class V>
FK_HD V actnorm_fwd(V x, V a, V b) { return x * a + b; }
template <class V>
FK_HD V actnorm_inv(V y, V inv_a, V b) { return (y - b) * inv_a; }

// ---- backward of the forward direction, active channel --------------------
// Given x, a, b, s_raw, t and the incoming grads gy, gl (of y and of logdet):
//   z = x a + b;  gz = gy e^s;  gx = gz a;  da += gz x;  db += gz;
//   gt = gy;  gs_raw = (gy z e^s + gl) f'(s_raw)
template <class V>
struct ActiveGrads {
  V gx;      // grad of x (forward) or y (inverse)
  V gs_raw;  // grad of s_raw
  V gt;      // grad of t
  V da;      // contribution to grad of a (before the log-det term)
  V db;      // contribution to grad of b
};

template <ScaleFn F, class M, typename T>
FK_HD ActiveGrads<typename M::V> backward_fwd_active(
    typename M::V x, typename M::V a, typename M::V b, typename M::V r, typename M::V gy,
    typename M::V gl, const ScaleParams<T>& p) {
  using V = typename M::V;
  const V s = scale_value<F, M>(r, p);
  const V es = M::exp(s);
  const V z = x * a + b;
  const V gz = gy * es;
  ActiveGrads<V> g;
  g.gx = gz * a;
  g.da = gz * x;
  g.db = gz;
  g.gt = gy;
  g.gs_raw = (gz * z + gl) * scale_deriv<F, M>(r, s, es, p);
  return g;
}

// ---- backward of the inverse direction, active channel --------------------
// x = ((y - t) e^{-s} - b) / a.  Given gx, gl (grad of the inverse's log-det,
// which is -(actnorm term + sum s)):
//   z = (y - t) e^{-s};  gz = gx / a;  gy = gz e^{-s};  gt = -gy;
//   da += -gz x;  db += -gz;  gs_raw = -(gz z + gl) f'(s_raw)
template <ScaleFn F, class M, typename T>
FK_HD ActiveGrads<typename M::V> backward_inv_active(
    typename M::V y, typename M::V inv_a, typename M::V b, typename M::V r, typename M::V t,
    typename M::V gx, typename M::V gl, const ScaleParams<T>& p) {
  using V = typename M::V;
  const V s = scale_value<F, M>(r, p);
  const V es = M::exp(s);
  const V ies = M::exp(M::splat(T(0)) - s);
  const V z = (y - t) * ies;
  const V gz = gx * inv_a;
  const V x = (z - b) * inv_a;
  ActiveGrads<V> g;
  g.gx = gz * ies;
  g.gt = M::splat(T(0)) - g.gx;
  g.da = M::splat(T(0)) - gz * x;
  g.db = M::splat(T(0)) - gz;
  g.gs_raw = (M::splat(T(0)) - (gz * z + gl)) * scale_deriv<F, M>(r, s, es, p);
  return g;
}

}  // namespace flowkern
