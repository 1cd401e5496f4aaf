// The CPU tandem-loss kernels (floor 2), included by tandem_cpu.cpp (baseline ISA) and tandem_cpu_avx2.cpp
// (AVX2, chosen at run time) with LTL_TANDEM_ISA naming the namespace. Not a public header.
//
// at::parallel_for over blocks of kTandemLossBlock neurons, the time loop inside, every inner loop a contiguous
// branch-free row (`#pragma omp simd`) over the block.
// Offline forward: reads x, writes spikes [T, N] and err [N] = r - y, one loss partial sum per block.
// Offline backward: recomputes H and psi for one block into a [T, block] scratch (cache resident), then BPTT in
//   reverse with dL/dS[t] = 2 err / (N T) dL_out for every t: reads x, writes grad_x. No [T, N] input gradient.
// Online: one pass writes spikes and the local gradient grad_x[t] (for dL_out = 1), and the per-neuron grads.
// Loss partial sums are per fixed block and summed in block order: the loss is bit-identical for any thread count
// (and the same on both ISAs: no FMA contraction, the sums in double in a fixed order).
//
// The including file must have included, before any target pragma: <ATen/Parallel.h>, <c10/util/BFloat16.h>,
// <c10/util/Half.h>, <algorithm>, <limits>, <type_traits>, <vector>, "ltl/tandem_kernels.h" (so that no inline
// function shared with other files is compiled for AVX2), and defined LTL_TANDEM_ISA.
#ifndef LTL_TANDEM_ISA
#error "define LTL_TANDEM_ISA (the namespace of this instantiation) before including tandem_cpu_kernels.h"
#endif

namespace ltl {
namespace LTL_TANDEM_ISA {
namespace {

constexpr int64_t kB = kTandemLossBlock;

template <typename scalar_t> struct Math { using type = float; };
template <> struct Math<double> { using type = double; };

inline int64_t grain_blocks(int64_t T) {
  return std::max<int64_t>(1, int64_t(32768) / (kB * std::max<int64_t>(T, 1)));
}

// A row of x in the math type: the row itself for float/double, else converted into `buf` (a separate loop, so
// the math loops stay branch-free and vectorise).
template <typename scalar_t, typename acc_t>
inline const acc_t* row_in(const scalar_t* src, acc_t* buf, int64_t n) {
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    (void)buf, (void)n;
    return src;
  } else {
    for (int64_t j = 0; j < n; ++j) buf[j] = static_cast<acc_t>(src[j]);
    return buf;
  }
}
// Where to write a row computed in the math type: the output itself for float/double, else `buf` (then row_out).
template <typename scalar_t, typename acc_t>
inline acc_t* row_dst(scalar_t* dst, acc_t* buf) {
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    (void)buf;
    return dst;
  } else {
    (void)dst;
    return buf;
  }
}
template <typename scalar_t, typename acc_t>
inline void row_out(scalar_t* dst, const acc_t* buf, int64_t n) {
  if constexpr (!std::is_same<scalar_t, acc_t>::value) {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<scalar_t>(buf[j]);
  } else {
    (void)dst, (void)buf, (void)n;
  }
}

template <typename acc_t> struct Rows {
  acc_t beta[kB], alpha[kB], theta[kB], v[kB];

  void load(const TandemLaunch& p, int64_t i0, int64_t n) {
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

// The loss: sum of the per-block partials in block order, / N, stored in the math type.
template <typename scalar_t>
void finish_loss(const TandemLaunch& p, const double* partials) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t nb = tandem_loss_blocks(p.N);
  double sum = 0.0;
  for (int64_t b = 0; b < nb; ++b) sum += partials[b];
  *static_cast<acc_t*>(p.loss) = static_cast<acc_t>(sum / static_cast<double>(p.N));
}

template <typename scalar_t, Reset R>
void offline_forward_impl(const TandemLaunch& p) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t T = p.T, N = p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  scalar_t* spikes = static_cast<scalar_t*>(p.spikes);
  const acc_t* y = static_cast<const acc_t*>(p.target);
  acc_t* err = static_cast<acc_t*>(p.err);
  double* partials = static_cast<double*>(p.partials);
  const acc_t vr = static_cast<acc_t>(p.v_reset), steps = static_cast<acc_t>(T);
  at::parallel_for(0, tandem_loss_blocks(N), grain_blocks(T), [&](int64_t b0, int64_t b1) {
    Rows<acc_t> r;
    acc_t cnt[kB], xbuf[kB], sbuf[kB];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kB, n = std::min(kB, N - i0);
      r.load(p, i0, n);
      std::fill(cnt, cnt + n, acc_t(0));
      for (int64_t t = 0; t < T; ++t) {
        const acc_t* xt = row_in<scalar_t, acc_t>(x + t * N + i0, xbuf, n);
        acc_t* st = row_dst<scalar_t, acc_t>(spikes + t * N + i0, sbuf);
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t h = charge(r.v[j], xt[j], r.beta[j], r.alpha[j]);
          const acc_t s = fires(h, r.theta[j]);
          r.v[j] = reset_v<R>(h, s, r.theta[j], vr);
          cnt[j] += s;
          st[j] = s;
        }
        row_out<scalar_t, acc_t>(spikes + t * N + i0, sbuf, n);
      }
      double part = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        const acc_t d = offline_rate_error(cnt[j], steps, y[i0 + j]);
        err[i0 + j] = d;
        part += static_cast<double>(d) * static_cast<double>(d);
      }
      partials[b] = part;
    }
  });
  finish_loss<scalar_t>(p, partials);
}

