// CUDA kernels of the fused actnorm + affine coupling op (layout: coupling_launch.h).
//
// Per-element arithmetic comes from common/coupling_math.h (the code the CPU backend
// runs), evaluated in fp32 (fp64 for fp64 storage) with ScalarMath. The scale function is
// a runtime switch (uniform per launch, so no divergence), which keeps the instantiations
// to storage dtypes x 4 directions.
//
// The tests also compile this file as C++ for the CPU, through HIP-CPU (the headers in
// csrc/cuda/hipcpu stand in for CUDA's; python_tests/hipcpu_build.py), so it keeps to what
// both read: launches go through FK_LAUNCH, shuffles are reached by every thread of a block.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/coupling_math.h"
#include "cuda/coupling_launch.h"

// kernel<<<grid, block, smem, stream>>>(args...) under nvcc; under HIP-CPU the same launch
// (hipLaunchKernelGGL), on HIP-CPU's stream and waited for (csrc/cuda/hipcpu/cuda_runtime.h).
#if defined(__HIP_CPU_RT__)
#define FK_LAUNCH(kernel, grid, block, smem, stream, ...)                                      \
  do {                                                                                         \
    hipLaunchKernelGGL(kernel, grid, block, smem, ::flowkern::hipcpu::launch_stream(stream),   \
                       __VA_ARGS__);                                                           \
    ::flowkern::hipcpu::wait_for(stream);                                                      \
  } while (0)
#else
#define FK_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif

