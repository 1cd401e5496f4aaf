// Autograd of the ltl_ext ops, in C++ (floor 3), as torchvision registers its ops': a fused call is one dispatch
// and its backward one more, with no Python on the way; C++ callers get the backward too. Each forward op gets an
// Autograd kernel (a torch::autograd::Function) that calls the op below autograd and saves what the backward op
// needs. The fake (meta) kernels that torch.compile and opcheck trace with stay in Python (ltl_ext/ops/).
//
//   lif_fwd            -> backward: lif_bwd (recomputes H from x; BPTT with the surrogate)
//   tandem_offline_fwd -> backward: tandem_offline_bwd (dL/dS = 2 err / (N T) for every t)
//   tandem_online      -> backward: a scale of the local gradients the forward wrote, by dL/dloss
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/ops/mul.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace ltl {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;
using Str = c10::string_view;

// The typed handle of an ltl_ext op, looked up once per op (a string-keyed lookup per call costs microseconds).
template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

using LifFwdSig = std::tuple<Tensor, Tensor>(const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                             const OptTensor&, double, double, double, Str, double, Str, std::optional<double>,
                                             bool);
using LifBwdSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const OptTensor&, const OptTensor&, const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
    const OptTensor&, double, double, double, Str, double, Str, std::optional<double>, bool, bool, bool, bool, bool);
using OfflineFwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const OptTensor&,
                                                         const OptTensor&, const OptTensor&, const OptTensor&, double,
                                                         double, double, Str, double, Str, std::optional<double>, bool);
using OfflineBwdSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
    const OptTensor&, double, double, double, Str, double, Str, std::optional<double>, bool, bool, bool, bool, bool);
using OnlineSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&,
    const OptTensor&, double, double, double, Str, double, Str, std::optional<double>, int64_t, int64_t, bool, bool, bool, bool,
    bool, bool);

c10::TypedOperatorHandle<LifFwdSig> lif_fwd_op() {
  static const auto h = find_op<LifFwdSig>("ltl_ext::lif_fwd");
  return h;
}
c10::TypedOperatorHandle<LifBwdSig> lif_bwd_op() {
  static const auto h = find_op<LifBwdSig>("ltl_ext::lif_bwd");
  return h;
}
c10::TypedOperatorHandle<OfflineFwdSig> offline_fwd_op() {
  static const auto h = find_op<OfflineFwdSig>("ltl_ext::tandem_offline_fwd");
  return h;
}
c10::TypedOperatorHandle<OfflineBwdSig> offline_bwd_op() {
  static const auto h = find_op<OfflineBwdSig>("ltl_ext::tandem_offline_bwd");
  return h;
}
c10::TypedOperatorHandle<OnlineSig> online_op() {
  static const auto h = find_op<OnlineSig>("ltl_ext::tandem_online");
  return h;
}

OptTensor opt(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
Tensor or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }

// needs_input_grad by argument position. Autograd numbers its edges over the tensors that were given (a None
// optional has no edge), so `given` lists, per argument position, whether it was a defined tensor.
struct Needs {
  std::vector<bool> given;
  bool operator()(AutogradContext* ctx, size_t arg) const {
    if (!given[arg]) return false;
    size_t edge = 0;
    for (size_t i = 0; i < arg; ++i) edge += given[i];
    return ctx->needs_input_grad(edge);
  }
};

// The LIF arguments every op shares after its tensors: saved as they came, handed back to the backward op.
struct LifScalars {
  double beta_s, alpha_s, threshold_s, v_reset;
  std::optional<double> surrogate_alpha;
  std::string reset, surrogate;
  bool detach_reset;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["beta_s"] = beta_s;
    ctx->saved_data["alpha_s"] = alpha_s;
    ctx->saved_data["threshold_s"] = threshold_s;
    ctx->saved_data["v_reset"] = v_reset;
    ctx->saved_data["surrogate_alpha"] = surrogate_alpha.has_value() ? c10::IValue(*surrogate_alpha) : c10::IValue();
    ctx->saved_data["reset"] = reset;
    ctx->saved_data["surrogate"] = surrogate;
    ctx->saved_data["detach_reset"] = detach_reset;
  }
  static LifScalars load(AutogradContext* ctx) {
    auto& d = ctx->saved_data;
    return {d["beta_s"].toDouble(), d["alpha_s"].toDouble(), d["threshold_s"].toDouble(), d["v_reset"].toDouble(),
            d["surrogate_alpha"].toOptional<double>(), d["reset"].toStringRef(), d["surrogate"].toStringRef(),
            d["detach_reset"].toBool()};
  }
};

