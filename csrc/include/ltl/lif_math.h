// ltl/lif_math.h: the multi-step LIF neuron's math, one step at a time (floor 1 of docs/architecture.md).
//
// Host + device (functions are __host__ __device__ only under nvcc), templated on the math type `real` (float or
// double; half/bf16 callers compute in float = at::opmath_type). No torch, no threads, no float-only intrinsics
// (expf/exp are chosen by overload, so real = double stays accurate for gradcheck-grade tests).
//
// Semantics (ltl-method.md §1, the spec is ltl_ext/ops/reference.py):
//   H[t] = beta * V[t-1] + alpha * X[t]                charge
//   S[t] = H[t] >= threshold                           fire
//   V[t] = H[t] - threshold * S[t]                     soft reset
//   V[t] = H[t] * (1 - S[t]) + v_reset * S[t]          hard reset
// Backward (BPTT), psi = surrogate_grad(H - threshold), gS = dL/dS[t], gV = dL/dV[t] (from H[t+1] or v_final):
//   gH[t]              = gS * psi + gV * dV/dH
//   dV/dH              = 1 - threshold * psi           soft  (1 if detach_reset)
//                      = (1 - S) + (v_reset - H) psi   hard  ((1 - S) if detach_reset)
//   g_threshold[t]     = -gS * psi + gV * dV/dthreshold
//   dV/dthreshold      = -S + threshold * psi          soft  (-S if detach_reset)
//                      = (H - v_reset) * psi           hard  (0 if detach_reset)
//   gX[t] = alpha gH[t];  gV[t-1] = beta gH[t];  g_beta += gH[t] V[t-1];  g_alpha += gH[t] X[t]
//
// API (stable; the tandem-loss kernels build on it):
//   enum class Surrogate { Rect, Sigmoid, Atan, FastSigmoid };  enum class Reset { Soft, Hard };
//   surrogate_grad<K>(u, a) / surrogate_grad(kind, u, a)           psi(u), u = H - threshold
//   sigmoid_grad_from_exp(e, a)                                    psi of the sigmoid given e = exp(-a |u|)
//   charge(v, x, beta, alpha) -> H;  fires(h, threshold) -> S in {0, 1} as `real`
//   reset_v<R>(h, s, threshold, v_reset) / reset_v(reset, ...)     V from H and S
//   lif_step<R>(v, x, beta, alpha, threshold, v_reset) -> S, updates v in place (and returns H through *h_out)
//   LifGradStep<real>{gh, g_threshold}; lif_backward_step<R>(h, psi, gs, gv, threshold, v_reset, detach_reset)
//   parse_surrogate(name, &kind) / parse_reset(name, &kind)        host-only, names as in Python
#pragma once

#include <math.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LTL_HD __host__ __device__ __forceinline__
#else
#define LTL_HD inline
#endif

