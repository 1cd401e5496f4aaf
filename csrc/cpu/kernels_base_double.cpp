// The baseline-ISA CPU kernels for float64 storage (see kernels_base_dtype.inc).
#define LTL_CPU_STORAGE double
#define LTL_CPU_RUN run_double
#include "kernels_base_dtype.inc"