// One reverse step over a row of the block: gH from dL/dS = gs and dL/dV[t] = gv, grad_x, gV[t-1]; with PARAMS
// also g_theta and g_alpha (and gH kept in gh for g_beta). Without PARAMS x is not read at all.
template <Reset R, bool DETACH, bool PARAMS, typename scalar_t, typename acc_t>
inline void reverse_row(const acc_t* Ht, const acc_t* Pt, const scalar_t* x_row, acc_t* xbuf, const acc_t* gs,
                        acc_t* gv, acc_t* gh, acc_t* gt, acc_t* ga, acc_t* gxt, const Rows<acc_t>& r, acc_t vr,
                        int64_t n) {
  if (PARAMS) {
    const acc_t* xt = row_in<scalar_t, acc_t>(x_row, xbuf, n);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const LifGradStep<acc_t> g = lif_backward_step<R>(Ht[j], Pt[j], gs[j], gv[j], r.theta[j], vr, DETACH);
      gh[j] = g.gh;
      gxt[j] = r.alpha[j] * g.gh;
      gt[j] += g.g_theta;
      ga[j] += g.gh * xt[j];
      gv[j] = r.beta[j] * g.gh;
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const acc_t h = Ht[j], psi = Pt[j];
      const acc_t ghj = gs[j] * psi + gv[j] * dv_dh<R>(h, fires(h, r.theta[j]), psi, r.theta[j], vr, DETACH);
      gxt[j] = r.alpha[j] * ghj;
      gv[j] = r.beta[j] * ghj;
    }
  }
}

