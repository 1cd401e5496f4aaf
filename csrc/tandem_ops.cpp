// The fused local-tandem-loss op schemas (floor 3), added to the ltl_ext library of csrc/ops.cpp. Kernels
// register per device in csrc/cpu/tandem_cpu_op.cpp / csrc/cuda/tandem_cuda_op.cpp; autograd in C++
// (csrc/autograd.cpp), fake kernels in Python (ltl_ext/ops/tandem.py). Conventions as lif_fwd: x is [T, N];
// per-neuron beta/alpha/threshold/v0, the target and the state are [N] tensors in the math type (float for
// half/bf16/float x, double for double x).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ltl_ext, m) {
  // Offline: LIF over x, loss = mean((sum_t S[t] / T - target)^2). Returns (spikes [T, N] in x's dtype; loss []
  // and err [N] = rate - target in the math type: err is all the backward needs besides x).
  m.def(
      "tandem_offline_fwd(Tensor x, Tensor target, Tensor? beta, Tensor? alpha, Tensor? threshold, Tensor? v0, "
      "float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float surrogate_alpha, bool detach_reset) -> (Tensor, Tensor, Tensor)");
  // Its backward: recomputes H from x, dL/dS[t] = 2 err / (N T) grad_loss for every t. Returns (grad_x [T, N] in
  // x's dtype, grad_v0, grad_beta, grad_alpha, grad_threshold: [N] in the math type when need_*, else empty [0]).
  m.def(
      "tandem_offline_bwd(Tensor grad_loss, Tensor x, Tensor err, Tensor? beta, Tensor? alpha, Tensor? threshold, "
      "Tensor? v0, float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float surrogate_alpha, bool detach_reset, bool need_v0, bool need_beta, bool need_alpha, "
      "bool need_threshold) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Online, steps t0 .. t0+T-1 from the state (v0, count0; None = zeros), state and count detached through time:
  // loss = sum_{t >= warmup} mean((C[t] / (t+1) - target)^2). The same pass writes the local gradients for
  // grad_loss = 1. Returns (spikes [T, N] in x's dtype, loss [] in the math type; v_out, count_out [N] when
  // need_state; grad_x [T, N] in the math type (float16 would underflow) when need_grad_x; grad_beta,
  // grad_alpha, grad_threshold, grad_target [N] when need_*; else empty).
  // T = 1, t0 = t is the constant-memory stepwise op.
  m.def(
      "tandem_online(Tensor x, Tensor target, Tensor? beta, Tensor? alpha, Tensor? threshold, Tensor? v0, "
      "Tensor? count0, float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float surrogate_alpha, int t0, int warmup, bool need_state, bool need_grad_x, bool need_beta, "
      "bool need_alpha, bool need_threshold, bool need_target) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
