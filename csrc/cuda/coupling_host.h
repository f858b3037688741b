// Host side of the CUDA coupling ops: checks arguments (csrc/ops_check.h), allocates outputs and
// partial buffers with ATen and calls the raw-pointer launchers of coupling_kernels.cu.
//
// Shared by the real CUDA extension (coupling_cuda.cpp) and the tests' CPU build of the same
// kernels through HIP-CPU (csrc/cuda/hipcpu/, python_tests/hipcpu_build.py). What differs is the
// Device policy:
//
//   struct Device {
//     static bool on_device(const at::Tensor& x);   // x is on this backend's device
//     static constexpr const char* kWhere;          // "a CUDA tensor for the cuda backend", ...
//     static cuda::GridLimits grid_limits();        // blocks a launch grid admits
//     static void check_launches();                 // raise if a launch of this call failed
//     struct Scope {                                // held around the launches of one call
//       explicit Scope(const at::Tensor& x);
//       cudaStream_t stream;                        // the stream the launchers get
//     };
//   };
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "cuda/coupling_launch.h"
#include "op_entries.h"
#include "ops_check.h"

namespace flowkern::cuda_host {

using at::Tensor;
namespace fc = flowkern::cuda;

inline fc::DType dtype_of(const Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return fc::DType::Float;
    case at::kDouble: return fc::DType::Double;
    case at::kHalf: return fc::DType::Half;
    default: return fc::DType::BFloat16;  // check_coupling_args admits nothing else
  }
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// v (B, C', *S) and its (batch, channel, position) strides with S flattened (flatten_view),
// without a copy when the spatial dims collapse to one stride (always for slices of a contiguous tensor).
inline std::tuple<Tensor, int64_t, int64_t, int64_t> bcs_view(const Tensor& v) {
  FlatView f = flatten_view(v);
  if (f.ss >= 0) return {v, f.sb, f.sc, f.ss};
  const Tensor u = v.contiguous();
  f = flatten_view(u);
  return {u, f.sb, f.sc, f.ss};
}

struct Prepared {
  CouplingShape sh;
  fc::DType dt;
  fc::Geometry g;
  CouplingConfig sc;
  Tensor s_raw, t, a, b;  // a/b undefined without actnorm
};

inline const void* ptr_or_null(const Tensor& v) { return v.defined() ? v.data_ptr() : nullptr; }

inline Tensor reduce_rows(const Tensor& part, int64_t rows, int64_t L, const Tensor& add, double sign,
                          bool take_max, cudaStream_t stream) {
  Tensor out = at::empty({rows}, part.options());
  fc::launch_reduce_rows(part.scalar_type() == at::kDouble, part.data_ptr(), rows, L,
                         ptr_or_null(add), sign, take_max, out.data_ptr(), stream);
  return out;
}

// prod(S) sum_c log|a_c| as a 0-dim tensor in the accumulation type (undefined without a).
inline Tensor actnorm_logdet(const Prepared& p, at::ScalarType acc) {
  if (!p.a.defined()) return Tensor();
  return at::log(at::abs(p.a.to(acc))).sum().mul_(static_cast<double>(p.sh.S));
}

template <typename Device>
struct CouplingHost {
  static Prepared prepare(const Tensor& x, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                          const OptTensor& b, const CouplingConfig& cfg, const char* x_name) {
    Prepared p;
    p.sh = check_coupling_args(x, s_raw, t, a, b, cfg, x_name);
    TORCH_CHECK_VALUE(Device::on_device(x), x_name, " must be ", Device::kWhere, ", got ", x.device());
    p.dt = dtype_of(x);
    const fc::GridLimits lim = Device::grid_limits();
    p.g = fc::make_geometry(p.dt, p.sh.B, p.sh.C, p.sh.S, p.sh.c_act, p.sh.act0, lim);
    if (!fc::grid_fits(p.g, lim)) {
      const fc::Grid grid = fc::grid_dims(p.g);
      TORCH_CHECK_VALUE(false, x_name, " of shape ", x.sizes(), " is too large for one launch of the cuda backend: ",
                        "it needs a grid of ", grid.x, " x ", grid.y, " blocks and ", p.sh.B, " samples x ", p.sh.C,
                        " channels of reduction blocks, where at most ", lim.x, " x ", lim.y,
                        " blocks fit; split the batch");
    }
    std::tie(p.s_raw, p.g.ssb, p.g.ssc, p.g.sss) = bcs_view(s_raw);
    std::tie(p.t, p.g.tsb, p.g.tsc, p.g.tss) = bcs_view(t);
    if (a.has_value()) {
      p.a = a->contiguous();
      p.b = b->contiguous();
    }
    p.sc = cfg;
    // 128-bit access of s_raw / t: a vector that starts on an active column must be all
    // active, contiguous and 16-byte aligned (coupling_launch.h, Lane::load_st).
    const int64_t V = fc::vec_width(p.dt);
    const fc::Geometry& g = p.g;
    const bool pos_vec = !g.rows_are_samples && g.S % V == 0;
    const bool chan_vec = g.rows_are_samples && g.act0 % V == 0 && g.c_act % V == 0;
    auto st_ok = [&](const Tensor& v, int64_t sb, int64_t sc, int64_t ss) {
      if (!aligned16(v.data_ptr()) || sb % V != 0) return false;
      return pos_vec ? (ss == 1 && sc % V == 0) : (chan_vec && sc == 1);
    };
    p.g.vec_st = st_ok(p.s_raw, g.ssb, g.ssc, g.sss) && st_ok(p.t, g.tsb, g.tsc, g.tss);
    p.g.vec_g = pos_vec || chan_vec;
    p.g.vec_io = g.K % V == 0;  // plus alignment of each x-shaped pointer, set by the caller
    return p;
  }