template <typename scalar_t, Reset R, Surrogate K, bool PARAMS>
void offline_backward_impl(const TandemLaunch& p) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t T = p.T, N = p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  const acc_t* err = static_cast<const acc_t*>(p.err);
  scalar_t* gx = static_cast<scalar_t*>(p.grad_x);
  acc_t* g_v0 = static_cast<acc_t*>(p.grad_v0);
  acc_t* g_beta = static_cast<acc_t*>(p.grad_beta);
  acc_t* g_alpha = static_cast<acc_t*>(p.grad_alpha);
  acc_t* g_theta = static_cast<acc_t*>(p.grad_theta);
  const acc_t vr = static_cast<acc_t>(p.v_reset), sa = static_cast<acc_t>(p.surrogate_alpha);
  // dL/dS[t] = 2 (r - y) / (N T) * dL_out, for every t
  const acc_t scale = static_cast<acc_t>(2.0 * static_cast<double>(*static_cast<const acc_t*>(p.grad_loss)) /
                                         (static_cast<double>(N) * static_cast<double>(T)));
  const bool detach = p.detach_reset;
  at::parallel_for(0, tandem_loss_blocks(N), grain_blocks(T), [&](int64_t b0, int64_t b1) {
    Rows<acc_t> r;
    acc_t v0[kB], gs[kB], gv[kB], gh[kB], gb[kB], ga[kB], gt[kB], xbuf[kB], gbuf[kB];
    std::vector<acc_t> buf(static_cast<size_t>(2 * T * kB));
    acc_t* H = buf.data();
    acc_t* PSI = H + T * kB;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kB, n = std::min(kB, N - i0);
      r.load(p, i0, n);
      std::copy(r.v, r.v + n, v0);
      // 1. recompute H[t] and psi[t] for this block (the forward's arithmetic: identical spikes)
      for (int64_t t = 0; t < T; ++t) {
        const acc_t* xt = row_in<scalar_t, acc_t>(x + t * N + i0, xbuf, n);
        acc_t* Ht = H + t * kB;
        acc_t* Pt = PSI + t * kB;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t h = charge(r.v[j], xt[j], r.beta[j], r.alpha[j]);
          r.v[j] = reset_v<R>(h, fires(h, r.theta[j]), r.theta[j], vr);
          Ht[j] = h;
          Pt[j] = surrogate_grad_cpu<K>(h - r.theta[j], sa);
        }
      }
      // 2. BPTT in reverse, the same dL/dS for every t
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        gs[j] = offline_gs(err[i0 + j], scale);
        gv[j] = gb[j] = ga[j] = gt[j] = acc_t(0);
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const acc_t* Ht = H + t * kB;
        const acc_t* Pt = PSI + t * kB;
        acc_t* gxt = row_dst<scalar_t, acc_t>(gx + t * N + i0, gbuf);
        if (detach) reverse_row<R, true, PARAMS>(Ht, Pt, PARAMS ? x + t * N + i0 : nullptr, xbuf, gs, gv, gh, gt, ga, gxt, r, vr, n);
        else reverse_row<R, false, PARAMS>(Ht, Pt, PARAMS ? x + t * N + i0 : nullptr, xbuf, gs, gv, gh, gt, ga, gxt, r, vr, n);
        row_out<scalar_t, acc_t>(gx + t * N + i0, gbuf, n);
        if (PARAMS && g_beta) {  // g_beta += gH[t] V[t-1]
          if (t > 0) {
            const acc_t* Hp = H + (t - 1) * kB;
#pragma omp simd
            for (int64_t j = 0; j < n; ++j)
              gb[j] += gh[j] * reset_v<R>(Hp[j], fires(Hp[j], r.theta[j]), r.theta[j], vr);
          } else {
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) gb[j] += gh[j] * v0[j];
          }
        }
      }
      if (g_v0) std::copy(gv, gv + n, g_v0 + i0);
      if (g_beta) std::copy(gb, gb + n, g_beta + i0);
      if (g_alpha) std::copy(ga, ga + n, g_alpha + i0);
      if (g_theta) std::copy(gt, gt + n, g_theta + i0);
    }
  });
}


