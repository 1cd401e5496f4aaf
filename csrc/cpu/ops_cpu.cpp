// CPU registration of the ltl_ext ops (floor 3): csrc/op_impl.h's bodies around run_cpu (csrc/cpu/kernels_*.cpp).
#include "../op_impl.h"

namespace ltl {
namespace {
struct CpuDevice {
  struct Guard {
    explicit Guard(const at::Tensor&) {}
  };
  static void run(Kernel k, Call& c) { run_cpu(k, c.p); }
};
}  // namespace
}  // namespace ltl

TORCH_LIBRARY_IMPL(ltl_ext, CPU, m) { ltl::register_ops<ltl::CpuDevice>(m); }