namespace flowkern::cuda {
namespace {

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> constexpr int kVec = 16 / static_cast<int>(sizeof(T));
template <typename T> struct alignas(16) Pack { T v[kVec<T>]; };

// The block's (row tile, chunk): grid (tiles, chunks), or (chunks, tiles) with g.chunks_in_x.
struct BlockPos {
  int64_t tile, chunk;
};
__device__ __forceinline__ BlockPos block_pos(const Geometry& g) {
  return g.chunks_in_x ? BlockPos{static_cast<int64_t>(blockIdx.y), static_cast<int64_t>(blockIdx.x)}
                       : BlockPos{static_cast<int64_t>(blockIdx.x), static_cast<int64_t>(blockIdx.y)};
}

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void from_acc(float v, float& out) { out = v; }
__device__ __forceinline__ void from_acc(double v, double& out) { out = v; }
__device__ __forceinline__ void from_acc(float v, __half& out) { out = __float2half_rn(v); }
__device__ __forceinline__ void from_acc(float v, __nv_bfloat16& out) { out = __float2bfloat16_rn(v); }

// v rounded to the storage type T and back (what a reader of the stored value sees).
template <typename T, typename A>
__device__ __forceinline__ A round_trip(A v) {
  T st;
  from_acc(v, st);
  return to_acc(st);
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---- runtime scale-function dispatch onto the shared math ---------------------------------
template <typename A>
__device__ __forceinline__ A scale_rt(ScaleFn fn, A r, const ScaleParams<A>& p) {
  using M = ScalarMath<A>;
  switch (fn) {
    case ScaleFn::Exp: return scale_value<ScaleFn::Exp, M>(r, p);
    case ScaleFn::Tanh: return scale_value<ScaleFn::Tanh, M>(r, p);
    case ScaleFn::Atan: return scale_value<ScaleFn::Atan, M>(r, p);
    default: return scale_value<ScaleFn::Sigmoid, M>(r, p);
  }
}

template <typename A>
__device__ __forceinline__ ActiveGrads<A> bwd_fwd_rt(ScaleFn fn, A x, A a, A b, A r, A gy, A gl,
                                                     const ScaleParams<A>& p) {
  using M = ScalarMath<A>;
  switch (fn) {
    case ScaleFn::Exp: return backward_fwd_active<ScaleFn::Exp, M>(x, a, b, r, gy, gl, p);
    case ScaleFn::Tanh: return backward_fwd_active<ScaleFn::Tanh, M>(x, a, b, r, gy, gl, p);
    case ScaleFn::Atan: return backward_fwd_active<ScaleFn::Atan, M>(x, a, b, r, gy, gl, p);
    default: return backward_fwd_active<ScaleFn::Sigmoid, M>(x, a, b, r, gy, gl, p);
  }
}

template <typename A>
__device__ __forceinline__ ActiveGrads<A> bwd_inv_rt(ScaleFn fn, A y, A inv_a, A b, A r, A t, A gx,
                                                     A gl, const ScaleParams<A>& p) {
  using M = ScalarMath<A>;
  switch (fn) {
    case ScaleFn::Exp: return backward_inv_active<ScaleFn::Exp, M>(y, inv_a, b, r, t, gx, gl, p);
    case ScaleFn::Tanh: return backward_inv_active<ScaleFn::Tanh, M>(y, inv_a, b, r, t, gx, gl, p);
    case ScaleFn::Atan: return backward_inv_active<ScaleFn::Atan, M>(y, inv_a, b, r, t, gx, gl, p);
    default: return backward_inv_active<ScaleFn::Sigmoid, M>(y, inv_a, b, r, t, gx, gl, p);
  }
}

// ---- the lane's view of VEC consecutive columns of one row -------------------------------
template <typename T>
struct Lane {
  using A = typename AccOf<T>::type;
  static constexpr int V = kVec<T>;
  int64_t row, k0, b;  // row, first column, sample
  int n;               // valid columns (<= V)
  bool act[V];         // column i is an active channel
  A a[V], inv_a[V], sh[V];  // actnorm per column (1, 1, 0 without)

  __device__ __forceinline__ int64_t channel(const Geometry& g, int i) const {
    return g.rows_are_samples ? k0 + i : row % g.C;
  }
  __device__ __forceinline__ int64_t position(const Geometry& g, int i) const {
    return g.rows_are_samples ? 0 : k0 + i;
  }

  __device__ __forceinline__ void init(const Geometry& g, int64_t row_, int64_t k0_, int64_t end,
                                       const T* pa, const T* pb) {
    row = row_;
    k0 = k0_;
    b = g.rows_are_samples ? row : row / g.C;
    n = static_cast<int>(end - k0 < V ? end - k0 : V);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int64_t c = channel(g, i);
      act[i] = i < n && c >= g.act0 && c < g.act0 + g.c_act;
      a[i] = A(1);
      sh[i] = A(0);
      if (pa != nullptr && i < n) {
        a[i] = to_acc(pa[c]);
        sh[i] = to_acc(pb[c]);
      }
      inv_a[i] = A(1) / a[i];
    }
  }

  // n contiguous elements of a (B, C, S)-contiguous tensor at this lane's columns.
  __device__ __forceinline__ void load_x(const Geometry& g, const T* base, A (&out)[V]) const {
    const T* p = base + row * g.K + k0;
    if (g.vec_io && n == V) {
      const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(p);
#pragma unroll
      for (int i = 0; i < V; ++i) out[i] = to_acc(pk.v[i]);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) out[i] = i < n ? to_acc(p[i]) : A(0);
    }
  }

  __device__ __forceinline__ void store_x(const Geometry& g, T* base, const A (&in)[V]) const {
    T* p = base + row * g.K + k0;
    if (g.vec_io && n == V) {
      Pack<T> pk;
#pragma unroll
      for (int i = 0; i < V; ++i) from_acc(in[i], pk.v[i]);
      *reinterpret_cast<Pack<T>*>(p) = pk;
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i)
        if (i < n) from_acc(in[i], p[i]);
    }
  }

