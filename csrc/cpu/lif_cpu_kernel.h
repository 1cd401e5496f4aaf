// The CPU LIF kernels as templates (floor 2), included by two translation units:
//   lif_cpu_kernel.cpp  baseline x86-64 (SSE2), every dtype;
//   lif_cpu_avx2.cpp    float32 compiled for AVX2 + FMA, chosen at run time when the CPU has both.
// Everything here has internal linkage (anonymous namespace) and calls only C library functions (malloc/free),
// so the AVX2 copy never leaks into baseline code. The including TU provides <ATen/Parallel.h>,
// c10 Half/BFloat16 and ltl/lif_kernels.h.
//
// at::parallel_for over neurons, the time loop inside, blocks of kBlock neurons so every inner loop is a
// contiguous, branch-free row the compiler vectorises (-fno-trapping-math lets it if-convert the spike compare).
// Forward writes spikes [T, N] and v_final [N] only. Backward recomputes H for one block into a small
// [T, kBlock] scratch (cache resident), then runs BPTT in reverse: it reads x and grad_spikes and writes grad_x,
// the fewest [T, N] streams the math allows (x is read a second time only when grad_alpha is wanted).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>
#include <type_traits>

namespace ltl {
namespace {

constexpr int64_t kBlock = 256;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

template <typename scalar_t> struct Math { using type = float; };
template <> struct Math<double> { using type = double; };

// Serial below ~64K neuron-steps; else one contiguous range of neurons per thread.
inline int64_t grain(int64_t T) { return imax(kBlock, (int64_t(1) << 16) / imax(T, 1)); }

// malloc'd scratch (no std:: containers: this header is also compiled for AVX2)
struct Scratch {
  void* p;
  explicit Scratch(size_t bytes) : p(std::malloc(bytes > 0 ? bytes : 1)) {
    if (!p) throw std::bad_alloc();
  }
  ~Scratch() { std::free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Per-block parameter rows: the per-neuron values, or the scalar broadcast (filled once per thread, in the
// constructor: at T = 8 refilling them per block cost as much as the LIF itself).
template <typename acc_t> struct Rows {
  acc_t beta[kBlock], alpha[kBlock], theta[kBlock], v[kBlock];

  explicit Rows(const LifLaunch& p) {
    if (!p.beta) fill(beta, nullptr, p.beta_s, 0, kBlock);
    if (!p.alpha) fill(alpha, nullptr, p.alpha_s, 0, kBlock);
    if (!p.theta) fill(theta, nullptr, p.theta_s, 0, kBlock);
  }
  void load(const LifLaunch& p, int64_t i0, int64_t n) {
    if (p.beta) fill(beta, static_cast<const acc_t*>(p.beta), 0.0, i0, n);
    if (p.alpha) fill(alpha, static_cast<const acc_t*>(p.alpha), 0.0, i0, n);
    if (p.theta) fill(theta, static_cast<const acc_t*>(p.theta), 0.0, i0, n);
    fill(v, static_cast<const acc_t*>(p.v0), 0.0, i0, n);
  }
  static void fill(acc_t* dst, const acc_t* src, double s, int64_t i0, int64_t n) {
    if (src) {
      for (int64_t j = 0; j < n; ++j) dst[j] = src[i0 + j];
    } else {
      for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<acc_t>(s);
    }
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
  at::parallel_for(0, N, grain(T), [&](int64_t begin, int64_t end) {
    Rows<acc_t> r(p);
    for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
      const int64_t n = imin(kBlock, end - i0);
      r.load(p, i0, n);
      for (int64_t t = 0; t < T; ++t) {
        const scalar_t* xt = x + t * N + i0;
        scalar_t* st = spikes + t * N + i0;
        for (int64_t j = 0; j < n; ++j)
          st[j] = static_cast<scalar_t>(
              lif_step<R>(r.v[j], static_cast<acc_t>(xt[j]), r.beta[j], r.alpha[j], r.theta[j], vr));
      }
      for (int64_t j = 0; j < n; ++j) v_final[i0 + j] = static_cast<scalar_t>(r.v[j]);
    }
  });
}

// psi over a row of H. A TU may define LTL_VEC_SIGMOID_ROW(h, theta, psi, n, a) for a vectorised float sigmoid.
template <Surrogate K, typename acc_t>
inline void psi_row(const acc_t* h, const acc_t* theta, acc_t* psi, int64_t n, acc_t a) {
#ifdef LTL_VEC_SIGMOID_ROW
  if constexpr (K == Surrogate::Sigmoid && std::is_same<acc_t, float>::value) {
    LTL_VEC_SIGMOID_ROW(h, theta, psi, n, a);
    return;
  }
#endif
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
  const bool detach = p.detach_reset;
  at::parallel_for(0, N, grain(T), [&](int64_t begin, int64_t end) {
    Rows<acc_t> r(p);
    acc_t v0[kBlock], gv[kBlock], psi[kBlock], gb[kBlock], ga[kBlock], gt[kBlock];
    Scratch hbuf(static_cast<size_t>(T) * kBlock * sizeof(acc_t));
    acc_t* H = static_cast<acc_t*>(hbuf.p);
    for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
      const int64_t n = imin(kBlock, end - i0);
      r.load(p, i0, n);
      for (int64_t j = 0; j < n; ++j) v0[j] = r.v[j];
      // 1. recompute H[t] for this block (the forward's arithmetic, so the spikes are identical)
      for (int64_t t = 0; t < T; ++t) {
        const scalar_t* xt = x + t * N + i0;
        acc_t* Ht = H + t * kBlock;
        for (int64_t j = 0; j < n; ++j) {  // = lif_step, spelled out so the H store has no branch
          const acc_t h = charge(r.v[j], static_cast<acc_t>(xt[j]), r.beta[j], r.alpha[j]);
          Ht[j] = h;
          r.v[j] = reset_v<R>(h, fires(h, r.theta[j]), r.theta[j], vr);
        }
      }
      // 2. BPTT in reverse
      if (gvf) {
        for (int64_t j = 0; j < n; ++j) gv[j] = static_cast<acc_t>(gvf[i0 + j]);
      } else {
        for (int64_t j = 0; j < n; ++j) gv[j] = acc_t(0);
      }
      if (PARAMS) {
        for (int64_t j = 0; j < n; ++j) gb[j] = ga[j] = gt[j] = acc_t(0);
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const acc_t* Ht = H + t * kBlock;
        psi_row<K>(Ht, r.theta, psi, n, sa);
        scalar_t* gxt = gx + t * N + i0;
        if (gs) {
          const scalar_t* gst = gs + t * N + i0;
          for (int64_t j = 0; j < n; ++j) {
            const LifGradStep<acc_t> g =
                lif_backward_step<R>(Ht[j], psi[j], static_cast<acc_t>(gst[j]), gv[j], r.theta[j], vr, detach);
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
      if (g_v0) {
        for (int64_t j = 0; j < n; ++j) g_v0[i0 + j] = gv[j];
      }
      if (PARAMS) {
        if (g_beta) for (int64_t j = 0; j < n; ++j) g_beta[i0 + j] = gb[j];
        if (g_alpha) for (int64_t j = 0; j < n; ++j) g_alpha[i0 + j] = ga[j];
        if (g_theta) for (int64_t j = 0; j < n; ++j) g_theta[i0 + j] = gt[j];
      }
    }
  });
}

}  // namespace
}  // namespace ltl
