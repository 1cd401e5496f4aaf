// The fused kernels on CUDA (floor 2): one thread per neuron, the time loop inside (unrolled 4x, so several
// loads are in flight per thread: one cannot cover HBM latency), plain pointers + stream (no torch headers: this
// file compiles with nvcc alone). Math: ltl/lif_math.h + ltl/tandem_math.h, in float for half/bf16.
//
//   forward_kernel   LIF (spikes, v_final) and offline (spikes, err, one loss partial per block).
//   backward_kernel  LIF and offline BPTT, dL/dS[t] from grad_spikes or 2 err / (N T), the loads of kChunk
//                    steps issued ahead of their arithmetic and stores. Long T without a shared-memory cap by
//                    segment checkpointing: H lives in shared memory ([t][thread],
//                    conflict-free) one segment of kSegment(dtype) steps at a time; when T has more than one
//                    segment, a first pass stores V at each segment start in a [segments, N] global scratch, and the
//                    segments are recomputed and reversed from the last to the first.
//   online_kernel    one pass: spikes, the loss, the local gradients.
// The loss: one double partial sum per block of kLossBlock threads (a fixed tree), then one block sums the
// partials in a fixed order: deterministic, no atomics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ltl/kernels.h"
#include "device_common.cuh"

namespace ltl {
namespace {

constexpr int kThreads = static_cast<int>(kLossBlock);  // forward / online: one loss partial per block
constexpr int kBwdThreads = 128;
constexpr int kChunk = 8;  // backward: time steps whose loads are issued together (memory-level parallelism)
constexpr int64_t kSmemBytes = 48 * 1024;  // no opt-in needed
constexpr int kFinishThreads = 256;

// Time steps of H one backward block holds in shared memory at once.
int64_t segment_steps(DType d) { return kSmemBytes / (kBwdThreads * (d == DType::Double ? 8 : 4)); }

// Sum of `v` over the block (blockDim.x a power of two), in a fixed tree; every thread gets it.
__device__ __forceinline__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

// One block: loss = (sum of the partials, in a fixed order) / N, in the math type (0 / 0 = NaN for N = 0).
template <typename acc_t>
__global__ void __launch_bounds__(kFinishThreads) finish_loss_kernel(const double* partials, int64_t nb, int64_t N,
                                                                     acc_t* loss) {
  __shared__ double sh[kFinishThreads];
  double v = 0.0;
  for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) v += partials[b];
  const double sum = block_sum(v, sh);
  if (threadIdx.x == 0) *loss = static_cast<acc_t>(sum / static_cast<double>(N));
}

template <typename S> struct ForwardOut {
  S* spikes;
  S* v_final;                              // LIF
  const typename Acc<S>::type* target;     // offline
  typename Acc<S>::type* err;
  double* partials;
};

template <typename S, Reset R, bool OFFLINE>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const S* __restrict__ x, ForwardOut<S> o, Params<typename Acc<S>::type> p, int64_t T, int64_t N) {
  using acc_t = typename Acc<S>::type;
  __shared__ double sh[OFFLINE ? kThreads : 1];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double part = 0.0;
  if (i < N) {
    const acc_t beta = p.beta.at(i), alpha = p.alpha.at(i), threshold = p.threshold.at(i);
    acc_t v = p.v0.at(i), count = acc_t(0);
#pragma unroll 4
    for (int64_t t = 0; t < T; ++t) {
      const acc_t s = lif_step<R>(v, to_acc(x[t * N + i]), beta, alpha, threshold, p.v_reset);
      count += s;
      o.spikes[t * N + i] = from_acc<S>(s);
    }
    if (!OFFLINE) {
      o.v_final[i] = from_acc<S>(v);
    } else {
      const acc_t d = offline_rate_error(count, static_cast<acc_t>(T), o.target[i]);
      o.err[i] = d;
      part = static_cast<double>(d) * static_cast<double>(d);
    }
  }
  if (OFFLINE) {
    const double sum = block_sum(part, sh);
    if (threadIdx.x == 0) o.partials[blockIdx.x] = sum;
  }
}

template <typename S> struct BackwardArgs {
  using acc_t = typename Acc<S>::type;
  const S* grad_spikes;         // LIF: dL/dS [T, N] (null: zeros)
  const S* grad_v;              // LIF: dL/dv_final [N] (null: zeros)
  const acc_t* err;             // offline: dL/dS[t] = 2 err / (N T) * dL/dloss for every t (null: LIF)
  const acc_t* grad_loss;       // offline: dL/dloss, a device scalar
  S* grad_x;
  acc_t *g_v0, *g_beta, *g_alpha, *g_threshold;
  acc_t* checkpoints;           // [segments, N]: V at each segment start (null: one segment)
  int64_t segment;              // time steps per segment
  bool detach;
};