  // Active elements of a strided (B, c_act, S) view (s_raw, t); 0 on passive columns.
  // The host sets g.vec_st only when a full vector that starts active is all active,
  // contiguous and 16-byte aligned.
  __device__ __forceinline__ void load_st(const Geometry& g, const T* base, int64_t sb,
                                          int64_t sc, int64_t ss, A (&out)[V]) const {
    if (g.vec_st && n == V && act[0]) {
      const T* p = base + b * sb + (channel(g, 0) - g.act0) * sc + position(g, 0) * ss;
      const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(p);
#pragma unroll
      for (int i = 0; i < V; ++i) out[i] = to_acc(pk.v[i]);
      return;
    }
#pragma unroll
    for (int i = 0; i < V; ++i)
      out[i] = act[i] ? to_acc(base[b * sb + (channel(g, i) - g.act0) * sc + position(g, i) * ss])
                      : A(0);
  }

  // Active elements into a (B, c_act, S) output with batch stride g_bs (grad_s_raw, grad_t).
  __device__ __forceinline__ void store_g(const Geometry& g, T* base, const A (&in)[V]) const {
    const int64_t off0 = b * g.g_bs + (channel(g, 0) - g.act0) * g.S + position(g, 0);
    if (g.vec_g && n == V && act[0]) {
      Pack<T> pk;
#pragma unroll
      for (int i = 0; i < V; ++i) from_acc(in[i], pk.v[i]);
      *reinterpret_cast<Pack<T>*>(base + off0) = pk;
      return;
    }
#pragma unroll
    for (int i = 0; i < V; ++i)
      if (act[i]) from_acc(in[i], base[b * g.g_bs + (channel(g, i) - g.act0) * g.S + position(g, i)]);
  }
};

// ---- element-wise kernels -------------------------------------------------------------------
// Grid (n_row_tiles, n_chunks) (block_pos), kWarps warps per block, warp w of the block of
// row tile i owns row i kWarps + w. Every thread reaches the shuffles and barriers: threads of
// rows past the end (the last row tile) carry zeros and store nothing.

template <typename T, typename A = typename AccOf<T>::type>
__global__ void __launch_bounds__(kWarps * 32)
fwd_kernel(Geometry g, CouplingConfig sc, const T* __restrict__ x, const T* __restrict__ s_raw,
           const T* __restrict__ t, const T* __restrict__ pa, const T* __restrict__ pb,
           T* __restrict__ y, A* __restrict__ ld_part, A* __restrict__ err_part) {
  constexpr int V = kVec<T>;
  const ScaleParams<A> p = scale_params<A>(sc);
  const int lane = threadIdx.x % 32;
  const BlockPos bp = block_pos(g);
  const int64_t row = bp.tile * kWarps + threadIdx.x / 32;
  const bool row_ok = row < g.R;
  const int64_t col0 = bp.chunk * g.chunk;
  const int64_t col1 = col0 + g.chunk < g.K ? col0 + g.chunk : g.K;
  A ld = 0, err = 0;
  for (int64_t k0 = col0 + lane * V; row_ok && k0 < col1; k0 += 32 * V) {
    Lane<T> L;
    L.init(g, row, k0, col1, pa, pb);
    A xv[V], r[V], tv[V], s[V], yv[V];
    L.load_x(g, x, xv);
    L.load_st(g, s_raw, g.ssb, g.ssc, g.sss, r);
    L.load_st(g, t, g.tsb, g.tsc, g.tss, tv);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      s[i] = L.act[i] ? scale_rt(sc.scale, r[i], p) : A(0);
      yv[i] = L.act[i] ? affine_fwd(xv[i], L.a[i], L.sh[i], ScalarMath<A>::exp(s[i]), tv[i])
                       : actnorm_fwd(xv[i], L.a[i], L.sh[i]);
      ld += s[i];
    }
    L.store_x(g, y, yv);
    if (err_part != nullptr) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        if (i >= L.n) continue;
        const A yq = round_trip<T>(yv[i]);
        const A xr = L.act[i] ? affine_inv(yq, L.inv_a[i], L.sh[i], ScalarMath<A>::exp(-s[i]), tv[i])
                              : actnorm_inv(yq, L.inv_a[i], L.sh[i]);
        err = fmax(err, ScalarMath<A>::abs(xr - xv[i]));
      }
    }
  }
  ld = warp_sum(ld);
  if (err_part != nullptr) err = warp_max(err);
  if (row_ok && lane == 0) {
    ld_part[row * g.n_chunks + bp.chunk] = ld;
    if (err_part != nullptr) err_part[row * g.n_chunks + bp.chunk] = err;
  }
}

