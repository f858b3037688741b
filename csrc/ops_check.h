// Argument checking shared by every compiled backend of the flowkern::coupling_* ops.
// Same rules and messages as flowkern/ops/spec.py::check_coupling_args.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <utility>

namespace flowkern {

// dtype of the log-det and of the kernels' arithmetic: float64 for float64 inputs, else float32
inline at::ScalarType acc_scalar_type(at::ScalarType dt) { return dt == at::kDouble ? at::kDouble : at::kFloat; }

// Shape facts of one call, derived from x of shape (B, C, *S).
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
inline int64_t check_x_split(const at::Tensor& x, int64_t split, bool passive_first, const char* x_name) {
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                   x_name, " must be float16, bfloat16, float32 or float64, got ", dt);
  TORCH_CHECK_VALUE(x.dim() >= 2, x_name, " must have shape (B, C, *S) with at least 2 dims, got ",
                    x.sizes());
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(split >= 1 && split <= C - 1, "split must be in [1, C - 1] = [1, ", C - 1, "] for C=", C,
                    " channels, got ", split);
  return passive_first ? C - split : split;
}

inline CouplingShape check_coupling_args(const at::Tensor& x, const at::Tensor& s_raw,
                                         const at::Tensor& t, const std::optional<at::Tensor>& a,
                                         const std::optional<at::Tensor>& b, int64_t split,
                                         bool passive_first, int64_t scale, double clamp,
                                         double eps, const char* x_name) {
  const auto dt = x.scalar_type();
  CouplingShape sh;
  sh.c_act = check_x_split(x, split, passive_first, x_name);
  sh.B = x.size(0);
  sh.C = x.size(1);
  sh.S = 1;
  for (int64_t d = 2; d < x.dim(); ++d) sh.S *= x.size(d);
  TORCH_CHECK_VALUE(scale >= 0 && scale <= 3, "scale must be 0..3 (exp, tanh, atan, sigmoid), got ",
                    scale);
  TORCH_CHECK_VALUE(!(scale == 1 || scale == 2) || clamp > 0, "clamp must be > 0, got ", clamp);
  TORCH_CHECK_VALUE(eps >= 0, "eps must be >= 0, got ", eps);
  sh.c_pas = sh.C - sh.c_act;
  sh.act0 = passive_first ? split : 0;
  sh.pas0 = passive_first ? 0 : split;
  auto want = x.sizes().vec();
  want[1] = sh.c_act;
  for (const auto& [name, v] : {std::pair<const char*, const at::Tensor*>{"s_raw", &s_raw},
                                {"t", &t}}) {
    TORCH_CHECK_TYPE(v->scalar_type() == dt, name, " must have the dtype of ", x_name, " (", dt,
                     "), got ", v->scalar_type());
    TORCH_CHECK_VALUE(v->device() == x.device(), name, " must be on the device of ", x_name, " (",
                      x.device(), "), got ", v->device());
    TORCH_CHECK_VALUE(v->sizes().vec() == want, name, " must have shape ", at::IntArrayRef(want),
                      " (B, active channels, *S), got ", v->sizes());
  }
  TORCH_CHECK_VALUE(a.has_value() == b.has_value(),
                    "a and b must both be given (actnorm) or both be None");
  if (a.has_value()) {
    for (const auto& [name, v] : {std::pair<const char*, const at::Tensor*>{"a", &*a}, {"b", &*b}}) {
      TORCH_CHECK_TYPE(v->scalar_type() == dt, name, " must have the dtype of ", x_name, " (", dt,
                       "), got ", v->scalar_type());
      TORCH_CHECK_VALUE(v->device() == x.device(), name, " must be on the device of ", x_name,
                        " (", x.device(), "), got ", v->device());
      TORCH_CHECK_VALUE(v->dim() == 1 && v->size(0) == sh.C, name, " must have shape (", sh.C,
                        ",) (one value per channel), got ", v->sizes());
    }
  }
  return sh;
}

// s_raw, t as views of a packed subnet output h = [s_raw | t] along channels, (B, 2 c_act, *S).
inline std::pair<at::Tensor, at::Tensor> split_packed(const at::Tensor& x, const at::Tensor& h, int64_t split,
                                                      bool passive_first, const char* x_name) {
  const int64_t c_act = check_x_split(x, split, passive_first, x_name);
  auto want = x.sizes().vec();
  want[1] = 2 * c_act;
  TORCH_CHECK_TYPE(h.scalar_type() == x.scalar_type(), "h must have the dtype of ", x_name, " (",
                   x.scalar_type(), "), got ", h.scalar_type());
  TORCH_CHECK_VALUE(h.device() == x.device(), "h must be on the device of ", x_name, " (", x.device(),
                    "), got ", h.device());
  TORCH_CHECK_VALUE(h.sizes().vec() == want, "h must have shape ", at::IntArrayRef(want),
                    " (B, 2 x active channels, *S) = [s_raw | t] along channels, got ", h.sizes());
  return {h.narrow(1, 0, c_act), h.narrow(1, c_act, c_act)};
}

}  // namespace flowkern