template <typename S, Reset R, Surrogate K, bool PARAMS>
__global__ void __launch_bounds__(kBwdThreads)
    backward_kernel(const S* __restrict__ x, BackwardArgs<S> a, Params<typename Acc<S>::type> p, int64_t T,
                    int64_t N) {
  using acc_t = typename Acc<S>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  acc_t* H = reinterpret_cast<acc_t*>(smem_raw) + threadIdx.x;  // H[(t - segment start) * blockDim.x]
  const int64_t hs = blockDim.x;
  const acc_t beta = p.beta.at(i), alpha = p.alpha.at(i), threshold = p.threshold.at(i), vr = p.v_reset;
  const acc_t v0 = p.v0.at(i);
  const int64_t L = a.segment, segments = (T + L - 1) / L;
  if (segments > 1) {  // V at each segment start
    acc_t v = v0;
    for (int64_t s = 0; s < segments; ++s) {
      a.checkpoints[s * N + i] = v;
      const int64_t t1 = min(T, (s + 1) * L);
#pragma unroll 4
      for (int64_t t = s * L; t < t1; ++t) lif_step<R>(v, to_acc(x[t * N + i]), beta, alpha, threshold, vr);
    }
  }
  const acc_t gs_offline =
      a.err ? offline_gs(a.err[i], static_cast<acc_t>(2.0 * static_cast<double>(*a.grad_loss) /
                                                      (static_cast<double>(N) * static_cast<double>(T))))
            : acc_t(0);
  acc_t gv = a.grad_v ? to_acc(a.grad_v[i]) : acc_t(0);
  acc_t gb = 0, ga = 0, gt = 0;
  for (int64_t s = segments - 1; s >= 0; --s) {
    const int64_t t0 = s * L, t1 = min(T, t0 + L);
    const acc_t v_start = segments > 1 ? a.checkpoints[s * N + i] : v0;
    acc_t v = v_start;
    for (int64_t c = t0; c < t1; c += kChunk) {  // recompute H over the segment (the forward's arithmetic)
      acc_t xs[kChunk];
#pragma unroll
      for (int k = 0; k < kChunk; ++k) xs[k] = c + k < t1 ? to_acc(x[(c + k) * N + i]) : acc_t(0);
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        if (c + k < t1) {
          acc_t h;
          lif_step<R>(v, xs[k], beta, alpha, threshold, vr, &h);
          H[(c + k - t0) * hs] = h;
        }
      }
    }
    for (int64_t c = t1 - 1; c >= t0; c -= kChunk) {  // steps c, c - 1, ... (at most kChunk, not below t0)
      // every load of the chunk before any store: grad_x may alias grad_spikes for all the compiler knows, so a
      // load after a store could not be hoisted and each step would wait a full memory latency
      acc_t gss[kChunk], xs[kChunk];
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        const int64_t t = c - k;
        gss[k] = t < t0 ? acc_t(0) : a.err ? gs_offline : a.grad_spikes ? to_acc(a.grad_spikes[t * N + i]) : acc_t(0);
        if (PARAMS) xs[k] = t < t0 ? acc_t(0) : to_acc(x[t * N + i]);
      }
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        const int64_t t = c - k;
        if (t >= t0) {  // (a guard, not a break: the loop must unroll fully to keep gss/xs in registers)
          const acc_t h = H[(t - t0) * hs];
          const acc_t psi = surrogate_grad<K>(h - threshold, p.sa);
          const LifGradStep<acc_t> g = lif_backward_step<R>(h, psi, gss[k], gv, threshold, vr, a.detach);
          a.grad_x[t * N + i] = from_acc<S>(alpha * g.gh);
          if (PARAMS) {
            gt += g.g_threshold;
            acc_t v_prev = v_start;
            if (t > t0) {
              const acc_t hp = H[(t - 1 - t0) * hs];
              v_prev = reset_v<R>(hp, fires(hp, threshold), threshold, vr);
            }
            gb += g.gh * v_prev;
            ga += g.gh * xs[k];
          }
          gv = beta * g.gh;
        }
      }
    }
  }
  if (a.g_v0) a.g_v0[i] = gv;
  if (PARAMS) {
    if (a.g_beta) a.g_beta[i] = gb;
    if (a.g_alpha) a.g_alpha[i] = ga;
    if (a.g_threshold) a.g_threshold[i] = gt;
  }
}

