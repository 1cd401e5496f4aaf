// Device-side helpers shared by the CUDA kernels (floor 2): storage <-> math type conversions (half/bf16 are only
// converted, never operated on: the build passes -D__CUDA_NO_HALF_OPERATORS__) and the per-neuron parameters of a
// launch (a pointer, or the scalar when the pointer is null). nvcc only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace ltl {
namespace {

__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
template <typename S> __device__ __forceinline__ S from_acc(float v);
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <typename S> __device__ __forceinline__ S from_acc(double v) { return static_cast<S>(v); }

// The math ("accumulate") type of a storage type: float for half/bf16/float, double for double.
template <typename S> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename acc_t> struct Params {
  const acc_t *beta, *alpha, *theta, *v0;
  acc_t beta_s, alpha_s, theta_s, v_reset, sa;
  __device__ __forceinline__ acc_t b(int64_t i) const { return beta ? beta[i] : beta_s; }
  __device__ __forceinline__ acc_t a(int64_t i) const { return alpha ? alpha[i] : alpha_s; }
  __device__ __forceinline__ acc_t th(int64_t i) const { return theta ? theta[i] : theta_s; }
  __device__ __forceinline__ acc_t v(int64_t i) const { return v0 ? v0[i] : acc_t(0); }
};

// From an ltl::LifLaunch or ltl::TandemLaunch (same parameter fields).
template <typename acc_t, typename Launch> Params<acc_t> params_of(const Launch& p) {
  return Params<acc_t>{static_cast<const acc_t*>(p.beta), static_cast<const acc_t*>(p.alpha),
                       static_cast<const acc_t*>(p.theta), static_cast<const acc_t*>(p.v0),
                       static_cast<acc_t>(p.beta_s), static_cast<acc_t>(p.alpha_s), static_cast<acc_t>(p.theta_s),
                       static_cast<acc_t>(p.v_reset), static_cast<acc_t>(p.surrogate_alpha)};
}

}  // namespace
}  // namespace ltl
