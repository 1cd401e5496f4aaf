// Multi-step LIF on the CPU, baseline build (every dtype) and the run-time dispatch to the AVX2 float32 build.
// The kernels themselves are in lif_cpu_kernel.h.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "ltl/lif_kernels.h"
#include "lif_cpu_kernel.h"

namespace ltl {

// lif_cpu_avx2.cpp
bool cpu_has_avx2();
bool lif_forward_cpu_avx2(const LifLaunch& p);   // false: not compiled for AVX2 / not float
bool lif_backward_cpu_avx2(const LifLaunch& p);

namespace {

template <typename F>
void dtype_switch(DType d, F&& f) {
  switch (d) {
    case DType::Half: f(c10::Half()); break;
    case DType::BFloat16: f(c10::BFloat16()); break;
    case DType::Float: f(float()); break;
    default: f(double()); break;
  }
}

}  // namespace

void lif_forward_cpu(const LifLaunch& p) {
  if (p.N == 0 || p.T == 0) return;
  if (p.dtype == DType::Float && cpu_has_avx2() && lif_forward_cpu_avx2(p)) return;
  dtype_switch(p.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    LTL_RESET_SWITCH(p.reset, R, [&] { forward_impl<scalar_t, R>(p); });
  });
}

void lif_backward_cpu(const LifLaunch& p) {
  if (p.N == 0 || p.T == 0) return;
  if (p.dtype == DType::Float && cpu_has_avx2() && lif_backward_cpu_avx2(p)) return;
  const bool params = p.grad_beta || p.grad_alpha || p.grad_theta;
  dtype_switch(p.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    LTL_RESET_SWITCH(p.reset, R, [&] {
      LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
        if (params) backward_impl<scalar_t, R, K, true>(p);
        else backward_impl<scalar_t, R, K, false>(p);
      });
    });
  });
}

}  // namespace ltl
