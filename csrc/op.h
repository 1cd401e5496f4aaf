// Torch glue shared by every ltl_ext op on every device (floor 3): the argument checks (with the messages the
// Python layer used to give: ValueError / TypeError through TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), broadcast
// parameters, and the translation of tensors into an ltl::Launch (plain pointers) for the kernels. The op bodies
// are in op_impl.h; the device files (csrc/cpu/ops_cpu.cpp, csrc/cuda/ops_cuda.cpp) only say how to run a kernel.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "ltl/kernels.h"

namespace ltl {

using OptTensor = std::optional<at::Tensor>;
using Str = c10::string_view;

inline at::ScalarType math_dtype(at::ScalarType s) { return s == at::kDouble ? at::kDouble : at::kFloat; }
inline bool given(const OptTensor& t) { return t.has_value() && t->defined(); }

// A parameter or state tensor as the caller gave it (its shape and dtype are its gradient's) and as the kernel
// reads it: math type, contiguous, in its own broadcast shape; `expanded` when its shape cannot be described by a
// Param (period, inner) and it was materialised to [N] instead.
struct ParamTensor {
  at::Tensor given, data;
  bool expanded = false;
};

// Everything one call keeps alive while its kernel runs, and the Launch that points into it.
struct Call {
  const char* op = "";               // the prefix of every message: "ltl_ext.lif" or "ltl_ext.tandem"
  at::Tensor x;                      // x as given, made contiguous (read as [T, N]; not reshaped: a view costs)
  std::vector<int64_t> neuron_shape;  // x.shape[1:]
  ParamTensor beta, alpha, threshold, v0, count0;
  at::Tensor target, err, grad_loss, grad_spikes, grad_v, partials, scratch;
  Launch p;
  double partials_inline[64];  // the loss's per-block partial sums on the CPU when they fit (no allocation)

  at::TensorOptions math_options() const { return x.options().dtype(math_dtype(x.scalar_type())); }
  at::ScalarType math_type() const { return math_dtype(x.scalar_type()); }
};

inline const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// t in dtype s, contiguous (its shape kept: the kernels read it flat). The common case, already so, costs no
// dispatcher call (Tensor::to goes through one even when it returns t itself).
inline at::Tensor as_contiguous(const at::Tensor& t, at::ScalarType s) {
  if (t.scalar_type() == s) return t.is_contiguous() ? t : t.contiguous();
  return t.to(s).contiguous();
}

// ---- values: where a tensor's values are read, on the CPU only ---------------------------------------------------
// How many of v[0 .. n) lie outside [low, high] ((low, high] if low_open); NaN is outside, and so is an infinity
// (an infinite bound is an open one: an infinite threshold makes the soft reset's H - threshold S an inf * 0,
// NaN in V and every gradient). One branch-free counting loop, which the compiler vectorises: ~1 us for N = 4096.
template <typename real>
int64_t count_outside(const real* v, int64_t n, double low, double high, bool low_open) {
  const real most = std::numeric_limits<real>::max();
  const real lo = std::isinf(low) ? -most : static_cast<real>(low);
  const real hi = std::isinf(high) ? most : static_cast<real>(high);
  int64_t bad = 0;
  if (low_open) {
    for (int64_t i = 0; i < n; ++i) bad += !((v[i] > lo) & (v[i] <= hi));
  } else {
    for (int64_t i = 0; i < n; ++i) bad += !((v[i] >= lo) & (v[i] <= hi));
  }
  return bad;
}

// t (contiguous, float or double, on the CPU) outside the range: then the message's min and max (slow path).
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

// The legal values of a LIF parameter (ltl_ext/ops/params.py RANGES, with the same messages).
struct Range {
  double low, high;
  bool low_open;
};
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr Range kBetaRange{0.0, 1.0, false}, kAlphaRange{-kInf, kInf, false}, kThresholdRange{0.0, kInf, true};

inline std::string bounds(const Range& r) {  // as params.py's _bound writes them: an infinite end is open
  return (r.low_open || std::isinf(r.low) ? "(" : "[") + c10::str(r.low) + ", " + c10::str(r.high) +
         (std::isinf(r.high) ? ")" : "]");
}

// A tensor's values are checked here on the CPU: one pass over its values next to the kernel's T passes. On a GPU
// the verdict would have to travel back to the host (a sync per call), so GPU values are validated where they are
// set (ltl_ext.ops.params.check_lif_values, called by nn.LIF).
inline void check_values_cpu(const ParamTensor& q, const char* name, const Range& r, const char* op) {
  if (!q.data.defined() || !q.data.device().is_cpu() || q.data.numel() == 0) return;
  double min = 0, max = 0;
  TORCH_CHECK_VALUE(!outside_cpu(q.data, r.low, r.high, r.low_open, &min, &max), op, ": ", name,
                    " values must lie in ", bounds(r), " (got min ", min, ", max ", max, ", or NaN)");
}

inline double check_value(double v, const char* name, const Range& r, const char* op) {
  const bool inside = std::isfinite(v) && (r.low_open ? v > r.low : v >= r.low) && v <= r.high;
  TORCH_CHECK_VALUE(inside, op, ": ", name, " must lie in ", bounds(r), ", got ", v);
  return v;
}

// ---- shapes ------------------------------------------------------------------------------------------------------
// t broadcasts to the neuron shape: its dims, aligned to the right, are 1 or the neuron shape's.
inline bool broadcasts_to(at::IntArrayRef t, const std::vector<int64_t>& shape) {
  if (t.size() > shape.size()) return false;
  const size_t off = shape.size() - t.size();
  for (size_t k = 0; k < t.size(); ++k)
    if (t[k] != 1 && t[k] != shape[off + k]) return false;
  return true;
}

// A parameter / state tensor, checked and bound to q. Its dims that are not 1 must form one run (per channel
// [C, 1, 1], per feature [H, W], per neuron, or a single value); then neuron i reads data[(i / inner) % period].
// Any other broadcast shape ([C, 1, W]) is materialised to [N] (`expanded`).
// Every tensor argument lives on x's device.
inline void check_on_x_device(const Call& c, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device() == c.x.device(), c.op, ": ", name, " is on ", t.device(), " but x is on ",
                    c.x.device(), "; move both to the same device");
}

