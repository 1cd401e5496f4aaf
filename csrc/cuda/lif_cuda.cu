// Multi-step LIF on CUDA (floor 2): one thread per neuron, the time loop inside, plain pointers + stream (no torch
// headers, so this file compiles with nvcc alone). Math: ltl/lif_math.h, in float for half/bf16 (the build passes
// -D__CUDA_NO_HALF_OPERATORS__, so half values are only converted, never operated on).
//
// Forward reads x and writes spikes + v_final. Backward recomputes H into shared memory (layout [t][thread],
// conflict-free) or, for very long T, into a [T, N] global scratch, then runs BPTT in reverse reading x (only for
// grad_alpha) and grad_spikes and writing grad_x: the same [T, N] traffic as the CPU kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ltl/lif_kernels.h"
#include "device_common.cuh"

namespace ltl {
namespace {

constexpr int kFwdThreads = 256;
constexpr int kBwdThreads = 128;
constexpr int64_t kSmemBytes = 48 * 1024;  // no opt-in needed

template <typename S, Reset R>
__global__ void __launch_bounds__(kFwdThreads)
lif_fwd_kernel(const S* __restrict__ x, S* __restrict__ spikes, S* __restrict__ v_final, Params<typename Acc<S>::type> P,
               int64_t T, int64_t N) {
  using acc_t = typename Acc<S>::type;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const acc_t beta = P.b(i), alpha = P.a(i), theta = P.th(i);
  acc_t v = P.v(i);
#pragma unroll 4
  for (int64_t t = 0; t < T; ++t) {
    const acc_t s = lif_step<R>(v, to_acc(x[t * N + i]), beta, alpha, theta, P.v_reset);
    spikes[t * N + i] = from_acc<S>(s);
  }
  v_final[i] = from_acc<S>(v);
}

// H storage: shared memory [t][threadIdx] (stride blockDim) or global scratch [t][i] (stride N).
template <typename S, Reset R, Surrogate K, bool PARAMS>
__global__ void __launch_bounds__(kBwdThreads)
lif_bwd_kernel(const S* __restrict__ x, const S* __restrict__ gs, const S* __restrict__ gvf, S* __restrict__ gx,
               typename Acc<S>::type* __restrict__ g_v0, typename Acc<S>::type* __restrict__ g_beta,
               typename Acc<S>::type* __restrict__ g_alpha, typename Acc<S>::type* __restrict__ g_theta,
               typename Acc<S>::type* __restrict__ scratch, Params<typename Acc<S>::type> P, bool detach, int64_t T,
               int64_t N) {
  using acc_t = typename Acc<S>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  acc_t* H;
  int64_t stride;
  if (scratch) {
    H = scratch + i;
    stride = N;
  } else {
    H = reinterpret_cast<acc_t*>(smem_raw) + threadIdx.x;
    stride = blockDim.x;
  }
  const acc_t beta = P.b(i), alpha = P.a(i), theta = P.th(i), vr = P.v_reset;
  const acc_t v0 = P.v(i);
  acc_t v = v0;
#pragma unroll 4
  for (int64_t t = 0; t < T; ++t) {
    acc_t h;
    lif_step<R>(v, to_acc(x[t * N + i]), beta, alpha, theta, vr, &h);
    H[t * stride] = h;
  }
  acc_t gv = gvf ? to_acc(gvf[i]) : acc_t(0);
  acc_t gb = 0, ga = 0, gt = 0;
  // unrolled so several grad_spikes loads are in flight per thread (one per thread cannot cover HBM latency)
#pragma unroll 4
  for (int64_t t = T - 1; t >= 0; --t) {
    const acc_t h = H[t * stride];
    const acc_t psi = surrogate_grad<K>(h - theta, P.sa);
    const acc_t g_s = gs ? to_acc(gs[t * N + i]) : acc_t(0);
    const LifGradStep<acc_t> g = lif_backward_step<R>(h, psi, g_s, gv, theta, vr, detach);
    gx[t * N + i] = from_acc<S>(alpha * g.gh);
    if (PARAMS) {
      gt += g.g_theta;
      acc_t vprev = v0;
      if (t > 0) {
        const acc_t hp = H[(t - 1) * stride];
        vprev = reset_v<R>(hp, fires(hp, theta), theta, vr);
      }
      gb += g.gh * vprev;
      ga += g.gh * to_acc(x[t * N + i]);
    }
    gv = beta * g.gh;
  }
  if (g_v0) g_v0[i] = gv;
  if (PARAMS) {
    if (g_beta) g_beta[i] = gb;
    if (g_alpha) g_alpha[i] = ga;
    if (g_theta) g_theta[i] = gt;
  }
}

template <typename F> void dtype_switch(DType d, F&& f) {
  switch (d) {
    case DType::Half: f(__half()); break;
    case DType::BFloat16: f(__nv_bfloat16()); break;
    case DType::Float: f(float()); break;
    default: f(double()); break;
  }
}

int64_t acc_bytes(DType d) { return d == DType::Double ? 8 : 4; }
int64_t smem_bytes(const LifLaunch& p) { return p.T * kBwdThreads * acc_bytes(p.dtype); }

const char* last_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace

int64_t lif_backward_cuda_scratch_bytes(const LifLaunch& p) {
  return smem_bytes(p) <= kSmemBytes ? 0 : p.T * p.N * acc_bytes(p.dtype);
}

const char* lif_forward_cuda(const LifLaunch& p, void* stream) {
  if (p.N == 0 || p.T == 0) return nullptr;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>((p.N + kFwdThreads - 1) / kFwdThreads);
  dtype_switch(p.dtype, [&](auto tag) {
    using S = decltype(tag);
    using acc_t = typename Acc<S>::type;
    LTL_RESET_SWITCH(p.reset, R, [&] {
      lif_fwd_kernel<S, R><<<blocks, kFwdThreads, 0, st>>>(static_cast<const S*>(p.x), static_cast<S*>(p.spikes),
                                                            static_cast<S*>(p.v_final), params_of<acc_t>(p), p.T, p.N);
    });
  });
  return last_error();
}

const char* lif_backward_cuda(const LifLaunch& p, void* stream) {
  if (p.N == 0 || p.T == 0) return nullptr;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>((p.N + kBwdThreads - 1) / kBwdThreads);
  const bool global = smem_bytes(p) > kSmemBytes;
  if (global && p.scratch == nullptr) return "ltl_ext lif_backward_cuda: T too long for shared memory and no scratch";
  const size_t smem = global ? 0 : static_cast<size_t>(smem_bytes(p));
  const bool params = p.grad_beta || p.grad_alpha || p.grad_theta;
  dtype_switch(p.dtype, [&](auto tag) {
    using S = decltype(tag);
    using acc_t = typename Acc<S>::type;
    LTL_RESET_SWITCH(p.reset, R, [&] {
      LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
        auto launch = [&](auto kernel) {
          kernel<<<blocks, kBwdThreads, smem, st>>>(
              static_cast<const S*>(p.x), static_cast<const S*>(p.grad_spikes), static_cast<const S*>(p.grad_v),
              static_cast<S*>(p.grad_x), static_cast<acc_t*>(p.grad_v0), static_cast<acc_t*>(p.grad_beta),
              static_cast<acc_t*>(p.grad_alpha), static_cast<acc_t*>(p.grad_theta),
              global ? static_cast<acc_t*>(p.scratch) : nullptr, params_of<acc_t>(p), p.detach_reset, p.T, p.N);
        };
        if (params) launch(lif_bwd_kernel<S, R, K, true>);
        else launch(lif_bwd_kernel<S, R, K, false>);
      });
    });
  });
  return last_error();
}

}  // namespace ltl
