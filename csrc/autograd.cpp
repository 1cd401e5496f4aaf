// Autograd of the ltl_ext ops, in C++ (floor 3), as torchvision registers its ops': a fused call is one dispatch
// and its backward one more, with no Python on the way; C++ callers get the backward too. Each forward op gets an
// Autograd kernel that calls the op below autograd and, when a gradient is needed, builds a hand-written backward
// node (as PyTorch's generated kernels do) that saves what the backward op needs. The fake (meta) kernels that
// torch.compile and opcheck trace with stay in Python (ltl_ext/ops/). The ops' typed handles: op_handles.h.
//
//   lif_fwd            -> backward: lif_bwd (recomputes H from x; BPTT with the surrogate)
//   tandem_offline_fwd -> backward: tandem_offline_bwd (dL/dS = 2 err / (N T) for every t)
//   tandem_online      -> backward: a scale of the local gradients the forward wrote, by dL/dloss
//   tandem_online_     -> the same (its state updated in place)
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/ops/mul.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "op_handles.h"

namespace ltl {
namespace {

using at::Tensor;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;
using Str = c10::string_view;

OptTensor opt(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

using torch::autograd::Node;
using torch::autograd::SavedVariable;

// A new backward node, held as autograd holds nodes: std::shared_ptr up to torch 2.11, c10::intrusive_ptr after
// (read off Edge::function, so no version number is needed).
template <typename N, typename... Args>
auto make_node(Args&&... args) {
  using Held = decltype(torch::autograd::Edge::function);
  if constexpr (std::is_same_v<Held, std::shared_ptr<Node>>) {
    return std::make_shared<N>(std::forward<Args>(args)...);
  } else {
    return c10::make_intrusive<N>(std::forward<Args>(args)...);
  }
}

// The LIF arguments every op shares after its tensors: kept as they came (plain members of the backward node, no
// IValues; the names fit std::string's inline buffer), handed back to the backward op.
struct LifScalars {
  double beta_s, alpha_s, threshold_s, v_reset;
  std::optional<double> surrogate_alpha;
  std::string reset, surrogate;
  bool detach_reset;
};

// What the LIF recursion's backward needs (LifBackward, OfflineBackward): the input current, the tensor parameters,
// v0, the scalars; saved and released in one place.
struct SavedLif {
  SavedVariable x, beta, alpha, threshold, v0;
  LifScalars s;

  void save(const Tensor& x_, const OptTensor& beta_, const OptTensor& alpha_, const OptTensor& threshold_,
            const OptTensor& v0_, LifScalars scalars) {
    x = SavedVariable(x_, false);
    beta = SavedVariable(beta_, false);
    alpha = SavedVariable(alpha_, false);
    threshold = SavedVariable(threshold_, false);
    v0 = SavedVariable(v0_, false);
    s = std::move(scalars);
  }
  void release() {
    for (SavedVariable* v : {&x, &beta, &alpha, &threshold, &v0}) v->reset_data();
  }
};

// The gradients of x, beta, alpha, threshold, v0 into the edges that want them. Edge order: x first, then `skip`
// edges the LIF backward does not produce (the offline op's target), then beta, alpha, threshold, v0.
void take_lif_grads(variable_list& out, const bool* need, size_t skip, Tensor& gx, Tensor& g_beta, Tensor& g_alpha,
                    Tensor& g_threshold, Tensor& g_v0) {
  Tensor* g[] = {&g_beta, &g_alpha, &g_threshold, &g_v0};
  if (need[0]) out[0] = std::move(gx);
  for (size_t k = 0; k < 4; ++k)
    if (need[1 + skip + k]) out[1 + skip + k] = std::move(*g[k]);
}

// A backward op called from a backward formula runs below autograd: the backward ops have no backward of their
// own, and autograd's fallback would only box their arguments (19 of them, two strings) to unbox them again.
template <typename F> auto below_autograd(F&& f) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return f();
}

// The ops are differentiable once, as PyTorch's once_differentiable functions: when a graph of the backward is
// being built (create_graph=True, or torch.func.grad), the gradients come out of an error node that raises when
// anything differentiates them again (a gradient penalty, a Hessian). Left to autograd's fallback, a second
// derivative through them came out as zero or None with a warning at most: a wrong answer. The error node's edges
// are the backward node's own (the op's inputs), so a second differentiation with respect to them runs into it
// rather than pruning it as unreachable.
variable_list differentiable_once(const Node& node, variable_list&& grads, const char* op) {
  if (!at::GradMode::is_enabled()) return std::move(grads);
  torch::autograd::edge_list edges = node.next_edges();
  auto error = make_node<torch::autograd::Error>(
      std::string("ltl_ext: ") + op + " is differentiable once; a gradient of its gradient (double backward, "
      "create_graph=True, a Hessian) is not implemented", std::move(edges));
  for (auto& g : grads) {
    if (!g.defined()) continue;
    g = g.detach();
    torch::autograd::set_history(g, error);
  }
  return std::move(grads);
}

// Forward-mode AD has no formulas here: an input's tangent would be dropped and the outputs' read as zero
// (torch.func.jvp, jacfwd, hessian, forward_ad dual tensors), a wrong derivative. Refused in every Autograd kernel,
// so Python and C++ callers and functorch's wrapped tensors alike get the error.
bool has_tangent(const Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }
bool has_tangent(const OptTensor& t) { return t.has_value() && has_tangent(*t); }

template <typename... Ts> void refuse_forward_ad(const char* op, const Ts&... inputs) {
  TORCH_CHECK_NOT_IMPLEMENTED(!(has_tangent(inputs) || ...), "ltl_ext.", op, ": forward-mode AD (torch.func.jvp / "
                              "jacfwd / hessian, forward_ad dual tensors) is not supported; use reverse mode "
                              "(backward, torch.func.grad / jacrev / vjp)");
}

// The backward nodes are written by hand, as PyTorch's generated ones (SigmoidBackward0, ...): the saved tensors
// are SavedVariables (saved-tensor hooks, version checks, "backward through the graph a second time" all as for
// any node) and everything else plain members. A torch::autograd::Function costs microseconds more per call (its
// context keeps the scalars as string-keyed IValues, the inputs' metadata, a node per call even without grad).
// Edges: one per tensor argument, in the op's argument order; an absent optional is an invalid edge (no gradient).
// Not supported: forward-mode AD (refused: refuse_forward_ad), double backward (refused when attempted:
// differentiable_once), compiled autograd (these nodes have no compiled_args).

// ---- lif_fwd -----------------------------------------------------------------------------------------------------
// Edges: 0 x, 1 beta, 2 alpha, 3 threshold, 4 v0. Inputs (the op's outputs): 0 spikes, 1 v_final.
struct LifBackward : public Node {
  SavedLif saved_;

