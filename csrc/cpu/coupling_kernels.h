// The CPU kernels of the fused actnorm + affine coupling op (forward, inverse and
// both backward passes), written once and compiled once per instruction set:
// kernels_base.cpp, kernels_x86_avx2.cpp and kernels_x86_avx512.cpp define FK_ISA
// (and CPU_CAPABILITY) and include this file.
//
// Work decomposition (independent of the thread count, hence bitwise deterministic):
//   S > 1: unit = one tile of kTile spatial positions of one (b, c) row, vectorised along S;
//   S = 1: unit = one sample, vectorised along channels (in tiles of kTile channels).
// Units are grouped in fixed chunks (size set by the shape alone) that the threads
// claim one at a time (parallel_chunks). Each unit stores its partial sums (sum of s, max error,
// grad_a / grad_b) in its own slot, or, for S = 1, per-chunk channel accumulators; the
// slots are reduced afterwards in a fixed order. Every pass reads each input and writes
// each output once; s_raw / t are read through their strides (unit stride: directly).
#pragma once

#ifndef FK_ISA
#error "define FK_ISA and CPU_CAPABILITY before including coupling_kernels.h"
#endif

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/coupling_math.h"
#include "cpu/kernel_args.h"
#include "cpu/vec_math.h"

namespace flowkern::cpu::FK_ISA {

using at::vec::Vectorized;

constexpr int64_t kTile = 1024;         // elements per tile (stack buffers of one thread)
constexpr int64_t kChunkElems = 16384;    // elements per parallel task (at most)
constexpr int64_t kMinChunkElems = 4096;  // ... and at least
constexpr int64_t kParallelElems = 1 << 14;  // smaller calls run on the calling thread (the
                                             // (256, 64) kernel: ~10.6 -> ~7.5 us on 2 threads)

// err of the forward check: how y is rounded before it is inverted again
enum CheckMode : int { kNoCheck = 0, kCheckExact = 1, kCheckBF16 = 2, kCheckHalf = 3 };

template <typename S>
using acc_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

// Runs fn(c, c + 1) for every chunk c in [0, n) of a call over `elems` elements.
//
// min(n, at::get_num_threads()) threads of ATen's intra-op team (at::parallel_for: the OpenMP
// team of PyTorch's builds, shared with every other ATen op since the extension is built with
// -fopenmp against torch's own libgomp) each claim the next unclaimed chunk from a shared
// counter until none is left, so a thread that starts late does fewer chunks. Between ops the
// team's threads spin for a while, so a call that follows other ATen ops (the usual case in a
// model) starts on hot threads; a private pool's helper sleeps on a condition variable and, on
// this VM kind, misses millisecond-long calls that follow an op altogether (measured: 1.5 ms
// alone, 2.6 ms right after a torch.exp). Results are deterministic because every chunk writes
// only its own slots. Below kParallelElems (or built without OpenMP) all runs on the caller.
template <class Fn>
void parallel_chunks(int64_t n, int64_t elems, const Fn& fn) {
  if (n <= 0) return;
  const int64_t workers = elems < kParallelElems ? 1 : std::min<int64_t>(n, at::get_num_threads());
  if (workers <= 1 || at::in_parallel_region()) {
    for (int64_t c = 0; c < n; ++c) fn(c, c + 1);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w)
      for (int64_t c = next.fetch_add(1); c < n; c = next.fetch_add(1)) fn(c, c + 1);
  });
}

// ---- vector helpers -------------------------------------------------------------
template <typename T>
constexpr int64_t W = Vectorized<T>::size();

// body(i, cnt) for full vectors (cnt == W) and one partial tail
template <typename T, class Body>
inline void vec_loop(int64_t n, Body&& body) {
  int64_t i = 0;
  for (; i + W<T> <= n; i += W<T>) body(i, W<T>);
  if (i < n) body(i, n - i);
}

template <typename T>
inline Vectorized<T> ld(const T* p, int64_t cnt) {
  return cnt == W<T> ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, cnt);
}

