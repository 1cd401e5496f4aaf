// Fused local tandem loss on CUDA (floor 2): one thread per neuron, the time loop inside, plain pointers + stream
// (no torch headers: this file compiles with nvcc alone). Math: ltl/lif_math.h + ltl/tandem_math.h, in float for
// half/bf16 (the build passes -D__CUDA_NO_HALF_OPERATORS__: half values are only converted).
//
// Offline forward reads x, writes spikes and err [N]; offline backward recomputes H into shared memory ([t][thread],
// conflict-free) or, for very long T, a [T, N] global scratch, then BPTT in reverse with dL/dS = 2 err / (N T) for
// every t, writing grad_x. Online writes spikes and the local grad_x in one pass. The loss: one double partial sum
// per block of kTandemLossBlock threads (fixed tree), then one block sums the partials in a fixed order:
// deterministic, no atomics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ltl/tandem_kernels.h"
#include "device_common.cuh"

namespace ltl {
namespace {

constexpr int kThreads = static_cast<int>(kTandemLossBlock);  // forward / online: one loss partial per block
constexpr int kBwdThreads = 128;
constexpr int64_t kSmemBytes = 48 * 1024;  // no opt-in needed
constexpr int kFinishThreads = 256;

// Sum of `v` over the block (blockDim.x == kThreads, a power of two), in a fixed tree; thread 0 gets it.
__device__ __forceinline__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

// One block: loss = (sum of the partials, in a fixed order) / N, in the math type.
template <typename acc_t>
__global__ void __launch_bounds__(kFinishThreads) finish_loss_kernel(const double* partials, int64_t nb, int64_t N,
                                                                     acc_t* loss) {
  __shared__ double sh[kFinishThreads];
  double v = 0.0;
  for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) v += partials[b];
  const double sum = block_sum(v, sh);
  if (threadIdx.x == 0) *loss = static_cast<acc_t>(sum / static_cast<double>(N));
}

template <typename S, Reset R>
__global__ void __launch_bounds__(kThreads)
    offline_fwd_kernel(const S* __restrict__ x, S* __restrict__ spikes, const typename Acc<S>::type* __restrict__ y,
                       typename Acc<S>::type* __restrict__ err, double* __restrict__ partials,
                       Params<typename Acc<S>::type> p, int64_t T, int64_t N) {
  using acc_t = typename Acc<S>::type;
  __shared__ double sh[kThreads];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double part = 0.0;
  if (i < N) {
    const acc_t b = p.b(i), a = p.a(i), th = p.th(i);
    acc_t v = p.v(i), cnt = acc_t(0);
    for (int64_t t = 0; t < T; ++t) {
      const acc_t h = charge(v, to_acc(x[t * N + i]), b, a);
      const acc_t s = fires(h, th);
      v = reset_v<R>(h, s, th, p.v_reset);
      cnt += s;
      spikes[t * N + i] = from_acc<S>(s);
    }
    const acc_t d = offline_rate_error(cnt, static_cast<acc_t>(T), y[i]);
    err[i] = d;
    part = static_cast<double>(d) * static_cast<double>(d);
  }
  const double sum = block_sum(part, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// H in shared memory ([t][thread]) unless `scratch` ([T, N]) is given.
template <typename S, Reset R, Surrogate K>
__global__ void __launch_bounds__(kBwdThreads)
    offline_bwd_kernel(const S* __restrict__ x, const typename Acc<S>::type* __restrict__ err,
                       const typename Acc<S>::type* __restrict__ grad_loss, S* __restrict__ gx,
                       typename Acc<S>::type* __restrict__ g_v0, typename Acc<S>::type* __restrict__ g_beta,
                       typename Acc<S>::type* __restrict__ g_alpha, typename Acc<S>::type* __restrict__ g_theta,
                       typename Acc<S>::type* __restrict__ scratch, Params<typename Acc<S>::type> p,
                       bool detach, int64_t T, int64_t N) {
  using acc_t = typename Acc<S>::type;
  extern __shared__ unsigned char smem_raw[];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  acc_t* H = scratch ? scratch + i : reinterpret_cast<acc_t*>(smem_raw) + threadIdx.x;
  const int64_t hs = scratch ? N : blockDim.x;  // stride of H between time steps
  const acc_t b = p.b(i), a = p.a(i), th = p.th(i), v0 = p.v(i);
  acc_t v = v0;
  for (int64_t t = 0; t < T; ++t) {
    const acc_t h = charge(v, to_acc(x[t * N + i]), b, a);
    v = reset_v<R>(h, fires(h, th), th, p.v_reset);
    H[t * hs] = h;
  }
  const acc_t scale = static_cast<acc_t>(2.0 * static_cast<double>(*grad_loss) /
                                         (static_cast<double>(N) * static_cast<double>(T)));
  const acc_t gs = offline_gs(err[i], scale);
  acc_t gv = acc_t(0), gb = acc_t(0), ga = acc_t(0), gt = acc_t(0);
  for (int64_t t = T - 1; t >= 0; --t) {
    const acc_t h = H[t * hs];
    const acc_t psi = surrogate_grad<K>(h - th, p.sa);
    const LifGradStep<acc_t> g = lif_backward_step<R>(h, psi, gs, gv, th, p.v_reset, detach);
    gx[t * N + i] = from_acc<S>(a * g.gh);
    gt += g.g_theta;
    if (g_alpha) ga += g.gh * to_acc(x[t * N + i]);
    if (g_beta) {
      acc_t vp = v0;
      if (t > 0) {
        const acc_t hp = H[(t - 1) * hs];
        vp = reset_v<R>(hp, fires(hp, th), th, p.v_reset);
      }
      gb += g.gh * vp;
    }
    gv = b * g.gh;
  }
  if (g_v0) g_v0[i] = gv;
  if (g_beta) g_beta[i] = gb;
  if (g_alpha) g_alpha[i] = ga;
  if (g_theta) g_theta[i] = gt;
}

template <typename acc_t> struct OnlineOut {
  acc_t *v_out, *count_out, *g_beta, *g_alpha, *g_theta, *g_y;
};

template <typename S, Reset R, Surrogate K, bool GRAD>
__global__ void __launch_bounds__(kThreads)
    online_kernel(const S* __restrict__ x, S* __restrict__ spikes, typename Acc<S>::type* __restrict__ gx,
                  const typename Acc<S>::type* __restrict__ y, const typename Acc<S>::type* __restrict__ c0,
                  double* __restrict__ partials, OnlineOut<typename Acc<S>::type> o,
                  Params<typename Acc<S>::type> p, int64_t t0, int64_t warmup, int64_t T, int64_t N) {
  using acc_t = typename Acc<S>::type;
  __shared__ double sh[kThreads];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double part = 0.0;
  if (i < N) {
    const acc_t b = p.b(i), a = p.a(i), th = p.th(i), yi = y[i];
    const acc_t inv_n = static_cast<acc_t>(1.0 / static_cast<double>(N));
    acc_t v = p.v(i), cnt = c0 ? c0[i] : acc_t(0);
    acc_t ls = acc_t(0), gb = acc_t(0), ga = acc_t(0), gt = acc_t(0), gy = acc_t(0);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t step = t0 + t;
      const acc_t xj = to_acc(x[t * N + i]), vp = v;
      const acc_t h = charge(vp, xj, b, a);
      const acc_t s = fires(h, th);
      v = reset_v<R>(h, s, th, p.v_reset);
      cnt += s;
      spikes[t * N + i] = from_acc<S>(s);
      acc_t gh = acc_t(0);
      if (step >= warmup) {
        const OnlineTerm<acc_t> term = online_term(cnt, static_cast<acc_t>(step + 1), yi, inv_n);
        ls += term.d * term.d;
        if (GRAD) {
          gh = term.gs * surrogate_grad<K>(h - th, p.sa);
          gb += gh * vp;
          ga += gh * xj;
          gt -= gh;
          gy -= acc_t(2) * term.d * inv_n;
        }
      }
      if (gx) gx[t * N + i] = a * gh;  // math type: see TandemLaunch::grad_x
    }
    part = static_cast<double>(ls);
    if (o.v_out) o.v_out[i] = v;
    if (o.count_out) o.count_out[i] = cnt;
    if (o.g_beta) o.g_beta[i] = gb;
    if (o.g_alpha) o.g_alpha[i] = ga;
    if (o.g_theta) o.g_theta[i] = gt;
    if (o.g_y) o.g_y[i] = gy;
  }
  const double sum = block_sum(part, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
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
int64_t smem_bytes(int64_t T, DType d) { return T * kBwdThreads * acc_bytes(d); }

const char* last_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

template <typename S>
void finish_loss(const TandemLaunch& p, cudaStream_t st) {
  using acc_t = typename Acc<S>::type;
  finish_loss_kernel<acc_t><<<1, kFinishThreads, 0, st>>>(static_cast<const double*>(p.partials),
                                                           tandem_loss_blocks(p.N), p.N, static_cast<acc_t*>(p.loss));
}

template <typename S>
void store_nan_loss(const TandemLaunch& p, cudaStream_t st) {  // mean over no neuron: NaN, like torch's mean()
  using acc_t = typename Acc<S>::type;
  finish_loss_kernel<acc_t><<<1, kFinishThreads, 0, st>>>(static_cast<const double*>(p.partials), 0, 0,
                                                           static_cast<acc_t*>(p.loss));  // 0 / 0
}

}  // namespace

int64_t tandem_cuda_scratch(const TandemLaunch& p) {
  return smem_bytes(p.T, p.dtype) <= kSmemBytes ? 0 : p.T * p.N;
}

const char* tandem_offline_forward_cuda(const TandemLaunch& p, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>(tandem_loss_blocks(p.N));
  dtype_switch(p.dtype, [&](auto tag) {
    using S = decltype(tag);
    using acc_t = typename Acc<S>::type;
    if (p.N == 0) return store_nan_loss<S>(p, st);
    LTL_RESET_SWITCH(p.reset, R, [&] {
      offline_fwd_kernel<S, R><<<blocks, kThreads, 0, st>>>(
          static_cast<const S*>(p.x), static_cast<S*>(p.spikes), static_cast<const acc_t*>(p.target),
          static_cast<acc_t*>(p.err), static_cast<double*>(p.partials), params_of<acc_t>(p), p.T, p.N);
    });
    finish_loss<S>(p, st);
  });
  return last_error();
}

const char* tandem_offline_backward_cuda(const TandemLaunch& p, void* stream) {
  if (p.N == 0 || p.T == 0) return nullptr;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>((p.N + kBwdThreads - 1) / kBwdThreads);
  const bool global = smem_bytes(p.T, p.dtype) > kSmemBytes;
  if (global && p.scratch == nullptr) return "ltl_ext tandem_offline_backward_cuda: T too long for shared memory "
                                             "and no scratch";
  const size_t smem = global ? 0 : static_cast<size_t>(smem_bytes(p.T, p.dtype));
  dtype_switch(p.dtype, [&](auto tag) {
    using S = decltype(tag);
    using acc_t = typename Acc<S>::type;
    LTL_RESET_SWITCH(p.reset, R, [&] {
      LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
        offline_bwd_kernel<S, R, K><<<blocks, kBwdThreads, smem, st>>>(
            static_cast<const S*>(p.x), static_cast<const acc_t*>(p.err), static_cast<const acc_t*>(p.grad_loss),
            static_cast<S*>(p.grad_x), static_cast<acc_t*>(p.grad_v0), static_cast<acc_t*>(p.grad_beta),
            static_cast<acc_t*>(p.grad_alpha), static_cast<acc_t*>(p.grad_theta),
            global ? static_cast<acc_t*>(p.scratch) : nullptr, params_of<acc_t>(p), p.detach_reset, p.T, p.N);
      });
    });
  });
  return last_error();
}

const char* tandem_online_cuda(const TandemLaunch& p, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>(tandem_loss_blocks(p.N));
  const bool grad = p.grad_x || p.grad_beta || p.grad_alpha || p.grad_theta || p.grad_target;
  dtype_switch(p.dtype, [&](auto tag) {
    using S = decltype(tag);
    using acc_t = typename Acc<S>::type;
    if (p.N == 0) return store_nan_loss<S>(p, st);
    const OnlineOut<acc_t> o{static_cast<acc_t*>(p.v_out), static_cast<acc_t*>(p.count_out),
                             static_cast<acc_t*>(p.grad_beta), static_cast<acc_t*>(p.grad_alpha),
                             static_cast<acc_t*>(p.grad_theta), static_cast<acc_t*>(p.grad_target)};
    LTL_RESET_SWITCH(p.reset, R, [&] {
      LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
        auto launch = [&](auto kernel) {
          kernel<<<blocks, kThreads, 0, st>>>(static_cast<const S*>(p.x), static_cast<S*>(p.spikes),
                                              static_cast<acc_t*>(p.grad_x), static_cast<const acc_t*>(p.target),
                                              static_cast<const acc_t*>(p.count0), static_cast<double*>(p.partials),
                                              o, params_of<acc_t>(p), p.t0, p.warmup, p.T, p.N);
        };
        if (grad) launch(online_kernel<S, R, K, true>);
        else launch(online_kernel<S, R, K, false>);
      });
    });
    finish_loss<S>(p, st);
  });
  return last_error();
}

}  // namespace ltl