  std::string name() const override { return "LifBackward"; }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    saved_.release();
  }

  variable_list apply(variable_list&& grads) override {
    variable_list out(5);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    bool need[5];
    bool any = false;
    for (size_t i = 0; i < 5; ++i) any |= (need[i] = task_should_compute_output(i));
    if (!any) return out;
    const LifScalars& s = saved_.s;
    // unpacked before below_autograd: a non-reentrant torch.utils.checkpoint recomputes the forward at the first
    // unpack, and with autograd off there it would save nothing (CheckpointError)
    const Tensor x = saved_.x.unpack(), beta = saved_.beta.unpack(), alpha = saved_.alpha.unpack(),
                 threshold = saved_.threshold.unpack(), v0 = saved_.v0.unpack();
    auto [gx, g_v0, g_beta, g_alpha, g_threshold] = below_autograd([&] {
      return lif_bwd_op().call(opt(grads[0]), opt(grads[1]), x, opt(beta), opt(alpha), opt(threshold), opt(v0),
                               s.beta_s, s.alpha_s, s.threshold_s, s.reset, s.v_reset, s.surrogate,
                               s.surrogate_alpha, s.detach_reset, need[4], need[1], need[2], need[3]);
    });
    take_lif_grads(out, need, 0, gx, g_beta, g_alpha, g_threshold, g_v0);
    return differentiable_once(*this, std::move(out), "lif");
  }
};

std::tuple<Tensor, Tensor> lif_fwd_autograd(const Tensor& x, const OptTensor& beta, const OptTensor& alpha,
                                            const OptTensor& threshold, const OptTensor& v0, double beta_s,
                                            double alpha_s, double threshold_s, Str reset, double v_reset,
                                            Str surrogate, std::optional<double> surrogate_alpha, bool detach_reset) {
  refuse_forward_ad("lif", x, beta, alpha, threshold, v0);
  Tensor spikes, v;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(spikes, v) = lif_fwd_op().call(x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset,
                                            v_reset, surrogate, surrogate_alpha, detach_reset);
  }
  if (torch::autograd::compute_requires_grad(x, beta, alpha, threshold, v0)) {
    auto node = make_node<LifBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(x, beta, alpha, threshold, v0));
    node->saved_.save(x, beta, alpha, threshold, v0,
                      {beta_s, alpha_s, threshold_s, v_reset, surrogate_alpha, std::string(reset),
                       std::string(surrogate), detach_reset});
    torch::autograd::set_history(spikes, node);  // an unused output's gradient stays undefined (no [T, N] zeros)
    torch::autograd::set_history(v, node);
  }
  return {std::move(spikes), std::move(v)};
}