void save_given(AutogradContext* ctx, const std::vector<bool>& given) {
  c10::List<bool> l;
  for (bool g : given) l.push_back(g);
  ctx->saved_data["given"] = l;
}
Needs load_given(AutogradContext* ctx) {
  Needs n;
  for (bool g : ctx->saved_data["given"].toBoolList()) n.given.push_back(g);
  return n;
}
bool given(const OptTensor& t) { return t.has_value() && t->defined(); }

// A backward op called from a backward formula: below autograd unless a graph of the backward is being built
// (create_graph=True), where the op's autograd fallback must see it. Otherwise that fallback only boxes the
// arguments (19 of them, two strings) and unboxes them again: microseconds per call for nothing.
template <typename F> auto below_autograd_unless_recording(F&& f) {
  if (at::GradMode::is_enabled()) return f();
  at::AutoDispatchBelowADInplaceOrView guard;
  return f();
}

// ---- lif_fwd -----------------------------------------------------------------------------------------------------
// Arguments: 0 x, 1 beta, 2 alpha, 3 threshold, 4 v0, then 8 non-tensors.
struct LifFunction : public torch::autograd::Function<LifFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const OptTensor& beta, const OptTensor& alpha,
                               const OptTensor& threshold, const OptTensor& v0, LifScalars s) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [spikes, v] = lif_fwd_op()
                           .call(x, beta, alpha, threshold, v0, s.beta_s, s.alpha_s, s.threshold_s, s.reset,
                                 s.v_reset, s.surrogate, s.surrogate_alpha, s.detach_reset);
    ctx->save_for_backward({x, or_undefined(beta), or_undefined(alpha), or_undefined(threshold), or_undefined(v0)});
    save_given(ctx, {true, given(beta), given(alpha), given(threshold), given(v0), false});
    s.save(ctx);
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: no [T, N] of zeros
    return {spikes, v};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(6);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    const auto saved = ctx->get_saved_variables();
    const Needs need = load_given(ctx);
    const LifScalars s = LifScalars::load(ctx);
    auto [gx, g_v0, g_beta, g_alpha, g_threshold] = below_autograd_unless_recording([&] {
      return lif_bwd_op().call(opt(grads[0]), opt(grads[1]), saved[0], opt(saved[1]), opt(saved[2]), opt(saved[3]),
                               opt(saved[4]), s.beta_s, s.alpha_s, s.threshold_s, s.reset, s.v_reset, s.surrogate,
                               s.surrogate_alpha, s.detach_reset, need(ctx, 4), need(ctx, 1), need(ctx, 2),
                               need(ctx, 3));
    });
    const Tensor g[] = {gx, g_beta, g_alpha, g_threshold, g_v0};
    for (size_t i = 0; i < 5; ++i)
      if (need(ctx, i)) out[i] = g[i];
    return out;
  }
};

std::tuple<Tensor, Tensor> lif_fwd_autograd(const Tensor& x, const OptTensor& beta, const OptTensor& alpha,
                                            const OptTensor& threshold, const OptTensor& v0, double beta_s,
                                            double alpha_s, double threshold_s, Str reset, double v_reset,
                                            Str surrogate, std::optional<double> surrogate_alpha, bool detach_reset) {
  const LifScalars s{beta_s, alpha_s, threshold_s, v_reset, surrogate_alpha, std::string(reset),
                     std::string(surrogate), detach_reset};
  auto out = LifFunction::apply(x, beta, alpha, threshold, v0, s);
  return {out[0], out[1]};
}

