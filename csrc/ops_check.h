// Argument checking shared by every compiled backend of the flowkern::coupling ops.
// Same rules and messages as flowkern/spec.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <charconv>
#include <cmath>
#include <string>
#include <string_view>
#include <utility>

#include "common/coupling_math.h"
#include "common/flat_view.h"

namespace flowkern {

using OptTensor = std::optional<at::Tensor>;

// A shape as Python prints a tuple, "(4, 6)" / "(6,)" / "()", so messages match flowkern/spec.py's.
inline std::string shape_str(at::IntArrayRef sizes) {
  std::string out = "(";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + (sizes.size() == 1 ? ",)" : ")");
}

// A dtype as Python prints it, "torch.float32".
inline std::string dtype_str(at::ScalarType dt) { return "torch." + std::string(c10::getDtypeNames(dt).first); }

// A float as Python's repr prints it: "0.0", "-1.5", "nan", "inf", "1e-08".
inline std::string float_str(double v) {
  char buf[64];
  const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  std::string out(buf, end);
  if (out.find_first_of(".eni") == std::string::npos) out += ".0";
  return out;
}

// dtype of the log-det and of the kernels' arithmetic: float64 for float64 inputs, else float32
inline at::ScalarType acc_scalar_type(at::ScalarType dt) { return dt == at::kDouble ? at::kDouble : at::kFloat; }

// The op's config arguments, checked (split is checked against the input by check_coupling_args).
inline CouplingConfig parse_config(int64_t split, std::string_view passive, std::string_view scale, double clamp,
                                   double atan_k, double eps) {
  TORCH_CHECK_VALUE(passive == "first" || passive == "second", "passive must be one of ['first', 'second'], got '",
                    passive, "'");
  CouplingConfig c{};
  c.split = split;
  c.passive_first = passive == "first";
  if (scale == "exp") c.scale = ScaleFn::Exp;
  else if (scale == "tanh") c.scale = ScaleFn::Tanh;
  else if (scale == "atan") c.scale = ScaleFn::Atan;
  else if (scale == "sigmoid") c.scale = ScaleFn::Sigmoid;
  else TORCH_CHECK_VALUE(false, "scale must be one of ['exp', 'tanh', 'atan', 'sigmoid'], got '", scale, "'");
  for (const auto& [name, v] : {std::pair<const char*, double>{"clamp", clamp}, {"atan_k", atan_k}, {"eps", eps}})
    TORCH_CHECK_VALUE(std::isfinite(v), name, " must be a finite number, got ", float_str(v));
  TORCH_CHECK_VALUE(!(c.scale == ScaleFn::Tanh || c.scale == ScaleFn::Atan) || clamp > 0,
                    "clamp must be > 0 for scale='", scale, "', got ", float_str(clamp));
  TORCH_CHECK_VALUE(eps >= 0, "eps must be >= 0, got ", float_str(eps));
  c.clamp = clamp;
  c.atan_k = atan_k;
  c.eps = eps;
  return c;
}

// Shape facts of one call, derived from the input of shape (B, C, *S).
struct CouplingShape {
  int64_t B;        // batch
  int64_t C;        // channels
  int64_t S;        // prod of spatial dims (1 for vectors)
  int64_t c_act;    // active channels
  int64_t act0;     // first active channel index in x
  int64_t pas0;     // first passive channel index in x
  int64_t c_pas;    // passive channels
};

// x is (B, C, *S) floating and 1 <= split <= C - 1; returns the active channel count.
inline int64_t check_x_split(const at::Tensor& x, const CouplingConfig& cfg, const char* x_name) {
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                   x_name, " must be float16, bfloat16, float32 or float64, got ", dtype_str(dt));
  TORCH_CHECK_VALUE(x.dim() >= 2, x_name, " must have shape (B, C, *S) with at least 2 dims, got ",
                    shape_str(x.sizes()));
  const int64_t C = x.size(1), split = cfg.split;
  TORCH_CHECK_VALUE(split >= 1 && split <= C - 1, "split must be in [1, C - 1] = [1, ", C - 1, "] for C=", C,
                    " channels, got ", split);
  return cfg.passive_first ? C - split : split;
}