template <typename T, typename A = typename AccOf<T>::type>
__global__ void __launch_bounds__(kWarps * 32)
inv_kernel(Geometry g, CouplingConfig sc, const T* __restrict__ y, const T* __restrict__ s_raw,
           const T* __restrict__ t, const T* __restrict__ pa, const T* __restrict__ pb,
           T* __restrict__ x, A* __restrict__ ld_part) {
  constexpr int V = kVec<T>;
  const ScaleParams<A> p = scale_params<A>(sc);
  const int lane = threadIdx.x % 32;
  const BlockPos bp = block_pos(g);
  const int64_t row = bp.tile * kWarps + threadIdx.x / 32;
  const bool row_ok = row < g.R;
  const int64_t col0 = bp.chunk * g.chunk;
  const int64_t col1 = col0 + g.chunk < g.K ? col0 + g.chunk : g.K;
  A ld = 0;
  for (int64_t k0 = col0 + lane * V; row_ok && k0 < col1; k0 += 32 * V) {
    Lane<T> L;
    L.init(g, row, k0, col1, pa, pb);
    A yv[V], r[V], tv[V], xv[V];
    L.load_x(g, y, yv);
    L.load_st(g, s_raw, g.ssb, g.ssc, g.sss, r);
    L.load_st(g, t, g.tsb, g.tsc, g.tss, tv);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const A s = L.act[i] ? scale_rt(sc.scale, r[i], p) : A(0);
      xv[i] = L.act[i] ? affine_inv(yv[i], L.inv_a[i], L.sh[i], ScalarMath<A>::exp(-s), tv[i])
                       : actnorm_inv(yv[i], L.inv_a[i], L.sh[i]);
      ld += s;
    }
    L.store_x(g, x, xv);
  }
  ld = warp_sum(ld);
  if (row_ok && lane == 0) ld_part[row * g.n_chunks + bp.chunk] = ld;
}

// grad_a / grad_b partials of one block. Rows = (sample, channel): the warp's row is one
// channel, so a warp sum gives the slot (row, chunk). Rows = samples: each lane holds V
// channels (one iteration per chunk), summed over the block's warps through shared memory
// in warp order into the slot (row tile, channel).
template <typename T, typename A>
__device__ __forceinline__ void store_ab_partials(const Geometry& g, const BlockPos& bp,
                                                  const A (&da)[kVec<T>], const A (&db)[kVec<T>],
                                                  bool row_ok, A* ga_part, A* gb_part) {
  constexpr int V = kVec<T>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row = bp.tile * kWarps + warp;
  if (!g.rows_are_samples) {
    A sa = 0, sb = 0;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      sa += da[i];
      sb += db[i];
    }
    sa = warp_sum(sa);
    sb = warp_sum(sb);
    if (row_ok && lane == 0) {
      ga_part[row * g.n_chunks + bp.chunk] = sa;
      gb_part[row * g.n_chunks + bp.chunk] = sb;
    }
    return;
  }
  __shared__ A sh_a[kWarps][32 * V];
  __shared__ A sh_b[kWarps][32 * V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    sh_a[warp][lane * V + i] = da[i];
    sh_b[warp][lane * V + i] = db[i];
  }
  __syncthreads();
  for (int col = threadIdx.x; col < 32 * V; col += kWarps * 32) {
    const int64_t c = bp.chunk * g.chunk + col;
    if (c >= g.C) continue;
    A sa = 0, sb = 0;
    for (int w = 0; w < kWarps; ++w) {
      sa += sh_a[w][col];
      sb += sh_b[w][col];
    }
    ga_part[bp.tile * g.C + c] = sa;
    gb_part[bp.tile * g.C + c] = sb;
  }
}

