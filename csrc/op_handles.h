// The typed dispatcher handles of the ltl_ext ops, for the C++ code that calls them through the dispatcher
// (csrc/autograd.cpp: the Autograd kernels and backward nodes; csrc/bindings.cpp: the fast Python entries). Each
// is looked up once (a string-keyed lookup per call costs microseconds); typed<Sig>() checks its signature against
// the schema in csrc/ops.cpp at first use, so a signature here cannot drift from the op unnoticed.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace ltl {
namespace handles {

using at::Tensor;
using OptT = std::optional<Tensor>;
using Str = c10::string_view;

using LifFwdSig = std::tuple<Tensor, Tensor>(const Tensor&, const OptT&, const OptT&, const OptT&, const OptT&, double,
                                             double, double, Str, double, Str, std::optional<double>, bool);
using LifBwdSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const OptT&, const OptT&, const Tensor&, const OptT&, const OptT&, const OptT&, const OptT&, double, double,
    double, Str, double, Str, std::optional<double>, bool, bool, bool, bool, bool);
using OfflineFwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const OptT&, const OptT&,
                                                         const OptT&, const OptT&, double, double, double, Str, double,
                                                         Str, std::optional<double>, bool);
using OfflineBwdSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const Tensor&, const OptT&, const OptT&, const OptT&, const OptT&, double, double,
    double, Str, double, Str, std::optional<double>, bool, bool, bool, bool, bool);
using OnlineSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const OptT&, const OptT&, const OptT&, const OptT&, const OptT&, double, double,
    double, Str, double, Str, std::optional<double>, int64_t, int64_t, bool, bool, bool, bool, bool, bool);
using OnlineInPlaceSig = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const OptT&, const OptT&, const OptT&, const Tensor&, const Tensor&, double, double,
    double, Str, double, Str, std::optional<double>, int64_t, int64_t, bool, bool, bool, bool, bool);

template <typename Sig>
c10::TypedOperatorHandle<Sig> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

}  // namespace handles

// FN() -> the typed handle of op NAME, looked up at its first call.
#define LTL_OP_HANDLE(FN, SIG, NAME)                                       \
  inline c10::TypedOperatorHandle<handles::SIG> FN() {                    \
    static const auto h = handles::find<handles::SIG>("ltl_ext::" NAME);  \
    return h;                                                             \
  }
LTL_OP_HANDLE(lif_fwd_op, LifFwdSig, "lif_fwd")
LTL_OP_HANDLE(lif_bwd_op, LifBwdSig, "lif_bwd")
LTL_OP_HANDLE(offline_fwd_op, OfflineFwdSig, "tandem_offline_fwd")
LTL_OP_HANDLE(offline_bwd_op, OfflineBwdSig, "tandem_offline_bwd")
LTL_OP_HANDLE(online_op, OnlineSig, "tandem_online")
LTL_OP_HANDLE(online_inplace_op, OnlineInPlaceSig, "tandem_online_")
#undef LTL_OP_HANDLE

}  // namespace ltl
