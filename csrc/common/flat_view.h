// FlatView: how a (B, C', *S) view (s_raw, t) is read in place, with its spatial dims flattened
// to one index. Filled by flowkern::flatten_view (csrc/ops_check.h) for both backends; no torch
// headers here, so the CPU kernels (csrc/cpu/kernel_args.h) include it cheaply.
#pragma once

#include <cstdint>
#include <vector>

namespace flowkern {

// Element (b, c, s) is at data + b sb + c sc + s ss. ss is -1 when the spatial dims do not
// collapse to one stride; then `sizes` / `strides` hold them, to unravel s.
struct FlatView {
  int64_t sb = 0;  // batch stride (elements)
  int64_t sc = 0;  // channel stride
  int64_t ss = 1;  // flattened spatial stride (1 when there is no non-singleton spatial dim), or -1
  std::vector<int64_t> sizes, strides;  // spatial dims, for ss == -1
};

}  // namespace flowkern
