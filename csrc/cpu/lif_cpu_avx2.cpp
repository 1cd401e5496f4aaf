// The float32 CPU LIF kernels compiled for AVX2 + FMA (8 floats a vector; the sigmoid surrogate's exp through
// at::vec), chosen at run time by lif_cpu_kernel.cpp when the CPU has AVX2 and FMA.
//
// Safety: every header with external-linkage inline code is included BEFORE the target pragma (so it is compiled
// for the baseline); after it come only at::vec (its own AVX2 namespace) and lif_cpu_kernel.h (internal
// linkage). setup.py links this object last, so the linker keeps the baseline copy of any shared inline function.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <type_traits>

#include "ltl/lif_kernels.h"
#include "ltl/lif_math.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#if !defined(__AVX2__)
#pragma GCC target("avx,avx2,fma,f16c")
// GCC's target pragma enables the instructions but not the feature macros that sleef.h / at::vec test.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#endif
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif
#include <ATen/cpu/vec/vec.h>
#define LTL_AVX2_BUILD 1
#endif

#if defined(LTL_AVX2_BUILD) && defined(CPU_CAPABILITY_AVX2)
namespace ltl {
namespace {
// psi of the sigmoid surrogate over a row: a e / (1 + e)^2 with e = exp(-a |h - theta|) (exp_u20: inline,
// ~2e-6 relative error, far inside float32 gradient tolerances).
inline void sigmoid_row_avx2(const float* h, const float* theta, float* psi, int64_t n, float a) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int64_t W = Vec::size();
  const Vec va(a), vneg_a(-a), one(1.0f);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const Vec u = Vec::loadu(h + j) - Vec::loadu(theta + j);
    const Vec e = (vneg_a * u.abs()).exp_u20();
    const Vec d = one + e;
    (va * e / (d * d)).store(psi + j);
  }
  for (; j < n; ++j) psi[j] = surrogate_grad<Surrogate::Sigmoid>(h[j] - theta[j], a);
}
}  // namespace
}  // namespace ltl
#define LTL_VEC_SIGMOID_ROW(h, theta, psi, n, a) ::ltl::sigmoid_row_avx2(h, theta, psi, n, a)
#include "lif_cpu_kernel.h"
#endif

namespace ltl {

bool cpu_has_avx2() {
#if defined(LTL_AVX2_BUILD) && defined(CPU_CAPABILITY_AVX2)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

bool lif_forward_cpu_avx2(const LifLaunch& p) {
#if defined(LTL_AVX2_BUILD) && defined(CPU_CAPABILITY_AVX2)
  if (p.dtype != DType::Float) return false;
  LTL_RESET_SWITCH(p.reset, R, [&] { forward_impl<float, R>(p); });
  return true;
#else
  (void)p;
  return false;
#endif
}

bool lif_backward_cpu_avx2(const LifLaunch& p) {
#if defined(LTL_AVX2_BUILD) && defined(CPU_CAPABILITY_AVX2)
  if (p.dtype != DType::Float) return false;
  const bool params = p.grad_beta || p.grad_alpha || p.grad_theta;
  LTL_RESET_SWITCH(p.reset, R, [&] {
    LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
      if (params) backward_impl<float, R, K, true>(p);
      else backward_impl<float, R, K, false>(p);
    });
  });
  return true;
#else
  (void)p;
  return false;
#endif
}

}  // namespace ltl
