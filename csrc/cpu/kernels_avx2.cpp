// The float32 CPU kernels (csrc/cpu/kernels.h) compiled for AVX2: 8 floats a vector instead of SSE2's 4; run_cpu
// (kernels_base.cpp) takes them when the CPU has AVX2. Every header is included before the target pragma, so no
// inline function shared with other files is compiled for AVX2 here (it would crash a CPU without it); the kernels
// live in their own namespace. No FMA: H = beta V + alpha X rounds exactly as in the reference (identical spikes).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdlib>
#include <new>
#include <type_traits>

#include "ltl/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LTL_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2")
#define LTL_CPU_ISA avx2
#include "kernels.h"
#undef LTL_CPU_ISA
namespace ltl {
namespace avx2 {
void run_float(Kernel k, const Launch& p) { run_typed<float>(k, p); }
}  // namespace avx2
}  // namespace ltl
#pragma GCC pop_options
#endif

namespace ltl {
namespace avx2 {
#if defined(LTL_HAVE_AVX2)
bool available() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}
#else
bool available() { return false; }
void run_float(Kernel, const Launch&) {}
#endif
}  // namespace avx2
}  // namespace ltl