template <typename T>
inline void st(T* p, const Vectorized<T>& v, int64_t cnt) {
  if (cnt == W<T>) v.store(p);
  else v.store(p, static_cast<int>(cnt));
}

// v with lanes >= cnt zeroed (tails must not enter sums)
template <typename T>
inline Vectorized<T> keep(const Vectorized<T>& v, int64_t cnt) {
  return cnt == W<T> ? v : Vectorized<T>::set(Vectorized<T>(T(0)), v, cnt);
}

// actnorm parameter: per lane (S = 1, along channels) or the row's value (S > 1)
template <bool PE, typename T>
inline Vectorized<T> ab(const T* p, int64_t i, int64_t cnt) {
  if constexpr (PE) return ld(p + i, cnt);
  else return Vectorized<T>(*p);
}

template <typename T>
inline T nanmax(T a, T b) { return (std::isnan(a) || a >= b) ? a : b; }

template <typename T>
inline T hsum(const Vectorized<T>& v) {
  alignas(64) T buf[W<T>];
  v.store(buf);
  T s = 0;
  for (int64_t i = 0; i < W<T>; ++i) s += buf[i];
  return s;
}

template <typename T>
inline T hmax(const Vectorized<T>& v) {
  alignas(64) T buf[W<T>];
  v.store(buf);
  T m = 0;
  for (int64_t i = 0; i < W<T>; ++i) m = nanmax(m, buf[i]);
  return m;
}

// y as stored in the output dtype, back in fp32 registers
template <int Chk>
inline Vectorized<float> round_to_storage(const Vectorized<float>& y) {
  if constexpr (Chk == kCheckBF16)
    return std::get<0>(at::vec::convert_to_float<c10::BFloat16>(at::vec::convert_from_float<c10::BFloat16>(y, y)));
  else if constexpr (Chk == kCheckHalf)
    return std::get<0>(at::vec::convert_to_float<c10::Half>(at::vec::convert_from_float<c10::Half>(y, y)));
  else
    return y;
}
template <int Chk>
inline Vectorized<double> round_to_storage(const Vectorized<double>& y) { return y; }

// ---- per-tile math (acc type T, unit stride) --------------------------------------
template <typename T>
struct Seg {
  const T* in = nullptr;  // x (fwd) or y (inv)
  const T* r = nullptr;   // s_raw
  const T* t = nullptr;
  const T* g = nullptr;   // grad of the main output (bwd)
  T* out = nullptr;       // y / x / grad of `in`
  T* gr = nullptr;        // grad_s_raw
  T* gt = nullptr;        // grad_t (nullptr: written by the caller)
  const T* a = nullptr;   // actnorm a, b, 1/a: per element (PE) or the row's value
  const T* b = nullptr;
  const T* inv_a = nullptr;
  T* da = nullptr;        // PE: per-channel grad_a / grad_b accumulators
  T* db = nullptr;
};

template <typename T>
struct Part {
  T s = 0;   // sum of s
  T e = 0;   // max |x_rebuilt - x|
  T da = 0;  // grad_a / grad_b of a row (S > 1)
  T db = 0;
};

template <typename T>
using ScaleP = ScaleParams<T>;

// The per-tile loops below inline everything they call (scale_value & co. of
// coupling_math.h included), so each loop body is straight-line vector code.
#if defined(__GNUC__)
#if defined(__SANITIZE_ADDRESS__)
// ASan builds (make sanitize): flattening every call under instrumentation takes tens of
// minutes to compile; the sanitizers check the same code paths without it.
#define FK_FLATTEN
#else
#define FK_FLATTEN __attribute__((flatten))
#endif
#else
#define FK_FLATTEN
#endif

