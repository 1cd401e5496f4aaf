// The ltl_ext op schemas, once (floor 3). The bodies are in op_impl.h, registered per device by
// csrc/cpu/ops_cpu.cpp and csrc/cuda/ops_cuda.cpp; autograd in C++ (csrc/autograd.cpp); fake (meta) kernels in
// Python (ltl_ext/ops/lif.py, tandem.py).
//
// Conventions for every op: x is [T, *shape] (T time steps, N = prod(shape) neurons) in float16, bfloat16,
// float32 or float64. beta / alpha / threshold / v0 (and count0) are tensors of any floating dtype broadcastable
// to `shape` (per channel, per feature, per neuron: read in their own shape, never copied to [N]), or None to use
// the float *_s; a tensor's gradient comes back in its own shape and dtype. surrogate_alpha None is the
// surrogate's default. The math type is float32 (float64 for float64 x): state, loss and [N] outputs use it.
// Every check raises ValueError / TypeError with the same message the Python layer gives.
#include <torch/library.h>

TORCH_LIBRARY(ltl_ext, m) {
  // Multi-step LIF. Returns (spikes [T, *shape], v_final [*shape]), both in x's dtype. surrogate,
  // surrogate_alpha and detach_reset are unused by the forward; they are here so the autograd formula sees them.
  m.def(
      "lif_fwd(Tensor x, Tensor? beta, Tensor? alpha, Tensor? threshold, Tensor? v0, float beta_s, "
      "float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, float? surrogate_alpha, "
      "bool detach_reset) -> (Tensor, Tensor)");
  // BPTT of lif_fwd: recomputes H from x. grad_spikes [T, *shape] / grad_v [*shape] may be None (zeros). Returns
  // (grad_x in x's shape and dtype, grad_v0, grad_beta, grad_alpha, grad_threshold: each in its tensor's shape and
  // dtype when need_*, else empty [0]).
  m.def(
      "lif_bwd(Tensor? grad_spikes, Tensor? grad_v, Tensor x, Tensor? beta, Tensor? alpha, Tensor? threshold, "
      "Tensor? v0, float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float? surrogate_alpha, bool detach_reset, bool need_v0, bool need_beta, bool need_alpha, "
      "bool need_threshold) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Offline tandem loss: LIF over x, loss = mean((sum_t S[t] / T - target)^2), target [*shape]. Returns (spikes
  // [T, *shape] in x's dtype; loss [] and err [N] = rate - target in the math type: err is all the backward needs
  // besides x).
  m.def(
      "tandem_offline_fwd(Tensor x, Tensor target, Tensor? beta, Tensor? alpha, Tensor? threshold, Tensor? v0, "
      "float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float? surrogate_alpha, bool detach_reset) -> (Tensor, Tensor, Tensor)");
  // Its backward: recomputes H from x, dL/dS[t] = 2 err / (N T) grad_loss for every t. Returns as lif_bwd.
  m.def(
      "tandem_offline_bwd(Tensor grad_loss, Tensor x, Tensor err, Tensor? beta, Tensor? alpha, Tensor? threshold, "
      "Tensor? v0, float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float? surrogate_alpha, bool detach_reset, bool need_v0, bool need_beta, bool need_alpha, "
      "bool need_threshold) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Online, steps t0 .. t0+T-1 from the state (v0, count0; None = zeros), state and count detached through time:
  // loss = sum_{t >= warmup} mean((C[t] / (t+1) - target)^2). The same pass writes the local gradients for
  // grad_loss = 1. Returns (spikes [T, *shape] in x's dtype, loss [] in the math type; v_out, count_out [*shape]
  // in the math type when need_state; grad_x [T, *shape] in the math type (float16 would underflow) when
  // need_grad_x; grad_beta, grad_alpha, grad_threshold, grad_target in their tensors' shapes and dtypes when
  // need_*; else empty). T = 1, t0 = t is the constant-memory stepwise op.
  m.def(
      "tandem_online(Tensor x, Tensor target, Tensor? beta, Tensor? alpha, Tensor? threshold, Tensor? v0, "
      "Tensor? count0, float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float? surrogate_alpha, int t0, int warmup, bool need_state, bool need_grad_x, bool need_beta, "
      "bool need_alpha, bool need_threshold, bool need_target) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // tandem_online with the state updated in place: v (math type) and count (math type, or uint8 while
  // t0 + T <= 255), both contiguous [*shape], hold the state before step t0 and receive the state after the last
  // step. Returns tandem_online's outputs without the state: (spikes, loss, grad_x, grad_beta, grad_alpha,
  // grad_threshold, grad_target). The constant-memory form: one copy of the state per layer, a byte per count.
  m.def(
      "tandem_online_(Tensor x, Tensor target, Tensor? beta, Tensor? alpha, Tensor? threshold, Tensor(a!) v, "
      "Tensor(b!) count, float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float? surrogate_alpha, int t0, int warmup, bool need_grad_x, bool need_beta, bool need_alpha, "
      "bool need_threshold, bool need_target) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
