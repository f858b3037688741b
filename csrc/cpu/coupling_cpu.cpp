// CPU implementations of the flowkern::coupling_* ops (schemas in csrc/ops.cpp).
//
// Checks the arguments, makes x / grads contiguous (s_raw and t are never copied: the
// kernels read them through their strides), allocates contiguous outputs, and runs the
// kernel table of the best instruction set allowed by at::get_cpu_capability()
// (which honours ATEN_CPU_CAPABILITY). The math is in coupling_kernels.h.
#include <ATen/ATen.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <tuple>

#include "cpu/kernel_args.h"
#include "ops_check.h"

namespace flowkern::cpu {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

const KernelTable& kernels() {
  static const KernelTable* table = [] {
    const std::string cap = at::get_cpu_capability();
    const KernelTable* t = nullptr;
    if (cap == "AVX512") t = avx512::kernel_table();
    if (!t && (cap == "AVX512" || cap == "AVX2")) t = avx2::kernel_table();
    return t ? t : base::kernel_table();
  }();
  return *table;
}

at::ScalarType acc_type(at::ScalarType dt) { return dt == at::kDouble ? at::kDouble : at::kFloat; }

// s_raw / t as (data, batch / channel strides, flattened spatial stride or the dims)
StridedView describe(const Tensor& v) {
  StridedView d;
  d.data = v.data_ptr();
  d.sb = v.stride(0);
  d.sc = v.stride(1);
  d.ss = 1;
  int64_t expect = -1;  // stride the next-outer spatial dim needs to flatten
  for (int64_t k = v.dim() - 1; k >= 2; --k) {
    if (v.size(k) == 1) continue;
    if (expect < 0) d.ss = v.stride(k);
    else if (v.stride(k) != expect) d.ss = -1;
    expect = v.stride(k) * v.size(k);
  }
  if (d.ss < 0)
    for (int64_t k = 2; k < v.dim(); ++k) {
      d.sizes.push_back(v.size(k));
      d.strides.push_back(v.stride(k));
    }
  return d;
}

// The parts of a call shared by all four ops; owns the tensors the raw pointers refer to.
struct Call {
  CouplingArgs args{};
  Tensor in, a, b, inv_a;

  Call(const Tensor& input, const Tensor& s_raw, const Tensor& t, const OptTensor& a_opt,
       const OptTensor& b_opt, int64_t split, bool passive_first, int64_t scale, double clamp,
       double atan_k, double eps, const char* in_name) {
    const CouplingShape sh =
        check_coupling_args(input, s_raw, t, a_opt, b_opt, split, passive_first, scale, clamp, eps, in_name);
    in = input.contiguous();
    const auto acc = acc_type(in.scalar_type());
    auto& A = args;
    A.dtype = in.scalar_type();
    A.B = sh.B;
    A.C = sh.C;
    A.S = sh.S;
    A.c_act = sh.c_act;
    A.act0 = sh.act0;
    A.scale = static_cast<int>(scale);
    A.clamp = clamp;
    A.atan_k = atan_k;
    A.eps = eps;
    A.has_ab = a_opt.has_value();
    if (A.has_ab) {
      a = a_opt->to(acc).contiguous();
      b = b_opt->to(acc).contiguous();
      inv_a = a.reciprocal();
      A.ld_const = (at::log(at::abs(a)).sum() * static_cast<double>(sh.S)).item<double>();
    } else {
      a = at::ones({sh.C}, in.options().dtype(acc));
      b = at::zeros({sh.C}, in.options().dtype(acc));
      inv_a = a;
      A.ld_const = 0.0;
    }
    A.a = a.data_ptr();
    A.b = b.data_ptr();
    A.inv_a = inv_a.data_ptr();
    A.in = in.data_ptr();
    A.r = describe(s_raw);
    A.t = describe(t);
    flatten_small_spatial();
  }

  // For 1 < S < kSmallS, rows along S are too short to vectorise: when (channel, S) of
  // s_raw and t flatten to one stride, run the S = 1 kernels on C*S "channels" with a, b
  // repeated S times. grad_a / grad_b then come back per (c, s) and are summed over s.
  static constexpr int64_t kSmallS = 64;
  int64_t folded_S = 1;

  void flatten_small_spatial() {
    auto& A = args;
    const auto flat = [&](const StridedView& v) { return v.ss >= 0 && v.sc == A.S * v.ss; };
    if (A.S <= 1 || A.S >= kSmallS || !flat(A.r) || !flat(A.t)) return;
    folded_S = A.S;
    a = a.repeat_interleave(A.S);
    b = b.repeat_interleave(A.S);
    inv_a = inv_a.repeat_interleave(A.S);
    A.a = a.data_ptr();
    A.b = b.data_ptr();
    A.inv_a = inv_a.data_ptr();
    for (StridedView* v : {&A.r, &A.t}) v->sc = v->ss;
    A.C *= A.S;
    A.c_act *= A.S;
    A.act0 *= A.S;
    A.S = 1;
  }