inline CouplingShape check_coupling_args(const at::Tensor& x, const at::Tensor& s_raw, const at::Tensor& t,
                                         const OptTensor& a, const OptTensor& b, const CouplingConfig& cfg,
                                         const char* x_name) {
  const auto dt = x.scalar_type();
  CouplingShape sh;
  sh.c_act = check_x_split(x, cfg, x_name);
  sh.B = x.size(0);
  sh.C = x.size(1);
  sh.S = 1;
  for (int64_t d = 2; d < x.dim(); ++d) sh.S *= x.size(d);
  sh.c_pas = sh.C - sh.c_act;
  sh.act0 = cfg.passive_first ? cfg.split : 0;
  sh.pas0 = cfg.passive_first ? 0 : cfg.split;
  auto want = x.sizes().vec();
  want[1] = sh.c_act;
  for (const auto& [name, v] : {std::pair<const char*, const at::Tensor*>{"s_raw", &s_raw},
                                {"t", &t}}) {
    TORCH_CHECK_TYPE(v->scalar_type() == dt, name, " must have the dtype of ", x_name, " (", dtype_str(dt),
                     "), got ", dtype_str(v->scalar_type()));
    TORCH_CHECK_VALUE(v->device() == x.device(), name, " must be on the device of ", x_name, " (",
                      x.device(), "), got ", v->device());
    TORCH_CHECK_VALUE(v->sizes().vec() == want, name, " must have shape ", shape_str(want),
                      " (B, active channels, *S), got ", shape_str(v->sizes()));
  }
  TORCH_CHECK_VALUE(a.has_value() == b.has_value(),
                    "a and b must both be given (actnorm) or both be None");
  if (a.has_value()) {
    for (const auto& [name, v] : {std::pair<const char*, const at::Tensor*>{"a", &*a}, {"b", &*b}}) {
      TORCH_CHECK_TYPE(v->scalar_type() == dt, name, " must have the dtype of ", x_name, " (", dtype_str(dt),
                       "), got ", dtype_str(v->scalar_type()));
      TORCH_CHECK_VALUE(v->device() == x.device(), name, " must be on the device of ", x_name,
                        " (", x.device(), "), got ", v->device());
      TORCH_CHECK_VALUE(v->dim() == 1 && v->size(0) == sh.C, name, " must have shape (", sh.C,
                        ",) (one value per channel), got ", shape_str(v->sizes()));
    }
  }
  return sh;
}

// s_raw, t as views of a packed subnet output h = [s_raw | t] along channels, (B, 2 c_act, *S).
inline std::pair<at::Tensor, at::Tensor> split_packed(const at::Tensor& x, const at::Tensor& h,
                                                      const CouplingConfig& cfg, const char* x_name) {
  const int64_t c_act = check_x_split(x, cfg, x_name);
  auto want = x.sizes().vec();
  want[1] = 2 * c_act;
  TORCH_CHECK_TYPE(h.scalar_type() == x.scalar_type(), "h must have the dtype of ", x_name, " (",
                   dtype_str(x.scalar_type()), "), got ", dtype_str(h.scalar_type()));
  TORCH_CHECK_VALUE(h.device() == x.device(), "h must be on the device of ", x_name, " (", x.device(),
                    "), got ", h.device());
  TORCH_CHECK_VALUE(h.sizes().vec() == want, "h must have shape ", shape_str(want),
                    " (B, 2 x active channels, *S) = [s_raw | t] along channels, got ", shape_str(h.sizes()));
  return {h.narrow(1, 0, c_act), h.narrow(1, c_act, c_act)};
}

// The incoming grads of a backward call: grad_out like the input (`in_name`, B samples),
// grad_logdet (B,) floating.
inline void check_backward_grads(const at::Tensor& grad_out, const at::Tensor& grad_logdet, const at::Tensor& input,
                                 int64_t B, bool inverse) {
  const char* in_name = inverse ? "y" : "x";
  const char* g_name = inverse ? "grad_x" : "grad_y";
  TORCH_CHECK_TYPE(grad_out.scalar_type() == input.scalar_type(), g_name, " must have the dtype of ",
                   in_name, " (", dtype_str(input.scalar_type()), "), got ", dtype_str(grad_out.scalar_type()));
  TORCH_CHECK_VALUE(grad_out.sizes() == input.sizes(), g_name, " must have shape ", shape_str(input.sizes()), ", got ",
                    shape_str(grad_out.sizes()));
  TORCH_CHECK_VALUE(grad_out.device() == input.device(), g_name, " must be on the device of ", in_name);
  TORCH_CHECK_TYPE(at::isFloatingType(grad_logdet.scalar_type()), "grad_logdet must be floating, got ",
                   dtype_str(grad_logdet.scalar_type()));
  TORCH_CHECK_VALUE(grad_logdet.dim() == 1 && grad_logdet.size(0) == B,
                    "grad_logdet must have shape (", B, ",), got ", shape_str(grad_logdet.sizes()));
  TORCH_CHECK_VALUE(grad_logdet.device() == input.device(), "grad_logdet must be on the device of ", in_name);
}

// s_raw / t described for reading in place (csrc/common/flat_view.h)
inline FlatView flatten_view(const at::Tensor& v) {
  FlatView f;
  f.sb = v.stride(0);
  f.sc = v.stride(1);
  int64_t expect = -1;  // stride the next-outer spatial dim needs to flatten
  for (int64_t k = v.dim() - 1; k >= 2; --k) {
    if (v.size(k) == 1) continue;
    if (expect < 0) f.ss = v.stride(k);
    else if (v.stride(k) != expect) f.ss = -1;
    expect = v.stride(k) * v.size(k);
  }
  if (f.ss < 0)
    for (int64_t k = 2; k < v.dim(); ++k) {
      f.sizes.push_back(v.size(k));
      f.strides.push_back(v.stride(k));
    }
  return f;
}

}  // namespace flowkern