template <typename acc_t> struct OnlineOut {
  acc_t *gx, *state_v, *state_count, *g_beta, *g_alpha, *g_threshold, *g_target;
  const acc_t *target;
  DeviceParam<acc_t> count0;
  double* partials;
  // Launch::count_u8: the count read from and written to these instead (count0 and state_count then unused)
  const uint8_t* count0_u8;
  uint8_t* state_count_u8;
};

template <typename S, Reset R, Surrogate K, bool GRAD>
__global__ void __launch_bounds__(kThreads)
    online_kernel(const S* __restrict__ x, S* __restrict__ spikes, OnlineOut<typename Acc<S>::type> o,
                  Params<typename Acc<S>::type> p, int64_t t0, int64_t warmup, int64_t T, int64_t N) {
  using acc_t = typename Acc<S>::type;
  __shared__ double sh[kThreads];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double part = 0.0;
  if (i < N) {
    const acc_t beta = p.beta.at(i), alpha = p.alpha.at(i), threshold = p.threshold.at(i), y = o.target[i];
    const acc_t inv_n = static_cast<acc_t>(1.0 / static_cast<double>(N));
    acc_t v = p.v0.at(i), count = o.count0_u8 ? static_cast<acc_t>(o.count0_u8[i]) : o.count0.at(i);
    acc_t ls = acc_t(0), gb = acc_t(0), ga = acc_t(0), gt = acc_t(0), gy = acc_t(0);
#pragma unroll 4
    for (int64_t t = 0; t < T; ++t) {
      const int64_t step = t0 + t;
      const acc_t xj = to_acc(x[t * N + i]), vp = v;
      const acc_t h = charge(vp, xj, beta, alpha);
      const acc_t s = fires(h, threshold);
      v = reset_v<R>(h, s, threshold, p.v_reset);
      count += s;
      spikes[t * N + i] = from_acc<S>(s);
      acc_t gh = acc_t(0);
      if (step >= warmup) {
        const OnlineTerm<acc_t> term = online_term(count, static_cast<acc_t>(step + 1), y,
                                                   online_gs_scale<acc_t>(step + 1, N));
        ls += term.d * term.d;
        if (GRAD) {
          gh = term.gs * surrogate_grad<K>(h - threshold, p.sa);
          gb += gh * vp;
          ga += gh * xj;
          gt -= gh;
          gy -= acc_t(2) * term.d * inv_n;
        }
      }
      if (o.gx) o.gx[t * N + i] = alpha * gh;  // math type: see Launch::grad_x
    }
    part = static_cast<double>(ls);
    if (o.state_v) o.state_v[i] = v;
    if (o.state_count) o.state_count[i] = count;
    if (o.state_count_u8) o.state_count_u8[i] = static_cast<uint8_t>(count);  // an exact integer < 256
    if (o.g_beta) o.g_beta[i] = gb;
    if (o.g_alpha) o.g_alpha[i] = ga;
    if (o.g_threshold) o.g_threshold[i] = gt;
    if (o.g_target) o.g_target[i] = gy;
  }
  const double sum = block_sum(part, sh);
  if (threadIdx.x == 0) o.partials[blockIdx.x] = sum;
}

const char* last_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

unsigned blocks_of(int64_t N, int threads) { return static_cast<unsigned>((N + threads - 1) / threads); }

template <typename S> void finish_loss(const Launch& p, cudaStream_t st) {
  using acc_t = typename Acc<S>::type;
  finish_loss_kernel<acc_t><<<1, kFinishThreads, 0, st>>>(static_cast<const double*>(p.partials),
                                                           loss_blocks(p.N), p.N, static_cast<acc_t*>(p.loss));
}

template <typename S> void run_forward(const Launch& p, bool offline, cudaStream_t st) {
  using acc_t = typename Acc<S>::type;
  const ForwardOut<S> o{static_cast<S*>(p.spikes), static_cast<S*>(p.v_final), static_cast<const acc_t*>(p.target),
                        static_cast<acc_t*>(p.err), static_cast<double*>(p.partials)};
  LTL_RESET_SWITCH(p.reset, R, [&] {
    if (offline)
      forward_kernel<S, R, true><<<blocks_of(p.N, kThreads), kThreads, 0, st>>>(static_cast<const S*>(p.x), o,
                                                                                params_of<acc_t>(p), p.T, p.N);
    else
      forward_kernel<S, R, false><<<blocks_of(p.N, kThreads), kThreads, 0, st>>>(static_cast<const S*>(p.x), o,
                                                                                 params_of<acc_t>(p), p.T, p.N);
  });
  if (offline) finish_loss<S>(p, st);
}

