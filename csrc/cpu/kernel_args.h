// ISA-neutral description of one call of a flowkern CPU coupling kernel.
//
// coupling_cpu.cpp fills a CouplingArgs (checked, contiguous where allowed, acc-type
// actnorm vectors) and calls the kernel table of the best ISA; the kernels themselves
// live in coupling_kernels.h, compiled once per ISA (kernels_*.cpp).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "common/coupling_math.h"
#include "common/flat_view.h"

namespace flowkern::cpu {

// A (B, C_active, *S) tensor read through its strides (s_raw, t): never copied.
struct StridedView : FlatView {
  const void* data = nullptr;
};

struct CouplingArgs {
  c10::ScalarType dtype;
  int64_t B, C, S, c_act, act0;
  CouplingConfig cfg;  // the scale function and its parameters (the split is in C, c_act, act0)
  bool has_ab;
  // actnorm vectors (C,) in the accumulation type (float, or double for float64);
  // ones/zeros without actnorm.
  const void* a;
  const void* b;
  const void* inv_a;
  double ld_const;  // prod(S) * sum_c log|a_c| (0 without actnorm)

  const void* in;    // x (fwd, fwd_bwd) or y (inv, inv_bwd): contiguous (B, C, *S)
  StridedView r, t;  // s_raw, t
  const void* gout;  // grad of the op's main output (bwd only), contiguous like `in`
  const void* glog;  // grad of the log-det (bwd only), (B,) acc type

  void* out;     // y / x (fwd / inv) or grad_x / grad_y (bwd): contiguous like `in`
  void* logdet;  // (B,) acc type (fwd / inv)
  void* err;     // (B,) acc type with check, else nullptr (fwd)
  void* g_r;     // grad_s_raw (B, c_act, *S), contiguous per sample (bwd)
  void* g_t;     // grad_t     (B, c_act, *S), contiguous per sample (bwd)
  int64_t g_bs;  // batch stride of g_r / g_t in elements: c_act * S, or 2 c_act S when they
                 // are the two halves of one packed grad_h (B, 2 c_act, *S)
  void* g_a;     // grad_a (C,) acc type, complete (bwd; ignored without actnorm)
  void* g_b;     // grad_b (C,) acc type (bwd)
};

using KernelFn = void (*)(const CouplingArgs&);

struct KernelTable {
  KernelFn fwd;      // y, logdet[, err]
  KernelFn inv;      // x, logdet
  KernelFn fwd_bwd;  // grads of the forward (inverse=False)
  KernelFn inv_bwd;  // grads of the inverse (inverse=True)
};

// One table per instruction set; nullptr when not compiled for this target.
namespace base { const KernelTable* kernel_table(); }
namespace avx2 { const KernelTable* kernel_table(); }
namespace avx512 { const KernelTable* kernel_table(); }

}  // namespace flowkern::cpu
