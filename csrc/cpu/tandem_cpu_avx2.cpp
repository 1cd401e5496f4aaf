// The CPU tandem-loss kernels compiled for AVX2 (8 floats a vector instead of SSE2's 4), taken at run time by
// tandem_cpu.cpp when the CPU has AVX2. Every header is included before the target pragma, so no inline function
// shared with other files is compiled for AVX2 here (it would be a crash on a CPU without it); the kernels live in
// their own namespace. No FMA: H = beta V + alpha X rounds exactly as in the reference (identical spikes).
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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LTL_TANDEM_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2")
#define LTL_TANDEM_ISA avx2
#include "tandem_cpu_kernels.h"
#undef LTL_TANDEM_ISA
#pragma GCC pop_options
#endif

namespace ltl {
namespace avx2 {
#if defined(LTL_TANDEM_HAVE_AVX2)
bool tandem_available() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}
#else
bool tandem_available() { return false; }
void offline_forward(const TandemLaunch&) {}
void offline_backward(const TandemLaunch&) {}
void online(const TandemLaunch&) {}
#endif
}  // namespace avx2
}  // namespace ltl