// y_a = (x a + b) e^s + t;  sum s;  with Chk: max |((y - t) e^-s - b) / a - x|
template <ScaleFn F, bool PE, int Chk, typename T>
FK_FLATTEN Part<T> fwd_active(const Seg<T>& s, int64_t n, const ScaleP<T>& p) {
  using V = Vectorized<T>;
  using M = VecMath<T>;
  V ssum(T(0)), emax(T(0));
  vec_loop<T>(n, [&](int64_t i, int64_t c) {
    const V x = ld(s.in + i, c), r = ld(s.r + i, c), t = ld(s.t + i, c);
    const V a = ab<PE>(s.a, i, c), b = ab<PE>(s.b, i, c);
    const V sv = scale_value<F, M>(r, p);
    const V y = affine_fwd(x, a, b, M::exp(sv), t);
    st(s.out + i, y, c);
    ssum = ssum + keep(sv, c);
    if constexpr (Chk != kNoCheck) {
      const V xr = affine_inv(round_to_storage<Chk>(y), ab<PE>(s.inv_a, i, c), b, M::exp(V(T(0)) - sv), t);
      emax = at::vec::maximum(emax, keep((xr - x).abs(), c));
    }
  });
  Part<T> out;
  out.s = hsum(ssum);
  if constexpr (Chk != kNoCheck) out.e = hmax(emax);
  return out;
}

// x_a = ((y - t) e^-s - b) / a;  sum s
template <ScaleFn F, bool PE, typename T>
FK_FLATTEN Part<T> inv_active(const Seg<T>& s, int64_t n, const ScaleP<T>& p) {
  using V = Vectorized<T>;
  using M = VecMath<T>;
  V ssum(T(0));
  vec_loop<T>(n, [&](int64_t i, int64_t c) {
    const V y = ld(s.in + i, c), r = ld(s.r + i, c), t = ld(s.t + i, c);
    const V sv = scale_value<F, M>(r, p);
    st(s.out + i, affine_inv(y, ab<PE>(s.inv_a, i, c), ab<PE>(s.b, i, c), M::exp(V(T(0)) - sv), t), c);
    ssum = ssum + keep(sv, c);
  });
  Part<T> out;
  out.s = hsum(ssum);
  return out;
}

// add the grad_a / grad_b contributions of one vector
template <bool PE, typename T>
inline void add_ab(const Seg<T>& s, int64_t i, int64_t c, const Vectorized<T>& da, const Vectorized<T>& db,
                   Vectorized<T>& da_sum, Vectorized<T>& db_sum) {
  if constexpr (PE) {
    st(s.da + i, ld(s.da + i, c) + da, c);
    st(s.db + i, ld(s.db + i, c) + db, c);
  } else {
    da_sum = da_sum + keep(da, c);
    db_sum = db_sum + keep(db, c);
  }
}

template <typename T>
inline Part<T> ab_part(const Vectorized<T>& da, const Vectorized<T>& db) {
  Part<T> out;
  out.da = hsum(da);
  out.db = hsum(db);
  return out;
}

// grads of the forward, active side (coupling_math.h backward_fwd_active)
template <ScaleFn F, bool PE, typename T>
FK_FLATTEN Part<T> fwd_bwd_active(const Seg<T>& s, int64_t n, T gl, const ScaleP<T>& p) {
  using V = Vectorized<T>;
  using M = VecMath<T>;
  V da(T(0)), db(T(0));
  vec_loop<T>(n, [&](int64_t i, int64_t c) {
    const V gy = ld(s.g + i, c);
    const auto g = backward_fwd_active<F, M>(ld(s.in + i, c), ab<PE>(s.a, i, c), ab<PE>(s.b, i, c),
                                             ld(s.r + i, c), gy, V(gl), p);
    st(s.out + i, g.gx, c);
    st(s.gr + i, g.gs_raw, c);
    if (s.gt) st(s.gt + i, g.gt, c);
    add_ab<PE>(s, i, c, g.da, g.db, da, db);
  });
  return ab_part(da, db);
}

