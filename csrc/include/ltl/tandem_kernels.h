// ltl/tandem_kernels.h: the fused local-tandem-loss kernels' interface (floor 2): plain pointers, no torch, so
// the CUDA kernels compile with nvcc alone and the CPU and CUDA glue share one description of a call.
//
// Three calls (ltl-method.md §3, §4; the spec is ltl_ext/reference.py):
//   offline forward : x [T, N] -> spikes [T, N], err [N] = r - y, loss partial sums
//   offline backward: x, err, dL_out -> grad_x [T, N] (+ per-neuron grads); recomputes H from x, no [T, N] input
//   online          : x [T, N] from state (v0, count0, step t0) -> spikes, loss partials, and in the same pass
//                     grad_x [T, N] (the local gradient, for dL_out = 1) + per-neuron grads; final v, count.
//                     T = 1 with t0 = t is the constant-memory stepwise op.
#pragma once

#include <cstdint>

#include "ltl/lif_kernels.h"
#include "ltl/tandem_math.h"

namespace ltl {

// One call over x [T, N] (contiguous, row t at x + t * N). A null per-neuron pointer means "use the scalar".
// Storage dtype (x, spikes, grad_x): `dtype`; everything else in the math type (float, or double for Double).
struct TandemLaunch {
  DType dtype = DType::Float;
  int64_t T = 0, N = 0;
  const void* x = nullptr;
  const void* beta = nullptr;
  const void* alpha = nullptr;
  const void* theta = nullptr;
  const void* v0 = nullptr;      // nullptr -> 0
  double beta_s = 1.0, alpha_s = 1.0, theta_s = 1.0, v_reset = 0.0, surrogate_alpha = 4.0;
  Reset reset = Reset::Soft;
  Surrogate surrogate = Surrogate::Sigmoid;
  bool detach_reset = false;
  // forward (offline and online)
  const void* target = nullptr;  // y [N]
  void* spikes = nullptr;        // [T, N]
  // Loss partial sums, one per fixed block of neurons (tandem_loss_blocks), then reduced in a fixed order:
  // deterministic whatever the thread count or device. `partials`: scratch of tandem_loss_blocks(N) doubles.
  // `loss` (a scalar in the math type, so that a loss scale such as GradScaler's 65536 never meets float16's
  // range on the way back) receives sum / N.
  void* partials = nullptr;
  void* loss = nullptr;
  // offline forward: err [N] = r - y.  offline backward: reads err and dL_out (a scalar, math type).
  void* err = nullptr;
  const void* grad_loss = nullptr;
  // online: the state before step t0 (nullptr -> zeros); the state after the last step (nullptr -> not wanted)
  const void* count0 = nullptr;
  int64_t t0 = 0, warmup = 0;
  void* v_out = nullptr;
  void* count_out = nullptr;
  // gradients: grad_x [T, N] (offline backward: storage dtype; online: the local gradient for dL_out = 1 in the
  // math type, because autograd scales it by dL_out later and in float16 it would underflow first: at N = 2^20
  // its values are ~1e-8); per-neuron [N] (math type); nullptr -> not wanted.
  void* grad_x = nullptr;
  void* grad_v0 = nullptr;
  void* grad_beta = nullptr;
  void* grad_alpha = nullptr;
  void* grad_theta = nullptr;
  void* grad_target = nullptr;   // online only (offline: -2 err / N, computed by the caller)
  // CUDA offline backward when H does not fit in shared memory: tandem_cuda_scratch(p) math-type values.
  void* scratch = nullptr;
};

// Neurons per loss partial sum (a fixed number, so the reduction order never depends on threads).
constexpr int64_t kTandemLossBlock = 256;
inline int64_t tandem_loss_blocks(int64_t N) { return (N + kTandemLossBlock - 1) / kTandemLossBlock; }

// CPU kernels (csrc/cpu/tandem_cpu.cpp).
void tandem_offline_forward_cpu(const TandemLaunch& p);
void tandem_offline_backward_cpu(const TandemLaunch& p);
void tandem_online_cpu(const TandemLaunch& p);

// CUDA kernels (csrc/cuda/tandem_cuda.cu): one thread per neuron. `stream` is a cudaStream_t. Return nullptr on
// success, else the CUDA error string of the launch.
int64_t tandem_cuda_scratch(const TandemLaunch& p);  // math-type values the offline backward needs as scratch
const char* tandem_offline_forward_cuda(const TandemLaunch& p, void* stream);
const char* tandem_offline_backward_cuda(const TandemLaunch& p, void* stream);
const char* tandem_online_cuda(const TandemLaunch& p, void* stream);

}  // namespace ltl
