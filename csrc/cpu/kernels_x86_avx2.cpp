// The CPU kernels built for AVX2 + FMA (at::vec's 256-bit Vectorized, Sleef u10 math).
//
// setup.py compiles every csrc/cpu file with the same flags, so the instruction set is
// chosen here with `#pragma GCC target` (plus the ISA macros) before any include; coupling_cpu.cpp calls this
// table only when at::get_cpu_capability() (ATEN_CPU_CAPABILITY) allows AVX2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
// g++ does not define the ISA macros for a target pragma; the vec / Sleef headers test them
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define FK_ISA avx2
#include "cpu/coupling_kernels.h"
#else
#include "cpu/kernel_args.h"
FK_ISA_UNAVAILABLE(avx2)
#endif