inline ParamTensor bind_param(const OptTensor& t, const char* name, Call& c, Param* q) {
  ParamTensor out;
  if (!given(t)) return out;
  const at::Tensor& g = *t;
  TORCH_CHECK_TYPE(at::isFloatingType(g.scalar_type()), c.op, ": ", name, " must be a floating tensor, got dtype ",
                   g.scalar_type(), "; convert it with .float()");
  check_on_x_device(c, g, name);
  TORCH_CHECK_VALUE(broadcasts_to(g.sizes(), c.neuron_shape), c.op, ": ", name, " has shape ", g.sizes(),
                    ", which does not broadcast to the neuron shape x.shape[1:] = ", at::IntArrayRef(c.neuron_shape),
                    "; per-neuron parameters must match the trailing dims of x");
  out.given = g;
  out.data = as_contiguous(g, c.math_type());
  const size_t off = c.neuron_shape.size() - g.dim();
  int64_t first = -1, last = -1;
  for (int64_t k = 0; k < g.dim(); ++k)
    if (g.size(k) != 1) {
      if (first < 0) first = k;
      last = k;
    }
  bool run = true;
  for (int64_t k = first; k >= 0 && k <= last; ++k) run = run && g.size(k) == c.neuron_shape[off + k];
  q->inner = 1;
  q->period = 1;
  if (first >= 0 && run) {
    for (int64_t k = first; k <= last; ++k) q->period *= g.size(k);
    for (size_t k = off + last + 1; k < c.neuron_shape.size(); ++k) q->inner *= c.neuron_shape[k];
  } else if (first >= 0) {
    out.data = out.data.expand(c.neuron_shape).contiguous().reshape({c.p.N});
    out.expanded = true;
    q->period = c.p.N;
  }
  q->data = out.data.data_ptr();
  return out;
}

// The gradient of a bound tensor from its per-neuron gradient g [N] (math type): summed over the neurons that
// share a value, in its own shape and dtype. Sums in a fixed order (ATen's reduction over a fixed layout).
inline at::Tensor reduce_grad(const ParamTensor& q, const Param& layout, const at::Tensor& g, const Call& c) {
  at::Tensor r;
  if (q.expanded) {
    r = g.view(c.neuron_shape).sum_to_size(q.given.sizes());
  } else if (c.p.N == 0) {  // no neuron shares a value: a zero gradient (the layout below would divide by 0)
    r = g.new_zeros(q.given.sizes());
  } else if (layout.period == c.p.N) {
    r = g.sizes() == q.given.sizes() ? g : g.view(q.given.sizes());  // per neuron: g is the gradient
  } else {
    const int64_t outer = c.p.N / (layout.period * layout.inner);
    r = g.view({outer, layout.period, layout.inner}).sum(at::IntArrayRef{0, 2}).view(q.given.sizes());
  }
  return r.scalar_type() == q.given.scalar_type() ? r : r.to(q.given.scalar_type());
}

// ---- one call ----------------------------------------------------------------------------------------------------
inline DType storage_dtype(const at::Tensor& x, const char* op) {
  switch (x.scalar_type()) {
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    default:
      TORCH_CHECK_TYPE(false, op, ": x must be float16, bfloat16, float32 or float64, got ", x.scalar_type(),
                       "; convert it with .float()");
  }
  return DType::Float;
}

inline void parse_names(Str reset, Str surrogate, Launch& p, const char* op) {
  const std::string r(reset.data(), reset.size()), s(surrogate.data(), surrogate.size());
  TORCH_CHECK_VALUE(parse_reset(r.c_str(), &p.reset), op, ": reset must be one of ('soft', 'hard'), got '", r, "'");
  TORCH_CHECK_VALUE(parse_surrogate(s.c_str(), &p.surrogate), op,
                    ": surrogate must be one of ('rect', 'sigmoid', 'atan', 'fast_sigmoid'), got '", s, "'");
}