// ---- tandem_offline_fwd ----------------------------------------------------------------------------------------
// Arguments: 0 x, 1 target, 2 beta, 3 alpha, 4 threshold, 5 v0, then 8 non-tensors.
struct OfflineFunction : public torch::autograd::Function<OfflineFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& target, const OptTensor& beta,
                               const OptTensor& alpha, const OptTensor& threshold, const OptTensor& v0,
                               LifScalars s) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [spikes, loss, err] = offline_fwd_op()
                                   .call(x, target, beta, alpha, threshold, v0, s.beta_s, s.alpha_s, s.threshold_s,
                                         s.reset, s.v_reset, s.surrogate, s.surrogate_alpha, s.detach_reset);
    ctx->mark_non_differentiable({spikes, err});
    ctx->save_for_backward({x, err, or_undefined(beta), or_undefined(alpha), or_undefined(threshold),
                            or_undefined(v0)});
    save_given(ctx, {true, true, given(beta), given(alpha), given(threshold), given(v0), false});
    s.save(ctx);
    ctx->saved_data["target_sizes"] = target.sizes();
    ctx->saved_data["target_dtype"] = target.scalar_type();
    ctx->set_materialize_grads(false);  // else autograd allocates a zero [T, N] gradient for the spikes
    return {spikes, loss, err};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(7);
    const Tensor& g_loss = grads[1];
    if (!g_loss.defined()) return out;
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &err = saved[1];
    const Needs need = load_given(ctx);
    const LifScalars s = LifScalars::load(ctx);
    auto [gx, g_v0, g_beta, g_alpha, g_threshold] = below_autograd_unless_recording([&] {
      return offline_bwd_op().call(g_loss, x, err, opt(saved[2]), opt(saved[3]), opt(saved[4]), opt(saved[5]),
                                   s.beta_s, s.alpha_s, s.threshold_s, s.reset, s.v_reset, s.surrogate,
                                   s.surrogate_alpha, s.detach_reset, need(ctx, 5), need(ctx, 2), need(ctx, 3),
                                   need(ctx, 4));
    });
    if (need(ctx, 0)) out[0] = gx;
    if (need(ctx, 1))  // dL/dy = -2 (r - y) / N
      out[1] = at::mul(err, at::mul(g_loss.to(err.scalar_type()), -2.0 / std::max<double>(err.numel(), 1.0)))
                   .view(ctx->saved_data["target_sizes"].toIntVector())
                   .to(ctx->saved_data["target_dtype"].toScalarType());
    const Tensor g[] = {g_beta, g_alpha, g_threshold, g_v0};
    for (size_t i = 0; i < 4; ++i)
      if (need(ctx, 2 + i)) out[2 + i] = g[i];
    return out;
  }
};

std::tuple<Tensor, Tensor, Tensor> offline_fwd_autograd(const Tensor& x, const Tensor& target, const OptTensor& beta,
                                                        const OptTensor& alpha, const OptTensor& threshold,
                                                        const OptTensor& v0, double beta_s, double alpha_s,
                                                        double threshold_s, Str reset, double v_reset, Str surrogate,
                                                        std::optional<double> surrogate_alpha, bool detach_reset) {
  const LifScalars s{beta_s, alpha_s, threshold_s, v_reset, surrogate_alpha, std::string(reset),
                     std::string(surrogate), detach_reset};
  auto out = OfflineFunction::apply(x, target, beta, alpha, threshold, v0, s);
  return {out[0], out[1], out[2]};
}

// ---- tandem_online -----------------------------------------------------------------------------------------------
// Arguments: 0 x, 1 target, 2 beta, 3 alpha, 4 threshold, 5 v0, 6 count0, then the non-tensors (one struct).
struct OnlineArgs {
  LifScalars s;
  int64_t t0, warmup;
  bool need_state, need_grad_x, need_beta, need_alpha, need_threshold, need_target;
};