template <typename T, typename A = typename AccOf<T>::type>
__global__ void __launch_bounds__(kWarps * 32)
fwd_bwd_kernel(Geometry g, CouplingConfig sc, const T* __restrict__ gy, const A* __restrict__ gl,
               const T* __restrict__ x, const T* __restrict__ s_raw, const T* __restrict__ pa,
               const T* __restrict__ pb, T* __restrict__ gx, T* __restrict__ gs,
               T* __restrict__ gt, A* __restrict__ ga_part, A* __restrict__ gb_part) {
  constexpr int V = kVec<T>;
  const ScaleParams<A> p = scale_params<A>(sc);
  const int lane = threadIdx.x % 32;
  const BlockPos bp = block_pos(g);
  const int64_t row = bp.tile * kWarps + threadIdx.x / 32;
  const bool row_ok = row < g.R;  // no early exit: the block may synchronise below
  const int64_t col0 = bp.chunk * g.chunk;
  const int64_t col1 = col0 + g.chunk < g.K ? col0 + g.chunk : g.K;
  A da[V] = {}, db[V] = {};
  for (int64_t k0 = col0 + lane * V; row_ok && k0 < col1; k0 += 32 * V) {
    Lane<T> L;
    L.init(g, row, k0, col1, pa, pb);
    A xv[V], gyv[V], r[V], gxv[V], gsv[V];
    L.load_x(g, x, xv);
    L.load_x(g, gy, gyv);
    L.load_st(g, s_raw, g.ssb, g.ssc, g.sss, r);
    const A glb = gl[L.b];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (L.act[i]) {
        const ActiveGrads<A> gr = bwd_fwd_rt(sc.scale, xv[i], L.a[i], L.sh[i], r[i], gyv[i], glb, p);
        gxv[i] = gr.gx;
        gsv[i] = gr.gs_raw;
        da[i] += gr.da;
        db[i] += gr.db;
      } else {  // passive: y = x a + b
        gxv[i] = gyv[i] * L.a[i];
        gsv[i] = A(0);
        da[i] += gyv[i] * xv[i];
        db[i] += gyv[i];
      }
    }
    L.store_x(g, gx, gxv);
    L.store_g(g, gs, gsv);
    L.store_g(g, gt, gyv);
  }
  if (ga_part != nullptr) store_ab_partials<T>(g, bp, da, db, row_ok, ga_part, gb_part);
}