  // coupling (forward: x -> y, inverse: y -> x); err only for the forward with check
  static Tensor3 run(const Tensor& input, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                     const OptTensor& b, const CouplingConfig& cfg, bool inverse, bool check) {
    Prepared p = prepare(input, s_raw, t, a, b, cfg, input_name(inverse));
    const typename Device::Scope scope(input);
    const cudaStream_t stream = scope.stream;
    const Tensor in = input.contiguous();
    const auto acc = acc_scalar_type(in.scalar_type());
    Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
    p.g.vec_io = p.g.vec_io && aligned16(in.data_ptr()) && aligned16(out.data_ptr());
    const auto n_part = p.g.ld_part_size();
    Tensor ld_part = at::empty({n_part}, in.options().dtype(acc));
    Tensor err_part = check ? at::empty({n_part}, in.options().dtype(acc)) : Tensor();
    if (inverse) {
      fc::launch_inv(p.dt, p.g, p.sc, in.data_ptr(), p.s_raw.data_ptr(), p.t.data_ptr(), ptr_or_null(p.a),
                     ptr_or_null(p.b), out.data_ptr(), ld_part.data_ptr(), stream);
    } else {
      fc::launch_fwd(p.dt, p.g, p.sc, in.data_ptr(), p.s_raw.data_ptr(), p.t.data_ptr(), ptr_or_null(p.a),
                     ptr_or_null(p.b), out.data_ptr(), ld_part.data_ptr(), check ? err_part.data_ptr() : nullptr,
                     stream);
    }
    const int64_t L = n_part / (p.sh.B > 0 ? p.sh.B : 1);
    Tensor logdet =
        reduce_rows(ld_part, p.sh.B, L, actnorm_logdet(p, acc), inverse ? -1.0 : 1.0, false, stream);
    Tensor err = check ? reduce_rows(err_part, p.sh.B, L, Tensor(), 1.0, true, stream)
                       : at::empty({0}, in.options().dtype(acc));
    Device::check_launches();
    return {out, logdet, err};
  }

