// CPU implementations of the flowkern::coupling ops (schemas in csrc/ops.cpp).
//
// Checks the arguments, makes x / grads contiguous (s_raw and t are never copied: the
// kernels read them through their strides), allocates contiguous outputs, and runs the
// kernel table of the best instruction set allowed by at::get_cpu_capability()
// (which honours ATEN_CPU_CAPABILITY). The math is in coupling_kernels.h.
#include <ATen/ATen.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>

#include "cpu/kernel_args.h"
#include "op_entries.h"
#include "ops_check.h"

namespace flowkern::cpu {
namespace {

using at::Tensor;

// The kernel table of the best instruction set allowed by at::get_cpu_capability(), and its name.
struct Isa {
  const KernelTable* table;
  const char* name;
};

const Isa& isa() {
  static const Isa chosen = [] {
    const std::string cap = at::get_cpu_capability();
    if (cap == "AVX512")
      if (const KernelTable* t = avx512::kernel_table()) return Isa{t, "avx512"};
    if (cap == "AVX512" || cap == "AVX2")
      if (const KernelTable* t = avx2::kernel_table()) return Isa{t, "avx2"};
    return Isa{base::kernel_table(), "base"};
  }();
  return chosen;
}

const KernelTable& kernels() { return *isa().table; }

// s_raw / t: their data and strides (read in place)
StridedView describe(const Tensor& v) {
  StridedView d;
  static_cast<FlatView&>(d) = flatten_view(v);
  d.data = v.data_ptr();
  return d;
}

// a, b (C,) of the storage dtype -> acc-type a, b, 1/a, each repeated `rep` times per channel
// (laid out [a | b | 1/a] in dst), and sum_c log|a_c| in double. Plain loops: for small
// inputs the ATen ops this replaces (to, reciprocal, log, abs, sum, item) cost more than the kernel.
template <typename T, typename S>
double fill_ab(const Tensor& a, const Tensor& b, int64_t rep, T* dst) {
  const int64_t C = a.size(0), n = C * rep;
  const S* pa = a.const_data_ptr<S>();
  const S* pb = b.const_data_ptr<S>();
  const int64_t sa = a.stride(0), sb = b.stride(0);
  double log_abs = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const T av = static_cast<T>(pa[c * sa]), bv = static_cast<T>(pb[c * sb]), ia = T(1) / av;
    log_abs += std::log(std::abs(static_cast<double>(av)));
    for (int64_t k = 0; k < rep; ++k) {
      dst[c * rep + k] = av;
      dst[n + c * rep + k] = bv;
      dst[2 * n + c * rep + k] = ia;
    }
  }
  return log_abs;
}

template <typename T>
double fill_ab(const OptTensor& a, const OptTensor& b, int64_t C, int64_t rep, T* dst) {
  if (!a) {
    const int64_t n = C * rep;
    std::fill(dst, dst + n, T(1));
    std::fill(dst + n, dst + 2 * n, T(0));
    std::fill(dst + 2 * n, dst + 3 * n, T(1));
    return 0.0;
  }
  switch (a->scalar_type()) {
    case at::kDouble: return fill_ab<T, double>(*a, *b, rep, dst);
    case at::kHalf: return fill_ab<T, at::Half>(*a, *b, rep, dst);
    case at::kBFloat16: return fill_ab<T, at::BFloat16>(*a, *b, rep, dst);
    default: return fill_ab<T, float>(*a, *b, rep, dst);
  }
}

// The parts of a call shared by all four ops; owns the tensors the raw pointers refer to.
struct Call {
  CouplingArgs args{};
  Tensor in, ab;  // ab: acc-type [a | b | 1/a], each (C * folded_S,)

  // For 1 < S < kSmallS, rows along S are too short to vectorise: when (channel, S) of
  // s_raw and t flatten to one stride, run the S = 1 kernels on C*S "channels" with a, b
  // repeated S times. grad_a / grad_b then come back per (c, s) and are summed over s.
  static constexpr int64_t kSmallS = 64;
  int64_t folded_S = 1;

