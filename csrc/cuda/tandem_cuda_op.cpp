// CUDA registration of the tandem-loss ops (floor 3): device guard, current stream, scratch and launch check
// around the plain-pointer kernels of tandem_cuda.cu (csrc/tandem_op.h has the glue shared with the CPU).
// Compiled only in the CUDA flavour (setup.py: WITH_CUDA).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../tandem_op.h"

namespace ltl {
namespace {

void check_cuda(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cuda(), "ltl_ext.tandem: the CUDA kernel got x on ", x.device());
}

template <typename Kernel>
auto cuda_run(Kernel kernel, const char* what) {
  return [kernel, what](TandemCall& c) {
    const char* err = kernel(c.p, at::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "ltl_ext.tandem: CUDA ", what, " kernel launch failed: ", err ? err : "");
  };
}

TandemOfflineFwdOut offline_fwd(const at::Tensor& x, const at::Tensor& target, const OptTensor& beta,
                                const OptTensor& alpha, const OptTensor& theta, const OptTensor& v0, double beta_s,
                                double alpha_s, double theta_s, c10::string_view reset, double v_reset,
                                c10::string_view surrogate, double surrogate_alpha, bool detach_reset) {
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  return tandem_offline_fwd_impl(cuda_run(tandem_offline_forward_cuda, "offline forward"), x, target, beta, alpha,
                                 theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate, surrogate_alpha,
                                 detach_reset);
}

TandemOfflineBwdOut offline_bwd(const at::Tensor& grad_loss, const at::Tensor& x, const at::Tensor& err,
                                const OptTensor& beta, const OptTensor& alpha, const OptTensor& theta,
                                const OptTensor& v0, double beta_s, double alpha_s, double theta_s,
                                c10::string_view reset, double v_reset, c10::string_view surrogate,
                                double surrogate_alpha, bool detach_reset, bool need_v0, bool need_beta,
                                bool need_alpha, bool need_theta) {
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  return tandem_offline_bwd_impl(cuda_run(tandem_offline_backward_cuda, "offline backward"), tandem_cuda_scratch,
                                 grad_loss, x, err, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset,
                                 surrogate, surrogate_alpha, detach_reset, need_v0, need_beta, need_alpha,
                                 need_theta);
}

TandemOnlineOut online(const at::Tensor& x, const at::Tensor& target, const OptTensor& beta, const OptTensor& alpha,
                       const OptTensor& theta, const OptTensor& v0, const OptTensor& count0, double beta_s,
                       double alpha_s, double theta_s, c10::string_view reset, double v_reset,
                       c10::string_view surrogate, double surrogate_alpha, int64_t t0, int64_t warmup,
                       bool need_state, bool need_grad_x, bool need_beta, bool need_alpha, bool need_theta,
                       bool need_target) {
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  return tandem_online_impl(cuda_run(tandem_online_cuda, "online"), x, target, beta, alpha, theta, v0, count0,
                            beta_s, alpha_s, theta_s, reset, v_reset, surrogate, surrogate_alpha, t0, warmup,
                            need_state, need_grad_x, need_beta, need_alpha, need_theta, need_target);
}

}  // namespace
}  // namespace ltl

TORCH_LIBRARY_IMPL(ltl_ext, CUDA, m) {
  m.impl("tandem_offline_fwd", &ltl::offline_fwd);
  m.impl("tandem_offline_bwd", &ltl::offline_bwd);
  m.impl("tandem_online", &ltl::online);
}
