// run_cpu, the CPU kernels' entry point: float32 takes the AVX2 instantiation (kernels_avx2.cpp) when the CPU has
// AVX2 and FMA; every other case the baseline x86-64 one of its storage dtype (kernels_base_<dtype>.cpp, one file
// per dtype so that they compile in parallel).
#include <limits>

#include "ltl/kernels.h"

namespace ltl {
namespace avx2 {  // kernels_avx2.cpp
bool available();
void run_float(Kernel k, const Launch& p);
}  // namespace avx2
namespace base {  // kernels_base_<dtype>.cpp
void run_half(Kernel k, const Launch& p);
void run_bfloat16(Kernel k, const Launch& p);
void run_float(Kernel k, const Launch& p);
void run_double(Kernel k, const Launch& p);
}  // namespace base

bool cpu_has_avx2() { return avx2::available(); }

void run_cpu(Kernel k, const Launch& p) {
  if (p.N == 0) {  // the mean over no neuron is NaN, like torch's mean(); nothing else to compute
    if (k == Kernel::OfflineForward || k == Kernel::Online) {
      if (p.dtype == DType::Double) *static_cast<double*>(p.loss) = std::numeric_limits<double>::quiet_NaN();
      else *static_cast<float*>(p.loss) = std::numeric_limits<float>::quiet_NaN();
    }
    return;
  }
  if (p.T == 0) return;
  switch (p.dtype) {
    case DType::Half: return base::run_half(k, p);
    case DType::BFloat16: return base::run_bfloat16(k, p);
    case DType::Float: return avx2::available() ? avx2::run_float(k, p) : base::run_float(k, p);
    case DType::Double: return base::run_double(k, p);
  }
}

}  // namespace ltl
