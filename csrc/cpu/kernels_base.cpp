// The CPU kernels (csrc/cpu/kernels.h) for the baseline x86-64 ISA, and run_cpu, the entry point: float32 takes
// the AVX2 instantiation (kernels_avx2.cpp) when the CPU has AVX2.
//
// -fno-trapping-math for this file (first, so every function here, headers included, has the same options and
// inlines): with trapping math GCC turns the spike select `H >= threshold ? 1 : 0` into control flow and will not
// vectorise the loops. Nothing here relies on floating-point exceptions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

#include <immintrin.h>

#include "ltl/kernels.h"

#define LTL_CPU_ISA base
#include "kernels.h"
#undef LTL_CPU_ISA

namespace ltl {
namespace avx2 {  // kernels_avx2.cpp
bool available();
void run_float(Kernel k, const Launch& p);
}  // namespace avx2

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
  if (p.dtype == DType::Float && avx2::available()) return avx2::run_float(k, p);
  dtype_switch<c10::Half, c10::BFloat16>(p.dtype, [&](auto tag) { base::run_typed<decltype(tag)>(k, p); });
}

}  // namespace ltl
