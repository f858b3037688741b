// Autograd of the compiled coupling ops (coupling, coupling.packed) at the Autograd dispatch key,
// for every backend that registers kernels in csrc/ (CPU, CUDA): torchvision's csrc/ops/autograd
// pattern. The forward saves its tensor inputs; the backward runs the backend's fused
// coupling_backward op (one pass; grads of x, s_raw / t or the packed h, and a, b). err is not
// differentiable. Arguments are checked once, by the backend's kernel (csrc/ops_check.h).
//
// A call that needs no graph (grad mode off, or no tensor input requiring grad) goes straight to
// the backend, so an inference call pays no autograd node.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "op_entries.h"

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>

namespace flowkern {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The ops' config arguments (schema order), kept on the autograd node for the backward call.
struct Config {
  int64_t split;
  std::string passive, scale;
  double clamp, atan_k, eps;
  bool inverse;
};

using CouplingSig = Tensor3(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                            int64_t, std::string_view, std::string_view, double, double, double, bool, bool);
using PackedSig = Tensor3(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, int64_t,
                          std::string_view, std::string_view, double, double, double, bool, bool);
using BackwardSig = Tensor5(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                            const OptTensor&, const OptTensor&, int64_t, std::string_view, std::string_view, double,
                            double, double, bool);
using BackwardPackedSig = Tensor4(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                  const OptTensor&, int64_t, std::string_view, std::string_view, double, double,
                                  double, bool);

template <typename Sig>
c10::TypedOperatorHandle<Sig> find(const char* name, const char* overload) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload).template typed<Sig>();
}

// The handles, looked up once per process (csrc/ops.cpp defines the schemas).
const auto& coupling_op() {
  static const auto h = find<CouplingSig>("flowkern::coupling", "");
  return h;
}
const auto& coupling_packed_op() {
  static const auto h = find<PackedSig>("flowkern::coupling", "packed");
  return h;
}
const auto& backward_op() {
  static const auto h = find<BackwardSig>("flowkern::coupling_backward", "");
  return h;
}
const auto& backward_packed_op() {
  static const auto h = find<BackwardPackedSig>("flowkern::coupling_backward", "packed");
  return h;
}

bool needs_graph(std::initializer_list<const Tensor*> ts, const OptTensor& a, const OptTensor& b) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor* t : ts)
    if (t->requires_grad()) return true;
  return (a.has_value() && a->requires_grad()) || (b.has_value() && b->requires_grad());
}

Tensor or_undefined(const OptTensor& v) { return v.has_value() ? *v : Tensor(); }
OptTensor as_optional(const Tensor& v) { return v.defined() ? OptTensor(v) : std::nullopt; }

// The incoming grads of (out, logdet), zeros where autograd passes none.
std::pair<Tensor, Tensor> incoming(const variable_list& grads, const Tensor& input) {
  const Tensor g_out = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(input, at::MemoryFormat::Contiguous);
  const Tensor g_ld = grads[1].defined()
                          ? grads[1].contiguous()
                          : at::zeros({input.size(0)}, input.options().dtype(acc_scalar_type(input.scalar_type())));
  return {g_out, g_ld};
}

void save_config(AutogradContext* ctx, const Config& c) {
  ctx->saved_data["cfg"] = c10::ivalue::Tuple::create(c.split, c.passive, c.scale, c.clamp, c.atan_k, c.eps, c.inverse);
}

Config load_config(AutogradContext* ctx) {
  const auto& e = ctx->saved_data["cfg"].toTupleRef().elements();
  return {e[0].toInt(), e[1].toStringRef(), e[2].toStringRef(), e[3].toDouble(), e[4].toDouble(), e[5].toDouble(),
          e[6].toBool()};
}

// Both forwards end alike: save the tensor inputs (input first, a and b last, undefined without
// actnorm) and the config for the backward; err is not differentiable.
variable_list finish_forward(AutogradContext* ctx, variable_list inputs, const Config& cfg, const Tensor3& outs) {
  const auto& [out, logdet, err] = outs;
  ctx->save_for_backward(std::move(inputs));
  save_config(ctx, cfg);
  ctx->mark_non_differentiable({err});
  return {out, logdet, err};
}

// Both backwards start alike: the saved tensors, the config, the incoming grads, a and b.
struct Saved {
  variable_list v;
  Config c;
  Tensor g_out, g_ld;
  OptTensor a, b;
};

