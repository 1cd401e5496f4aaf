// CUDA registration of the LIF ops (floor 3): device guard, current stream, scratch, launch check around the
// plain-pointer kernels of lif_cuda.cu. Compiled only in the CUDA flavour (setup.py: WITH_CUDA).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../lif_op.h"

namespace ltl {
namespace {

void check_cuda(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cuda(), "ltl_ext.lif: the CUDA kernel got x on ", x.device());
}

std::tuple<at::Tensor, at::Tensor> lif_fwd_cuda(const at::Tensor& x, const OptTensor& beta, const OptTensor& alpha,
                                                const OptTensor& theta, const OptTensor& v0, double beta_s,
                                                double alpha_s, double theta_s, c10::string_view reset,
                                                double v_reset, c10::string_view surrogate, double surrogate_alpha,
                                                bool detach_reset) {
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  LifCall c = make_call(x, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate,
                        surrogate_alpha, detach_reset);
  auto out = alloc_forward(c);
  const char* err = lif_forward_cuda(c.p, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "ltl_ext.lif: CUDA forward kernel launch failed: ", err ? err : "");
  return out;
}

BwdOut lif_bwd_cuda(const OptTensor& grad_spikes, const OptTensor& grad_v, const at::Tensor& x,
                    const OptTensor& beta, const OptTensor& alpha, const OptTensor& theta, const OptTensor& v0,
                    double beta_s, double alpha_s, double theta_s, c10::string_view reset, double v_reset,
                    c10::string_view surrogate, double surrogate_alpha, bool detach_reset, bool need_v0,
                    bool need_beta, bool need_alpha, bool need_theta) {
  check_cuda(x);
  const c10::cuda::CUDAGuard guard(x.device());
  LifCall c = make_call(x, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate,
                        surrogate_alpha, detach_reset);
  BwdOut out = alloc_backward(c, grad_spikes, grad_v, need_v0, need_beta, need_alpha, need_theta);
  at::Tensor scratch;
  const int64_t bytes = lif_backward_cuda_scratch_bytes(c.p);
  if (bytes > 0) {
    scratch = at::empty({bytes}, c.x.options().dtype(at::kByte));
    c.p.scratch = scratch.data_ptr();
  }
  const char* err = lif_backward_cuda(c.p, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "ltl_ext.lif: CUDA backward kernel launch failed: ", err ? err : "");
  return out;
}

}  // namespace
}  // namespace ltl

TORCH_LIBRARY_IMPL(ltl_ext, CUDA, m) {
  m.impl("lif_fwd", &ltl::lif_fwd_cuda);
  m.impl("lif_bwd", &ltl::lif_bwd_cuda);
}
