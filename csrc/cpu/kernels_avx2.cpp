// The float32 CPU kernels (csrc/cpu/kernels.h) compiled for AVX2 + FMA: 8 floats a vector instead of SSE2's 4;
// run_cpu (kernels_base.cpp) takes them when the CPU has both. Every header is included before the target pragma,
// so no inline function shared with other files is compiled for AVX2 here (it would crash a CPU without it); the
// kernels live in their own namespace. FMA only where written (LTL_CPU_FMA: the surrogate's exp); H = beta V +
// alpha X still rounds exactly as in the reference (-ffp-contract=off): identical spikes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include <immintrin.h>

#include "ltl/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LTL_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LTL_CPU_ISA avx2
#define LTL_CPU_FMA 1
#include "kernels.h"
#undef LTL_CPU_ISA
#undef LTL_CPU_FMA
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
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#else
bool available() { return false; }
void run_float(Kernel, const Launch&) {}
#endif
}  // namespace avx2
}  // namespace ltl