// grads of the inverse, active side (coupling_math.h backward_inv_active)
template <ScaleFn F, bool PE, typename T>
FK_FLATTEN Part<T> inv_bwd_active(const Seg<T>& s, int64_t n, T gl, const ScaleP<T>& p) {
  using V = Vectorized<T>;
  using M = VecMath<T>;
  V da(T(0)), db(T(0));
  vec_loop<T>(n, [&](int64_t i, int64_t c) {
    const auto g = backward_inv_active<F, M>(ld(s.in + i, c), ab<PE>(s.inv_a, i, c), ab<PE>(s.b, i, c),
                                             ld(s.r + i, c), ld(s.t + i, c), ld(s.g + i, c), V(gl), p);
    st(s.out + i, g.gx, c);
    st(s.gr + i, g.gs_raw, c);
    st(s.gt + i, g.gt, c);
    add_ab<PE>(s, i, c, g.da, g.db, da, db);
  });
  return ab_part(da, db);
}

// passive side: y = x a + b  /  x = (y - b) / a;  with Chk: max |(y - b) / a - x|
template <bool PE, bool Inverse, int Chk, typename T>
FK_FLATTEN Part<T> passive_map(const Seg<T>& s, int64_t n) {
  using V = Vectorized<T>;
  V emax(T(0));
  vec_loop<T>(n, [&](int64_t i, int64_t c) {
    const V v = ld(s.in + i, c), b = ab<PE>(s.b, i, c), inv_a = ab<PE>(s.inv_a, i, c);
    const V y = Inverse ? actnorm_inv(v, inv_a, b) : actnorm_fwd(v, ab<PE>(s.a, i, c), b);
    st(s.out + i, y, c);
    if constexpr (Chk != kNoCheck)
      emax = at::vec::maximum(emax, keep((actnorm_inv(round_to_storage<Chk>(y), inv_a, b) - v).abs(), c));
  });
  Part<T> out;
  if constexpr (Chk != kNoCheck) out.e = hmax(emax);
  return out;
}

// passive grads. fwd: gx = gy a, da += gy x, db += gy.
// inv: gz = gx / a, gy = gz, da -= gz x (x = (y - b) / a), db -= gz.
template <bool PE, bool Inverse, typename T>
FK_FLATTEN Part<T> passive_bwd(const Seg<T>& s, int64_t n) {
  using V = Vectorized<T>;
  V da(T(0)), db(T(0));
  vec_loop<T>(n, [&](int64_t i, int64_t c) {
    const V g = ld(s.g + i, c), v = ld(s.in + i, c), b = ab<PE>(s.b, i, c);
    if constexpr (Inverse) {
      const V inv_a = ab<PE>(s.inv_a, i, c);
      const V gz = g * inv_a;
      st(s.out + i, gz, c);
      add_ab<PE>(s, i, c, V(T(0)) - gz * actnorm_inv(v, inv_a, b), V(T(0)) - gz, da, db);
    } else {
      st(s.out + i, g * ab<PE>(s.a, i, c), c);
      add_ab<PE>(s, i, c, g * v, g, da, db);
    }
  });
  return ab_part(da, db);
}