  Call(const Tensor& input, const Tensor& s_raw, const Tensor& t, const OptTensor& a_opt,
       const OptTensor& b_opt, const CouplingConfig& cfg, const char* in_name) {
    const CouplingShape sh = check_coupling_args(input, s_raw, t, a_opt, b_opt, cfg, in_name);
    in = input.contiguous();
    auto& A = args;
    A.dtype = in.scalar_type();
    A.B = sh.B;
    A.C = sh.C;
    A.S = sh.S;
    A.c_act = sh.c_act;
    A.act0 = sh.act0;
    A.g_bs = sh.c_act * sh.S;
    A.cfg = cfg;
    A.has_ab = a_opt.has_value();
    A.in = in.data_ptr();
    A.r = describe(s_raw);
    A.t = describe(t);
    folded_S = foldable() ? A.S : 1;
    const int64_t n = A.C * folded_S;
    ab = at::empty({3 * n}, in.options().dtype(acc_scalar_type(A.dtype)));
    const double log_abs = A.dtype == at::kDouble ? fill_ab(a_opt, b_opt, A.C, folded_S, ab.data_ptr<double>())
                                                  : fill_ab(a_opt, b_opt, A.C, folded_S, ab.data_ptr<float>());
    A.ld_const = static_cast<double>(A.S) * log_abs;
    const size_t esz = ab.element_size();
    A.a = ab.data_ptr();
    A.b = static_cast<const char*>(A.a) + n * esz;
    A.inv_a = static_cast<const char*>(A.a) + 2 * n * esz;
    if (folded_S > 1) {
      for (StridedView* v : {&A.r, &A.t}) v->sc = v->ss;
      A.C *= A.S;
      A.c_act *= A.S;
      A.act0 *= A.S;
      A.S = 1;
    }
  }

  bool foldable() const {
    const auto& A = args;
    const auto flat = [&](const StridedView& v) { return v.ss >= 0 && v.sc == A.S * v.ss; };
    return A.S > 1 && A.S < kSmallS && flat(A.r) && flat(A.t);
  }

  // grad_a / grad_b of the kernel (C * folded_S,) -> (C,)
  Tensor unfold_ab(const Tensor& g) const {
    return folded_S == 1 ? g : g.view({-1, folded_S}).sum(1);
  }

  Tensor acc_empty(int64_t n) const { return at::empty({n}, in.options().dtype(acc_scalar_type(in.scalar_type()))); }
};

// coupling (forward: x -> y, inverse: y -> x); err only for the forward with check
Tensor3 run(const Tensor& input, const Tensor& s_raw, const Tensor& t, const OptTensor& a, const OptTensor& b,
            const CouplingConfig& cfg, bool inverse, bool check) {
  Call call(input, s_raw, t, a, b, cfg, input_name(inverse));
  Tensor out = at::empty(call.in.sizes(), call.in.options());
  Tensor logdet = call.acc_empty(call.args.B);
  Tensor err = call.acc_empty(check ? call.args.B : 0);
  call.args.out = out.data_ptr();
  call.args.logdet = logdet.data_ptr();
  call.args.err = check ? err.data_ptr() : nullptr;
  (inverse ? kernels().inv : kernels().fwd)(call.args);
  return {out, logdet, err};
}

// coupling_backward, either direction; with packed_h the grads of s_raw and t are the halves of
// one grad_h (returned as grad_s_raw, grad_t empty): see csrc/op_entries.h.
Tensor5 backward(const Tensor& grad_out, const Tensor& grad_logdet, const Tensor& input, const Tensor& s_raw,
                 const Tensor& t, const OptTensor& a, const OptTensor& b, const CouplingConfig& cfg, bool inverse,
                 const Tensor* packed_h) {
  Call call(input, s_raw, t, a, b, cfg, input_name(inverse));
  check_backward_grads(grad_out, grad_logdet, input, call.args.B, inverse);
  const Tensor g = grad_out.contiguous();
  const Tensor gl = grad_logdet.to(acc_scalar_type(input.scalar_type())).contiguous();
  auto& A = call.args;
  Tensor g_in = at::empty(call.in.sizes(), call.in.options());
  Tensor g_r, g_t;
  if (packed_h) {
    g_r = at::empty(packed_h->sizes(), packed_h->options());
    g_t = at::empty({0}, packed_h->options());
    A.g_r = g_r.data_ptr();
    A.g_t = static_cast<char*>(A.g_r) + A.g_bs * g_r.element_size();  // second half of each sample
    A.g_bs *= 2;
  } else {
    g_r = at::empty(s_raw.sizes(), s_raw.options());
    g_t = at::empty(t.sizes(), t.options());
    A.g_r = g_r.data_ptr();
    A.g_t = g_t.data_ptr();
  }
  const int64_t n_ab = A.has_ab ? A.C : 0;
  Tensor g_a = call.acc_empty(n_ab), g_b = call.acc_empty(n_ab);
  A.gout = g.data_ptr();
  A.glog = gl.data_ptr();
  A.out = g_in.data_ptr();
  A.g_a = g_a.data_ptr();
  A.g_b = g_b.data_ptr();
  (inverse ? kernels().inv_bwd : kernels().fwd_bwd)(A);
  const auto dt = input.scalar_type();
  return {g_in, g_r, g_t, call.unfold_ab(g_a).to(dt), call.unfold_ab(g_b).to(dt)};
}

}  // namespace

std::string kernel_isa() { return isa().name; }  // the op cpu_kernel_isa (csrc/ops.cpp)

}  // namespace flowkern::cpu

TORCH_LIBRARY_IMPL(flowkern, CPU, m) {
  flowkern::OpEntries<&flowkern::cpu::run, &flowkern::cpu::backward>::register_all(m);
}
