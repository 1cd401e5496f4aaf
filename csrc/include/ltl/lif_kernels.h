// ltl/lif_kernels.h: the multi-step LIF kernels' interface (floor 2): plain pointers, no torch, so the CUDA
// kernels compile with nvcc alone and the CPU and CUDA glue share one description of a call.
#pragma once

#include <cstdint>

#include "ltl/lif_math.h"

namespace ltl {

// Storage dtype of x / spikes / grad_spikes / grad_x / v_final / grad_v. Parameters, v0 and the per-neuron
// gradients (grad_v0, grad_beta, grad_alpha, grad_theta) are in the math type: float, or double for Double.
enum class DType : int { Half = 0, BFloat16 = 1, Float = 2, Double = 3 };

// One call over x [T, N] (contiguous, row t at x + t * N). A null per-neuron pointer means "use the scalar".
struct LifLaunch {
  DType dtype = DType::Float;
  int64_t T = 0, N = 0;
  // forward: spikes [T, N], v_final [N] (storage dtype)
  const void* x = nullptr;
  void* spikes = nullptr;
  void* v_final = nullptr;
  // parameters: [N] in the math type, or nullptr -> *_s
  const void* beta = nullptr;
  const void* alpha = nullptr;
  const void* theta = nullptr;
  const void* v0 = nullptr;  // nullptr -> 0
  double beta_s = 1.0, alpha_s = 1.0, theta_s = 1.0, v_reset = 0.0, surrogate_alpha = 4.0;
  Reset reset = Reset::Soft;
  Surrogate surrogate = Surrogate::Sigmoid;
  bool detach_reset = false;
  // backward inputs (storage dtype; nullptr -> zeros): dL/dspikes [T, N], dL/dv_final [N]
  const void* grad_spikes = nullptr;
  const void* grad_v = nullptr;
  // backward outputs: grad_x [T, N] (storage dtype); per-neuron [N] in the math type, nullptr -> not wanted
  void* grad_x = nullptr;
  void* grad_v0 = nullptr;
  void* grad_beta = nullptr;
  void* grad_alpha = nullptr;
  void* grad_theta = nullptr;
  // CUDA backward only: a [T, N] math-type scratch for H when T is too long for shared memory (see
  // lif_backward_cuda_scratch_bytes); nullptr otherwise.
  void* scratch = nullptr;
};

// CPU kernels (csrc/cpu/lif_cpu_kernel.cpp): at::parallel_for over neurons, time loop inside.
void lif_forward_cpu(const LifLaunch& p);
void lif_backward_cpu(const LifLaunch& p);

// CUDA kernels (csrc/cuda/lif_cuda.cu): one thread per neuron. `stream` is a cudaStream_t. Return nullptr on
// success, else the CUDA error string of the launch.
const char* lif_forward_cuda(const LifLaunch& p, void* stream);
const char* lif_backward_cuda(const LifLaunch& p, void* stream);
// Bytes of global scratch lif_backward_cuda needs for p (0 when H fits in shared memory).
int64_t lif_backward_cuda_scratch_bytes(const LifLaunch& p);

}  // namespace ltl
