// The baseline-ISA CPU kernels for float16 storage (see kernels_base_dtype.inc).
#define LTL_CPU_STORAGE c10::Half
#define LTL_CPU_RUN run_half
#include "kernels_base_dtype.inc"
