// The CPU kernels built for AVX-512 (F, BW, VL, DQ; at::vec's 512-bit Vectorized).
// Same scheme as kernels_x86_avx2.cpp, with -mavx512f -mavx512bw -mavx512vl -mavx512dq added
// and -DCPU_CAPABILITY=AVX512 -DCPU_CAPABILITY_AVX512.
#if defined(FLOWKERN_X86_ISA)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512DQ__) || \
    !defined(CPU_CAPABILITY_AVX512)
#error "kernels_x86_avx512.cpp needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -DCPU_CAPABILITY=AVX512 ... (see setup.py)"
#endif
#define FK_ISA avx512
#include "cpu/coupling_kernels.h"
#else
#include "cpu/kernel_args.h"
const flowkern::cpu::KernelTable* flowkern::cpu::avx512::kernel_table() { return nullptr; }
#endif
