// Eager-mode autograd of the four coupling ops, in C++.
//
// `flowkern::<op>_eager` has the schema of `flowkern::<op>` and computes the same thing: a
// torch::autograd::Function whose forward calls <op> below autograd (whatever backend kernel
// the tensors dispatch to) and whose backward calls <op>_bwd, exactly as the Python
// `register_autograd` formula of flowkern/ops/autograd.py does. That registration is what
// torch.compile, opcheck and torch.func see; flowkern.ops.autograd.call routes plain eager calls
// here, because a Python autograd node costs ~40 us per forward + backward and the op itself a
// few (shapes like (256, 64) are dominated by it). One template serves the unpacked and the
// packed ops; a call where no input needs a gradient runs the op without building a node.
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "ops_check.h"

namespace flowkern {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The six config scalars shared by every schema (see FK_CFG in csrc/ops.cpp).
struct Cfg {
  int64_t split;
  bool passive_first;
  int64_t scale;
  double clamp, atan_k, eps;
};

void save_cfg(AutogradContext* ctx, const Cfg& c) {
  ctx->saved_data["cfg"] = c10::ivalue::Tuple::create(c.split, c.passive_first, c.scale, c.clamp, c.atan_k, c.eps);
}

Cfg load_cfg(AutogradContext* ctx) {
  const auto& v = ctx->saved_data["cfg"].toTupleRef().elements();
  return {v[0].toInt(), v[1].toBool(), v[2].toInt(), v[3].toDouble(), v[4].toDouble(), v[5].toDouble()};
}

template <class Sig>
c10::TypedOperatorHandle<Sig> op(const std::string& name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), "").typed<Sig>();
}

// std::tuple of N Tensors
template <size_t... I>
auto tensor_tuple(std::index_sequence<I...>) -> std::tuple<decltype((void)I, Tensor())...>;
template <size_t N>
using TensorN = decltype(tensor_tuple(std::make_index_sequence<N>()));
#define FK_CFG_T int64_t, bool, int64_t, double, double, double

// One autograd Function for the four ops. `main` is (input, s_raw, t) for the unpacked ops and
// (input, h) for the packed ones (h = [s_raw | t]); every op takes (main..., a?, b?, cfg[, check])
// and its backward op (grad_out, grad_logdet, main..., a?, b?, cfg) -> (grad of each main, grad_a,
// grad_b). forward's arguments are ordered (a, b, cfg, check, main...) so the tensor pack comes last.
template <bool Inverse, class... Main>
struct CouplingFn : torch::autograd::Function<CouplingFn<Inverse, Main...>> {
  static constexpr size_t N = sizeof...(Main);
  static std::string name(const char* suffix) {
    return std::string(Inverse ? "flowkern::coupling_inv" : "flowkern::coupling_fwd") + (N == 2 ? "_packed" : "") +
           suffix;
  }

  // the op itself, below autograd: (out, logdet[, err])
  static variable_list run(const OptTensor& a, const OptTensor& b, const Cfg& c, bool check, const Main&... main) {
    at::AutoDispatchBelowADInplaceOrView guard;
    if constexpr (Inverse) {
      static const auto inv = op<TensorN<2>(const Main&..., const OptTensor&, const OptTensor&, FK_CFG_T)>(name(""));
      auto [x, ld] = inv.call(main..., a, b, c.split, c.passive_first, c.scale, c.clamp, c.atan_k, c.eps);
      return {x, ld};
    } else {
      static const auto fwd =
          op<TensorN<3>(const Main&..., const OptTensor&, const OptTensor&, FK_CFG_T, bool)>(name(""));
      auto [y, ld, err] = fwd.call(main..., a, b, c.split, c.passive_first, c.scale, c.clamp, c.atan_k, c.eps, check);
      return {y, ld, err};
    }
  }

  static variable_list forward(AutogradContext* ctx, const OptTensor& a, const OptTensor& b, Cfg c, bool check,
                               const Main&... main) {
    variable_list out = run(a, b, c, check, main...);
    if (!Inverse) ctx->mark_non_differentiable({out[2]});
    ctx->save_for_backward({main..., a.value_or(Tensor()), b.value_or(Tensor())});
    save_cfg(ctx, c);
    ctx->set_materialize_grads(false);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return backward_impl(ctx, g, std::make_index_sequence<N>());
  }

