// The bodies of the ltl_ext ops (floor 3), once for every device: check and bind the arguments (op.h), allocate
// the outputs, run the kernel, reduce the parameter gradients to their own shapes. A device file instantiates
// register_ops<Device> with a policy that has
//   Device::Guard(x)            held while the op runs (the CUDA device guard; nothing on the CPU)
//   Device::run(kernel, call)   runs ltl::Kernel on call.p (the CUDA one also allocates call.scratch).
// Schemas and their documentation: csrc/ops.cpp.
#pragma once

#include <torch/library.h>

#include <tuple>

#include "op.h"

namespace ltl {

using at::Tensor;
using BackwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;  // grad_x, v0, beta, alpha, threshold

constexpr const char* kLifOp = "ltl_ext.lif";
constexpr const char* kTandemOp = "ltl_ext.tandem";

// [T, N] in x's dtype, allocated in x's shape (x.shape == [T, *neuron_shape]).
inline Tensor tn_output(const Call& c, void** ptr) {
  Tensor t = at::empty(c.x.sizes(), c.x.options());
  *ptr = t.data_ptr();
  return t;
}

// The tandem loss: a math-type scalar, and the per-block partial sums it is reduced from.
inline Tensor loss_output(Call& c) {
  Tensor loss = at::empty({}, c.math_options());
  const int64_t blocks = loss_blocks(c.p.N) > 0 ? loss_blocks(c.p.N) : 1;
  if (c.x.device().is_cpu() && blocks <= static_cast<int64_t>(sizeof(c.partials_inline) / sizeof(double))) {
    c.p.partials = c.partials_inline;  // the CPU kernels write and sum them in this call
  } else {
    c.partials = at::empty({blocks}, c.x.options().dtype(at::kDouble));
    c.p.partials = c.partials.data_ptr();
  }
  c.p.loss = loss.data_ptr();
  return loss;
}

// The LIF and offline backward after their own inputs are bound: grad_x and the parameter gradients.
template <typename Device>
BackwardOut run_backward(Kernel k, Call& c, bool need_v0, bool need_beta, bool need_alpha, bool need_threshold) {
  need_v0 = need_v0 && c.v0.given.defined();
  need_beta = need_beta && c.beta.given.defined();
  need_alpha = need_alpha && c.alpha.given.defined();
  need_threshold = need_threshold && c.threshold.given.defined();
  Tensor gx = tn_output(c, &c.p.grad_x);
  Tensor g_v0 = neuron_output(c, need_v0, &c.p.grad_v0);
  Tensor g_beta = neuron_output(c, need_beta, &c.p.grad_beta);
  Tensor g_alpha = neuron_output(c, need_alpha, &c.p.grad_alpha);
  Tensor g_threshold = neuron_output(c, need_threshold, &c.p.grad_threshold);
  Device::run(k, c);
  return {gx, param_grad(c, c.v0, c.p.v0, g_v0, need_v0),
          param_grad(c, c.beta, c.p.beta, g_beta, need_beta), param_grad(c, c.alpha, c.p.alpha, g_alpha, need_alpha),
          param_grad(c, c.threshold, c.p.threshold, g_threshold, need_threshold)};
}

template <typename Device>
std::tuple<Tensor, Tensor> lif_fwd(const Tensor& x, const OptTensor& beta, const OptTensor& alpha,
                                   const OptTensor& threshold, const OptTensor& v0, double beta_s, double alpha_s,
                                   double threshold_s, Str reset, double v_reset, Str surrogate,
                                   std::optional<double> surrogate_alpha, bool detach_reset) {
  const typename Device::Guard guard(x);
  Call c = make_call(kLifOp, x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset, surrogate,
                     surrogate_alpha, detach_reset);
  check_param_values(c);
  Tensor spikes = tn_output(c, &c.p.spikes);
  Tensor v_final = at::empty(c.neuron_shape, c.x.options());
  c.p.v_final = v_final.data_ptr();
  Device::run(Kernel::LifForward, c);
  return {spikes, v_final};
}

template <typename Device>
BackwardOut lif_bwd(const OptTensor& grad_spikes, const OptTensor& grad_v, const Tensor& x, const OptTensor& beta,
                    const OptTensor& alpha, const OptTensor& threshold, const OptTensor& v0, double beta_s,
                    double alpha_s, double threshold_s, Str reset, double v_reset, Str surrogate,
                    std::optional<double> surrogate_alpha, bool detach_reset, bool need_v0, bool need_beta,
                    bool need_alpha, bool need_threshold) {
  const typename Device::Guard guard(x);
  Call c = make_call(kLifOp, x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset, surrogate,
                     surrogate_alpha, detach_reset);
  if (given(grad_spikes)) {
    TORCH_CHECK_VALUE(grad_spikes->numel() == c.x.numel(), c.op, " backward: grad_spikes must have x's shape");
    c.grad_spikes = as_contiguous(*grad_spikes, c.x.scalar_type());  // read flat as [T, N]
    c.p.grad_spikes = c.grad_spikes.data_ptr();
  }
  if (given(grad_v)) {
    TORCH_CHECK_VALUE(grad_v->numel() == c.p.N, c.op, " backward: grad_v must have N elements");
    c.grad_v = as_contiguous(*grad_v, c.x.scalar_type());  // read flat as [N]
    c.p.grad_v = c.grad_v.data_ptr();
  }
  return run_backward<Device>(Kernel::LifBackward, c, need_v0, need_beta, need_alpha, need_threshold);
}

template <typename Device>
std::tuple<Tensor, Tensor, Tensor> tandem_offline_fwd(const Tensor& x, const Tensor& target, const OptTensor& beta,
                                                      const OptTensor& alpha, const OptTensor& threshold,
                                                      const OptTensor& v0, double beta_s, double alpha_s,
                                                      double threshold_s, Str reset, double v_reset, Str surrogate,
                                                      std::optional<double> surrogate_alpha, bool detach_reset) {
  const typename Device::Guard guard(x);
  Call c = make_call(kTandemOp, x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                     surrogate, surrogate_alpha, detach_reset);
  bind_target(c, target);
  check_param_values(c);
  Tensor loss = loss_output(c);
  Tensor spikes = tn_output(c, &c.p.spikes);
  Tensor err = neuron_output(c, true, &c.p.err);
  Device::run(Kernel::OfflineForward, c);
  return {spikes, loss, err};
}

template <typename Device>
BackwardOut tandem_offline_bwd(const Tensor& grad_loss, const Tensor& x, const Tensor& err, const OptTensor& beta,
                               const OptTensor& alpha, const OptTensor& threshold, const OptTensor& v0,
                               double beta_s, double alpha_s, double threshold_s, Str reset, double v_reset,
                               Str surrogate, std::optional<double> surrogate_alpha, bool detach_reset, bool need_v0,
                               bool need_beta, bool need_alpha, bool need_threshold) {
  const typename Device::Guard guard(x);
  Call c = make_call(kTandemOp, x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                     surrogate, surrogate_alpha, detach_reset);
  TORCH_CHECK_VALUE(grad_loss.numel() == 1, c.op, " backward: grad_loss must be a scalar");
  TORCH_CHECK_VALUE(grad_loss.device() == c.x.device(), c.op, " backward: grad_loss is on ", grad_loss.device(),
                    " but x is on ", c.x.device());
  TORCH_CHECK_VALUE(err.numel() == c.p.N && err.device() == c.x.device(), c.op,
                    " backward: err must be the forward's [N] error on x's device");
  c.grad_loss = as_contiguous(grad_loss, c.math_type());  // one value
  c.err = as_contiguous(err, c.math_type());             // read flat as [N]
  c.p.grad_loss = c.grad_loss.data_ptr();
  c.p.err = c.err.data_ptr();
  return run_backward<Device>(Kernel::OfflineBackward, c, need_v0, need_beta, need_alpha, need_threshold);
}

// The online call's arguments every form shares, checked and bound (the state is bound by the caller).
inline Call online_call(const Tensor& x, const Tensor& target, const OptTensor& beta, const OptTensor& alpha,
                        const OptTensor& threshold, const OptTensor& v0, double beta_s, double alpha_s,
                        double threshold_s, Str reset, double v_reset, Str surrogate,
                        std::optional<double> surrogate_alpha, int64_t t0, int64_t warmup) {
  Call c = make_call(kTandemOp, x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                     surrogate, surrogate_alpha, false);
  TORCH_CHECK_VALUE(t0 >= 0 && warmup >= 0, c.op, ": t0 and warmup must be >= 0, got ", t0, ", ", warmup);
  bind_target(c, target);
  check_param_values(c);
  c.p.t0 = t0;
  c.p.warmup = warmup;
  return c;
}

// spikes, loss, grad_x, grad_beta, grad_alpha, grad_threshold, grad_target: what both online ops return besides
// the state.
using OnlineGrads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// Runs the online kernel on a bound call (state outputs, if any, already bound) and returns OnlineGrads.
template <typename Device>
OnlineGrads run_online(Call& c, const Tensor& target, bool need_grad_x, bool need_beta, bool need_alpha,
                       bool need_threshold, bool need_target) {
  need_beta = need_beta && c.beta.given.defined();
  need_alpha = need_alpha && c.alpha.given.defined();
  need_threshold = need_threshold && c.threshold.given.defined();
  Tensor loss = loss_output(c);
  Tensor spikes = tn_output(c, &c.p.spikes);
  Tensor gx = output_if(c, need_grad_x, &c.p.grad_x, c.x.sizes(), {0, 0});  // Launch::grad_x, in the math type
  Tensor g_beta = neuron_output(c, need_beta, &c.p.grad_beta);
  Tensor g_alpha = neuron_output(c, need_alpha, &c.p.grad_alpha);
  Tensor g_threshold = neuron_output(c, need_threshold, &c.p.grad_threshold);
  Tensor g_target = output_if(c, need_target, &c.p.grad_target, target.sizes());
  Device::run(Kernel::Online, c);
  return {spikes, loss, gx, param_grad(c, c.beta, c.p.beta, g_beta, need_beta),
          param_grad(c, c.alpha, c.p.alpha, g_alpha, need_alpha),
          param_grad(c, c.threshold, c.p.threshold, g_threshold, need_threshold),
          need_target && g_target.scalar_type() != target.scalar_type() ? g_target.to(target.scalar_type()) : g_target};
}

using OnlineOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

template <typename Device>
OnlineOut tandem_online(const Tensor& x, const Tensor& target, const OptTensor& beta, const OptTensor& alpha,
                        const OptTensor& threshold, const OptTensor& v0, const OptTensor& count0, double beta_s,
                        double alpha_s, double threshold_s, Str reset, double v_reset, Str surrogate,
                        std::optional<double> surrogate_alpha, int64_t t0, int64_t warmup, bool need_state,
                        bool need_grad_x, bool need_beta, bool need_alpha, bool need_threshold, bool need_target) {
  const typename Device::Guard guard(x);
  Call c = online_call(x, target, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                       surrogate, surrogate_alpha, t0, warmup);
  c.count0 = bind_param(count0, "count", c, &c.p.count0);
  Tensor state_v = output_if(c, need_state, &c.p.state_v, c.neuron_shape);
  Tensor state_count = output_if(c, need_state, &c.p.state_count, c.neuron_shape);
  auto [spikes, loss, gx, g_beta, g_alpha, g_threshold, g_target] =
      run_online<Device>(c, target, need_grad_x, need_beta, need_alpha, need_threshold, need_target);
  return {spikes, loss, state_v, state_count, gx, g_beta, g_alpha, g_threshold, g_target};
}

// A state tensor updated in place: exactly the neuron shape, contiguous, on x's device, in the math type (or, for
// the count, uint8); *data points at it, read and written by the kernel.
inline void bind_state(const Call& c, const Tensor& t, const char* name, bool count, Param* q, void** out) {
  const bool u8 = count && t.scalar_type() == at::kByte;
  TORCH_CHECK_TYPE(t.scalar_type() == c.math_type() || u8, c.op, ": the in-place state ", name, " must be ",
                   c.math_type(), count ? " (or uint8, a count below 256)" : "", " for x of dtype ",
                   c.x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(c.neuron_shape) && t.is_contiguous(), c.op, ": the in-place state ",
                    name, " must be a contiguous tensor of the neuron shape x.shape[1:] = ",
                    at::IntArrayRef(c.neuron_shape), ", got shape ", t.sizes());
  check_on_x_device(c, t, name);
  q->data = t.data_ptr();
  q->inner = 1;
  q->period = c.p.N;
  *out = t.data_ptr();
}

// tandem_online with the state (v, count) updated in place: the new state is written over the old, so a layer
// that learns step by step never holds two copies of it.
template <typename Device>
OnlineGrads tandem_online_(const Tensor& x, const Tensor& target, const OptTensor& beta, const OptTensor& alpha,
                           const OptTensor& threshold, const Tensor& v, const Tensor& count, double beta_s,
                           double alpha_s, double threshold_s, Str reset, double v_reset, Str surrogate,
                           std::optional<double> surrogate_alpha, int64_t t0, int64_t warmup, bool need_grad_x,
                           bool need_beta, bool need_alpha, bool need_threshold, bool need_target) {
  const typename Device::Guard guard(x);
  Call c = online_call(x, target, beta, alpha, threshold, std::nullopt, beta_s, alpha_s, threshold_s, reset, v_reset,
                       surrogate, surrogate_alpha, t0, warmup);
  bind_state(c, v, "v", false, &c.p.v0, &c.p.state_v);
  bind_state(c, count, "count", true, &c.p.count0, &c.p.state_count);
  c.p.count_u8 = count.scalar_type() == at::kByte;
  TORCH_CHECK_VALUE(!c.p.count_u8 || t0 + c.p.T <= 255, c.op, ": a uint8 count holds at most 255 steps, but this ",
                    "call ends at step ", t0 + c.p.T, "; convert the count to ", c.math_type(), " first");
  return run_online<Device>(c, target, need_grad_x, need_beta, need_alpha, need_threshold, need_target);
}

template <typename Device>
void register_ops(torch::Library& m) {
  m.impl("lif_fwd", &lif_fwd<Device>);
  m.impl("lif_bwd", &lif_bwd<Device>);
  m.impl("tandem_offline_fwd", &tandem_offline_fwd<Device>);
  m.impl("tandem_offline_bwd", &tandem_offline_bwd<Device>);
  m.impl("tandem_online", &tandem_online<Device>);
  m.impl("tandem_online_", &tandem_online_<Device>);
}

}  // namespace ltl