template <typename T, typename A = typename AccOf<T>::type>
__global__ void __launch_bounds__(kWarps * 32)
inv_bwd_kernel(Geometry g, CouplingConfig sc, const T* __restrict__ gx, const A* __restrict__ gl,
               const T* __restrict__ y, const T* __restrict__ s_raw, const T* __restrict__ t,
               const T* __restrict__ pa, const T* __restrict__ pb, T* __restrict__ gy,
               T* __restrict__ gs, T* __restrict__ gt, A* __restrict__ ga_part,
               A* __restrict__ gb_part) {
  constexpr int V = kVec<T>;
  const ScaleParams<A> p = scale_params<A>(sc);
  const int lane = threadIdx.x % 32;
  const BlockPos bp = block_pos(g);
  const int64_t row = bp.tile * kWarps + threadIdx.x / 32;
  const bool row_ok = row < g.R;
  const int64_t col0 = bp.chunk * g.chunk;
  const int64_t col1 = col0 + g.chunk < g.K ? col0 + g.chunk : g.K;
  A da[V] = {}, db[V] = {};
  for (int64_t k0 = col0 + lane * V; row_ok && k0 < col1; k0 += 32 * V) {
    Lane<T> L;
    L.init(g, row, k0, col1, pa, pb);
    A yv[V], gxv[V], r[V], tv[V], gyv[V], gsv[V], gtv[V];
    L.load_x(g, y, yv);
    L.load_x(g, gx, gxv);
    L.load_st(g, s_raw, g.ssb, g.ssc, g.sss, r);
    L.load_st(g, t, g.tsb, g.tsc, g.tss, tv);
    const A glb = gl[L.b];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (L.act[i]) {
        const ActiveGrads<A> gr =
            bwd_inv_rt(sc.scale, yv[i], L.inv_a[i], L.sh[i], r[i], tv[i], gxv[i], glb, p);
        gyv[i] = gr.gx;
        gsv[i] = gr.gs_raw;
        gtv[i] = gr.gt;
        da[i] += gr.da;
        db[i] += gr.db;
      } else {  // passive: x = (y - b) / a
        const A gz = gxv[i] * L.inv_a[i];
        gyv[i] = gz;
        gsv[i] = gtv[i] = A(0);
        if (i < L.n) {
          da[i] -= gz * (yv[i] - L.sh[i]) * L.inv_a[i];
          db[i] -= gz;
        }
      }
    }
    L.store_x(g, gy, gyv);
    L.store_g(g, gs, gsv);
    L.store_g(g, gt, gtv);
  }
  if (ga_part != nullptr) store_ab_partials<T>(g, bp, da, db, row_ok, ga_part, gb_part);
}

// ---- second pass: fixed-order reductions ------------------------------------------------------
constexpr int kReduceThreads = 128;

template <typename A>
__device__ __forceinline__ A block_reduce(A v, bool take_max) {
  __shared__ A warp_vals[kReduceThreads / 32];
  v = take_max ? warp_max(v) : warp_sum(v);
  if (threadIdx.x % 32 == 0) warp_vals[threadIdx.x / 32] = v;
  __syncthreads();
  A out = warp_vals[0];
  for (int w = 1; w < kReduceThreads / 32; ++w) out = take_max ? fmax(out, warp_vals[w]) : out + warp_vals[w];
  return out;
}

template <typename A>
__global__ void __launch_bounds__(kReduceThreads)
reduce_rows_kernel(const A* __restrict__ part, int64_t L, const A* __restrict__ add, A sign,
                   bool take_max, A* __restrict__ out) {
  const A* p = part + static_cast<int64_t>(blockIdx.x) * L;
  A v = 0;
  for (int64_t i = threadIdx.x; i < L; i += kReduceThreads) v = take_max ? fmax(v, p[i]) : v + p[i];
  v = block_reduce(v, take_max);
  if (threadIdx.x == 0) out[blockIdx.x] = take_max ? v : sign * (v + (add != nullptr ? *add : A(0)));
}

// Channel c's partials: sum over o < n_outer, i < n_inner of part[o outer + c cstride + i].
template <typename T, typename A = typename AccOf<T>::type>
__global__ void __launch_bounds__(kReduceThreads)
reduce_ab_kernel(const A* __restrict__ ga_part, const A* __restrict__ gb_part, int64_t n_outer,
                 int64_t outer, int64_t cstride, int64_t n_inner, const A* __restrict__ gl_total,
                 const T* __restrict__ pa, A sign_s, T* __restrict__ ga, T* __restrict__ gb) {
  const int64_t c = blockIdx.x;
  A sa = 0, sb = 0;
  for (int64_t e = threadIdx.x; e < n_outer * n_inner; e += kReduceThreads) {
    const int64_t idx = (e / n_inner) * outer + c * cstride + e % n_inner;
    sa += ga_part[idx];
    sb += gb_part[idx];
  }
  sa = block_reduce(sa, false);
  __syncthreads();  // block_reduce's shared slots are reused
  sb = block_reduce(sb, false);
  if (threadIdx.x == 0) {
    from_acc(sa + sign_s * *gl_total / to_acc(pa[c]), ga[c]);
    from_acc(sb, gb[c]);
  }
}

