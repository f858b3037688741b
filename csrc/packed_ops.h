// The packed ops (h = [s_raw | t] along channels, (B, 2 c_act, *S); schemas in csrc/ops.cpp)
// of a backend, built from its unpacked forward / inverse and its backward, which writes the
// grads of s_raw and t into the two halves of one grad_h when given `packed_h`.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "ops_check.h"

namespace flowkern {

using OptTensor = std::optional<at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <auto Fwd>
Tensor3 fwd_packed(const at::Tensor& x, const at::Tensor& h, const OptTensor& a, const OptTensor& b,
                   int64_t split, bool passive_first, int64_t scale, double clamp, double atan_k, double eps,
                   bool check) {
  const auto [s_raw, t] = split_packed(x, h, split, passive_first, "x");
  return Fwd(x, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, check);
}

template <auto Inv>
std::tuple<at::Tensor, at::Tensor> inv_packed(const at::Tensor& y, const at::Tensor& h, const OptTensor& a,
                                              const OptTensor& b, int64_t split, bool passive_first,
                                              int64_t scale, double clamp, double atan_k, double eps) {
  const auto [s_raw, t] = split_packed(y, h, split, passive_first, "y");
  return Inv(y, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps);
}

// Bwd(grad_out, grad_logdet, input, s_raw, t, a, b, cfg..., packed_h) -> (g_in, g_h, empty, g_a, g_b)
template <auto Bwd, bool Inverse>
Tensor4 bwd_packed(const at::Tensor& grad_out, const at::Tensor& grad_logdet, const at::Tensor& input,
                   const at::Tensor& h, const OptTensor& a, const OptTensor& b, int64_t split, bool passive_first,
                   int64_t scale, double clamp, double atan_k, double eps) {
  const auto [s_raw, t] = split_packed(input, h, split, passive_first, Inverse ? "y" : "x");
  auto [g_in, g_h, g_t, g_a, g_b] =
      Bwd(grad_out, grad_logdet, input, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, &h);
  return {g_in, g_h, g_a, g_b};
}

}  // namespace flowkern
