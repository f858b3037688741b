// The CPU kernels built for the baseline instruction set (at::vec's generic Vectorized).
// Sorted first among the kernel files, so the linker keeps this TU's copies of shared
// inline functions (see kernels_x86_avx2.cpp).
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#define FK_ISA base
#include "cpu/coupling_kernels.h"
