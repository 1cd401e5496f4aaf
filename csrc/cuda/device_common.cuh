// Device-side helpers of the CUDA kernels (floor 2): storage <-> math type conversions (half/bf16 are only
// converted, never operated on: the build passes -D__CUDA_NO_HALF_OPERATORS__), and a launch's parameters as the
// kernels read them (a broadcast Param: a pointer with its (inner, period) layout, or a value). nvcc only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "ltl/kernels.h"

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

// A Param (ltl/kernels.h) in the math type.
template <typename acc_t> struct DeviceParam {
  const acc_t* data;
  int64_t inner, period;
  acc_t value;
  __device__ __forceinline__ acc_t at(int64_t i) const { return data ? data[(i / inner) % period] : value; }
};
template <typename acc_t> DeviceParam<acc_t> device_param(const Param& q) {
  return {static_cast<const acc_t*>(q.data), q.inner, q.period, static_cast<acc_t>(q.value)};
}

template <typename acc_t> struct Params {
  DeviceParam<acc_t> beta, alpha, threshold, v0;
  acc_t v_reset, sa;
};
template <typename acc_t> Params<acc_t> params_of(const Launch& p) {
  return {device_param<acc_t>(p.beta), device_param<acc_t>(p.alpha), device_param<acc_t>(p.threshold),
          device_param<acc_t>(p.v0), static_cast<acc_t>(p.v_reset), static_cast<acc_t>(p.surrogate_alpha)};
}

}  // namespace
}  // namespace ltl