dim3 grid_of(const Geometry& g) {  // within CUDA's limits: the host checks grid_fits
  const Grid d = grid_dims(g);
  return dim3(static_cast<unsigned>(d.x), static_cast<unsigned>(d.y));
}

bool empty(const Geometry& g) { return g.R == 0 || g.n_chunks == 0; }

template <typename T>
void fwd_t(const Geometry& g, const CouplingConfig& sc, const void* x, const void* s_raw, const void* t,
           const void* a, const void* b, void* y, void* ld, void* err, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  if (empty(g)) return;
  FK_LAUNCH(fwd_kernel<T>, grid_of(g), kWarps * 32, 0, st,
      g, sc, static_cast<const T*>(x), static_cast<const T*>(s_raw), static_cast<const T*>(t),
      static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), static_cast<A*>(ld),
      static_cast<A*>(err));
}

template <typename T>
void inv_t(const Geometry& g, const CouplingConfig& sc, const void* y, const void* s_raw, const void* t,
           const void* a, const void* b, void* x, void* ld, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  if (empty(g)) return;
  FK_LAUNCH(inv_kernel<T>, grid_of(g), kWarps * 32, 0, st,
      g, sc, static_cast<const T*>(y), static_cast<const T*>(s_raw), static_cast<const T*>(t),
      static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(x), static_cast<A*>(ld));
}

template <typename T>
void fwd_bwd_t(const Geometry& g, const CouplingConfig& sc, const void* gy, const void* gl, const void* x,
               const void* s_raw, const void* a, const void* b, void* gx, void* gs, void* gt,
               void* ga_part, void* gb_part, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  if (empty(g)) return;
  FK_LAUNCH(fwd_bwd_kernel<T>, grid_of(g), kWarps * 32, 0, st,
      g, sc, static_cast<const T*>(gy), static_cast<const A*>(gl), static_cast<const T*>(x),
      static_cast<const T*>(s_raw), static_cast<const T*>(a), static_cast<const T*>(b),
      static_cast<T*>(gx), static_cast<T*>(gs), static_cast<T*>(gt), static_cast<A*>(ga_part),
      static_cast<A*>(gb_part));
}

template <typename T>
void inv_bwd_t(const Geometry& g, const CouplingConfig& sc, const void* gx, const void* gl, const void* y,
               const void* s_raw, const void* t, const void* a, const void* b, void* gy, void* gs,
               void* gt, void* ga_part, void* gb_part, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  if (empty(g)) return;
  FK_LAUNCH(inv_bwd_kernel<T>, grid_of(g), kWarps * 32, 0, st,
      g, sc, static_cast<const T*>(gx), static_cast<const A*>(gl), static_cast<const T*>(y),
      static_cast<const T*>(s_raw), static_cast<const T*>(t), static_cast<const T*>(a),
      static_cast<const T*>(b), static_cast<T*>(gy), static_cast<T*>(gs), static_cast<T*>(gt),
      static_cast<A*>(ga_part), static_cast<A*>(gb_part));
}

template <typename T>
void reduce_ab_t(const Geometry& g, const void* ga_part, const void* gb_part, const void* gl_total,
                 const void* a, double sign, void* ga, void* gb, cudaStream_t st) {
  using A = typename AccOf<T>::type;
  if (g.C == 0) return;
  // vectors: slots (row tile, c); otherwise slots (row = b C + c, chunk)
  const int64_t n_outer = g.rows_are_samples ? g.n_row_tiles : g.B;
  const int64_t outer = g.rows_are_samples ? g.C : g.C * g.n_chunks;
  const int64_t cstride = g.rows_are_samples ? 1 : g.n_chunks;
  const int64_t n_inner = g.rows_are_samples ? 1 : g.n_chunks;
  FK_LAUNCH(reduce_ab_kernel<T>, static_cast<unsigned>(g.C), kReduceThreads, 0, st,
      static_cast<const A*>(ga_part), static_cast<const A*>(gb_part), n_outer, outer, cstride,
      n_inner, static_cast<const A*>(gl_total), static_cast<const T*>(a),
      static_cast<A>(sign * static_cast<double>(g.S)), static_cast<T*>(ga), static_cast<T*>(gb));
}

}  // namespace

