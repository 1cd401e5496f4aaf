// ltl/tandem_math.h: the local tandem loss's error terms (floor 1 of docs/architecture.md), on top of lif_math.h.
//
// Host + device, templated on the math type `real` (float or double; half/bf16 callers compute in float).
// Semantics (ltl-method.md §3, §4; the spec is ltl_ext/reference.py, tandem_loss_reference):
//
// Offline:  r = C[T-1] / T (the firing rate),  d = r - y,  L = mean_n d^2.
//           dL/dS[t] = 2 d / (N T), the same for every t: the backward needs only the [N] vector d.
// Online:   at step t (global index, counted from 0), C[t] = C[t-1] + S[t] (C detached through time),
//           d_t = C[t] / (t+1) - y,  L = sum_{t >= warmup} mean_n d_t^2,
//           dL/dS[t] = 2 d_t / ((t+1) N) and, V being detached, gH[t] = dL/dS[t] psi[t]:
//           gX[t] = alpha gH,  g_beta += gH V[t-1],  g_alpha += gH X[t],  g_theta -= gH,  g_y -= 2 d_t / N.
//
// Also here (host only): cpu_exp, an exp the compiler can vectorise inside `#pragma omp simd` loops (glibc's
// expf has no SIMD variant without -ffast-math), and surrogate_grad_cpu, lif_math.h's surrogate with it.
#pragma once

#include <stdint.h>
#include <string.h>

#include "ltl/lif_math.h"

namespace ltl {

// ---- offline ----------------------------------------------------------------------------------------------
// d = r - y with r = count / T (division, like the reference's `sum(0) / T`).
template <typename real> LTL_HD real offline_rate_error(real count, real steps, real y) { return count / steps - y; }
// dL/dS[t] for every t, given d and grad_scale = 2 * dL_out / (N T).
template <typename real> LTL_HD real offline_gs(real d, real grad_scale) { return d * grad_scale; }

// ---- online -----------------------------------------------------------------------------------------------
template <typename real> struct OnlineTerm {
  real d;   // C[t] / (t+1) - y
  real gs;  // dL/dS[t] = 2 d / ((t+1) N)
};
// step1 = t + 1 (the number of steps seen), inv_n = 1 / N.
template <typename real> LTL_HD OnlineTerm<real> online_term(real count, real step1, real y, real inv_n) {
  OnlineTerm<real> o;
  o.d = count / step1 - y;
  o.gs = real(2) * o.d * inv_n / step1;
  return o;
}

// ---- host-only: vectorisable exp and surrogate ------------------------------------------------------------
#if !defined(__CUDA_ARCH__)
// exp for float with ~1 ulp error (Cephes' expf polynomial), branch-free so that `#pragma omp simd` vectorises
// it; inputs are clamped to [-87.3, 88.3] (the surrogates only ever ask for exp of a non-positive number).
inline float cpu_exp(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float kf = (x * 1.44269504088896341f + magic) - magic;
  float r = x - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double cpu_exp(double x) { return exp(x); }

// lif_math.h's surrogate_grad with cpu_exp for the sigmoid (the other surrogates have no transcendental).
template <Surrogate K, typename real> inline real surrogate_grad_cpu(real u, real a) {
  if (K == Surrogate::Sigmoid) return sigmoid_grad_from_exp(cpu_exp(-a * ltl_abs(u)), a);
  return surrogate_grad<K>(u, a);
}
#endif

}  // namespace ltl
