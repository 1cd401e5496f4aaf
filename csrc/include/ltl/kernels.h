// ltl/kernels.h: the fused kernels' interface (floor 2): one description of a call (ltl::Launch, plain pointers,
// no torch), shared by the LIF and the tandem-loss kernels on both devices, so the CUDA files compile with nvcc
// alone and the CPU and CUDA glue fill in one struct.
//
// Five kernels (ltl-method.md §1, §3, §4; the spec is ltl_ext/ops/reference.py), over x [T, N] (contiguous, row t
// at x + t * N; T time steps, N neurons):
//   LifForward      x -> spikes [T, N], v_final [N]
//   LifBackward     x, grad_spikes, grad_v -> grad_x [T, N] and per-neuron grads; recomputes H from x
//   OfflineForward  x, target -> spikes, err [N] = rate - target, loss
//   OfflineBackward x, err, grad_loss -> grad_x and per-neuron grads: LifBackward with dL/dS[t] = 2 err / (N T)
//   Online          x, target from the state (v0, count0, step t0) -> spikes, loss, and in the same pass the local
//                   gradients (for dL/dloss = 1); the state after the last step. T = 1 is the stepwise op.
#pragma once

#include <cstdint>

#include "ltl/lif_math.h"
#include "ltl/tandem_math.h"

namespace ltl {

// Storage dtype of x and of the [T, N] outputs. Parameters, state and per-neuron gradients are in the math type:
// float, or double for Double.
enum class DType : int { Half = 0, BFloat16 = 1, Float = 2, Double = 3 };

// Calls f(storage_t()) for d; the 16-bit types are the device's (c10::Half / __half ...), hence the parameters.
template <typename Half, typename BFloat16, typename F>
void dtype_switch(DType d, F&& f) {
  switch (d) {
    case DType::Half: f(Half()); break;
    case DType::BFloat16: f(BFloat16()); break;
    case DType::Float: f(float()); break;
    default: f(double()); break;
  }
}

// A per-neuron parameter or state in its own broadcast shape, without a copy to [N]: neuron i reads
// data[(i / inner) % period] (a per-channel [C, 1, 1] over neurons [B, C, H, W] has period C, inner H * W; a
// per-neuron one period N, inner 1), or `value` when data is null. Math type.
struct Param {
  const void* data = nullptr;
  int64_t inner = 1, period = 1;
  double value = 0.0;
};
LTL_HD int64_t param_index(const Param& q, int64_t i) { return (i / q.inner) % q.period; }

enum class Kernel : int { LifForward, LifBackward, OfflineForward, OfflineBackward, Online };

struct Launch {
  DType dtype = DType::Float;
  int64_t T = 0, N = 0;
  const void* x = nullptr;
  Param beta, alpha, threshold, v0;  // v0: the membrane potential before the first step (value 0)
  double v_reset = 0.0, surrogate_alpha = 4.0;
  Reset reset = Reset::Soft;
  Surrogate surrogate = Surrogate::Sigmoid;
  bool detach_reset = false;

  // forward outputs: spikes [T, N] (storage dtype); LIF: v_final [N] (storage dtype)
  void* spikes = nullptr;
  void* v_final = nullptr;
  // LIF backward inputs (storage dtype; null -> zeros): dL/dspikes [T, N], dL/dv_final [N]
  const void* grad_spikes = nullptr;
  const void* grad_v = nullptr;

  // tandem loss: target [N] (math type). Loss partial sums, one per fixed block of kLossBlock neurons, reduced in
  // a fixed order: deterministic whatever the thread count or device. `partials`: loss_blocks(N) doubles. `loss`
  // (a scalar in the math type, so that a loss scale such as GradScaler's 65536 never meets float16's range on the
  // way back) receives sum / N.
  const void* target = nullptr;
  void* partials = nullptr;
  void* loss = nullptr;
  void* err = nullptr;               // offline: [N] = rate - target, written by the forward, read by the backward
  const void* grad_loss = nullptr;   // offline backward: dL/dloss, a math-type scalar
  Param count0;                      // online: the spike count before step t0 (value 0)
  int64_t t0 = 0, warmup = 0;
  void* state_v = nullptr;           // online: V and the count after the last step, [N] math type (null: not wanted)
  void* state_count = nullptr;
  // online: count0.data (per neuron) and state_count hold uint8 counts instead of the math type: a count below
  // 256 in a quarter of the bytes (constant-memory training keeps one per neuron of every layer). The state may be
  // updated in place (state_v == v0.data, state_count == count0.data): each neuron's state is read before the
  // time loop and written after it, by the thread that owns the neuron.
  bool count_u8 = false;

  // gradients, null -> not wanted. grad_x [T, N]: storage dtype, except Online's local gradient (for dL/dloss = 1)
  // which stays in the math type (autograd scales it by dL/dloss later; in float16 it would underflow first: at
  // N = 2^20 its values are ~1e-8). Per-neuron [N], math type: the op reduces them to each parameter's shape.
  void* grad_x = nullptr;
  void* grad_v0 = nullptr;
  void* grad_beta = nullptr;
  void* grad_alpha = nullptr;
  void* grad_threshold = nullptr;
  void* grad_target = nullptr;       // online only (offline: -2 err / N, computed by the op)

  // CUDA backward only: cuda_scratch_bytes(kernel, *this) bytes of global memory (null when that is 0).
  void* scratch = nullptr;

  bool wants_param_grads() const { return grad_beta || grad_alpha || grad_threshold; }
};

// Neurons per loss partial sum and per CPU block (a fixed number: the reduction order never depends on threads).
constexpr int64_t kLossBlock = 256;
inline int64_t loss_blocks(int64_t N) { return (N + kLossBlock - 1) / kLossBlock; }

// CPU kernels (csrc/cpu/kernels_*.cpp): at::parallel_for over blocks of neurons, the time loop inside.
void run_cpu(Kernel k, const Launch& p);
bool cpu_has_avx2();

// CUDA kernels (csrc/cuda/kernels.cu): one thread per neuron. `stream` is a cudaStream_t. Returns nullptr on
// success, else the CUDA error string of the launch.
const char* run_cuda(Kernel k, const Launch& p, void* stream);
int64_t cuda_scratch_bytes(Kernel k, const Launch& p);

}  // namespace ltl
