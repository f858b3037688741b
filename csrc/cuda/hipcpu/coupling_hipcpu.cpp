// The tests' CPU build of the CUDA backend (python_tests/hipcpu_build.py builds it, with
// csrc/cuda/coupling_kernels.cu compiled as C++ against HIP-CPU): the host side of
// csrc/cuda/coupling_host.h on CPU tensors, as a Python module with the four op entries of
// csrc/op_entries.h (the signatures of torch.ops.flowkern.coupling*) and the launch geometry.
//
// It is never registered under the flowkern op namespace (the real CPU backend owns that).
#include <torch/extension.h>

#include <cstdint>
#include <string>

#include "cuda/coupling_host.h"
#include "op_entries.h"

namespace flowkern::hipcpu_test {
namespace {

namespace fc = flowkern::cuda;

fc::GridLimits g_limits{};  // set_grid_limits: smaller than CUDA's to reach large-shape layouts

// coupling_host.h's Device: CPU tensors; the launchers run the kernels on HIP-CPU's own stream
// and wait for each (csrc/cuda/hipcpu/cuda_runtime.h), so no stream is passed.
struct HipCpuDevice {
  static bool on_device(const at::Tensor& x) { return x.is_cpu(); }
  static constexpr const char* kWhere = "a CPU tensor for the HIP-CPU build of the cuda backend";
  static fc::GridLimits grid_limits() { return g_limits; }
  static void check_launches() {}  // HIP-CPU's launches wait and cannot fail to start
  struct Scope {
    explicit Scope(const at::Tensor&) {}
    cudaStream_t stream = nullptr;
  };
};

using Host = cuda_host::CouplingHost<HipCpuDevice>;
using Entries = OpEntries<&Host::run, &Host::backward>;

fc::DType parse_dtype(const std::string& name) {
  if (name == "float32") return fc::DType::Float;
  if (name == "float64") return fc::DType::Double;
  if (name == "float16") return fc::DType::Half;
  TORCH_CHECK_VALUE(name == "bfloat16", "dtype must be float32, float64, float16 or bfloat16, got ", name);
  return fc::DType::BFloat16;
}

// The launch geometry the cuda backend computes for x of shape (B, C, S) (S = prod of spatial
// dims) with c_act active channels from act0, under limits (x, y) (CUDA's by default).
pybind11::dict geometry(const std::string& dtype, int64_t B, int64_t C, int64_t S, int64_t c_act, int64_t act0,
                        int64_t max_x, int64_t max_y) {
  const fc::GridLimits lim{max_x, max_y};
  const fc::Geometry g = fc::make_geometry(parse_dtype(dtype), B, C, S, c_act, act0, lim);
  const fc::Grid grid = fc::grid_dims(g);
  pybind11::dict d;
  d["R"] = g.R;
  d["K"] = g.K;
  d["rows_are_samples"] = g.rows_are_samples;
  d["chunk"] = g.chunk;
  d["n_chunks"] = g.n_chunks;
  d["n_row_tiles"] = g.n_row_tiles;
  d["chunks_in_x"] = g.chunks_in_x;
  d["grid"] = pybind11::make_tuple(grid.x, grid.y);
  d["fits"] = fc::grid_fits(g, lim);
  d["ld_part_size"] = g.ld_part_size();
  d["ab_part_size"] = g.ab_part_size();
  d["warps"] = fc::kWarps;
  d["vec"] = fc::vec_width(parse_dtype(dtype));
  return d;
}

}  // namespace
}  // namespace flowkern::hipcpu_test

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace t = flowkern::hipcpu_test;
  m.doc() = "flowkern's CUDA kernels run on the CPU through HIP-CPU (tests only)";
  m.def("coupling", &t::Entries::coupling);
  m.def("coupling_packed", &t::Entries::coupling_packed);
  m.def("coupling_backward", &t::Entries::coupling_backward);
  m.def("coupling_backward_packed", &t::Entries::coupling_backward_packed);
  const flowkern::cuda::GridLimits cuda_limits{};
  m.def("geometry", &t::geometry, pybind11::arg("dtype"), pybind11::arg("B"), pybind11::arg("C"),
        pybind11::arg("S"), pybind11::arg("c_act"), pybind11::arg("act0"), pybind11::arg("max_x") = cuda_limits.x,
        pybind11::arg("max_y") = cuda_limits.y);
  m.def("set_grid_limits", [](int64_t x, int64_t y) { t::g_limits = {x, y}; },
        "Grid limits of the following calls (CUDA's: 2147483647, 65535)");
  m.def("grid_limits", []() { return pybind11::make_tuple(t::g_limits.x, t::g_limits.y); });
}
