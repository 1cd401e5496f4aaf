// CPU registration of the tandem-loss ops (floor 3): csrc/tandem_op.h's glue around the csrc/cpu/tandem_cpu.cpp
// kernels.
#include <torch/library.h>

#include "../tandem_op.h"

namespace ltl {
namespace {

void check_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "ltl_ext.tandem: the CPU kernel got x on ", x.device());
}
int64_t no_scratch(const TandemLaunch&) { return 0; }

TandemOfflineFwdOut offline_fwd(const at::Tensor& x, const at::Tensor& target, const OptTensor& beta,
                                const OptTensor& alpha, const OptTensor& theta, const OptTensor& v0, double beta_s,
                                double alpha_s, double theta_s, c10::string_view reset, double v_reset,
                                c10::string_view surrogate, double surrogate_alpha, bool detach_reset) {
  check_cpu(x);
  return tandem_offline_fwd_impl([](TandemCall& c) { tandem_offline_forward_cpu(c.p); }, x, target, beta, alpha,
                                 theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate, surrogate_alpha,
                                 detach_reset);
}

TandemOfflineBwdOut offline_bwd(const at::Tensor& grad_loss, const at::Tensor& x, const at::Tensor& err,
                                const OptTensor& beta, const OptTensor& alpha, const OptTensor& theta,
                                const OptTensor& v0, double beta_s, double alpha_s, double theta_s,
                                c10::string_view reset, double v_reset, c10::string_view surrogate,
                                double surrogate_alpha, bool detach_reset, bool need_v0, bool need_beta,
                                bool need_alpha, bool need_theta) {
  check_cpu(x);
  return tandem_offline_bwd_impl([](TandemCall& c) { tandem_offline_backward_cpu(c.p); }, no_scratch, grad_loss,
                                 x, err, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate,
                                 surrogate_alpha, detach_reset, need_v0, need_beta, need_alpha, need_theta);
}

TandemOnlineOut online(const at::Tensor& x, const at::Tensor& target, const OptTensor& beta, const OptTensor& alpha,
                       const OptTensor& theta, const OptTensor& v0, const OptTensor& count0, double beta_s,
                       double alpha_s, double theta_s, c10::string_view reset, double v_reset,
                       c10::string_view surrogate, double surrogate_alpha, int64_t t0, int64_t warmup,
                       bool need_state, bool need_grad_x, bool need_beta, bool need_alpha, bool need_theta,
                       bool need_target) {
  check_cpu(x);
  return tandem_online_impl([](TandemCall& c) { tandem_online_cpu(c.p); }, x, target, beta, alpha, theta, v0,
                            count0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate, surrogate_alpha, t0, warmup,
                            need_state, need_grad_x, need_beta, need_alpha, need_theta, need_target);
}

}  // namespace
}  // namespace ltl

TORCH_LIBRARY_IMPL(ltl_ext, CPU, m) {
  m.impl("tandem_offline_fwd", &ltl::offline_fwd);
  m.impl("tandem_offline_bwd", &ltl::offline_bwd);
  m.impl("tandem_online", &ltl::online);
}