// True when dL/dloss is exactly 1 and reading it costs nothing: a plain CPU scalar (not a fake or functional
// tensor while tracing, not on a GPU where reading it would be a sync). Then the saved gradients are the answer.
bool is_plain_one(const Tensor& g) {
  constexpr auto traced = c10::DispatchKeySet({c10::DispatchKey::Python, c10::DispatchKey::Functionalize,
                                               c10::DispatchKey::PythonTLSSnapshot});
  if (!g.device().is_cpu() || g.numel() != 1 || g.key_set().has_any(traced) || !g.has_storage()) return false;
  return g.item<double>() == 1.0;
}

struct OnlineFunction : public torch::autograd::Function<OnlineFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& target, const OptTensor& beta,
                               const OptTensor& alpha, const OptTensor& threshold, const OptTensor& v0,
                               const OptTensor& count0, OnlineArgs a) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const LifScalars& s = a.s;
    auto [spikes, loss, v_out, count_out, gx, g_beta, g_alpha, g_threshold, g_target] =
        online_op()
            .call(x, target, beta, alpha, threshold, v0, count0, s.beta_s, s.alpha_s, s.threshold_s, s.reset,
                  s.v_reset, s.surrogate, s.surrogate_alpha, a.t0, a.warmup, a.need_state, a.need_grad_x,
                  a.need_beta, a.need_alpha, a.need_threshold, a.need_target);
    ctx->mark_non_differentiable({spikes, v_out, count_out, gx, g_beta, g_alpha, g_threshold, g_target});
    ctx->save_for_backward({gx, g_target, g_beta, g_alpha, g_threshold});
    save_given(ctx, {true, true, given(beta), given(alpha), given(threshold), given(v0), given(count0), false});
    ctx->saved_data["x_dtype"] = x.scalar_type();
    ctx->set_materialize_grads(false);
    return {spikes, loss, v_out, count_out, gx, g_beta, g_alpha, g_threshold, g_target};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(8);
    const Tensor& g_loss = grads[1];
    if (!g_loss.defined()) return out;
    const auto saved = ctx->get_saved_variables();  // the local gradients for dL/dloss = 1, in the math type
    const Needs need = load_given(ctx);
    const at::ScalarType x_dtype = ctx->saved_data["x_dtype"].toScalarType();
    const bool one = is_plain_one(g_loss);
    for (size_t i = 0; i < 5; ++i) {  // x, target, beta, alpha, threshold: the forward computed what is needed
      if (!need(ctx, i)) continue;
      // scaled in the math type, then rounded once: a loss scale is applied before float16 can flush anything
      const Tensor g = one ? saved[i] : at::mul(saved[i], g_loss.to(saved[i].scalar_type()));
      out[i] = i == 0 ? g.to(x_dtype) : g;
    }
    return out;
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> online_autograd(
    const Tensor& x, const Tensor& target, const OptTensor& beta, const OptTensor& alpha, const OptTensor& threshold,
    const OptTensor& v0, const OptTensor& count0, double beta_s, double alpha_s, double threshold_s, Str reset,
    double v_reset, Str surrogate, std::optional<double> surrogate_alpha, int64_t t0, int64_t warmup, bool need_state,
    bool need_grad_x, bool need_beta, bool need_alpha, bool need_threshold, bool need_target) {
  const OnlineArgs a{{beta_s, alpha_s, threshold_s, v_reset, surrogate_alpha, std::string(reset),
                      std::string(surrogate), false},
                     t0, warmup, need_state, need_grad_x, need_beta, need_alpha, need_threshold, need_target};
  auto o = OnlineFunction::apply(x, target, beta, alpha, threshold, v0, count0, a);
  return {o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8]};
}

}  // namespace
}  // namespace ltl

TORCH_LIBRARY_IMPL(ltl_ext, Autograd, m) {
  m.impl("lif_fwd", &ltl::lif_fwd_autograd);
  m.impl("tandem_offline_fwd", &ltl::offline_fwd_autograd);
  m.impl("tandem_online", &ltl::online_autograd);
}