// ---- tandem_offline_fwd ----------------------------------------------------------------------------------------
// Edges: 0 x, 1 target, 2 beta, 3 alpha, 4 threshold, 5 v0. Input: 0 loss (spikes and err are not differentiable).
struct OfflineBackward : public Node {
  SavedLif saved_;
  SavedVariable err_;
  std::vector<int64_t> target_sizes_;
  at::ScalarType target_dtype_ = at::kFloat;

  std::string name() const override { return "TandemOfflineBackward"; }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    saved_.release();
    err_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    variable_list out(6);
    const Tensor& g_loss = grads[0];
    if (!g_loss.defined()) return out;
    bool need[6];
    bool any = false;
    for (size_t i = 0; i < 6; ++i) any |= (need[i] = task_should_compute_output(i));
    if (!any) return out;
    const Tensor err = err_.unpack();
    if (need[0] || need[2] || need[3] || need[4] || need[5]) {
      const LifScalars& s = saved_.s;
      auto [gx, g_v0, g_beta, g_alpha, g_threshold] = below_autograd([&] {
        return offline_bwd_op().call(g_loss, saved_.x.unpack(), err, opt(saved_.beta.unpack()),
                                     opt(saved_.alpha.unpack()), opt(saved_.threshold.unpack()),
                                     opt(saved_.v0.unpack()), s.beta_s, s.alpha_s, s.threshold_s, s.reset, s.v_reset,
                                     s.surrogate, s.surrogate_alpha, s.detach_reset, need[5], need[2], need[3],
                                     need[4]);
      });
      take_lif_grads(out, need, 1, gx, g_beta, g_alpha, g_threshold, g_v0);
    }
    if (need[1])  // dL/dy = -2 (r - y) / N
      out[1] = at::mul(err, at::mul(g_loss.to(err.scalar_type()), -2.0 / std::max<double>(err.numel(), 1.0)))
                   .view(target_sizes_)
                   .to(target_dtype_);
    return differentiable_once(*this, std::move(out), "tandem_loss (offline)");
  }
};

std::tuple<Tensor, Tensor, Tensor> offline_fwd_autograd(const Tensor& x, const Tensor& target, const OptTensor& beta,
                                                        const OptTensor& alpha, const OptTensor& threshold,
                                                        const OptTensor& v0, double beta_s, double alpha_s,
                                                        double threshold_s, Str reset, double v_reset, Str surrogate,
                                                        std::optional<double> surrogate_alpha, bool detach_reset) {
  refuse_forward_ad("tandem_loss", x, target, beta, alpha, threshold, v0);
  Tensor spikes, loss, err;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(spikes, loss, err) = offline_fwd_op().call(x, target, beta, alpha, threshold, v0, beta_s, alpha_s,
                                                        threshold_s, reset, v_reset, surrogate, surrogate_alpha,
                                                        detach_reset);
  }
  if (torch::autograd::compute_requires_grad(x, target, beta, alpha, threshold, v0)) {
    auto node = make_node<OfflineBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(x, target, beta, alpha, threshold, v0));
    node->saved_.save(x, beta, alpha, threshold, v0,
                      {beta_s, alpha_s, threshold_s, v_reset, surrogate_alpha, std::string(reset),
                       std::string(surrogate), detach_reset});
    node->err_ = SavedVariable(err, false);  // a non-differentiable output: no grad_fn, saved as a plain tensor
    node->target_sizes_ = target.sizes().vec();
    node->target_dtype_ = target.scalar_type();
    torch::autograd::set_history(loss, node);
  }
  return {std::move(spikes), std::move(loss), std::move(err)};
}

// ---- tandem_online -----------------------------------------------------------------------------------------------
// True when dL/dloss is exactly 1 and reading it costs nothing: a plain CPU scalar (not a fake or functional
// tensor while tracing, not on a GPU where reading it would be a sync). Then the saved gradients are the answer.
bool is_plain_one(const Tensor& g) {
  constexpr auto traced = c10::DispatchKeySet({c10::DispatchKey::Python, c10::DispatchKey::Functionalize,
                                               c10::DispatchKey::PythonTLSSnapshot});
  if (!g.device().is_cpu() || g.numel() != 1 || g.key_set().has_any(traced) || !g.has_storage()) return false;
  return g.item<double>() == 1.0;
}

// Edges: 0 x, 1 target, 2 beta, 3 alpha, 4 threshold, and for tandem_online 5 v0, 6 count0 (state: no gradient
// crosses time). Input: 0 loss. Saved: the local gradients the forward wrote for dL/dloss = 1 (x, target, beta,
// alpha, threshold), in the math type.
struct OnlineBackward : public Node {
  SavedVariable saved_[5];
  at::ScalarType x_dtype_ = at::kFloat;

