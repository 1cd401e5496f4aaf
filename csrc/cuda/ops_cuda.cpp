// CUDA registration of the ltl_ext ops (floor 3): csrc/op_impl.h's bodies around run_cuda (kernels.cu), with the
// device guard, the current stream, the backward's global scratch and the launch check. Compiled only in the
// CUDA flavour.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../op_impl.h"

namespace ltl {
namespace {
struct CudaDevice {
  struct Guard {
    c10::cuda::CUDAGuard guard;
    explicit Guard(const at::Tensor& x) : guard(x.device()) {}
  };
  static void run(Kernel k, Call& c) {
    const int64_t bytes = cuda_scratch_bytes(k, c.p);
    if (bytes > 0) {
      c.scratch = at::empty({bytes}, c.x.options().dtype(at::kByte));
      c.p.scratch = c.scratch.data_ptr();
    }
    const char* err = run_cuda(k, c.p, at::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, c.op, ": CUDA kernel launch failed: ", err ? err : "");
  }
};
}  // namespace
}  // namespace ltl

TORCH_LIBRARY_IMPL(ltl_ext, CUDA, m) { ltl::register_ops<ltl::CudaDevice>(m); }
