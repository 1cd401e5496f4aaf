// Multi-step LIF on the CPU (floor 2): at::parallel_for over neurons, the time loop inside, blocks of kBlock
// neurons so every inner loop is a contiguous, branch-free row that the compiler vectorises. The math is
// ltl/lif_math.h; the only transcendental (the sigmoid surrogate's exp) runs through at::vec (AVX2) when the
// CPU has it (lif_cpu_avx2.cpp).
//
// Forward writes spikes [T, N] and v_final [N] only. Backward recomputes H for one block of neurons into a
// small [T, kBlock] scratch (cache resident) and then runs BPTT in reverse: it reads x and grad_spikes and
// writes grad_x, the fewest [T, N] streams the math allows.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ltl/lif_kernels.h"

namespace ltl {

// lif_cpu_avx2.cpp: psi of the sigmoid surrogate over a row, with a vectorised exp. False if the CPU lacks AVX2.
bool sigmoid_grad_row_avx2(const float* h, const float* theta, float* psi, int64_t n, float a);
bool cpu_has_avx2();

namespace {

constexpr int64_t kBlock = 256;

template <typename scalar_t> struct Math { using type = float; };
template <> struct Math<double> { using type = double; };

template <typename scalar_t>
inline int64_t grain(int64_t T) { return std::max<int64_t>(kBlock, (int64_t(1) << 16) / std::max<int64_t>(T, 1)); }

// Per-block parameter rows: the per-neuron values, or the scalar broadcast.
template <typename acc_t> struct Rows {
  acc_t beta[kBlock], alpha[kBlock], theta[kBlock], v[kBlock];

  void load(const LifLaunch& p, int64_t i0, int64_t n) {
    fill(beta, static_cast<const acc_t*>(p.beta), p.beta_s, i0, n);
    fill(alpha, static_cast<const acc_t*>(p.alpha), p.alpha_s, i0, n);
    fill(theta, static_cast<const acc_t*>(p.theta), p.theta_s, i0, n);
    fill(v, static_cast<const acc_t*>(p.v0), 0.0, i0, n);
  }
  static void fill(acc_t* dst, const acc_t* src, double s, int64_t i0, int64_t n) {
    if (src) std::copy(src + i0, src + i0 + n, dst);
    else std::fill(dst, dst + n, static_cast<acc_t>(s));
  }
};

template <typename scalar_t, Reset R>
void forward_impl(const LifLaunch& p) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t T = p.T, N = p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  scalar_t* spikes = static_cast<scalar_t*>(p.spikes);
  scalar_t* v_final = static_cast<scalar_t*>(p.v_final);
  const acc_t vr = static_cast<acc_t>(p.v_reset);
  at::parallel_for(0, N, grain<scalar_t>(T), [&](int64_t begin, int64_t end) {
    Rows<acc_t> r;
    for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
      const int64_t n = std::min(kBlock, end - i0);
      r.load(p, i0, n);
      for (int64_t t = 0; t < T; ++t) {
        const scalar_t* xt = x + t * N + i0;
        scalar_t* st = spikes + t * N + i0;
        for (int64_t j = 0; j < n; ++j)
          st[j] = static_cast<scalar_t>(lif_step<R>(r.v[j], static_cast<acc_t>(xt[j]), r.beta[j], r.alpha[j], r.theta[j], vr));
      }
      for (int64_t j = 0; j < n; ++j) v_final[i0 + j] = static_cast<scalar_t>(r.v[j]);
    }
  });
}

template <Surrogate K, typename acc_t>
inline void psi_row(const acc_t* h, const acc_t* theta, acc_t* psi, int64_t n, acc_t a, bool avx2) {
  if constexpr (K == Surrogate::Sigmoid && std::is_same<acc_t, float>::value) {
    if (avx2 && sigmoid_grad_row_avx2(h, theta, psi, n, a)) return;
  }
  for (int64_t j = 0; j < n; ++j) psi[j] = surrogate_grad<K>(h[j] - theta[j], a);
}

