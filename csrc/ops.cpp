// The ltl_ext op schemas, once (floor 3). Kernels register per device in csrc/cpu/*_op / csrc/cuda/*_op.cpp;
// autograd in C++ (csrc/autograd.cpp), fake (meta) kernels in Python (ltl_ext/ops/). Other ops add their schemas with
// TORCH_LIBRARY_FRAGMENT(ltl_ext, m) in their own file.
#include <torch/library.h>

TORCH_LIBRARY(ltl_ext, m) {
  // Multi-step LIF over x [T, N]. Per-neuron beta/alpha/threshold/v0 are [N] tensors in the math type (float
  // for half/bf16/float x, double for double x), or None to use the scalar *_s. Returns (spikes [T, N],
  // v_final [N]), both in x's dtype. surrogate/surrogate_alpha/detach_reset are unused by the forward; they are
  // here so the autograd formula sees them.
  m.def(
      "lif_fwd(Tensor x, Tensor? beta, Tensor? alpha, Tensor? threshold, Tensor? v0, float beta_s, "
      "float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, float surrogate_alpha, "
      "bool detach_reset) -> (Tensor, Tensor)");
  // BPTT of lif_fwd: recomputes H from x. grad_spikes [T, N] / grad_v [N] may be None (zeros). Returns
  // (grad_x [T, N] in x's dtype, grad_v0, grad_beta, grad_alpha, grad_threshold), the last four [N] in the
  // math type when need_* else empty [0].
  m.def(
      "lif_bwd(Tensor? grad_spikes, Tensor? grad_v, Tensor x, Tensor? beta, Tensor? alpha, Tensor? threshold, "
      "Tensor? v0, float beta_s, float alpha_s, float threshold_s, str reset, float v_reset, str surrogate, "
      "float surrogate_alpha, bool detach_reset, bool need_v0, bool need_beta, bool need_alpha, "
      "bool need_threshold) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
