// Schemas of the flowkern ops. Each backend registers its kernels with its own
// TORCH_LIBRARY_IMPL (csrc/cpu/coupling_cpu.cpp, csrc/cuda/coupling_cuda.cpp) through
// OpEntries (csrc/op_entries.h); fake kernels and autograd are registered in Python.
//
// coupling: inverse=False maps x -> (y, logdet of the forward, err); inverse=True maps
// y -> (x, logdet of the inverse = -forward, empty err). err is the per-sample round-trip error
// (B,) when check, else empty. The .packed overloads take h = [s_raw | t] along channels.
#ifdef FLOWKERN_PYTHON_MODULE
#include <Python.h>  // first, as Python asks
#endif
#include <torch/library.h>

#include <string>

#define FK_CFG "int split, str passive, str scale, float clamp, float atan_k, float eps, bool inverse"

namespace flowkern::cpu {
std::string kernel_isa();  // csrc/cpu/coupling_cpu.cpp
}

TORCH_LIBRARY(flowkern, m) {
  m.def("coupling(Tensor input, Tensor s_raw, Tensor t, Tensor? a, Tensor? b, " FK_CFG
        ", bool check) -> (Tensor out, Tensor logdet, Tensor err)");
  m.def("coupling.packed(Tensor input, Tensor h, Tensor? a, Tensor? b, " FK_CFG
        ", bool check) -> (Tensor out, Tensor logdet, Tensor err)");
  m.def("coupling_backward(Tensor grad_out, Tensor grad_logdet, Tensor input, Tensor s_raw, Tensor t, "
        "Tensor? a, Tensor? b, " FK_CFG
        ") -> (Tensor grad_input, Tensor grad_s_raw, Tensor grad_t, Tensor grad_a, Tensor grad_b)");
  m.def("coupling_backward.packed(Tensor grad_out, Tensor grad_logdet, Tensor input, Tensor h, Tensor? a, "
        "Tensor? b, " FK_CFG ") -> (Tensor grad_input, Tensor grad_h, Tensor grad_a, Tensor grad_b)");
  // "avx512" | "avx2" | "base": the kernel table the CPU ops run (honours ATEN_CPU_CAPABILITY)
  m.def("cpu_kernel_isa() -> str", &flowkern::cpu::kernel_isa);
}

#ifdef FLOWKERN_PYTHON_MODULE
// `import flowkern._C` loads this library and with it the registrations above (an empty module,
// as in pytorch/extension-cpp); the ops are reached through torch.ops.flowkern.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&def);
}
#endif