template <typename S> void run_backward(const Launch& p, bool offline, cudaStream_t st) {
  using acc_t = typename Acc<S>::type;
  const int64_t L = segment_steps(p.dtype) < p.T ? segment_steps(p.dtype) : p.T;
  BackwardArgs<S> a{static_cast<const S*>(p.grad_spikes), static_cast<const S*>(p.grad_v),
                    offline ? static_cast<const acc_t*>(p.err) : nullptr, static_cast<const acc_t*>(p.grad_loss),
                    static_cast<S*>(p.grad_x),
                    static_cast<acc_t*>(p.grad_v0), static_cast<acc_t*>(p.grad_beta),
                    static_cast<acc_t*>(p.grad_alpha), static_cast<acc_t*>(p.grad_threshold),
                    L < p.T ? static_cast<acc_t*>(p.scratch) : nullptr, L, p.detach_reset};
  const size_t smem = static_cast<size_t>(L * kBwdThreads * sizeof(acc_t));
  LTL_RESET_SWITCH(p.reset, R, [&] {
    LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
      auto launch = [&](auto kernel) {
        kernel<<<blocks_of(p.N, kBwdThreads), kBwdThreads, smem, st>>>(static_cast<const S*>(p.x), a,
                                                                       params_of<acc_t>(p), p.T, p.N);
      };
      if (p.wants_param_grads()) launch(backward_kernel<S, R, K, true>);
      else launch(backward_kernel<S, R, K, false>);
    });
  });
}

template <typename S> void run_online(const Launch& p, cudaStream_t st) {
  using acc_t = typename Acc<S>::type;
  const bool u8 = p.count_u8;
  const OnlineOut<acc_t> o{static_cast<acc_t*>(p.grad_x),
                           static_cast<acc_t*>(p.state_v),
                           u8 ? nullptr : static_cast<acc_t*>(p.state_count),
                           static_cast<acc_t*>(p.grad_beta),
                           static_cast<acc_t*>(p.grad_alpha),
                           static_cast<acc_t*>(p.grad_threshold),
                           static_cast<acc_t*>(p.grad_target),
                           static_cast<const acc_t*>(p.target),
                           device_param<acc_t>(u8 ? Param{} : p.count0),
                           static_cast<double*>(p.partials),
                           u8 ? static_cast<const uint8_t*>(p.count0.data) : nullptr,
                           u8 ? static_cast<uint8_t*>(p.state_count) : nullptr};
  const bool grad = p.grad_x || p.wants_param_grads() || p.grad_target;
  LTL_RESET_SWITCH(p.reset, R, [&] {
    LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
      auto launch = [&](auto kernel) {
        kernel<<<blocks_of(p.N, kThreads), kThreads, 0, st>>>(static_cast<const S*>(p.x), static_cast<S*>(p.spikes),
                                                              o, params_of<acc_t>(p), p.t0, p.warmup, p.T, p.N);
      };
      if (grad) launch(online_kernel<S, R, K, true>);
      else launch(online_kernel<S, R, K, false>);
    });
  });
  finish_loss<S>(p, st);
}

}  // namespace

int64_t cuda_scratch_bytes(Kernel k, const Launch& p) {
  if ((k != Kernel::LifBackward && k != Kernel::OfflineBackward) || p.T <= segment_steps(p.dtype)) return 0;
  const int64_t segments = (p.T + segment_steps(p.dtype) - 1) / segment_steps(p.dtype);
  return segments * p.N * (p.dtype == DType::Double ? 8 : 4);
}

const char* run_cuda(Kernel k, const Launch& p, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const bool tandem = k == Kernel::OfflineForward || k == Kernel::Online;
  if (p.N == 0 || p.T == 0) {
    if (tandem) {  // the mean over no neuron: NaN, like torch's mean()
      dtype_switch<__half, __nv_bfloat16>(p.dtype, [&](auto tag) { finish_loss<decltype(tag)>(p, st); });
    }
    return last_error();
  }
  if ((k == Kernel::LifBackward || k == Kernel::OfflineBackward) && p.T > segment_steps(p.dtype) && !p.scratch)
    return "ltl_ext: the CUDA backward needs cuda_scratch_bytes() of scratch for this T";
  dtype_switch<__half, __nv_bfloat16>(p.dtype, [&](auto tag) {
    using S = decltype(tag);
    switch (k) {
      case Kernel::LifForward: run_forward<S>(p, false, st); break;
      case Kernel::OfflineForward: run_forward<S>(p, true, st); break;
      case Kernel::LifBackward: run_backward<S>(p, false, st); break;
      case Kernel::OfflineBackward: run_backward<S>(p, true, st); break;
      case Kernel::Online: run_online<S>(p, st); break;
    }
  });
  return last_error();
}

}  // namespace ltl