namespace ltl {

// Codes are part of the API (the order of ltl_ext.params.SURROGATES / RESETS); do not renumber.
enum class Surrogate : int { Rect = 0, Sigmoid = 1, Atan = 2, FastSigmoid = 3 };
enum class Reset : int { Soft = 0, Hard = 1 };

// Default surrogate parameter a (ltl-method.md §1 table).
LTL_HD double default_surrogate_alpha(Surrogate k) {
  return k == Surrogate::Rect ? 0.2 : k == Surrogate::Sigmoid ? 4.0 : k == Surrogate::Atan ? 2.0 : 25.0;
}

// exp / abs by overload: expf for float, exp for double; both accurate on host and device.
LTL_HD float ltl_exp(float x) { return expf(x); }
LTL_HD double ltl_exp(double x) { return exp(x); }
// fabs, not `x < 0 ? -x : x`: one AND on a vector (the compare-and-blend cost three in the CPU's surrogate loops);
// the two differ only at -0, where every surrogate gives the same value.
LTL_HD float ltl_abs(float x) { return fabsf(x); }
LTL_HD double ltl_abs(double x) { return fabs(x); }

// psi of the sigmoid surrogate from e = exp(-a |u|): a s (1 - s) with s = sigmoid(a u) equals a e / (1 + e)^2,
// which is symmetric, never overflows, and lets a CPU caller vectorise the exp separately.
template <typename real> LTL_HD real sigmoid_grad_from_exp(real e, real a) {
  const real d = real(1) + e;
  return a * e / (d * d);
}

// psi(u), the surrogate of dS/dH at u = H - threshold, with the surrogate chosen at compile time.
template <Surrogate K, typename real> LTL_HD real surrogate_grad(real u, real a) {
  if (K == Surrogate::Rect) {
    return ltl_abs(u) < a ? real(1) : real(0);
  } else if (K == Surrogate::Sigmoid) {
    return sigmoid_grad_from_exp(ltl_exp(-a * ltl_abs(u)), a);
  } else if (K == Surrogate::Atan) {
    const real z = real(1.5707963267948966) * a * u;  // pi/2 * a * u
    return (a * real(0.5)) / (real(1) + z * z);
  } else {  // FastSigmoid
    const real d = real(1) + a * ltl_abs(u);
    return real(1) / (d * d);
  }
}

// psi(u) with the surrogate chosen at run time.
template <typename real> LTL_HD real surrogate_grad(Surrogate kind, real u, real a) {
  switch (kind) {
    case Surrogate::Rect: return surrogate_grad<Surrogate::Rect>(u, a);
    case Surrogate::Sigmoid: return surrogate_grad<Surrogate::Sigmoid>(u, a);
    case Surrogate::Atan: return surrogate_grad<Surrogate::Atan>(u, a);
    default: return surrogate_grad<Surrogate::FastSigmoid>(u, a);
  }
}

// ---- forward ----------------------------------------------------------------------------------------------
template <typename real> LTL_HD real charge(real v, real x, real beta, real alpha) { return beta * v + alpha * x; }
template <typename real> LTL_HD real fires(real h, real threshold) { return static_cast<real>(h >= threshold); }

template <Reset R, typename real> LTL_HD real reset_v(real h, real s, real threshold, real v_reset) {
  if (R == Reset::Soft) return h - threshold * s;
  return h * (real(1) - s) + v_reset * s;
}
template <typename real> LTL_HD real reset_v(Reset r, real h, real s, real threshold, real v_reset) {
  return r == Reset::Soft ? reset_v<Reset::Soft>(h, s, threshold, v_reset) : reset_v<Reset::Hard>(h, s, threshold, v_reset);
}

// One step: v is V[t-1] on entry and V[t] on exit; returns S[t]; writes H[t] to *h_out when given.
template <Reset R, typename real>
LTL_HD real lif_step(real& v, real x, real beta, real alpha, real threshold, real v_reset, real* h_out = nullptr) {
  const real h = charge(v, x, beta, alpha);
  const real s = fires(h, threshold);
  v = reset_v<R>(h, s, threshold, v_reset);
  if (h_out) *h_out = h;
  return s;
}
template <typename real>
LTL_HD real lif_step(Reset r, real& v, real x, real beta, real alpha, real threshold, real v_reset, real* h_out = nullptr) {
  return r == Reset::Soft ? lif_step<Reset::Soft>(v, x, beta, alpha, threshold, v_reset, h_out)
                          : lif_step<Reset::Hard>(v, x, beta, alpha, threshold, v_reset, h_out);
}

// ---- backward ---------------------------------------------------------------------------------------------
template <typename real> struct LifGradStep {
  real gh;       // dL/dH[t]
  real g_threshold;  // this step's contribution to dL/dthreshold
};

// dV[t]/dH[t] (total, through the reset) and dV[t]/dthreshold (partial, through S and the reset).
template <Reset R, typename real> LTL_HD real dv_dh(real h, real s, real psi, real threshold, real v_reset, bool detach_reset) {
  if (R == Reset::Soft) return detach_reset ? real(1) : real(1) - threshold * psi;
  return detach_reset ? real(1) - s : (real(1) - s) + (v_reset - h) * psi;
}
template <Reset R, typename real> LTL_HD real dv_dthreshold(real h, real s, real psi, real threshold, real v_reset, bool detach_reset) {
  if (R == Reset::Soft) return detach_reset ? -s : threshold * psi - s;
  return detach_reset ? real(0) : (h - v_reset) * psi;
}

// One reverse step at t given H[t], psi[t] = surrogate_grad(H[t] - threshold), gs = dL/dS[t] and gv = dL/dV[t].
// The caller then does: gX[t] = alpha * gh; gV[t-1] = beta * gh; g_beta += gh * V[t-1]; g_alpha += gh * X[t];
// g_threshold += g_threshold.
template <Reset R, typename real>
LTL_HD LifGradStep<real> lif_backward_step(real h, real psi, real gs, real gv, real threshold, real v_reset, bool detach_reset) {
  const real s = fires(h, threshold);
  LifGradStep<real> g;
  g.gh = gs * psi + gv * dv_dh<R>(h, s, psi, threshold, v_reset, detach_reset);
  g.g_threshold = gv * dv_dthreshold<R>(h, s, psi, threshold, v_reset, detach_reset) - gs * psi;
  return g;
}
template <typename real>
LTL_HD LifGradStep<real> lif_backward_step(Reset r, real h, real psi, real gs, real gv, real threshold, real v_reset, bool detach_reset) {
  return r == Reset::Soft ? lif_backward_step<Reset::Soft>(h, psi, gs, gv, threshold, v_reset, detach_reset)
                          : lif_backward_step<Reset::Hard>(h, psi, gs, gv, threshold, v_reset, detach_reset);
}

// ---- host-only helpers: names as in Python ----------------------------------------------------------------
#if !defined(__CUDA_ARCH__)
inline bool ltl_streq(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}
// Returns false for an unknown name (the caller raises with the list of valid names).
inline bool parse_surrogate(const char* name, Surrogate* out) {
  if (ltl_streq(name, "rect")) { *out = Surrogate::Rect; return true; }
  if (ltl_streq(name, "sigmoid")) { *out = Surrogate::Sigmoid; return true; }
  if (ltl_streq(name, "atan")) { *out = Surrogate::Atan; return true; }
  if (ltl_streq(name, "fast_sigmoid")) { *out = Surrogate::FastSigmoid; return true; }
  return false;
}
inline bool parse_reset(const char* name, Reset* out) {
  if (ltl_streq(name, "soft")) { *out = Reset::Soft; return true; }
  if (ltl_streq(name, "hard")) { *out = Reset::Hard; return true; }
  return false;
}
#endif

// Compile-time dispatch of run-time kinds (like mamba's BOOL_SWITCH): inside the body, K / R are constexpr.
#define LTL_SURROGATE_SWITCH(kind, K, ...)                                                          \
  [&] {                                                                                             \
    switch (kind) {                                                                                 \
      case ::ltl::Surrogate::Rect: { constexpr ::ltl::Surrogate K = ::ltl::Surrogate::Rect; return __VA_ARGS__(); } \
      case ::ltl::Surrogate::Sigmoid: { constexpr ::ltl::Surrogate K = ::ltl::Surrogate::Sigmoid; return __VA_ARGS__(); } \
      case ::ltl::Surrogate::Atan: { constexpr ::ltl::Surrogate K = ::ltl::Surrogate::Atan; return __VA_ARGS__(); } \
      default: { constexpr ::ltl::Surrogate K = ::ltl::Surrogate::FastSigmoid; return __VA_ARGS__(); } \
    }                                                                                               \
  }()
#define LTL_RESET_SWITCH(reset, R, ...)                                                             \
  [&] {                                                                                             \
    if ((reset) == ::ltl::Reset::Soft) { constexpr ::ltl::Reset R = ::ltl::Reset::Soft; return __VA_ARGS__(); } \
    else { constexpr ::ltl::Reset R = ::ltl::Reset::Hard; return __VA_ARGS__(); }                   \
  }()

}  // namespace ltl
