// Fused local tandem loss on the CPU (floor 2): the kernels of tandem_cpu_kernels.h for the baseline ISA, and the
// entry points, which take the AVX2 instantiation (tandem_cpu_avx2.cpp) when the CPU has AVX2.
//
// -fno-trapping-math for this file (first, so every function here, headers included, has the same options and
// inlines): with trapping math GCC turns the spike select `H >= theta ? 1 : 0` into control flow and will not
// vectorise the loops. Nothing here relies on floating-point exceptions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "ltl/tandem_kernels.h"

#define LTL_TANDEM_ISA base
#include "tandem_cpu_kernels.h"

namespace ltl {
namespace avx2 {  // tandem_cpu_avx2.cpp; false/no-op where it was not compiled for AVX2
bool tandem_available();
void offline_forward(const TandemLaunch& p);
void offline_backward(const TandemLaunch& p);
void online(const TandemLaunch& p);
}  // namespace avx2

void tandem_offline_forward_cpu(const TandemLaunch& p) {
  if (avx2::tandem_available()) avx2::offline_forward(p);
  else base::offline_forward(p);
}
void tandem_offline_backward_cpu(const TandemLaunch& p) {
  if (avx2::tandem_available()) avx2::offline_backward(p);
  else base::offline_backward(p);
}
void tandem_online_cpu(const TandemLaunch& p) {
  if (avx2::tandem_available()) avx2::online(p);
  else base::online(p);
}

}  // namespace ltl
