// Schemas of the flowkern ops. Each backend registers its kernels with its own
// TORCH_LIBRARY_IMPL (csrc/cpu/coupling_cpu.cpp, csrc/cuda/coupling_cuda.cpp);
// fake kernels and autograd are registered in Python (flowkern/ops/coupling.py).
#include <torch/library.h>

#define FK_CFG "int split, bool passive_first, int scale, float clamp, float atan_k, float eps"

TORCH_LIBRARY(flowkern, m) {
  m.def("coupling_fwd(Tensor x, Tensor s_raw, Tensor t, Tensor? a, Tensor? b, " FK_CFG
        ", bool check) -> (Tensor y, Tensor logdet, Tensor err)");
  m.def("coupling_inv(Tensor y, Tensor s_raw, Tensor t, Tensor? a, Tensor? b, " FK_CFG
        ") -> (Tensor x, Tensor logdet)");
  m.def("coupling_fwd_bwd(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor s_raw, Tensor t, "
        "Tensor? a, Tensor? b, " FK_CFG
        ") -> (Tensor grad_x, Tensor grad_s_raw, Tensor grad_t, Tensor grad_a, Tensor grad_b)");
  m.def("coupling_inv_bwd(Tensor grad_x, Tensor grad_logdet, Tensor y, Tensor s_raw, Tensor t, "
        "Tensor? a, Tensor? b, " FK_CFG
        ") -> (Tensor grad_y, Tensor grad_s_raw, Tensor grad_t, Tensor grad_a, Tensor grad_b)");
  // Packed variants: h = [s_raw | t] along channels, (B, 2 C_active, *S), the subnet output as
  // FrEIA / CompVis split it; the backward writes one grad_h instead of two per-view grads.
  m.def("coupling_fwd_packed(Tensor x, Tensor h, Tensor? a, Tensor? b, " FK_CFG
        ", bool check) -> (Tensor y, Tensor logdet, Tensor err)");
  m.def("coupling_inv_packed(Tensor y, Tensor h, Tensor? a, Tensor? b, " FK_CFG
        ") -> (Tensor x, Tensor logdet)");
  m.def("coupling_fwd_packed_bwd(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor h, Tensor? a, "
        "Tensor? b, " FK_CFG ") -> (Tensor grad_x, Tensor grad_h, Tensor grad_a, Tensor grad_b)");
  m.def("coupling_inv_packed_bwd(Tensor grad_x, Tensor grad_logdet, Tensor y, Tensor h, Tensor? a, "
        "Tensor? b, " FK_CFG ") -> (Tensor grad_y, Tensor grad_h, Tensor grad_a, Tensor grad_b)");
}
