// Eager-mode autograd of the four coupling ops, in C++.
//
// `flowkern::<op>_eager` has the schema of `flowkern::<op>` and computes the same thing: a
// torch::autograd::Function whose forward calls <op> below autograd (whatever backend kernel
// the tensors dispatch to) and whose backward calls <op>_bwd, exactly as the Python
// `register_autograd` formula of flowkern/ops/autograd.py does. That registration is what
// torch.compile, opcheck and torch.func see; flowkern.ops.autograd.call routes plain eager calls
// here, because a Python autograd node costs ~40 us per forward + backward and the op itself a
// few (shapes like (256, 64) are dominated by it).
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

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
  ctx->saved_data["split"] = c.split;
  ctx->saved_data["passive_first"] = c.passive_first;
  ctx->saved_data["scale"] = c.scale;
  ctx->saved_data["clamp"] = c.clamp;
  ctx->saved_data["atan_k"] = c.atan_k;
  ctx->saved_data["eps"] = c.eps;
}

Cfg load_cfg(AutogradContext* ctx) {
  auto& d = ctx->saved_data;
  return {d["split"].toInt(), d["passive_first"].toBool(), d["scale"].toInt(),
          d["clamp"].toDouble(), d["atan_k"].toDouble(), d["eps"].toDouble()};
}

template <class Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

using Tensor2 = std::tuple<Tensor, Tensor>;
using Tensor3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensor4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using Tensor5 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
#define FK_CFG_T int64_t, bool, int64_t, double, double, double

// grad_out / grad_logdet of the backward op: contiguous, zeros where autograd passed none
std::pair<Tensor, Tensor> out_grads(const variable_list& g, const Tensor& input) {
  Tensor g_out = g[0].defined() ? g[0].contiguous() : at::zeros_like(input, at::MemoryFormat::Contiguous);
  Tensor g_ld = g[1].defined()
                    ? g[1].contiguous()
                    : at::zeros({input.size(0)}, input.options().dtype(input.scalar_type() == at::kDouble
                                                                          ? at::kDouble
                                                                          : at::kFloat));
  return {g_out, g_ld};
}

// ---- unpacked: (input, s_raw, t, a?, b?, cfg[, check]) --------------------------------------
template <bool Inverse>
struct Unpacked : torch::autograd::Function<Unpacked<Inverse>> {
  static variable_list forward(AutogradContext* ctx, const Tensor& in, const Tensor& s_raw, const Tensor& t,
                               const OptTensor& a, const OptTensor& b, Cfg c, bool check) {
    variable_list out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      if constexpr (Inverse) {
        static const auto inv = op<Tensor2(const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                           const OptTensor&, FK_CFG_T)>("flowkern::coupling_inv");
        auto [x, ld] = inv.call(in, s_raw, t, a, b, c.split, c.passive_first, c.scale, c.clamp, c.atan_k, c.eps);
        out = {x, ld};
      } else {
        static const auto fwd = op<Tensor3(const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                           const OptTensor&, FK_CFG_T, bool)>("flowkern::coupling_fwd");
        auto [y, ld, err] =
            fwd.call(in, s_raw, t, a, b, c.split, c.passive_first, c.scale, c.clamp, c.atan_k, c.eps, check);
        ctx->mark_non_differentiable({err});
        out = {y, ld, err};
      }
    }
    ctx->save_for_backward({in, s_raw, t, a.value_or(Tensor()), b.value_or(Tensor())});
    save_cfg(ctx, c);
    ctx->set_materialize_grads(false);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list g) {
    static const auto bwd = op<Tensor5(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                       const OptTensor&, const OptTensor&, FK_CFG_T)>(
        Inverse ? "flowkern::coupling_inv_bwd" : "flowkern::coupling_fwd_bwd");
    const auto s = ctx->get_saved_variables();
    const Cfg c = load_cfg(ctx);
    const bool has_ab = s[3].defined();
    const auto [g_out, g_ld] = out_grads(g, s[0]);
    auto [g_in, g_s, g_t, g_a, g_b] =
        bwd.call(g_out, g_ld, s[0], s[1], s[2], has_ab ? OptTensor(s[3]) : std::nullopt,
                 has_ab ? OptTensor(s[4]) : std::nullopt, c.split, c.passive_first, c.scale, c.clamp, c.atan_k,
                 c.eps);
    // one per forward argument: in, s_raw, t, a, b, cfg, check
    return {g_in, g_s, g_t, has_ab ? g_a : Tensor(), has_ab ? g_b : Tensor(), Tensor(), Tensor()};
  }
};

