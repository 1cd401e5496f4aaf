// The baseline-ISA CPU kernels for float32 storage (see kernels_base_dtype.inc), taken only where the CPU lacks
// AVX2 or FMA (kernels_avx2.cpp otherwise).
#define LTL_CPU_STORAGE float
#define LTL_CPU_RUN run_float
#include "kernels_base_dtype.inc"
