// The CPU kernels built for AVX-512 (F, BW, VL, DQ; at::vec's 512-bit Vectorized).
// Same scheme as kernels_x86_avx2.cpp.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __AVX512DQ__ 1
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define FK_ISA avx512
#include "cpu/coupling_kernels.h"
#else
#include "cpu/kernel_args.h"
FK_ISA_UNAVAILABLE(avx512)
#endif
