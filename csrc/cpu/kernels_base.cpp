// The CPU kernels built for the baseline instruction set (at::vec's generic Vectorized),
// compiled with the extension's default flags. Every build has this table.
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#define FK_ISA base
#include "cpu/coupling_kernels.h"
