// The baseline-ISA CPU kernels for bfloat16 storage (see kernels_base_dtype.inc).
#define LTL_CPU_STORAGE c10::BFloat16
#define LTL_CPU_RUN run_bfloat16
#include "kernels_base_dtype.inc"
