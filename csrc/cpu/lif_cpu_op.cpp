// CPU registration of the LIF ops (floor 3): torch glue around ltl::lif_forward_cpu / lif_backward_cpu.
#include <torch/library.h>

#include "../lif_op.h"

namespace ltl {
namespace {

std::tuple<at::Tensor, at::Tensor> lif_fwd_cpu(const at::Tensor& x, const OptTensor& beta, const OptTensor& alpha,
                                               const OptTensor& theta, const OptTensor& v0, double beta_s,
                                               double alpha_s, double theta_s, c10::string_view reset,
                                               double v_reset, c10::string_view surrogate, double surrogate_alpha,
                                               bool detach_reset) {
  TORCH_CHECK(x.device().is_cpu(), "ltl_ext.lif: the CPU kernel got x on ", x.device());
  LifCall c = make_call(x, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate,
                        surrogate_alpha, detach_reset);
  check_param_values_cpu(c.beta, c.alpha, c.theta, "ltl_ext.lif");
  auto out = alloc_forward(c);
  lif_forward_cpu(c.p);
  return out;
}

BwdOut lif_bwd_cpu(const OptTensor& grad_spikes, const OptTensor& grad_v, const at::Tensor& x, const OptTensor& beta,
                   const OptTensor& alpha, const OptTensor& theta, const OptTensor& v0, double beta_s, double alpha_s,
                   double theta_s, c10::string_view reset, double v_reset, c10::string_view surrogate,
                   double surrogate_alpha, bool detach_reset, bool need_v0, bool need_beta, bool need_alpha,
                   bool need_theta) {
  TORCH_CHECK(x.device().is_cpu(), "ltl_ext.lif: the CPU kernel got x on ", x.device());
  LifCall c = make_call(x, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate,
                        surrogate_alpha, detach_reset);
  BwdOut out = alloc_backward(c, grad_spikes, grad_v, need_v0, need_beta, need_alpha, need_theta);
  lif_backward_cpu(c.p);
  return out;
}

}  // namespace
}  // namespace ltl

TORCH_LIBRARY_IMPL(ltl_ext, CPU, m) {
  m.impl("lif_fwd", &ltl::lif_fwd_cpu);
  m.impl("lif_bwd", &ltl::lif_bwd_cpu);
}