  // grad_a / grad_b of the kernel (C * folded_S,) -> (C,)
  Tensor unfold_ab(const Tensor& g) const {
    return folded_S == 1 ? g : g.view({-1, folded_S}).sum(1);
  }

  Tensor acc_empty(int64_t n) const { return at::empty({n}, in.options().dtype(acc_type(in.scalar_type()))); }
};

std::tuple<Tensor, Tensor, Tensor> coupling_fwd_cpu(const Tensor& x, const Tensor& s_raw, const Tensor& t,
                                                    const OptTensor& a, const OptTensor& b, int64_t split,
                                                    bool passive_first, int64_t scale, double clamp,
                                                    double atan_k, double eps, bool check) {
  Call call(x, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, "x");
  Tensor y = at::empty_like(call.in, at::MemoryFormat::Contiguous);
  Tensor logdet = call.acc_empty(call.args.B);
  Tensor err = call.acc_empty(check ? call.args.B : 0);
  call.args.out = y.data_ptr();
  call.args.logdet = logdet.data_ptr();
  call.args.err = check ? err.data_ptr() : nullptr;
  kernels().fwd(call.args);
  return {y, logdet, err};
}

std::tuple<Tensor, Tensor> coupling_inv_cpu(const Tensor& y, const Tensor& s_raw, const Tensor& t,
                                            const OptTensor& a, const OptTensor& b, int64_t split,
                                            bool passive_first, int64_t scale, double clamp, double atan_k,
                                            double eps) {
  Call call(y, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, "y");
  Tensor x = at::empty_like(call.in, at::MemoryFormat::Contiguous);
  Tensor logdet = call.acc_empty(call.args.B);
  call.args.out = x.data_ptr();
  call.args.logdet = logdet.data_ptr();
  kernels().inv(call.args);
  return {x, logdet};
}

using Grads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

template <bool Inverse>
Grads coupling_bwd_cpu(const Tensor& grad_out, const Tensor& grad_logdet, const Tensor& input,
                       const Tensor& s_raw, const Tensor& t, const OptTensor& a, const OptTensor& b,
                       int64_t split, bool passive_first, int64_t scale, double clamp, double atan_k,
                       double eps) {
  const char* in_name = Inverse ? "y" : "x";
  const char* g_name = Inverse ? "grad_x" : "grad_y";
  Call call(input, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, in_name);
  TORCH_CHECK_TYPE(grad_out.scalar_type() == input.scalar_type(), g_name, " must have the dtype of ",
                   in_name, " (", input.scalar_type(), "), got ", grad_out.scalar_type());
  TORCH_CHECK_VALUE(grad_out.sizes() == input.sizes(), g_name, " must have shape ", input.sizes(), ", got ",
                    grad_out.sizes());
  TORCH_CHECK_VALUE(grad_out.device() == input.device(), g_name, " must be on the device of ", in_name);
  TORCH_CHECK_TYPE(at::isFloatingType(grad_logdet.scalar_type()), "grad_logdet must be floating, got ",
                   grad_logdet.scalar_type());
  TORCH_CHECK_VALUE(grad_logdet.dim() == 1 && grad_logdet.size(0) == call.args.B,
                    "grad_logdet must have shape (", call.args.B, ",), got ", grad_logdet.sizes());
  TORCH_CHECK_VALUE(grad_logdet.device() == input.device(), "grad_logdet must be on the device of ", in_name);
  const Tensor g = grad_out.contiguous();
  const Tensor gl = grad_logdet.to(acc_type(input.scalar_type())).contiguous();
  Tensor g_in = at::empty_like(call.in, at::MemoryFormat::Contiguous);
  Tensor g_r = at::empty(s_raw.sizes(), s_raw.options());
  Tensor g_t = at::empty(t.sizes(), t.options());
  const int64_t n_ab = call.args.has_ab ? call.args.C : 0;
  Tensor g_a = call.acc_empty(n_ab), g_b = call.acc_empty(n_ab);
  auto& A = call.args;
  A.gout = g.data_ptr();
  A.glog = gl.data_ptr();
  A.out = g_in.data_ptr();
  A.g_r = g_r.data_ptr();
  A.g_t = g_t.data_ptr();
  A.g_a = g_a.data_ptr();
  A.g_b = g_b.data_ptr();
  (Inverse ? kernels().inv_bwd : kernels().fwd_bwd)(A);
  const auto dt = input.scalar_type();
  return {g_in, g_r, g_t, call.unfold_ab(g_a).to(dt), call.unfold_ab(g_b).to(dt)};
}

}  // namespace
}  // namespace flowkern::cpu

TORCH_LIBRARY_IMPL(flowkern, CPU, m) {
  m.impl("coupling_fwd", &flowkern::cpu::coupling_fwd_cpu);
  m.impl("coupling_inv", &flowkern::cpu::coupling_inv_cpu);
  m.impl("coupling_fwd_bwd", &flowkern::cpu::coupling_bwd_cpu<false>);
  m.impl("coupling_inv_bwd", &flowkern::cpu::coupling_bwd_cpu<true>);
}
