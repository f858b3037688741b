// CUDA dispatch of the flowkern::coupling ops: the host side of coupling_host.h (argument checks,
// ATen allocation, the launchers of coupling_kernels.cu) on CUDA tensors, on the current stream.
#ifdef FLOWKERN_PYTHON_MODULE
#include <Python.h>  // first, as Python asks
#endif
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that one needs the cuSPARSE headers
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/coupling_host.h"
#include "op_entries.h"

#ifdef FLOWKERN_PYTHON_MODULE
// `import flowkern._C_cuda` loads this library and with it the CUDA registrations below.
PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif

namespace flowkern {
namespace {

// coupling_host.h's Device: CUDA tensors, launched on the current stream of their device.
struct CudaDevice {
  static bool on_device(const at::Tensor& x) { return x.is_cuda(); }
  static constexpr const char* kWhere = "a CUDA tensor for the cuda backend";
  static cuda::GridLimits grid_limits() { return {}; }  // CUDA's
  // a launch that failed (bad configuration, no kernel image for this GPU) raises here instead
  // of leaving the outputs unwritten
  static void check_launches() { C10_CUDA_KERNEL_LAUNCH_CHECK(); }
  struct Scope {
    explicit Scope(const at::Tensor& x) : guard(x.device()), stream(c10::cuda::getCurrentCUDAStream()) {}
    c10::cuda::CUDAGuard guard;
    cudaStream_t stream;
  };
};

using Host = cuda_host::CouplingHost<CudaDevice>;

}  // namespace

TORCH_LIBRARY_IMPL(flowkern, CUDA, m) { OpEntries<&Host::run, &Host::backward>::register_all(m); }

}  // namespace flowkern