Saved load(AutogradContext* ctx, const variable_list& grads) {
  Saved s{ctx->get_saved_variables(), load_config(ctx)};
  std::tie(s.g_out, s.g_ld) = incoming(grads, s.v[0]);
  s.a = as_optional(s.v[s.v.size() - 2]);
  s.b = as_optional(s.v[s.v.size() - 1]);
  return s;
}

// The tensor grads, then none for the eight non-tensor arguments (*cfg, inverse, check); grad_a /
// grad_b undefined without actnorm.
variable_list with_none_for_config(variable_list g, bool has_ab) {
  if (!has_ab) g[g.size() - 2] = g[g.size() - 1] = Tensor();
  g.resize(g.size() + 8);
  return g;
}

// coupling: (input, s_raw, t, a?, b?, *cfg, inverse, check) -> (out, logdet, err)
struct CouplingFunction : torch::autograd::Function<CouplingFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& s_raw, const Tensor& t,
                               const OptTensor& a, const OptTensor& b, int64_t split, std::string_view passive,
                               std::string_view scale, double clamp, double atan_k, double eps, bool inverse,
                               bool check) {
    at::AutoDispatchBelowADInplaceOrView below;
    return finish_forward(
        ctx, {input, s_raw, t, or_undefined(a), or_undefined(b)},
        {split, std::string(passive), std::string(scale), clamp, atan_k, eps, inverse},
        coupling_op().call(input, s_raw, t, a, b, split, passive, scale, clamp, atan_k, eps, inverse, check));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved s = load(ctx, grads);
    const Config& c = s.c;
    auto [gi, gs, gt, ga, gb] = backward_op().call(s.g_out, s.g_ld, s.v[0], s.v[1], s.v[2], s.a, s.b, c.split,
                                                   c.passive, c.scale, c.clamp, c.atan_k, c.eps, c.inverse);
    return with_none_for_config({gi, gs, gt, ga, gb}, s.a.has_value());
  }
};

// coupling.packed: (input, h, a?, b?, *cfg, inverse, check) -> (out, logdet, err)
struct CouplingPackedFunction : torch::autograd::Function<CouplingPackedFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& h, const OptTensor& a,
                               const OptTensor& b, int64_t split, std::string_view passive, std::string_view scale,
                               double clamp, double atan_k, double eps, bool inverse, bool check) {
    at::AutoDispatchBelowADInplaceOrView below;
    return finish_forward(
        ctx, {input, h, or_undefined(a), or_undefined(b)},
        {split, std::string(passive), std::string(scale), clamp, atan_k, eps, inverse},
        coupling_packed_op().call(input, h, a, b, split, passive, scale, clamp, atan_k, eps, inverse, check));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved s = load(ctx, grads);
    const Config& c = s.c;
    auto [gi, gh, ga, gb] = backward_packed_op().call(s.g_out, s.g_ld, s.v[0], s.v[1], s.a, s.b, c.split, c.passive,
                                                      c.scale, c.clamp, c.atan_k, c.eps, c.inverse);
    return with_none_for_config({gi, gh, ga, gb}, s.a.has_value());
  }
};

Tensor3 as_tuple(const variable_list& v) { return {v[0], v[1], v[2]}; }

Tensor3 coupling_autograd(const Tensor& input, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                          const OptTensor& b, int64_t split, std::string_view passive, std::string_view scale,
                          double clamp, double atan_k, double eps, bool inverse, bool check) {
  if (!needs_graph({&input, &s_raw, &t}, a, b)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return coupling_op()
        .call(input, s_raw, t, a, b, split, passive, scale, clamp, atan_k, eps, inverse, check);
  }
  return as_tuple(CouplingFunction::apply(input, s_raw, t, a, b, split, passive, scale, clamp, atan_k, eps, inverse,
                                          check));
}

Tensor3 coupling_packed_autograd(const Tensor& input, const Tensor& h, const OptTensor& a, const OptTensor& b,
                                 int64_t split, std::string_view passive, std::string_view scale, double clamp,
                                 double atan_k, double eps, bool inverse, bool check) {
  if (!needs_graph({&input, &h}, a, b)) {
    at::AutoDispatchBelowADInplaceOrView below;
    return coupling_packed_op()
        .call(input, h, a, b, split, passive, scale, clamp, atan_k, eps, inverse, check);
  }
  return as_tuple(CouplingPackedFunction::apply(input, h, a, b, split, passive, scale, clamp, atan_k, eps, inverse,
                                                check));
}

}  // namespace

TORCH_LIBRARY_IMPL(flowkern, Autograd, m) {
  m.impl("coupling", &coupling_autograd);
  m.impl("coupling.packed", &coupling_packed_autograd);
}

}  // namespace flowkern