// Online (ltl-method.md §4): V and C detached through time, so the gradient of step t is local and written in
// the same pass. GRAD: compute the local gradients (else only spikes, loss and state).
template <typename scalar_t, Reset R, Surrogate K, bool GRAD>
void online_impl(const TandemLaunch& p) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t T = p.T, N = p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  scalar_t* spikes = static_cast<scalar_t*>(p.spikes);
  const acc_t* y = static_cast<const acc_t*>(p.target);
  const acc_t* c0 = static_cast<const acc_t*>(p.count0);
  acc_t* gx = static_cast<acc_t*>(p.grad_x);  // the local gradient, kept in the math type (TandemLaunch::grad_x)
  acc_t* v_out = static_cast<acc_t*>(p.v_out);
  acc_t* c_out = static_cast<acc_t*>(p.count_out);
  acc_t* g_beta = static_cast<acc_t*>(p.grad_beta);
  acc_t* g_alpha = static_cast<acc_t*>(p.grad_alpha);
  acc_t* g_theta = static_cast<acc_t*>(p.grad_theta);
  acc_t* g_y = static_cast<acc_t*>(p.grad_target);
  double* partials = static_cast<double*>(p.partials);
  const acc_t vr = static_cast<acc_t>(p.v_reset), sa = static_cast<acc_t>(p.surrogate_alpha);
  const acc_t inv_n = static_cast<acc_t>(1.0 / static_cast<double>(N));
  at::parallel_for(0, tandem_loss_blocks(N), grain_blocks(T), [&](int64_t b0, int64_t b1) {
    Rows<acc_t> r;
    acc_t cnt[kB], yb[kB], ls[kB], gb[kB], ga[kB], gt[kB], gyb[kB], xbuf[kB], sbuf[kB], gbuf[kB];  // gbuf: no gx
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kB, n = std::min(kB, N - i0);
      r.load(p, i0, n);
      for (int64_t j = 0; j < n; ++j) {
        cnt[j] = c0 ? c0[i0 + j] : acc_t(0);
        yb[j] = y[i0 + j];
        ls[j] = gb[j] = ga[j] = gt[j] = gyb[j] = acc_t(0);
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t step = p.t0 + t;
        const acc_t* xt = row_in<scalar_t, acc_t>(x + t * N + i0, xbuf, n);
        acc_t* st = row_dst<scalar_t, acc_t>(spikes + t * N + i0, sbuf);
        acc_t* gxt = gx ? gx + t * N + i0 : nullptr;
        if (step < p.warmup || !GRAD) {  // the LIF step (and the loss after the warm-up), no gradient
          const bool loss = step >= p.warmup;
          const acc_t step1 = static_cast<acc_t>(step + 1);
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const acc_t h = charge(r.v[j], xt[j], r.beta[j], r.alpha[j]);
            const acc_t s = fires(h, r.theta[j]);
            r.v[j] = reset_v<R>(h, s, r.theta[j], vr);
            cnt[j] += s;
            st[j] = s;
            const acc_t d = online_term(cnt[j], step1, yb[j], inv_n).d;
            ls[j] += loss ? d * d : acc_t(0);
          }
          row_out<scalar_t, acc_t>(spikes + t * N + i0, sbuf, n);
          if (gxt) std::fill(gxt, gxt + n, acc_t(0));
          continue;
        }
        const acc_t step1 = static_cast<acc_t>(step + 1);
        acc_t* gw = gxt ? gxt : gbuf;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t xj = xt[j], vp = r.v[j];
          const acc_t h = charge(vp, xj, r.beta[j], r.alpha[j]);
          const acc_t s = fires(h, r.theta[j]);
          r.v[j] = reset_v<R>(h, s, r.theta[j], vr);
          cnt[j] += s;
          st[j] = s;
          const OnlineTerm<acc_t> o = online_term(cnt[j], step1, yb[j], inv_n);
          ls[j] += o.d * o.d;
          const acc_t gh = o.gs * surrogate_grad_cpu<K>(h - r.theta[j], sa);
          gw[j] = r.alpha[j] * gh;
          gb[j] += gh * vp;
          ga[j] += gh * xj;
          gt[j] -= gh;
          gyb[j] -= acc_t(2) * o.d * inv_n;
        }
        row_out<scalar_t, acc_t>(spikes + t * N + i0, sbuf, n);
      }
      double part = 0.0;
      for (int64_t j = 0; j < n; ++j) part += static_cast<double>(ls[j]);
      partials[b] = part;
      if (v_out) std::copy(r.v, r.v + n, v_out + i0);
      if (c_out) std::copy(cnt, cnt + n, c_out + i0);
      if (g_beta) std::copy(gb, gb + n, g_beta + i0);
      if (g_alpha) std::copy(ga, ga + n, g_alpha + i0);
      if (g_theta) std::copy(gt, gt + n, g_theta + i0);
      if (g_y) std::copy(gyb, gyb + n, g_y + i0);
    }
  });
  finish_loss<scalar_t>(p, partials);
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

template <typename scalar_t>
void store_loss_of_empty(const TandemLaunch& p) {  // mean over no neuron: NaN, like torch's mean()
  using acc_t = typename Math<scalar_t>::type;
  *static_cast<acc_t*>(p.loss) = std::numeric_limits<acc_t>::quiet_NaN();
}

}  // namespace

void offline_forward(const TandemLaunch& p) {
  dtype_switch(p.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    if (p.N == 0) return store_loss_of_empty<scalar_t>(p);
    LTL_RESET_SWITCH(p.reset, R, [&] { offline_forward_impl<scalar_t, R>(p); });
  });
}

void offline_backward(const TandemLaunch& p) {
  if (p.N == 0 || p.T == 0) return;
  const bool params = p.grad_beta || p.grad_alpha || p.grad_theta;
  dtype_switch(p.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    LTL_RESET_SWITCH(p.reset, R, [&] {
      LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
        if (params) offline_backward_impl<scalar_t, R, K, true>(p);
        else offline_backward_impl<scalar_t, R, K, false>(p);
      });
    });
  });
}

void online(const TandemLaunch& p) {
  const bool grad = p.grad_x || p.grad_beta || p.grad_alpha || p.grad_theta || p.grad_target;
  dtype_switch(p.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    if (p.N == 0) return store_loss_of_empty<scalar_t>(p);
    LTL_RESET_SWITCH(p.reset, R, [&] {
      LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
        if (grad) online_impl<scalar_t, R, K, true>(p);
        else online_impl<scalar_t, R, K, false>(p);
      });
    });
  });
}

}  // namespace LTL_TANDEM_ISA
}  // namespace ltl