// x [T, *shape] and the LIF arguments every op takes, checked, into a Call.
inline Call make_call(const char* op, const at::Tensor& x, const OptTensor& beta, const OptTensor& alpha,
                      const OptTensor& threshold, const OptTensor& v0, double beta_s, double alpha_s,
                      double threshold_s, Str reset, double v_reset, Str surrogate,
                      std::optional<double> surrogate_alpha, bool detach_reset) {
  Call c;
  c.op = op;
  c.p.dtype = storage_dtype(x, op);
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": x must have a leading time dimension: shape [T, ...], got a 0-d tensor");
  TORCH_CHECK_VALUE(x.size(0) >= 1, op, ": x has T = 0 time steps; the LIF needs T >= 1 (x.shape[0] is time)");
  c.neuron_shape.assign(x.sizes().begin() + 1, x.sizes().end());
  c.p.T = x.size(0);
  c.p.N = x.numel() / c.p.T;
  c.x = x.is_contiguous() ? x : x.contiguous();
  c.p.x = c.x.data_ptr();
  parse_names(reset, surrogate, c.p, op);
  const double sa = surrogate_alpha.has_value() ? *surrogate_alpha : default_surrogate_alpha(c.p.surrogate);
  TORCH_CHECK_VALUE(std::isfinite(sa) && sa > 0, op, ": surrogate_alpha must be a positive float, got ", sa);
  TORCH_CHECK_VALUE(std::isfinite(v_reset), op, ": v_reset must be a finite float, got ", v_reset);
  c.p.surrogate_alpha = sa;
  c.p.v_reset = v_reset;
  c.p.detach_reset = detach_reset;
  c.beta = bind_param(beta, "beta", c, &c.p.beta);
  c.alpha = bind_param(alpha, "alpha", c, &c.p.alpha);
  c.threshold = bind_param(threshold, "threshold", c, &c.p.threshold);
  c.v0 = bind_param(v0, "v0", c, &c.p.v0);
  if (!c.beta.data.defined()) c.p.beta.value = check_value(beta_s, "beta", kBetaRange, op);
  if (!c.alpha.data.defined()) c.p.alpha.value = check_value(alpha_s, "alpha", kAlphaRange, op);
  if (!c.threshold.data.defined()) c.p.threshold.value = check_value(threshold_s, "threshold", kThresholdRange, op);
  return c;
}

// The parameters' values (CPU tensors; forward ops only: the backward sees what its forward saw).
inline void check_param_values(const Call& c) {
  check_values_cpu(c.beta, "beta", kBetaRange, c.op);
  check_values_cpu(c.alpha, "alpha", kAlphaRange, c.op);
  check_values_cpu(c.threshold, "threshold", kThresholdRange, c.op);
}

// The teacher target: exactly the neuron shape, on x's device, no NaN (it would silently turn every gradient of
// the layer into NaN; checked on the CPU, see check_values_cpu). Bound as [N] in the math type.
inline void bind_target(Call& c, const at::Tensor& target) {
  TORCH_CHECK_TYPE(at::isFloatingType(target.scalar_type()), c.op,
                   ": target must be a floating tensor with the shape of one time step of x");
  TORCH_CHECK_VALUE(target.sizes() == at::IntArrayRef(c.neuron_shape), c.op, ": target has shape ", target.sizes(),
                    " but x has neuron shape ", at::IntArrayRef(c.neuron_shape),
                    "; the target is the teacher's activation of this layer, one value per neuron");
  check_on_x_device(c, target, "target");
  c.target = as_contiguous(target, c.math_type());  // read flat as [N]
  if (c.target.device().is_cpu() && c.p.N > 0) {
    double min = 0, max = 0;
    TORCH_CHECK_VALUE(!outside_cpu(c.target, -kInf, kInf, false, &min, &max), c.op,
                      ": target contains NaN; check the teacher's activations and their normalisation");
  }
  c.p.target = c.target.data_ptr();
}

// A math-type output of `shape` when `need`, else an empty one of `empty_shape`; *ptr points at it (null when not
// needed). Outputs are allocated in their final shapes: no view of them afterwards.
inline at::Tensor output_if(const Call& c, bool need, void** ptr, at::IntArrayRef shape,
                            at::IntArrayRef empty_shape = {0}) {
  at::Tensor t = at::empty(need ? shape : empty_shape, c.math_options());
  *ptr = need ? t.data_ptr() : nullptr;
  return t;
}
// An [N] math-type output when `need`, else an empty [0] tensor (output_if).
inline at::Tensor neuron_output(const Call& c, bool need, void** ptr) { return output_if(c, need, ptr, {c.p.N}); }

// The gradient of a parameter from the kernel's per-neuron gradient g (neuron_output), or g itself when it is not
// needed: the callers ask for it only for a given parameter (need &&= given), so g is then the empty [0] output.
inline at::Tensor param_grad(const Call& c, const ParamTensor& q, const Param& layout, const at::Tensor& g,
                             bool need) {
  return need ? reduce_grad(q, layout, g, c) : g;
}

}  // namespace ltl
