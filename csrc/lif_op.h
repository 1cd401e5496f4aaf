// Torch glue shared by the CPU and CUDA LIF ops (floor 3): checks, contiguity, output allocation, and the
// translation of tensors into an ltl::LifLaunch (plain pointers) for the kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <limits>
#include <optional>
#include <string>
#include <tuple>

#include "ltl/lif_kernels.h"

namespace ltl {

using OptTensor = std::optional<at::Tensor>;

inline at::ScalarType math_dtype(at::ScalarType s) {
  return s == at::kDouble ? at::kDouble : at::kFloat;
}

inline DType to_dtype(at::ScalarType s) {
  switch (s) {
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    default: TORCH_CHECK_TYPE(false, "ltl_ext.lif: x must be float16, bfloat16, float32 or float64, got ", s);
  }
  return DType::Float;
}

// Owns the contiguous copies (if any were needed) while the kernel runs.
struct LifCall {
  at::Tensor x, beta, alpha, theta, v0, grad_spikes, grad_v;
  LifLaunch p;
};

// A per-neuron [N] tensor of the math dtype on x's device (contiguous), or undefined for "use the scalar".
inline at::Tensor per_neuron(const OptTensor& t, const char* name, const at::Tensor& x, int64_t N,
                             const char* op = "ltl_ext.lif") {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  const at::ScalarType want = math_dtype(x.scalar_type());
  TORCH_CHECK_TYPE(t->scalar_type() == want, op, ": ", name, " must have dtype ", want,
                   " (the math type of x's ", x.scalar_type(), "), got ", t->scalar_type());
  TORCH_CHECK_VALUE(t->device() == x.device(), op, ": ", name, " is on ", t->device(), " but x is on ",
                    x.device());
  TORCH_CHECK_VALUE(t->numel() == N, op, ": ", name, " must have N = ", N, " elements (one per neuron), got ",
                    t->sizes());
  return t->reshape({N}).contiguous();
}

// Value checks on the CPU (the Python wrappers do not read tensor values per call: ltl_ext/ops/params.py). Here
// they cost one pass over [N] values next to the kernel's T passes; on a GPU the verdict would have to travel
// back to the host (a sync per call), so GPU values are validated where they are set (params.check_lif_values).
// How many of v[0 .. n) lie outside [low, high] ((low, high] if low_open); NaN is outside. One branch-free
// counting loop, which the compiler vectorises: ~1 us for N = 4096.
template <typename acc_t>
int64_t count_outside(const acc_t* v, int64_t n, double low, double high, bool low_open) {
  const acc_t lo = static_cast<acc_t>(low), hi = static_cast<acc_t>(high);
  int64_t bad = 0;
  if (low_open) {
    for (int64_t i = 0; i < n; ++i) bad += !((v[i] > lo) & (v[i] <= hi));
  } else {
    for (int64_t i = 0; i < n; ++i) bad += !((v[i] >= lo) & (v[i] <= hi));
  }
  return bad;
}

// t ([N] contiguous, float or double, on the CPU) outside the range: then the message's min and max (slow path).
inline bool outside_cpu(const at::Tensor& t, double low, double high, bool low_open, double* min, double* max) {
  const int64_t n = t.numel();
  auto scan = [&](const auto* v) {
    if (count_outside(v, n, low, high, low_open) == 0) return false;
    *min = *max = static_cast<double>(v[0]);
    for (int64_t i = 0; i < n; ++i) {  // NaN compares false: it shows as "NaN" in the message, not as min/max
      *min = v[i] < *min ? v[i] : *min;
      *max = v[i] > *max ? v[i] : *max;
    }
    return true;
  };
  return t.scalar_type() == at::kDouble ? scan(t.data_ptr<double>()) : scan(t.data_ptr<float>());
}

// Value checks on the CPU (the Python wrappers do not read tensor values per call: ltl_ext/ops/params.py). Here
// they cost one pass over [N] values next to the kernel's T passes; on a GPU the verdict would have to travel
// back to the host (a sync per call), so GPU values are validated where they are set (params.check_lif_values).
// beta in [0, 1], threshold in (0, inf], alpha not NaN: params.RANGES, with the same messages.
inline void check_param_values_cpu(const at::Tensor& beta, const at::Tensor& alpha, const at::Tensor& threshold,
                                   const char* op) {
  auto check = [op](const at::Tensor& t, const char* name, double low, double high, bool low_open) {
    double min = 0, max = 0;
    if (!t.defined() || !t.device().is_cpu() || t.numel() == 0) return;
    TORCH_CHECK_VALUE(!outside_cpu(t, low, high, low_open, &min, &max), op, ": ", name, " values must lie in ",
                      low_open ? "(" : "[", low, ", ", high, "] (got min ", min, ", max ", max, ", or NaN)");
  };
  const double inf = std::numeric_limits<double>::infinity();
  check(beta, "beta", 0.0, 1.0, false);
  check(alpha, "alpha", -inf, inf, false);
  check(threshold, "threshold", 0.0, inf, true);
}

// The teacher target must hold no NaN: it would silently turn every gradient of the layer into NaN.
inline void check_target_cpu(const at::Tensor& target, const char* op) {
  if (!target.device().is_cpu() || target.numel() == 0) return;
  const double inf = std::numeric_limits<double>::infinity();
  double min = 0, max = 0;
  TORCH_CHECK_VALUE(!outside_cpu(target, -inf, inf, false, &min, &max), op,
                    ": target contains NaN; check the teacher's activations and their normalisation");
}

inline LifCall make_call(const at::Tensor& x, const OptTensor& beta, const OptTensor& alpha, const OptTensor& theta,
                         const OptTensor& v0, double beta_s, double alpha_s, double theta_s, c10::string_view reset,
                         double v_reset, c10::string_view surrogate, double surrogate_alpha, bool detach_reset) {
  TORCH_CHECK_VALUE(x.dim() == 2, "ltl_ext.lif: the op takes x as [T, N] (got ", x.dim(),
                    "-d); ltl_ext.functional.lif reshapes any [T, ...] input");
  LifCall c;
  c.p.dtype = to_dtype(x.scalar_type());
  c.x = x.contiguous();
  c.p.T = x.size(0);
  c.p.N = x.size(1);
  const int64_t N = c.p.N;
  c.beta = per_neuron(beta, "beta", x, N);
  c.alpha = per_neuron(alpha, "alpha", x, N);
  c.theta = per_neuron(theta, "threshold", x, N);
  c.v0 = per_neuron(v0, "v0", x, N);
  const std::string r(reset.data(), reset.size()), s(surrogate.data(), surrogate.size());
  TORCH_CHECK_VALUE(parse_reset(r.c_str(), &c.p.reset), "ltl_ext.lif: reset must be 'soft' or 'hard', got '", r, "'");
  TORCH_CHECK_VALUE(parse_surrogate(s.c_str(), &c.p.surrogate),
                    "ltl_ext.lif: surrogate must be one of 'rect', 'sigmoid', 'atan', 'fast_sigmoid', got '", s, "'");
  c.p.x = c.x.data_ptr();
  c.p.beta = c.beta.defined() ? c.beta.data_ptr() : nullptr;
  c.p.alpha = c.alpha.defined() ? c.alpha.data_ptr() : nullptr;
  c.p.theta = c.theta.defined() ? c.theta.data_ptr() : nullptr;
  c.p.v0 = c.v0.defined() ? c.v0.data_ptr() : nullptr;
  c.p.beta_s = beta_s;
  c.p.alpha_s = alpha_s;
  c.p.theta_s = theta_s;
  c.p.v_reset = v_reset;
  c.p.surrogate_alpha = surrogate_alpha;
  c.p.detach_reset = detach_reset;
  return c;
}

// Forward: allocates spikes [T, N] and v_final [N] (x's dtype) and fills c.p's output pointers.
inline std::tuple<at::Tensor, at::Tensor> alloc_forward(LifCall& c) {
  at::Tensor spikes = at::empty({c.p.T, c.p.N}, c.x.options());
  at::Tensor v_final = at::empty({c.p.N}, c.x.options());
  c.p.spikes = spikes.data_ptr();
  c.p.v_final = v_final.data_ptr();
  return {spikes, v_final};
}

using BwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Backward: takes the upstream gradients and allocates grad_x [T, N] (x's dtype) and, when wanted, the [N]
// per-neuron gradients in the math type (else empty [0] tensors).
inline BwdOut alloc_backward(LifCall& c, const OptTensor& grad_spikes, const OptTensor& grad_v, bool need_v0,
                             bool need_beta, bool need_alpha, bool need_theta) {
  const int64_t T = c.p.T, N = c.p.N;
  if (grad_spikes.has_value() && grad_spikes->defined()) {
    TORCH_CHECK_VALUE(grad_spikes->sizes() == c.x.sizes(), "ltl_ext.lif backward: grad_spikes must be [T, N]");
    c.grad_spikes = grad_spikes->to(c.x.scalar_type()).contiguous();
    c.p.grad_spikes = c.grad_spikes.data_ptr();
  }
  if (grad_v.has_value() && grad_v->defined()) {
    TORCH_CHECK_VALUE(grad_v->numel() == N, "ltl_ext.lif backward: grad_v must have N elements");
    c.grad_v = grad_v->to(c.x.scalar_type()).reshape({N}).contiguous();
    c.p.grad_v = c.grad_v.data_ptr();
  }
  const auto mopt = c.x.options().dtype(math_dtype(c.x.scalar_type()));
  at::Tensor gx = at::empty({T, N}, c.x.options());
  auto opt_out = [&](bool need, void** ptr) {
    at::Tensor t = at::empty({need ? N : 0}, mopt);
    *ptr = need ? t.data_ptr() : nullptr;
    return t;
  };
  c.p.grad_x = gx.data_ptr();
  at::Tensor g0 = opt_out(need_v0, &c.p.grad_v0);
  at::Tensor gb = opt_out(need_beta, &c.p.grad_beta);
  at::Tensor ga = opt_out(need_alpha, &c.p.grad_alpha);
  at::Tensor gt = opt_out(need_theta, &c.p.grad_theta);
  return {gx, g0, gb, ga, gt};
}

}  // namespace ltl