// ---- packed: (input, h = [s_raw | t], a?, b?, cfg[, check]) ---------------------------------
template <bool Inverse>
struct Packed : torch::autograd::Function<Packed<Inverse>> {
  static variable_list forward(AutogradContext* ctx, const Tensor& in, const Tensor& h, const OptTensor& a,
                               const OptTensor& b, Cfg c, bool check) {
    variable_list out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      if constexpr (Inverse) {
        static const auto inv = op<Tensor2(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                                           FK_CFG_T)>("flowkern::coupling_inv_packed");
        auto [x, ld] = inv.call(in, h, a, b, c.split, c.passive_first, c.scale, c.clamp, c.atan_k, c.eps);
        out = {x, ld};
      } else {
        static const auto fwd = op<Tensor3(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                                           FK_CFG_T, bool)>("flowkern::coupling_fwd_packed");
        auto [y, ld, err] = fwd.call(in, h, a, b, c.split, c.passive_first, c.scale, c.clamp, c.atan_k, c.eps, check);
        ctx->mark_non_differentiable({err});
        out = {y, ld, err};
      }
    }
    ctx->save_for_backward({in, h, a.value_or(Tensor()), b.value_or(Tensor())});
    save_cfg(ctx, c);
    ctx->set_materialize_grads(false);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list g) {
    static const auto bwd = op<Tensor4(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                       const OptTensor&, FK_CFG_T)>(
        Inverse ? "flowkern::coupling_inv_packed_bwd" : "flowkern::coupling_fwd_packed_bwd");
    const auto s = ctx->get_saved_variables();
    const Cfg c = load_cfg(ctx);
    const bool has_ab = s[2].defined();
    const auto [g_out, g_ld] = out_grads(g, s[0]);
    auto [g_in, g_h, g_a, g_b] = bwd.call(g_out, g_ld, s[0], s[1], has_ab ? OptTensor(s[2]) : std::nullopt,
                                          has_ab ? OptTensor(s[3]) : std::nullopt, c.split, c.passive_first,
                                          c.scale, c.clamp, c.atan_k, c.eps);
    // one per forward argument: in, h, a, b, cfg, check
    return {g_in, g_h, has_ab ? g_a : Tensor(), has_ab ? g_b : Tensor(), Tensor(), Tensor()};
  }
};

Tensor3 fwd3(const variable_list& v) { return {v[0], v[1], v[2]}; }
Tensor2 inv2(const variable_list& v) { return {v[0], v[1]}; }

Tensor3 coupling_fwd_eager(const Tensor& x, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                           const OptTensor& b, int64_t split, bool passive_first, int64_t scale, double clamp,
                           double atan_k, double eps, bool check) {
  return fwd3(Unpacked<false>::apply(x, s_raw, t, a, b, Cfg{split, passive_first, scale, clamp, atan_k, eps}, check));
}

Tensor2 coupling_inv_eager(const Tensor& y, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                           const OptTensor& b, int64_t split, bool passive_first, int64_t scale, double clamp,
                           double atan_k, double eps) {
  return inv2(Unpacked<true>::apply(y, s_raw, t, a, b, Cfg{split, passive_first, scale, clamp, atan_k, eps}, false));
}

Tensor3 coupling_fwd_packed_eager(const Tensor& x, const Tensor& h, const OptTensor& a, const OptTensor& b,
                                  int64_t split, bool passive_first, int64_t scale, double clamp, double atan_k,
                                  double eps, bool check) {
  return fwd3(Packed<false>::apply(x, h, a, b, Cfg{split, passive_first, scale, clamp, atan_k, eps}, check));
}

Tensor2 coupling_inv_packed_eager(const Tensor& y, const Tensor& h, const OptTensor& a, const OptTensor& b,
                                  int64_t split, bool passive_first, int64_t scale, double clamp, double atan_k,
                                  double eps) {
  return inv2(Packed<true>::apply(y, h, a, b, Cfg{split, passive_first, scale, clamp, atan_k, eps}, false));
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