  // coupling_backward, either direction (`inverse` selects the kernel and the log-det sign). With
  // `packed_h`, s_raw / t are its halves and their grads go into the halves of one grad_h
  // (returned as grad_s_raw; grad_t is then empty): see csrc/op_entries.h.
  static Tensor5 backward(const Tensor& g_out_in, const Tensor& g_logdet, const Tensor& inp_in,
                          const Tensor& s_raw, const Tensor& t, const OptTensor& a, const OptTensor& b,
                          const CouplingConfig& cfg, bool inverse, const Tensor* packed_h) {
    Prepared p = prepare(inp_in, s_raw, t, a, b, cfg, input_name(inverse));
    const auto acc = acc_scalar_type(inp_in.scalar_type());
    check_backward_grads(g_out_in, g_logdet, inp_in, p.sh.B, inverse);
    const typename Device::Scope scope(inp_in);
    const cudaStream_t stream = scope.stream;
    const Tensor inp = inp_in.contiguous();
    const Tensor g_out = g_out_in.contiguous();
    const Tensor gl = g_logdet.to(acc).contiguous();
    Tensor g_in = at::empty_like(inp, at::MemoryFormat::Contiguous);
    Tensor gs, gt;
    void *gs_ptr, *gt_ptr;
    if (packed_h) {  // 16-byte alignment of the second half: c_act S % V == 0 whenever vec_g
      gs = at::empty(packed_h->sizes(), inp.options());
      gt = at::empty({0}, inp.options());
      gs_ptr = gs.data_ptr();
      gt_ptr = static_cast<char*>(gs_ptr) + p.g.g_bs * gs.element_size();
      p.g.g_bs *= 2;
    } else {
      gs = at::empty(s_raw.sizes(), inp.options());
      gt = at::empty(s_raw.sizes(), inp.options());
      gs_ptr = gs.data_ptr();
      gt_ptr = gt.data_ptr();
    }
    p.g.vec_io = p.g.vec_io && aligned16(inp.data_ptr()) && aligned16(g_out.data_ptr()) &&
                 aligned16(g_in.data_ptr());
    const bool has_ab = p.a.defined();
    Tensor ga_part, gb_part;
    if (has_ab) {
      ga_part = at::empty({p.g.ab_part_size()}, inp.options().dtype(acc));
      gb_part = at::empty({p.g.ab_part_size()}, inp.options().dtype(acc));
    }
    void* gap = has_ab ? ga_part.data_ptr() : nullptr;
    void* gbp = has_ab ? gb_part.data_ptr() : nullptr;
    if (inverse) {
      fc::launch_inv_bwd(p.dt, p.g, p.sc, g_out.data_ptr(), gl.data_ptr(), inp.data_ptr(),
                         p.s_raw.data_ptr(), p.t.data_ptr(), ptr_or_null(p.a), ptr_or_null(p.b),
                         g_in.data_ptr(), gs_ptr, gt_ptr, gap, gbp, stream);
    } else {
      fc::launch_fwd_bwd(p.dt, p.g, p.sc, g_out.data_ptr(), gl.data_ptr(), inp.data_ptr(),
                         p.s_raw.data_ptr(), ptr_or_null(p.a), ptr_or_null(p.b), g_in.data_ptr(),
                         gs_ptr, gt_ptr, gap, gbp, stream);
    }
    Tensor ga = at::empty({has_ab ? p.sh.C : 0}, inp.options());
    Tensor gb = at::empty({has_ab ? p.sh.C : 0}, inp.options());
    if (has_ab) {
      Tensor gl_total = reduce_rows(gl, 1, p.sh.B, Tensor(), 1.0, false, stream);
      fc::launch_reduce_ab(p.dt, p.g, ga_part.data_ptr(), gb_part.data_ptr(), gl_total.data_ptr(),
                           p.a.data_ptr(), inverse ? -1.0 : 1.0, ga.data_ptr(), gb.data_ptr(),
                           stream);
    }
    Device::check_launches();
    return {g_in, gs, gt, ga, gb};
  }
};

}  // namespace flowkern::cuda_host