  std::string name() const override { return "TandemOnlineBackward"; }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : saved_) s.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    variable_list out(num_outputs());
    const Tensor& g_loss = grads[0];
    if (!g_loss.defined()) return out;
    bool one = false, checked = false;
    for (size_t i = 0; i < 5; ++i) {  // x, target, beta, alpha, threshold: the forward computed what is needed
      if (!task_should_compute_output(i)) continue;
      if (!checked) one = is_plain_one(g_loss), checked = true;
      const Tensor s = saved_[i].unpack();
      // scaled in the math type, then rounded once: a loss scale is applied before float16 can flush anything
      const Tensor g = one ? s : at::mul(s, g_loss.to(s.scalar_type()));
      out[i] = i == 0 ? g.to(x_dtype_) : g;
    }
    return differentiable_once(*this, std::move(out), "tandem_loss (online)");
  }
};

// The backward node of either online op, when one of `inputs` needs a gradient: it saves the local gradients the
// forward wrote and scales them by dL/dloss.
template <typename... Inputs>
void online_history(const Tensor& x, const Tensor& loss, const Tensor& gx, const Tensor& g_target,
                    const Tensor& g_beta, const Tensor& g_alpha, const Tensor& g_threshold, const Inputs&... inputs) {
  if (!torch::autograd::compute_requires_grad(inputs...)) return;
  auto node = make_node<OnlineBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(inputs...));
  // the returned gradients are not differentiable outputs (no grad_fn): saved as plain tensors
  node->saved_[0] = SavedVariable(gx, false);
  node->saved_[1] = SavedVariable(g_target, false);
  node->saved_[2] = SavedVariable(g_beta, false);
  node->saved_[3] = SavedVariable(g_alpha, false);
  node->saved_[4] = SavedVariable(g_threshold, false);
  node->x_dtype_ = x.scalar_type();
  torch::autograd::set_history(loss, node);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> online_autograd(
    const Tensor& x, const Tensor& target, const OptTensor& beta, const OptTensor& alpha, const OptTensor& threshold,
    const OptTensor& v0, const OptTensor& count0, double beta_s, double alpha_s, double threshold_s, Str reset,
    double v_reset, Str surrogate, std::optional<double> surrogate_alpha, int64_t t0, int64_t warmup, bool need_state,
    bool need_grad_x, bool need_beta, bool need_alpha, bool need_threshold, bool need_target) {
  refuse_forward_ad("tandem_loss (online)", x, target, beta, alpha, threshold, v0, count0);
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> o;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    o = online_op().call(x, target, beta, alpha, threshold, v0, count0, beta_s, alpha_s, threshold_s, reset, v_reset,
                         surrogate, surrogate_alpha, t0, warmup, need_state, need_grad_x, need_beta, need_alpha,
                         need_threshold, need_target);
  }
  online_history(x, std::get<1>(o), std::get<4>(o), std::get<8>(o), std::get<5>(o), std::get<6>(o), std::get<7>(o),
                 x, target, beta, alpha, threshold, v0, count0);
  return o;
}

// The in-place form: v and count are state, never differentiated, so they may not require a gradient; autograd
// learns of their update through their version counters (a graph that saved them then refuses to use them).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> online_inplace_autograd(
    const Tensor& x, const Tensor& target, const OptTensor& beta, const OptTensor& alpha, const OptTensor& threshold,
    const Tensor& v, const Tensor& count, double beta_s, double alpha_s, double threshold_s, Str reset,
    double v_reset, Str surrogate, std::optional<double> surrogate_alpha, int64_t t0, int64_t warmup,
    bool need_grad_x, bool need_beta, bool need_alpha, bool need_threshold, bool need_target) {
  TORCH_CHECK_VALUE(!v.requires_grad() && !count.requires_grad(), "ltl_ext.tandem: the state v and count are "
                    "updated in place and carry no gradient (none crosses time); pass them detached");
  refuse_forward_ad("tandem_block_", x, target, beta, alpha, threshold, v, count);
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> o;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    o = online_inplace_op().call(x, target, beta, alpha, threshold, v, count, beta_s, alpha_s, threshold_s, reset,
                                 v_reset, surrogate, surrogate_alpha, t0, warmup, need_grad_x, need_beta, need_alpha,
                                 need_threshold, need_target);
  }
  torch::autograd::impl::bump_version(v);
  torch::autograd::impl::bump_version(count);
  online_history(x, std::get<1>(o), std::get<2>(o), std::get<6>(o), std::get<3>(o), std::get<4>(o), std::get<5>(o),
                 x, target, beta, alpha, threshold);
  return o;
}

}  // namespace
}  // namespace ltl

TORCH_LIBRARY_IMPL(ltl_ext, Autograd, m) {
  m.impl("lif_fwd", &ltl::lif_fwd_autograd);
  m.impl("tandem_offline_fwd", &ltl::offline_fwd_autograd);
  m.impl("tandem_online", &ltl::online_autograd);
  m.impl("tandem_online_", &ltl::online_inplace_autograd);
}
