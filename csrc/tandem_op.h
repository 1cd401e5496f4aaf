// Torch glue shared by the CPU and CUDA tandem-loss ops (floor 3): checks, contiguity, output allocation, and
// the translation of tensors into an ltl::TandemLaunch (plain pointers) for the kernels. The device files
// (csrc/cpu/tandem_cpu_op.cpp, csrc/cuda/tandem_cuda_op.cpp) only pass in how to run a kernel.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>

#include "lif_op.h"
#include "ltl/tandem_kernels.h"

namespace ltl {

// Owns the contiguous copies (if any were needed) and the scratch while the kernel runs.
struct TandemCall {
  at::Tensor x, target, beta, alpha, theta, v0, count0, err, grad_loss, partials, scratch;
  TandemLaunch p;
};

inline const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

inline TandemCall make_tandem_call(const at::Tensor& x, const OptTensor& beta, const OptTensor& alpha,
                                   const OptTensor& theta, const OptTensor& v0, double beta_s, double alpha_s,
                                   double theta_s, c10::string_view reset, double v_reset,
                                   c10::string_view surrogate, double surrogate_alpha, bool detach_reset) {
  TORCH_CHECK_VALUE(x.dim() == 2, "ltl_ext.tandem: the op takes x as [T, N] (got ", x.dim(),
                    "-d); ltl_ext.functional.tandem_loss reshapes any [T, ...] input");
  TORCH_CHECK_VALUE(x.size(0) >= 1, "ltl_ext.tandem: x needs T >= 1 time steps");
  TandemCall c;
  c.p.dtype = to_dtype(x.scalar_type());
  c.x = x.contiguous();
  c.p.T = x.size(0);
  c.p.N = x.size(1);
  const int64_t N = c.p.N;
  c.beta = per_neuron(beta, "beta", x, N, "ltl_ext.tandem");
  c.alpha = per_neuron(alpha, "alpha", x, N, "ltl_ext.tandem");
  c.theta = per_neuron(theta, "threshold", x, N, "ltl_ext.tandem");
  c.v0 = per_neuron(v0, "v0", x, N, "ltl_ext.tandem");
  const std::string r(reset.data(), reset.size()), s(surrogate.data(), surrogate.size());
  TORCH_CHECK_VALUE(parse_reset(r.c_str(), &c.p.reset), "ltl_ext.tandem: reset must be 'soft' or 'hard', got '", r,
                    "'");
  TORCH_CHECK_VALUE(parse_surrogate(s.c_str(), &c.p.surrogate),
                    "ltl_ext.tandem: surrogate must be one of 'rect', 'sigmoid', 'atan', 'fast_sigmoid', got '", s,
                    "'");
  c.p.x = c.x.data_ptr();
  c.p.beta = ptr_or_null(c.beta);
  c.p.alpha = ptr_or_null(c.alpha);
  c.p.theta = ptr_or_null(c.theta);
  c.p.v0 = ptr_or_null(c.v0);
  c.p.beta_s = beta_s;
  c.p.alpha_s = alpha_s;
  c.p.theta_s = theta_s;
  c.p.v_reset = v_reset;
  c.p.surrogate_alpha = surrogate_alpha;
  c.p.detach_reset = detach_reset;
  return c;
}

inline at::TensorOptions math_options(const TandemCall& c) {
  return c.x.options().dtype(math_dtype(c.x.scalar_type()));
}

// The target y [N] (math type) and the loss outputs: loss [] in the math type, partials scratch (doubles).
inline at::Tensor tandem_forward_common(TandemCall& c, const at::Tensor& target) {
  c.target = per_neuron(target, "target", c.x, c.p.N, "ltl_ext.tandem");
  check_target_cpu(c.target, "ltl_ext.tandem");
  check_param_values_cpu(c.beta, c.alpha, c.theta, "ltl_ext.tandem");
  c.p.target = c.target.data_ptr();
  at::Tensor loss = at::empty({}, math_options(c));
  c.partials = at::empty({std::max<int64_t>(tandem_loss_blocks(c.p.N), 1)}, c.x.options().dtype(at::kDouble));
  c.p.loss = loss.data_ptr();
  c.p.partials = c.partials.data_ptr();
  return loss;
}

inline at::Tensor opt_out(bool need, int64_t N, const at::TensorOptions& o, void** ptr) {
  at::Tensor t = at::empty({need ? N : 0}, o);
  *ptr = need ? t.data_ptr() : nullptr;
  return t;
}

using TandemOfflineFwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using TandemOfflineBwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using TandemOnlineOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                   at::Tensor, at::Tensor, at::Tensor>;

// The three ops, for a device: `run(c)` launches the kernel on c.p; `scratch(c.p)` is how many math-type
// values the offline backward's kernel needs as scratch (0 for the CPU).
template <typename Run>
TandemOfflineFwdOut tandem_offline_fwd_impl(Run&& run, const at::Tensor& x, const at::Tensor& target,
                                            const OptTensor& beta, const OptTensor& alpha, const OptTensor& theta,
                                            const OptTensor& v0, double beta_s, double alpha_s, double theta_s,
                                            c10::string_view reset, double v_reset, c10::string_view surrogate,
                                            double surrogate_alpha, bool detach_reset) {
  TandemCall c = make_tandem_call(x, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate,
                                  surrogate_alpha, detach_reset);
  at::Tensor loss = tandem_forward_common(c, target);
  at::Tensor spikes = at::empty({c.p.T, c.p.N}, c.x.options());
  at::Tensor err = at::empty({c.p.N}, math_options(c));
  c.p.spikes = spikes.data_ptr();
  c.p.err = err.data_ptr();
  run(c);
  return {spikes, loss, err};
}

template <typename Run, typename Scratch>
TandemOfflineBwdOut tandem_offline_bwd_impl(Run&& run, Scratch&& scratch, const at::Tensor& grad_loss,
                                            const at::Tensor& x, const at::Tensor& err, const OptTensor& beta,
                                            const OptTensor& alpha, const OptTensor& theta, const OptTensor& v0,
                                            double beta_s, double alpha_s, double theta_s, c10::string_view reset,
                                            double v_reset, c10::string_view surrogate, double surrogate_alpha,
                                            bool detach_reset, bool need_v0, bool need_beta, bool need_alpha,
                                            bool need_theta) {
  TandemCall c = make_tandem_call(x, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate,
                                  surrogate_alpha, detach_reset);
  const int64_t T = c.p.T, N = c.p.N;
  TORCH_CHECK_VALUE(grad_loss.numel() == 1, "ltl_ext.tandem backward: grad_loss must be a scalar");
  TORCH_CHECK_VALUE(grad_loss.device() == c.x.device(), "ltl_ext.tandem backward: grad_loss is on ",
                    grad_loss.device(), " but x is on ", c.x.device());
  c.grad_loss = grad_loss.reshape({}).to(math_dtype(c.x.scalar_type())).contiguous();
  c.err = per_neuron(err, "err", c.x, N, "ltl_ext.tandem");
  c.p.grad_loss = c.grad_loss.data_ptr();
  c.p.err = c.err.data_ptr();
  const auto mo = math_options(c);
  at::Tensor gx = at::empty({T, N}, c.x.options());
  c.p.grad_x = gx.data_ptr();
  at::Tensor g0 = opt_out(need_v0, N, mo, &c.p.grad_v0);
  at::Tensor gb = opt_out(need_beta, N, mo, &c.p.grad_beta);
  at::Tensor ga = opt_out(need_alpha, N, mo, &c.p.grad_alpha);
  at::Tensor gt = opt_out(need_theta, N, mo, &c.p.grad_theta);
  const int64_t ns = scratch(c.p);
  if (ns > 0) {
    c.scratch = at::empty({ns}, mo);
    c.p.scratch = c.scratch.data_ptr();
  }
  run(c);
  return {gx, g0, gb, ga, gt};
}

template <typename Run>
TandemOnlineOut tandem_online_impl(Run&& run, const at::Tensor& x, const at::Tensor& target, const OptTensor& beta,
                                   const OptTensor& alpha, const OptTensor& theta, const OptTensor& v0,
                                   const OptTensor& count0, double beta_s, double alpha_s, double theta_s,
                                   c10::string_view reset, double v_reset, c10::string_view surrogate,
                                   double surrogate_alpha, int64_t t0, int64_t warmup, bool need_state,
                                   bool need_grad_x, bool need_beta, bool need_alpha, bool need_theta,
                                   bool need_target) {
  TORCH_CHECK_VALUE(t0 >= 0 && warmup >= 0, "ltl_ext.tandem: t0 and warmup must be >= 0, got ", t0, ", ", warmup);
  TandemCall c = make_tandem_call(x, beta, alpha, theta, v0, beta_s, alpha_s, theta_s, reset, v_reset, surrogate,
                                  surrogate_alpha, false);
  const int64_t T = c.p.T, N = c.p.N;
  at::Tensor loss = tandem_forward_common(c, target);
  c.count0 = per_neuron(count0, "count0", c.x, N, "ltl_ext.tandem");
  c.p.count0 = ptr_or_null(c.count0);
  c.p.t0 = t0;
  c.p.warmup = warmup;
  const auto mo = math_options(c);
  at::Tensor spikes = at::empty({T, N}, c.x.options());
  c.p.spikes = spikes.data_ptr();
  at::Tensor v_out = opt_out(need_state, N, mo, &c.p.v_out);
  at::Tensor count_out = opt_out(need_state, N, mo, &c.p.count_out);
  at::Tensor gx = at::empty({need_grad_x ? T : 0, need_grad_x ? N : 0}, mo);  // math type: TandemLaunch::grad_x
  c.p.grad_x = need_grad_x ? gx.data_ptr() : nullptr;
  at::Tensor gb = opt_out(need_beta, N, mo, &c.p.grad_beta);
  at::Tensor ga = opt_out(need_alpha, N, mo, &c.p.grad_alpha);
  at::Tensor gt = opt_out(need_theta, N, mo, &c.p.grad_theta);
  at::Tensor gy = opt_out(need_target, N, mo, &c.p.grad_target);
  run(c);
  return {spikes, loss, v_out, count_out, gx, gb, ga, gt, gy};
}

}  // namespace ltl
