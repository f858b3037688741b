// `flowkern._C`: importing it loads the op registrations linked into this library, and it
// exposes the four eager ops (csrc/eager_autograd.cpp) as typed pybind functions.
//
// Calling an op through torch.ops boxes every argument into IValues and matches the schema at
// run time: ~3 us of the ~10 us a small call costs. These entries take the same arguments,
// unboxed, and call the same op through the dispatcher (c10::TypedOperatorHandle::call), so
// the profiler, dispatch modes and every backend see exactly what torch.ops would give them.
// flowkern.ops.autograd.call uses them in plain eager mode for arguments without
// __torch_function__ overrides (torch.ops handles those).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/extension.h>

#include <optional>
#include <tuple>

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using Out3 = std::tuple<Tensor, Tensor, Tensor>;
using Out2 = std::tuple<Tensor, Tensor>;

// One entry per op: `Main` are the leading tensors ((input, s_raw, t) or (input, h)), then
// a?, b?, the six config scalars (see FK_CFG in csrc/ops.cpp) and, for forward ops, `check`.
template <class Out, class... Tail>
struct Entry {
  template <class... Main>
  static auto make(const char* name) {
    using Sig = Out(const Main&..., const OptTensor&, const OptTensor&, int64_t, bool, int64_t, double, double,
                    double, Tail...);
    // the ops are registered when this library is loaded, before the module is initialised
    const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
    return [op](const Main&... main, const OptTensor& a, const OptTensor& b, int64_t split, bool passive_first,
                int64_t scale, double clamp, double atan_k, double eps, Tail... tail) -> Out {
      return op.call(main..., a, b, split, passive_first, scale, clamp, atan_k, eps, tail...);
    };
  }
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("coupling_fwd_eager", Entry<Out3, bool>::make<Tensor, Tensor, Tensor>("flowkern::coupling_fwd_eager"));
  m.def("coupling_inv_eager", Entry<Out2>::make<Tensor, Tensor, Tensor>("flowkern::coupling_inv_eager"));
  m.def("coupling_fwd_packed_eager", Entry<Out3, bool>::make<Tensor, Tensor>("flowkern::coupling_fwd_packed_eager"));
  m.def("coupling_inv_packed_eager", Entry<Out2>::make<Tensor, Tensor>("flowkern::coupling_inv_packed_eager"));
}
