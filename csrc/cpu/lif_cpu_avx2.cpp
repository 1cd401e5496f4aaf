// The sigmoid surrogate's psi over a row with a vectorised exp (at::vec, AVX2 + FMA), used by the CPU LIF
// backward when the CPU supports it (checked at run time). Only this file is compiled for AVX2, and it holds
// nothing but this loop, so a CPU without AVX2 never runs AVX2 code (the caller checks cpu_has_avx2() first).
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__)
#pragma GCC target("avx,avx2,fma,f16c")
// GCC's target pragma enables the instructions but not the feature macros that sleef.h / at::vec test.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define LTL_AVX2_PRAGMA 1
#endif
#if defined(__x86_64__) && (defined(__AVX2__) || defined(LTL_AVX2_PRAGMA))
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif
#include <ATen/cpu/vec/vec.h>
#define LTL_HAVE_AVX2_PATH 1
#endif

#include "ltl/lif_math.h"

namespace ltl {

bool cpu_has_avx2() {
#if defined(LTL_HAVE_AVX2_PATH)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

bool sigmoid_grad_row_avx2(const float* h, const float* theta, float* psi, int64_t n, float a) {
#if defined(LTL_HAVE_AVX2_PATH) && defined(CPU_CAPABILITY_AVX2)
  using Vec = at::vec::Vectorized<float>;
  constexpr int64_t W = Vec::size();
  const Vec va(a), vneg_a(-a), one(1.0f);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const Vec u = Vec::loadu(h + j) - Vec::loadu(theta + j);
    const Vec e = (vneg_a * u.abs()).exp();  // Sleef, 1 ulp
    const Vec d = one + e;
    (va * e / (d * d)).store(psi + j);
  }
  for (; j < n; ++j) psi[j] = surrogate_grad<Surrogate::Sigmoid>(h[j] - theta[j], a);
  return true;
#else
  (void)h, (void)theta, (void)psi, (void)n, (void)a;
  return false;
#endif
}

}  // namespace ltl
