// The four boxed entries of a backend (schemas in csrc/ops.cpp): coupling / coupling.packed and
// coupling_backward / coupling_backward.packed, from the backend's two functions
//
//   Run(input, s_raw, t, a, b, cfg, inverse, check) -> (out, logdet, err)
//   Backward(grad_out, grad_logdet, input, s_raw, t, a, b, cfg, inverse, packed_h)
//       -> (grad_input, grad_s_raw, grad_t, grad_a, grad_b)
//
// The packed overloads take h = [s_raw | t] along channels, (B, 2 c_act, *S) (the subnet output
// as FrEIA / CompVis split it), and run the same functions on two views of it. With `packed_h`
// Backward writes the grads of s_raw and t into the two halves of one grad_h (returned as
// grad_s_raw; grad_t is then empty), so autograd gets one grad instead of two to scatter and sum.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdint>
#include <string_view>
#include <tuple>

#include "ops_check.h"

namespace flowkern {

using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensor5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// the input's name in error messages: x for the forward, y for the inverse
inline const char* input_name(bool inverse) { return inverse ? "y" : "x"; }

template <auto Run, auto Backward>
struct OpEntries {
  using Tensor = at::Tensor;

  static CouplingConfig config(int64_t split, std::string_view passive, std::string_view scale, double clamp,
                               double atan_k, double eps) {
    return parse_config(split, passive, scale, clamp, atan_k, eps);
  }

  static Tensor3 run(const Tensor& input, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                     const OptTensor& b, const CouplingConfig& cfg, bool inverse, bool check) {
    TORCH_CHECK_VALUE(!(check && inverse), "check (the round-trip error) applies to the forward only (inverse=False)");
    return Run(input, s_raw, t, a, b, cfg, inverse, check);
  }

  static Tensor3 coupling(const Tensor& input, const Tensor& s_raw, const Tensor& t, const OptTensor& a,
                          const OptTensor& b, int64_t split, std::string_view passive, std::string_view scale,
                          double clamp, double atan_k, double eps, bool inverse, bool check) {
    const CouplingConfig cfg = config(split, passive, scale, clamp, atan_k, eps);
    return run(input, s_raw, t, a, b, cfg, inverse, check);
  }

  static Tensor3 coupling_packed(const Tensor& input, const Tensor& h, const OptTensor& a, const OptTensor& b,
                                 int64_t split, std::string_view passive, std::string_view scale, double clamp,
                                 double atan_k, double eps, bool inverse, bool check) {
    const CouplingConfig cfg = config(split, passive, scale, clamp, atan_k, eps);
    const auto [s_raw, t] = split_packed(input, h, cfg, input_name(inverse));
    return run(input, s_raw, t, a, b, cfg, inverse, check);
  }

  static Tensor5 coupling_backward(const Tensor& grad_out, const Tensor& grad_logdet, const Tensor& input,
                                   const Tensor& s_raw, const Tensor& t, const OptTensor& a, const OptTensor& b,
                                   int64_t split, std::string_view passive, std::string_view scale, double clamp,
                                   double atan_k, double eps, bool inverse) {
    const CouplingConfig cfg = config(split, passive, scale, clamp, atan_k, eps);
    return Backward(grad_out, grad_logdet, input, s_raw, t, a, b, cfg, inverse, nullptr);
  }

  static Tensor4 coupling_backward_packed(const Tensor& grad_out, const Tensor& grad_logdet, const Tensor& input,
                                          const Tensor& h, const OptTensor& a, const OptTensor& b, int64_t split,
                                          std::string_view passive, std::string_view scale, double clamp,
                                          double atan_k, double eps, bool inverse) {
    const CouplingConfig cfg = config(split, passive, scale, clamp, atan_k, eps);
    const auto [s_raw, t] = split_packed(input, h, cfg, input_name(inverse));
    auto [g_in, g_h, g_t, g_a, g_b] = Backward(grad_out, grad_logdet, input, s_raw, t, a, b, cfg, inverse, &h);
    return {g_in, g_h, g_a, g_b};
  }

  static void register_all(torch::Library& m) {
    m.impl("coupling", &coupling);
    m.impl("coupling.packed", &coupling_packed);
    m.impl("coupling_backward", &coupling_backward);
    m.impl("coupling_backward.packed", &coupling_backward_packed);
  }
};

}  // namespace flowkern