// PARAMS: also accumulate grad_beta / grad_alpha / grad_theta (a tensor parameter wants its gradient).
template <typename scalar_t, Reset R, Surrogate K, bool PARAMS>
void backward_impl(const LifLaunch& p) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t T = p.T, N = p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  const scalar_t* gs = static_cast<const scalar_t*>(p.grad_spikes);
  const scalar_t* gvf = static_cast<const scalar_t*>(p.grad_v);
  scalar_t* gx = static_cast<scalar_t*>(p.grad_x);
  acc_t* g_v0 = static_cast<acc_t*>(p.grad_v0);
  acc_t* g_beta = static_cast<acc_t*>(p.grad_beta);
  acc_t* g_alpha = static_cast<acc_t*>(p.grad_alpha);
  acc_t* g_theta = static_cast<acc_t*>(p.grad_theta);
  const acc_t vr = static_cast<acc_t>(p.v_reset), sa = static_cast<acc_t>(p.surrogate_alpha);
  const bool detach = p.detach_reset, avx2 = cpu_has_avx2();
  at::parallel_for(0, N, grain<scalar_t>(T), [&](int64_t begin, int64_t end) {
    Rows<acc_t> r;
    acc_t v0[kBlock], gv[kBlock], psi[kBlock], gb[kBlock], ga[kBlock], gt[kBlock];
    std::vector<acc_t> hbuf(static_cast<size_t>(T) * kBlock);
    acc_t* H = hbuf.data();
    for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
      const int64_t n = std::min(kBlock, end - i0);
      r.load(p, i0, n);
      std::copy(r.v, r.v + n, v0);
      // 1. recompute H[t] for this block (same code path as the forward: identical spikes)
      for (int64_t t = 0; t < T; ++t) {
        const scalar_t* xt = x + t * N + i0;
        acc_t* Ht = H + t * kBlock;
        for (int64_t j = 0; j < n; ++j)
          lif_step<R>(r.v[j], static_cast<acc_t>(xt[j]), r.beta[j], r.alpha[j], r.theta[j], vr, &Ht[j]);
      }
      // 2. BPTT in reverse
      for (int64_t j = 0; j < n; ++j) gv[j] = gvf ? static_cast<acc_t>(gvf[i0 + j]) : acc_t(0);
      if (PARAMS) {
        std::fill(gb, gb + n, acc_t(0));
        std::fill(ga, ga + n, acc_t(0));
        std::fill(gt, gt + n, acc_t(0));
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const acc_t* Ht = H + t * kBlock;
        psi_row<K>(Ht, r.theta, psi, n, sa, avx2);
        const scalar_t* gst = gs ? gs + t * N + i0 : nullptr;
        scalar_t* gxt = gx + t * N + i0;
        if (gst) {
          for (int64_t j = 0; j < n; ++j) {
            const LifGradStep<acc_t> g = lif_backward_step<R>(Ht[j], psi[j], static_cast<acc_t>(gst[j]), gv[j], r.theta[j], vr, detach);
            gxt[j] = static_cast<scalar_t>(r.alpha[j] * g.gh);
            if (PARAMS) gt[j] += g.g_theta;
            psi[j] = g.gh;  // keep gH for the parameter pass below
            gv[j] = r.beta[j] * g.gh;
          }
        } else {
          for (int64_t j = 0; j < n; ++j) {
            const LifGradStep<acc_t> g = lif_backward_step<R>(Ht[j], psi[j], acc_t(0), gv[j], r.theta[j], vr, detach);
            gxt[j] = static_cast<scalar_t>(r.alpha[j] * g.gh);
            if (PARAMS) gt[j] += g.g_theta;
            psi[j] = g.gh;
            gv[j] = r.beta[j] * g.gh;
          }
        }
        if (PARAMS) {  // g_beta += gH[t] V[t-1];  g_alpha += gH[t] X[t]
          const scalar_t* xt = x + t * N + i0;
          if (t > 0) {
            const acc_t* Hp = H + (t - 1) * kBlock;
            for (int64_t j = 0; j < n; ++j)
              gb[j] += psi[j] * reset_v<R>(Hp[j], fires(Hp[j], r.theta[j]), r.theta[j], vr);
          } else {
            for (int64_t j = 0; j < n; ++j) gb[j] += psi[j] * v0[j];
          }
          for (int64_t j = 0; j < n; ++j) ga[j] += psi[j] * static_cast<acc_t>(xt[j]);
        }
      }
      if (g_v0) std::copy(gv, gv + n, g_v0 + i0);
      if (PARAMS) {
        if (g_beta) std::copy(gb, gb + n, g_beta + i0);
        if (g_alpha) std::copy(ga, ga + n, g_alpha + i0);
        if (g_theta) std::copy(gt, gt + n, g_theta + i0);
      }
    }
  });
}

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
  dtype_switch(p.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    LTL_RESET_SWITCH(p.reset, R, [&] { forward_impl<scalar_t, R>(p); });
  });
}

void lif_backward_cpu(const LifLaunch& p) {
  if (p.N == 0 || p.T == 0) return;
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
