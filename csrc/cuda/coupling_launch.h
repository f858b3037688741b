// Raw-pointer launchers of the CUDA coupling kernels (coupling_kernels.cu). No torch
// headers here or in the .cu, so nvcc stays fast; coupling_host.h checks arguments,
// allocates with ATen and calls these (on the current stream in coupling_cuda.cpp; on the CPU
// through HIP-CPU in the tests, csrc/cuda/hipcpu).
//
// Work layout: x (B, C, S) is viewed as a row-major matrix of R rows x K columns,
//   vectors (S == 1):  rows = samples (R = B), columns = channels (K = C)
//   otherwise:         rows = (sample, channel) pairs (R = B C), columns = positions (K = S)
// so element (row, k) sits at x[row K + k] in both cases. One warp handles one row and a
// chunk of `chunk` columns; a block holds kWarps warps (consecutive rows, same chunk).
// Grid: (row tiles, chunks), or (chunks, row tiles) when there are more chunks than grid y
// admits (Geometry::chunks_in_x); grid_dims / grid_fits below are what the launchers use.
// Index math is int64 throughout (tensors of 2^31 elements and more).
// Reductions are deterministic (no atomics): partials in fixed slots, then a second pass
// in fixed order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/coupling_math.h"

namespace flowkern::cuda {

enum class DType : int { Float = 0, Double = 1, Half = 2, BFloat16 = 3 };

constexpr int kWarps = 8;       // warps per block of the element-wise kernels
constexpr int kMaxIters = 8;    // column iterations per lane (rows = (sample, channel) layout)
// Blocks a launch grid admits in x and y: CUDA's limits, or smaller ones a test sets to reach
// the large-shape layouts with small tensors.
struct GridLimits {
  int64_t x = 2147483647, y = 65535;
};

// Elements per 128-bit access.
inline int vec_width(DType dt) { return dt == DType::Double ? 2 : dt == DType::Float ? 4 : 8; }

struct Geometry {
  int64_t B, C, S, c_act, act0;
  int64_t g_bs;           // batch stride of the gs / gt outputs: c_act S, or 2 c_act S when
                          // they are the halves of one packed grad_h (B, 2 c_act, S)
  int64_t ssb, ssc, sss;  // s_raw strides (batch, active channel, flattened position)
  int64_t tsb, tsc, tss;  // t strides
  bool rows_are_samples;  // S == 1
  int64_t R, K;           // rows, columns (header comment)
  int64_t chunk, n_chunks, n_row_tiles;
  bool chunks_in_x;       // grid (n_chunks, n_row_tiles) instead of (n_row_tiles, n_chunks)
  bool vec_io;            // x-shaped tensors may be accessed 128 bits at a time
  bool vec_st;            // s_raw and t may be read 128 bits at a time (active vectors)
  bool vec_g;             // grad_s_raw / grad_t outputs (contiguous) may be written 128 bits at a time

  // ld_part / err_part hold one value per (row, chunk): R * n_chunks.
  int64_t ld_part_size() const { return R * n_chunks; }
  // ab partials: per (row tile, channel) for vectors, per (row, chunk) otherwise.
  int64_t ab_part_size() const { return rows_are_samples ? n_row_tiles * C : R * n_chunks; }
};

// Geometry of one call (vector-access flags are set by the caller, who sees the pointers).
inline Geometry make_geometry(DType dt, int64_t B, int64_t C, int64_t S, int64_t c_act,
                              int64_t act0, const GridLimits& lim = {}) {
  Geometry g{};
  g.B = B; g.C = C; g.S = S; g.c_act = c_act; g.act0 = act0;
  g.g_bs = c_act * S;
  g.rows_are_samples = S == 1;
  g.R = g.rows_are_samples ? B : B * C;
  g.K = g.rows_are_samples ? C : S;
  const int64_t lane_span = 32 * static_cast<int64_t>(vec_width(dt));
  if (g.rows_are_samples) {
    g.chunk = lane_span;  // one iteration: each lane owns VEC channels (column reduction)
  } else {
    const int64_t need = (g.K + lane_span - 1) / lane_span * lane_span;
    g.chunk = need < lane_span * kMaxIters ? need : lane_span * kMaxIters;
    if (g.chunk == 0) g.chunk = lane_span;  // K == 0 (an empty spatial dim): no chunks
  }
  g.n_chunks = (g.K + g.chunk - 1) / g.chunk;
  g.n_row_tiles = (g.R + kWarps - 1) / kWarps;
  // grid y holds at most lim.y blocks: more chunks than that (over 65,535 chunks, e.g. a
  // 2-channel 8192 x 8192 image in fp32) go into x, the row tiles into y (there are few then).
  g.chunks_in_x = g.n_chunks > lim.y;
  return g;
}

// Grid of the element-wise kernels (x, y) in blocks.
struct Grid {
  int64_t x, y;
};
inline Grid grid_dims(const Geometry& g) {
  return g.chunks_in_x ? Grid{g.n_chunks, g.n_row_tiles} : Grid{g.n_row_tiles, g.n_chunks};
}
// Every launch of a call fits CUDA's grid limits: the element-wise grid, and the reductions'
// one block per sample (reduce_rows) and per channel (reduce_ab).
inline bool grid_fits(const Geometry& g, const GridLimits& lim = {}) {
  const Grid d = grid_dims(g);
  return d.x <= lim.x && d.y <= lim.y && g.B <= lim.x && g.C <= lim.x;
}

// y, ld_part (acc), err_part (acc, nullptr without check).
void launch_fwd(DType dt, const Geometry& g, const CouplingConfig& sc, const void* x, const void* s_raw,
                const void* t, const void* a, const void* b, void* y, void* ld_part,
                void* err_part, cudaStream_t stream);
// x, ld_part (sum of s; negated by the row reduction).
void launch_inv(DType dt, const Geometry& g, const CouplingConfig& sc, const void* y, const void* s_raw,
                const void* t, const void* a, const void* b, void* x, void* ld_part,
                cudaStream_t stream);
// gx, gs, gt ((B, c_act, S), batch stride g.g_bs), ga/gb partials (acc, nullptr without actnorm).
void launch_fwd_bwd(DType dt, const Geometry& g, const CouplingConfig& sc, const void* gy, const void* gl,
                    const void* x, const void* s_raw, const void* a, const void* b, void* gx,
                    void* gs, void* gt, void* ga_part, void* gb_part, cudaStream_t stream);
void launch_inv_bwd(DType dt, const Geometry& g, const CouplingConfig& sc, const void* gx, const void* gl,
                    const void* y, const void* s_raw, const void* t, const void* a, const void* b,
                    void* gy, void* gs, void* gt, void* ga_part, void* gb_part,
                    cudaStream_t stream);

// out[b] = sign * (sum_i part[b L + i] + (*add if add)), or max_i part[b L + i] with take_max.
// part / add / out in the accumulation type (double iff acc_double).
void launch_reduce_rows(bool acc_double, const void* part, int64_t rows, int64_t L,
                        const void* add, double sign, bool take_max, void* out,
                        cudaStream_t stream);
// ga[c] = sum of ga partials + sign * S * gl_total / a[c]; gb[c] = sum of gb partials.
// ga / gb / a in the storage type; partials and gl_total (one value, = sum_b grad_logdet[b],
// from launch_reduce_rows) in the accumulation type.
void launch_reduce_ab(DType dt, const Geometry& g, const void* ga_part, const void* gb_part,
                      const void* gl_total, const void* a, double sign, void* ga, void* gb,
                      cudaStream_t stream);

}  // namespace flowkern::cuda