#define FK_DISPATCH(dt, FN, ...)                                   \
  switch (dt) {                                                    \
    case DType::Float: FN<float>(__VA_ARGS__); break;              \
    case DType::Double: FN<double>(__VA_ARGS__); break;            \
    case DType::Half: FN<__half>(__VA_ARGS__); break;              \
    case DType::BFloat16: FN<__nv_bfloat16>(__VA_ARGS__); break;   \
  }

void launch_fwd(DType dt, const Geometry& g, const CouplingConfig& sc, const void* x, const void* s_raw,
                const void* t, const void* a, const void* b, void* y, void* ld_part,
                void* err_part, cudaStream_t stream) {
  FK_DISPATCH(dt, fwd_t, g, sc, x, s_raw, t, a, b, y, ld_part, err_part, stream);
}

void launch_inv(DType dt, const Geometry& g, const CouplingConfig& sc, const void* y, const void* s_raw,
                const void* t, const void* a, const void* b, void* x, void* ld_part,
                cudaStream_t stream) {
  FK_DISPATCH(dt, inv_t, g, sc, y, s_raw, t, a, b, x, ld_part, stream);
}

void launch_fwd_bwd(DType dt, const Geometry& g, const CouplingConfig& sc, const void* gy, const void* gl,
                    const void* x, const void* s_raw, const void* a, const void* b, void* gx,
                    void* gs, void* gt, void* ga_part, void* gb_part, cudaStream_t stream) {
  FK_DISPATCH(dt, fwd_bwd_t, g, sc, gy, gl, x, s_raw, a, b, gx, gs, gt, ga_part, gb_part, stream);
}

void launch_inv_bwd(DType dt, const Geometry& g, const CouplingConfig& sc, const void* gx, const void* gl,
                    const void* y, const void* s_raw, const void* t, const void* a, const void* b,
                    void* gy, void* gs, void* gt, void* ga_part, void* gb_part,
                    cudaStream_t stream) {
  FK_DISPATCH(dt, inv_bwd_t, g, sc, gx, gl, y, s_raw, t, a, b, gy, gs, gt, ga_part, gb_part,
              stream);
}

void launch_reduce_ab(DType dt, const Geometry& g, const void* ga_part, const void* gb_part,
                      const void* gl_total, const void* a, double sign, void* ga, void* gb,
                      cudaStream_t stream) {
  FK_DISPATCH(dt, reduce_ab_t, g, ga_part, gb_part, gl_total, a, sign, ga, gb, stream);
}

void launch_reduce_rows(bool acc_double, const void* part, int64_t rows, int64_t L,
                        const void* add, double sign, bool take_max, void* out,
                        cudaStream_t stream) {
  if (rows == 0) return;
  const unsigned grid = static_cast<unsigned>(rows);
  if (acc_double) {
    FK_LAUNCH(reduce_rows_kernel<double>, grid, kReduceThreads, 0, stream,
        static_cast<const double*>(part), L, static_cast<const double*>(add), sign, take_max,
        static_cast<double*>(out));
  } else {
    FK_LAUNCH(reduce_rows_kernel<float>, grid, kReduceThreads, 0, stream,
        static_cast<const float*>(part), L, static_cast<const float*>(add),
        static_cast<float>(sign), take_max, static_cast<float*>(out));
  }
}

}  // namespace flowkern::cuda
