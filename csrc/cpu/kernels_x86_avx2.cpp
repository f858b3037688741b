// The CPU kernels built for AVX2 + FMA (at::vec's 256-bit Vectorized, Sleef u10 math).
//
// On x86-64 setup.py and CMakeLists.txt compile this file as its own object with
// -mavx2 -mfma -mf16c -mbmi -mbmi2 -mlzcnt -mpopcnt -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2
// -DFLOWKERN_X86_ISA (as ATen builds its own per-ISA kernels); elsewhere it is built with the
// default flags and has no table. Its code lives in ISA-named namespaces (flowkern::cpu::avx2,
// at::vec::AVX2), so no function compiled for AVX2 can stand in for another object's copy at
// link time; coupling_cpu.cpp calls the table only when at::get_cpu_capability() allows AVX2.
#if defined(FLOWKERN_X86_ISA)
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(CPU_CAPABILITY_AVX2)
#error "kernels_x86_avx2.cpp needs -mavx2 -mfma -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2 (see setup.py)"
#endif
#define FK_ISA avx2
#include "cpu/coupling_kernels.h"
#else
#include "cpu/kernel_args.h"
const flowkern::cpu::KernelTable* flowkern::cpu::avx2::kernel_table() { return nullptr; }
#endif