  template <size_t... I>
  static variable_list backward_impl(AutogradContext* ctx, const variable_list& g, std::index_sequence<I...>) {
    static const auto bwd = op<TensorN<N + 2>(const Tensor&, const Tensor&, const Main&..., const OptTensor&,
                                              const OptTensor&, FK_CFG_T)>(name("_bwd"));
    const auto s = ctx->get_saved_variables();
    const Cfg c = load_cfg(ctx);
    const Tensor& in = s[0];
    const bool has_ab = s[N].defined();
    // grad_out / grad_logdet: contiguous, zeros where autograd passed none
    const Tensor g_out = g[0].defined() ? g[0].contiguous() : at::zeros_like(in, at::MemoryFormat::Contiguous);
    const Tensor g_ld = g[1].defined() ? g[1].contiguous()
                                       : at::zeros({in.size(0)}, in.options().dtype(acc_scalar_type(in.scalar_type())));
    const auto grads = std::apply([](auto&&... v) { return variable_list{v...}; },
                                  bwd.call(g_out, g_ld, s[I]..., has_ab ? OptTensor(s[N]) : std::nullopt,
                                           has_ab ? OptTensor(s[N + 1]) : std::nullopt, c.split, c.passive_first,
                                           c.scale, c.clamp, c.atan_k, c.eps));
    // one per forward argument: a, b, cfg, check, main...
    return {has_ab ? grads[N] : Tensor(), has_ab ? grads[N + 1] : Tensor(), Tensor(), Tensor(), grads[I]...};
  }

  // The op with autograd; without a node when no input needs a gradient (what the node costs is
  // then all overhead: its saved state and config map).
  static variable_list call(const OptTensor& a, const OptTensor& b, Cfg c, bool check, const Main&... main) {
    const auto needs = [](const Tensor& v) { return v.defined() && v.requires_grad(); };
    if (!at::GradMode::is_enabled() || !((needs(main) || ...) || (a && needs(*a)) || (b && needs(*b))))
      return run(a, b, c, check, main...);
    return CouplingFn::apply(a, b, c, check, main...);
  }
};

using Tensor2 = TensorN<2>;
using Tensor3 = TensorN<3>;

Tensor3 fwd3(const variable_list& v) { return {v[0], v[1], v[2]}; }
Tensor2 inv2(const variable_list& v) { return {v[0], v[1]}; }

Tensor3 coupling_fwd_eager(const Tensor& x, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                           const OptTensor& b, int64_t split, bool passive_first, int64_t scale, double clamp,
                           double atan_k, double eps, bool check) {
  const Cfg c{split, passive_first, scale, clamp, atan_k, eps};
  return fwd3(CouplingFn<false, Tensor, Tensor, Tensor>::call(a, b, c, check, x, s_raw, t));
}

Tensor2 coupling_inv_eager(const Tensor& y, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                           const OptTensor& b, int64_t split, bool passive_first, int64_t scale, double clamp,
                           double atan_k, double eps) {
  const Cfg c{split, passive_first, scale, clamp, atan_k, eps};
  return inv2(CouplingFn<true, Tensor, Tensor, Tensor>::call(a, b, c, false, y, s_raw, t));
}

Tensor3 coupling_fwd_packed_eager(const Tensor& x, const Tensor& h, const OptTensor& a, const OptTensor& b,
                                  int64_t split, bool passive_first, int64_t scale, double clamp, double atan_k,
                                  double eps, bool check) {
  const Cfg c{split, passive_first, scale, clamp, atan_k, eps};
  return fwd3(CouplingFn<false, Tensor, Tensor>::call(a, b, c, check, x, h));
}

Tensor2 coupling_inv_packed_eager(const Tensor& y, const Tensor& h, const OptTensor& a, const OptTensor& b,
                                  int64_t split, bool passive_first, int64_t scale, double clamp, double atan_k,
                                  double eps) {
  const Cfg c{split, passive_first, scale, clamp, atan_k, eps};
  return inv2(CouplingFn<true, Tensor, Tensor>::call(a, b, c, false, y, h));
}

}  // namespace

// Same schemas as the ops they wrap (csrc/ops.cpp); one kernel for every dispatch key.
TORCH_LIBRARY_FRAGMENT(flowkern, m) {
#define FK_CFG_S "int split, bool passive_first, int scale, float clamp, float atan_k, float eps"
  m.def("coupling_fwd_eager(Tensor x, Tensor s_raw, Tensor t, Tensor? a, Tensor? b, " FK_CFG_S
        ", bool check) -> (Tensor y, Tensor logdet, Tensor err)");
  m.def("coupling_inv_eager(Tensor y, Tensor s_raw, Tensor t, Tensor? a, Tensor? b, " FK_CFG_S
        ") -> (Tensor x, Tensor logdet)");
  m.def("coupling_fwd_packed_eager(Tensor x, Tensor h, Tensor? a, Tensor? b, " FK_CFG_S
        ", bool check) -> (Tensor y, Tensor logdet, Tensor err)");
  m.def("coupling_inv_packed_eager(Tensor y, Tensor h, Tensor? a, Tensor? b, " FK_CFG_S
        ") -> (Tensor x, Tensor logdet)");
#undef FK_CFG_S
}

TORCH_LIBRARY_IMPL(flowkern, CompositeImplicitAutograd, m) {
  m.impl("coupling_fwd_eager", &coupling_fwd_eager);
  m.impl("coupling_inv_eager", &coupling_inv_eager);
  m.impl("coupling_fwd_packed_eager", &coupling_fwd_packed_eager);
  m.impl("coupling_inv_packed_eager", &coupling_inv_packed_eager);
}

}  // namespace flowkern