// ---- loads / stores between the storage dtype S and the acc type T -------------------
template <typename S, typename T>
void to_acc(const S* src, T* dst, int64_t n) {
  int64_t i = 0;
  if constexpr (!std::is_same_v<S, T> && std::is_same_v<T, float>) {
    for (; i + W<S> <= n; i += W<S>) {
      const auto [lo, hi] = at::vec::convert_to_float<S>(Vectorized<S>::loadu(src + i));
      lo.store(dst + i);
      hi.store(dst + i + W<float>);
    }
  }
  for (; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

// contiguous run: the data itself when S == T, else converted into buf
template <typename S, typename T>
const T* load_contig(const S* src, int64_t n, T* buf) {
  if constexpr (std::is_same_v<S, T>) {
    return src;
  } else {
    to_acc(src, buf, n);
    return buf;
  }
}

template <typename S, typename T>
const T* load_strided(const S* src, int64_t stride, int64_t n, T* buf) {
  if (stride == 1) return load_contig(src, n, buf);
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<T>(src[i * stride]);
  return buf;
}

template <typename S, typename T>
T* out_ptr(S* dst, T* buf) {
  if constexpr (std::is_same_v<S, T>) return dst;
  else return buf;
}

template <typename S, typename T>
void flush(S* dst, const T* buf, int64_t n) {
  if constexpr (!std::is_same_v<S, T>) at::vec::convert(buf, dst, n);
}

// ---- iteration space -------------------------------------------------------------
// A run: n consecutive elements of the contiguous (B, C, *S) tensors, all passive or all
// active, starting at flat offset `off`, channel `ch`, spatial index `s0`.
struct Run {
  int64_t b, off, n, ch, s0;
  bool active;
};

struct Geo {
  int64_t B, C, S, c_act, act0, nt, g_bs;
  bool pe;  // S == 1: vectorise along channels

  explicit Geo(const CouplingArgs& A)
      : B(A.B), C(A.C), S(A.S), c_act(A.c_act), act0(A.act0),
        nt((A.S + kTile - 1) / kTile), g_bs(A.g_bs), pe(A.S == 1) {}

  int64_t n_units() const { return pe ? B : B * C * nt; }
  // chunk size: a function of the shape only (never of the thread count), ~1/16 of the
  // call clamped to [kMinChunkElems, kChunkElems] elements
  int64_t units_per_chunk() const {
    const int64_t unit_elems = pe ? C : std::max<int64_t>(1, std::min(S, kTile));
    const int64_t target = std::clamp<int64_t>(B * C * S / 16, kMinChunkElems, kChunkElems);
    return std::max<int64_t>(1, target / unit_elems);
  }
  int64_t n_chunks() const { return (n_units() + units_per_chunk() - 1) / units_per_chunk(); }
  bool is_active(int64_t c) const { return c >= act0 && c < act0 + c_act; }
  // index of partial slot of (b, c, tile k) for S > 1
  int64_t slot(int64_t b, int64_t c, int64_t k) const { return (b * C + c) * nt + k; }

  template <class Fn>
  void for_runs(int64_t u, Fn&& fn) const {
    if (!pe) {
      const int64_t row = u / nt, s0 = (u % nt) * kTile;
      fn(Run{row / C, row * S + s0, std::min(kTile, S - s0), row % C, s0, is_active(row % C)});
      return;
    }
    const int64_t pas0 = act0 == 0 ? c_act : 0;
    for (const auto& [c0, len, act] : {std::tuple{pas0, C - c_act, false}, std::tuple{act0, c_act, true}})
      for (int64_t j = 0; j < len; j += kTile)
        fn(Run{u, u * C + c0 + j, std::min(kTile, len - j), c0 + j, 0, act});
  }
};

// s_raw / t values of an active run, through the view's strides
template <typename S, typename T>
const T* load_view(const StridedView& v, const Geo& g, const Run& run, T* buf) {
  const S* base = static_cast<const S*>(v.data) + run.b * v.sb + (run.ch - g.act0) * v.sc;
  if (g.pe) return load_strided(base, v.sc, run.n, buf);
  if (v.ss >= 0) return load_strided(base + run.s0 * v.ss, v.ss, run.n, buf);
  for (int64_t i = 0; i < run.n; ++i) {  // spatial dims that do not flatten: unravel
    int64_t idx = run.s0 + i, off = 0;
    for (int64_t d = static_cast<int64_t>(v.sizes.size()) - 1; d >= 0; --d) {
      off += (idx % v.sizes[d]) * v.strides[d];
      idx /= v.sizes[d];
    }
    buf[i] = static_cast<T>(base[off]);
  }
  return buf;
}

// offset of an active run in the grads of s_raw / t ((B, c_act, *S), batch stride g_bs)
inline int64_t grad_off(const Geo& g, const Run& run) {
  return run.b * g.g_bs + (run.ch - g.act0) * g.S + run.s0;
}

template <typename T>
struct Bufs {
  alignas(64) T in[kTile], r[kTile], t[kTile], g[kTile], out[kTile], gr[kTile], gt[kTile];
};

// Runs run_fn(run, bufs, da_chunk, db_chunk) -> Part over every run; returns one Part per
// unit. With PE grads (S = 1 backward) fills chunk_ab: per chunk [grad_a (C) | grad_b (C)].
template <typename T, class RunFn>
std::vector<Part<T>> drive(const Geo& g, bool pe_grads, std::vector<T>& chunk_ab, const RunFn& run_fn) {
  const int64_t n_units = g.n_units(), upc = g.units_per_chunk(), n_chunks = g.n_chunks();
  std::vector<Part<T>> parts(n_units);
  if (pe_grads) chunk_ab.assign(n_chunks * 2 * g.C, T(0));
  parallel_chunks(n_chunks, g.B * g.C * g.S, [&](int64_t c0, int64_t c1) {
    const std::unique_ptr<Bufs<T>> bufs(new Bufs<T>);  // scratch: not zero-filled
    for (int64_t ch = c0; ch < c1; ++ch) {
      T* da = pe_grads ? chunk_ab.data() + ch * 2 * g.C : nullptr;
      T* db = pe_grads ? da + g.C : nullptr;
      for (int64_t u = ch * upc; u < std::min(n_units, (ch + 1) * upc); ++u) {
        Part<T> acc;
        g.for_runs(u, [&](const Run& run) {
          const Part<T> p = run_fn(run, *bufs, da, db);
          acc.s += p.s;
          acc.e = nanmax(acc.e, p.e);
          acc.da += p.da;
          acc.db += p.db;
        });
        parts[u] = acc;
      }
    }
  });
  return parts;
}

// logdet[b] = sign * (sum s + ld_const); err[b] = max over the sample's units
template <typename T>
void finish_logdet(const CouplingArgs& A, const Geo& g, const std::vector<Part<T>>& parts, T sign) {
  T* logdet = static_cast<T*>(A.logdet);
  T* err = static_cast<T*>(A.err);
  for (int64_t b = 0; b < g.B; ++b) {
    T s = 0, e = 0;
    if (g.pe) {
      s = parts[b].s;
      e = parts[b].e;
    } else {
      for (int64_t c = 0; c < g.C; ++c)
        for (int64_t k = 0; k < g.nt; ++k) {
          if (g.is_active(c)) s += parts[g.slot(b, c, k)].s;
          e = nanmax(e, parts[g.slot(b, c, k)].e);
        }
    }
    logdet[b] = sign * (s + static_cast<T>(A.ld_const));
    if (err) err[b] = e;
  }
}

// grad_a[c] = sum of contributions + sign * S * sum_b(gl_b) / a_c;  grad_b[c] = sum
template <typename T>
void finish_ab(const CouplingArgs& A, const Geo& g, const std::vector<Part<T>>& parts,
               const std::vector<T>& chunk_ab, T sign) {
  if (!A.has_ab) return;
  T* ga = static_cast<T*>(A.g_a);
  T* gb = static_cast<T*>(A.g_b);
  const T* a = static_cast<const T*>(A.a);
  const T* gl = static_cast<const T*>(A.glog);
  T gl_sum = 0;
  for (int64_t b = 0; b < g.B; ++b) gl_sum += gl[b];
  for (int64_t c = 0; c < g.C; ++c) {
    T da = 0, db = 0;
    if (g.pe) {
      for (size_t ch = 0; ch < chunk_ab.size(); ch += 2 * g.C) {
        da += chunk_ab[ch + c];
        db += chunk_ab[ch + g.C + c];
      }
    } else {
      for (int64_t b = 0; b < g.B; ++b)
        for (int64_t k = 0; k < g.nt; ++k) {
          da += parts[g.slot(b, c, k)].da;
          db += parts[g.slot(b, c, k)].db;
        }
    }
    ga[c] = da + sign * static_cast<T>(g.S) * gl_sum / a[c];
    gb[c] = db;
  }
}

// fn(integral_constant<ScaleFn>, bool_constant<PE>) for the runtime (scale, pe)
template <class Fn>
auto with_scale_pe(ScaleFn scale, bool pe, Fn&& fn) {
  auto with_pe = [&](auto f) { return pe ? fn(f, std::true_type{}) : fn(f, std::false_type{}); };
  switch (scale) {
    case ScaleFn::Exp: return with_pe(std::integral_constant<ScaleFn, ScaleFn::Exp>{});
    case ScaleFn::Tanh: return with_pe(std::integral_constant<ScaleFn, ScaleFn::Tanh>{});
    case ScaleFn::Atan: return with_pe(std::integral_constant<ScaleFn, ScaleFn::Atan>{});
    default: return with_pe(std::integral_constant<ScaleFn, ScaleFn::Sigmoid>{});
  }
}

// a, b, 1/a pointers of a run (per-element for S = 1, the row's value for S > 1)
template <typename T>
void set_ab(Seg<T>& s, const CouplingArgs& A, const Run& run) {
  s.a = static_cast<const T*>(A.a) + run.ch;
  s.b = static_cast<const T*>(A.b) + run.ch;
  s.inv_a = static_cast<const T*>(A.inv_a) + run.ch;
}

// ---- the four kernels, per storage dtype S -----------------------------------------
template <typename S, bool Inverse>
void map_kernel(const CouplingArgs& A) {
  using T = acc_t<S>;
  using Fn = Part<T> (*)(const Seg<T>&, int64_t, const ScaleP<T>&);
  using PassiveFn = Part<T> (*)(const Seg<T>&, int64_t);
  const Geo g(A);
  const ScaleP<T> p = scale_params<T>(A.cfg);
  int chk = kNoCheck;
  if (!Inverse && A.err)
    chk = std::is_same_v<S, c10::BFloat16> ? kCheckBF16 : std::is_same_v<S, c10::Half> ? kCheckHalf : kCheckExact;
  const Fn core = with_scale_pe(A.cfg.scale, g.pe, [&](auto f, auto pe) -> Fn {
    constexpr ScaleFn F = decltype(f)::value;
    constexpr bool PE = decltype(pe)::value;
    if constexpr (Inverse) {
      return &inv_active<F, PE, T>;
    } else {
      if (chk == kNoCheck) return &fwd_active<F, PE, kNoCheck, T>;
      if constexpr (std::is_same_v<T, float>) {
        if (chk == kCheckBF16) return &fwd_active<F, PE, kCheckBF16, T>;
        if (chk == kCheckHalf) return &fwd_active<F, PE, kCheckHalf, T>;
      }
      return &fwd_active<F, PE, kCheckExact, T>;
    }
  });
  const PassiveFn passive = with_scale_pe(ScaleFn::Exp, g.pe, [&](auto, auto pe) -> PassiveFn {
    constexpr bool PE = decltype(pe)::value;
    if (chk == kNoCheck) return &passive_map<PE, Inverse, kNoCheck, T>;
    if constexpr (std::is_same_v<T, float>) {
      if (chk == kCheckBF16) return &passive_map<PE, Inverse, kCheckBF16, T>;
      if (chk == kCheckHalf) return &passive_map<PE, Inverse, kCheckHalf, T>;
    }
    return &passive_map<PE, Inverse, kCheckExact, T>;
  });
  const S* in = static_cast<const S*>(A.in);
  S* out = static_cast<S*>(A.out);
  std::vector<T> unused;
  const auto parts = drive<T>(g, false, unused, [&](const Run& run, Bufs<T>& bf, T*, T*) {
    Part<T> res;
    if (!run.active && !A.has_ab && chk == kNoCheck) {  // y_p = x_p
      std::memcpy(out + run.off, in + run.off, run.n * sizeof(S));
      return res;
    }
    Seg<T> s;
    set_ab(s, A, run);
    s.in = load_contig(in + run.off, run.n, bf.in);
    s.out = out_ptr(out + run.off, bf.out);
    if (run.active) {
      s.r = load_view<S>(A.r, g, run, bf.r);
      s.t = load_view<S>(A.t, g, run, bf.t);
      res = core(s, run.n, p);
    } else {
      res = passive(s, run.n);
    }
    flush(out + run.off, s.out, run.n);
    return res;
  });
  finish_logdet<T>(A, g, parts, Inverse ? T(-1) : T(1));
}

template <typename S, bool Inverse>
void bwd_kernel(const CouplingArgs& A) {
  using T = acc_t<S>;
  using Fn = Part<T> (*)(const Seg<T>&, int64_t, T, const ScaleP<T>&);
  const Geo g(A);
  const ScaleP<T> p = scale_params<T>(A.cfg);
  const Fn core = with_scale_pe(A.cfg.scale, g.pe, [&](auto f, auto pe) -> Fn {
    constexpr ScaleFn F = decltype(f)::value;
    constexpr bool PE = decltype(pe)::value;
    if constexpr (Inverse) return &inv_bwd_active<F, PE, T>;
    else return &fwd_bwd_active<F, PE, T>;
  });
  const auto passive = g.pe ? &passive_bwd<true, Inverse, T> : &passive_bwd<false, Inverse, T>;
  const S* in = static_cast<const S*>(A.in);
  const S* gin = static_cast<const S*>(A.gout);
  const T* gl = static_cast<const T*>(A.glog);
  S* out = static_cast<S*>(A.out);
  S* g_r = static_cast<S*>(A.g_r);
  S* g_t = static_cast<S*>(A.g_t);
  const bool pe_grads = g.pe;  // accumulated even without actnorm (then unused)
  std::vector<T> chunk_ab;
  const auto parts = drive<T>(g, pe_grads, chunk_ab, [&](const Run& run, Bufs<T>& bf, T* da, T* db) {
    Part<T> res;
    if (!run.active && !A.has_ab) {  // y_p = x_p: the grad passes through
      std::memcpy(out + run.off, gin + run.off, run.n * sizeof(S));
      return res;
    }
    Seg<T> s;
    set_ab(s, A, run);
    s.da = da ? da + run.ch : nullptr;
    s.db = db ? db + run.ch : nullptr;
    s.in = load_contig(in + run.off, run.n, bf.in);
    s.g = load_contig(gin + run.off, run.n, bf.g);
    s.out = out_ptr(out + run.off, bf.out);
    if (run.active) {
      const int64_t go = grad_off(g, run);
      s.r = load_view<S>(A.r, g, run, bf.r);
      if constexpr (Inverse) s.t = load_view<S>(A.t, g, run, bf.t);
      s.gr = out_ptr(g_r + go, bf.gr);
      if (Inverse || std::is_same_v<S, T>) s.gt = out_ptr(g_t + go, bf.gt);
      else std::memcpy(g_t + go, gin + run.off, run.n * sizeof(S));  // grad_t = grad_y, as stored
      res = core(s, run.n, gl[run.b], p);
      flush(g_r + go, s.gr, run.n);
      if (Inverse) flush(g_t + go, s.gt, run.n);
    } else {
      res = passive(s, run.n);
    }
    flush(out + run.off, s.out, run.n);
    return res;
  });
  finish_ab<T>(A, g, parts, chunk_ab, Inverse ? T(-1) : T(1));
}

template <bool Inverse>
void map_dispatch(const CouplingArgs& A) {
  switch (A.dtype) {
    case c10::ScalarType::Double: return map_kernel<double, Inverse>(A);
    case c10::ScalarType::BFloat16: return map_kernel<c10::BFloat16, Inverse>(A);
    case c10::ScalarType::Half: return map_kernel<c10::Half, Inverse>(A);
    default: return map_kernel<float, Inverse>(A);
  }
}

template <bool Inverse>
void bwd_dispatch(const CouplingArgs& A) {
  switch (A.dtype) {
    case c10::ScalarType::Double: return bwd_kernel<double, Inverse>(A);
    case c10::ScalarType::BFloat16: return bwd_kernel<c10::BFloat16, Inverse>(A);
    case c10::ScalarType::Half: return bwd_kernel<c10::Half, Inverse>(A);
    default: return bwd_kernel<float, Inverse>(A);
  }
}

const KernelTable* kernel_table() {
  static const KernelTable table{&map_dispatch<false>, &map_dispatch<true>, &bwd_dispatch<false>,
                                 &bwd_dispatch<true>};
  return &table;
}

}  // namespace flowkern::cpu::FK_ISA
