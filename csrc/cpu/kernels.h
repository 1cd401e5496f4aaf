// The CPU kernels (floor 2), one source for every ISA: kernels_base_dtype.inc includes it for the baseline x86-64 and
// kernels_avx2.cpp between `#pragma GCC push_options / target("avx2") / pop_options`, each with LTL_CPU_ISA naming
// the namespace, so no translation unit compiles baseline code for AVX2 (the AVX2 copy is reached only through
// avx2::run_float, after a CPU check). Not a public header.
//
// The including file must have included, before any target pragma: <ATen/Parallel.h>, <c10/util/BFloat16.h>,
// <c10/util/Half.h>, <cmath>, <cstdlib>, <cstring>, <new>, <type_traits> and "ltl/kernels.h". Nothing here uses
// std containers or algorithms (their inline code would be instantiated for the ISA); everything has internal
// linkage.
//
// Scheme (written once, for the LIF and the tandem kernels): at::parallel_for over whole blocks of kLossBlock
// neurons (for_each_block), the time loop inside, every inner loop a contiguous branch-free row over the block
// (`#pragma omp simd`; -fno-trapping-math lets GCC if-convert the spike compare).
//   forward_impl   LIF and offline forward: spikes, then v_final (LIF) or err and a loss partial sum (offline).
//   backward_impl  LIF and offline backward: recompute H and psi for one block, reading x and dL/dS[t] (grad_spikes
//                  (LIF) or 2 err / (N T) (offline)) in forward time order, into a [T, block] scratch (cache
//                  resident: gS psi and dV/dH, or with parameter gradients H, psi and gS), then BPTT in reverse from
//                  the scratch alone, writing grad_x. x is read twice only when g_alpha is wanted.
//   online_impl    one pass: spikes, the loss, the local gradients.
// Large float outputs (spikes, grad_x: kStreamBytes and up) go out through non-temporal stores, and the input rows
// are prefetched ahead (prefetch_piece).
// Loss partial sums are per fixed block and summed in block order: the loss is bit-identical for any thread count
// and on both ISAs (sums in double; H never through an FMA: the build passes -ffp-contract=off).
#ifndef LTL_CPU_ISA
#error "define LTL_CPU_ISA (the namespace of this instantiation) before including kernels.h"
#endif

#include "kernel_parts.h"  // the building blocks: math, exp, surrogates, scratch, rows, blocks (same namespace)

namespace ltl {
namespace LTL_CPU_ISA {
namespace {

// ---- forward: LIF (v_final) and offline (err, loss) ------------------------------------------------------------
// One LIF step over a row of the block: V updated in r.v, the spikes written and (COUNT) counted.
template <Reset R, bool COUNT = true, bool STREAM = false, typename scalar_t, typename acc_t>
inline void step_row(const scalar_t* x_row, scalar_t* spike_row, Rows<acc_t>& r, acc_t* count, acc_t* xbuf,
                     acc_t* sbuf, acc_t vr, int64_t n) {
  const acc_t* xt = row_in(x_row, xbuf, n);
  acc_t* st = STREAM ? sbuf : row_dst(spike_row, sbuf);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const acc_t h = charge(r.v[j], xt[j], r.beta[j], r.alpha[j]);
    const acc_t s = fires(h, r.threshold[j]);
    r.v[j] = reset_v<R>(h, s, r.threshold[j], vr);
    if (COUNT) count[j] += s;
    st[j] = s;
  }
  if (STREAM) stream_row(spike_row, sbuf, n);
  else row_out(spike_row, sbuf, n);
}

template <typename acc_t> struct ForwardLocal {
  acc_t count[kB], xbuf[kB], sbuf[kB];
  explicit ForwardLocal(const Launch&) {}
};

template <typename scalar_t, Reset R>
void forward_impl(const Launch& p, bool offline) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t T = p.T, N = p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  scalar_t* spikes = static_cast<scalar_t*>(p.spikes);
  scalar_t* v_final = static_cast<scalar_t*>(p.v_final);
  const acc_t* y = static_cast<const acc_t*>(p.target);
  acc_t* err = static_cast<acc_t*>(p.err);
  double* partials = static_cast<double*>(p.partials);
  const acc_t vr = static_cast<acc_t>(p.v_reset), steps = static_cast<acc_t>(T);
  const bool stream = use_stream<scalar_t>(p), big = is_big<scalar_t>(p);
  for_each_block<acc_t, ForwardLocal<acc_t>>(p, [&](int64_t b, int64_t i0, int64_t n, Rows<acc_t>& r,
                                                    ForwardLocal<acc_t>& l) {
    auto run = [&](auto count_tag, auto stream_tag) {
      constexpr bool COUNT = decltype(count_tag)::value, STREAM = decltype(stream_tag)::value;
      for (int64_t t = 0; t < T; ++t) {
        const Ahead next = big ? ahead(t, T, N, i0, n) : Ahead{0, 0};
        if (next.n > 0) {
          prefetch_piece(x + next.offset, next.n);
          if (!STREAM) prefetch_piece<1>(spikes + next.offset, next.n);
        }
        step_row<R, COUNT, STREAM>(x + t * N + i0, spikes + t * N + i0, r, l.count, l.xbuf, l.sbuf, vr, n);
      }
    };
    if (offline) {
      fill_value(l.count, 0.0, n);
      if (stream) run(std::true_type(), std::true_type());
      else run(std::true_type(), std::false_type());
    } else {  // the LIF needs no count
      if (stream) run(std::false_type(), std::true_type());
      else run(std::false_type(), std::false_type());
    }
    if (!offline) {
      for (int64_t j = 0; j < n; ++j) v_final[i0 + j] = static_cast<scalar_t>(r.v[j]);
      return;
    }
    double part = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const acc_t d = offline_rate_error(l.count[j], steps, y[i0 + j]);
      err[i0 + j] = d;
      part += static_cast<double>(d) * static_cast<double>(d);
    }
    partials[b] = part;
  });
  if (offline) finish_loss<acc_t>(p);
}

// ---- backward: LIF and offline ---------------------------------------------------------------------------------
// Scratch of a block, [T, kB] each. At big sizes (AB in backward_impl), without parameter gradients: A = dL/dS[t]
// psi[t] and B = dV[t]/dH[t] (phase 1 reads x and dL/dS in forward time order, so the reverse pass reads no [T, N]
// input: gH = A + gV B, rounded as gS psi + gV dV/dH); with them: H, psi and dL/dS (copied, for the same reason).
// Below that: psi and (hard reset or parameter gradients) H, the reverse pass reading grad_spikes itself.
template <typename acc_t> struct BackwardLocal {
  Scratch<acc_t> buf;
  acc_t *H, *PSI, *GS;  // A = H, B = PSI without parameter gradients
  acc_t v0[kB], zeros[kB], gs[kB], gv[kB], gh[kB], gb[kB], ga[kB], gt[kB], xbuf[kB], gsbuf[kB], gxbuf[kB];
  explicit BackwardLocal(const Launch& p)
      : buf(3 * p.T * kB), H(buf.data), PSI(buf.data + p.T * kB), GS(buf.data + 2 * p.T * kB) {
    fill_value(zeros, 0.0, kB);
  }
};

// One reverse step over a row of the block with parameter gradients: gH from dL/dS[t] = gs and dL/dV[t] = gv, then
// grad_x, gV[t-1] and (GT) g_threshold, and (GH) gH kept in gh for g_alpha and g_beta (their own loops, only when
// wanted: x is read a second time only for g_alpha). What is not wanted is neither computed nor stored: with only
// a threshold gradient (a learnable threshold's usual case) no gh row, without one no g_threshold.
template <Reset R, bool DETACH, bool GH, bool GT, typename acc_t>
inline void reverse_row_params(const acc_t* Ht, const acc_t* Pt, const acc_t* gs, acc_t* gv, acc_t* gh, acc_t* gt,
                               acc_t* gxt, const Rows<acc_t>& r, acc_t vr, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const LifGradStep<acc_t> g = lif_backward_step<R>(Ht[j], Pt[j], gs[j], gv[j], r.threshold[j], vr, DETACH);
    if (GH) gh[j] = g.gh;
    gxt[j] = r.alpha[j] * g.gh;
    if (GT) gt[j] += g.g_threshold;
    gv[j] = r.beta[j] * g.gh;
  }
}

template <typename scalar_t, Reset R, Surrogate K, bool PARAMS>
void backward_impl(const Launch& p, bool offline) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t T = p.T, N = p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  const scalar_t* grad_spikes = static_cast<const scalar_t*>(p.grad_spikes);
  const scalar_t* grad_v = static_cast<const scalar_t*>(p.grad_v);
  const acc_t* err = static_cast<const acc_t*>(p.err);
  scalar_t* gx = static_cast<scalar_t*>(p.grad_x);
  acc_t* g_v0 = static_cast<acc_t*>(p.grad_v0);
  acc_t* g_beta = static_cast<acc_t*>(p.grad_beta);
  acc_t* g_alpha = static_cast<acc_t*>(p.grad_alpha);
  acc_t* g_threshold = static_cast<acc_t*>(p.grad_threshold);
  const acc_t vr = static_cast<acc_t>(p.v_reset), sa = static_cast<acc_t>(p.surrogate_alpha);
  // offline: dL/dS[t] = 2 (r - y) / (N T) * dL/dloss, for every t
  const double grad_loss = offline ? static_cast<double>(*static_cast<const acc_t*>(p.grad_loss)) : 0.0;
  const acc_t scale = static_cast<acc_t>(2.0 * grad_loss / (static_cast<double>(N) * static_cast<double>(T)));
  const bool detach = p.detach_reset;
  const bool stream = use_stream<scalar_t>(p), big = is_big<scalar_t>(p);
  const bool gs_rows = grad_spikes && !offline;  // dL/dS[t] read from grad_spikes (else constant in t)
  // AB (big sizes): phase 1 also reads dL/dS[t] and leaves the reverse pass no [T, N] input; below kStreamBytes the
  // reverse pass reads grad_spikes itself (fewer scratch stores: at N = 4096 the AB scheme was ~8 % slower).
  auto body = [&](auto detach_tag, auto ab_tag, int64_t i0, int64_t n, Rows<acc_t>& r, BackwardLocal<acc_t>& l) {
    constexpr bool DETACH = decltype(detach_tag)::value, AB = decltype(ab_tag)::value;
    const acc_t a = sa;  // a local: the stores below could alias a captured reference, forcing a reload per step
    if (PARAMS) {
      for (int64_t j = 0; j < n; ++j) l.v0[j] = r.v[j];
    }
    for (int64_t j = 0; j < n; ++j) {
      l.gv[j] = grad_v ? static_cast<acc_t>(grad_v[i0 + j]) : acc_t(0);
      l.gb[j] = l.ga[j] = l.gt[j] = acc_t(0);
    }
    if (offline) {
      for (int64_t j = 0; j < n; ++j) l.gs[j] = offline_gs(err[i0 + j], scale);
    }
    // 1. recompute H[t] and psi[t] for this block (the forward's arithmetic: identical spikes), reading x and
    // dL/dS[t] in forward order; the rows kPrefetchRows ahead (then the next block's first rows) are prefetched
    for (int64_t t = 0; t < T; ++t) {
      const Ahead next = big ? ahead(t, T, N, i0, n) : Ahead{0, 0};
      if (next.n > 0) {
        prefetch_piece(x + next.offset, next.n);
        if (gs_rows) prefetch_piece(grad_spikes + next.offset, next.n);
      }
      const acc_t* xt = row_in(x + t * N + i0, l.xbuf, n);
      const acc_t* gst =
          offline ? l.gs : (AB && gs_rows) ? row_in(grad_spikes + t * N + i0, l.gsbuf, n) : l.zeros;
      acc_t* Ht = l.H + t * kB;
      acc_t* Pt = l.PSI + t * kB;
      if (PARAMS) {
        acc_t* Gt = l.GS + t * kB;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t h = charge(r.v[j], xt[j], r.beta[j], r.alpha[j]);
          r.v[j] = reset_v<R>(h, fires(h, r.threshold[j]), r.threshold[j], vr);
          Ht[j] = h;
          Pt[j] = surrogate_grad_cpu<K>(h - r.threshold[j], a);
          if (AB) Gt[j] = gst[j];
        }
      } else if (!AB) {  // psi, and H for a hard reset's dV/dH
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t h = charge(r.v[j], xt[j], r.beta[j], r.alpha[j]);
          r.v[j] = reset_v<R>(h, fires(h, r.threshold[j]), r.threshold[j], vr);
          if (R == Reset::Hard) Ht[j] = h;
          Pt[j] = surrogate_grad_cpu<K>(h - r.threshold[j], a);
        }
      } else {  // A = gs psi and B = dV/dH: the reverse step's gH = gs psi + gV dV/dH, rounded the same
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t h = charge(r.v[j], xt[j], r.beta[j], r.alpha[j]);
          const acc_t s = fires(h, r.threshold[j]);
          r.v[j] = reset_v<R>(h, s, r.threshold[j], vr);
          const acc_t psi = surrogate_grad_cpu<K>(h - r.threshold[j], a);
          Ht[j] = gst[j] * psi;
          Pt[j] = dv_dh<R>(h, s, psi, r.threshold[j], vr, DETACH);
        }
      }
    }
    // 2. BPTT in reverse, from the scratch only. No input is read here, so the next block's rows of x and dL/dS
    // are prefetched meanwhile, one row a step in the order phase 1 reads them: their loads overlap this phase's
    // stores instead of stalling the next block's phase 1
    const int64_t j0 = i0 + kB, m = AB ? imin(kB, N - j0) : 0;
    for (int64_t t = T - 1; t >= 0; --t) {
      if (m > 0) {
        prefetch_piece(x + (T - 1 - t) * N + j0, m);
        if (gs_rows) prefetch_piece(grad_spikes + (T - 1 - t) * N + j0, m);
      }
      acc_t* gxt = stream ? l.gxbuf : row_dst(gx + t * N + i0, l.gxbuf);
      const acc_t* Ht = l.H + t * kB;
      const acc_t* Pt = l.PSI + t * kB;
      // !AB: dL/dS[t] from grad_spikes now (its rows read in reverse)
      const acc_t* gst = AB ? l.GS + t * kB
                            : offline ? l.gs : gs_rows ? row_in(grad_spikes + t * N + i0, l.gsbuf, n) : l.zeros;
      if (PARAMS) {
        auto reverse = [&](auto gh_tag, auto gt_tag) {
          reverse_row_params<R, DETACH, decltype(gh_tag)::value, decltype(gt_tag)::value>(Ht, Pt, gst, l.gv, l.gh,
                                                                                          l.gt, gxt, r, vr, n);
        };
        if (!(g_alpha || g_beta)) reverse(std::false_type(), std::true_type());  // PARAMS: then g_threshold
        else if (g_threshold) reverse(std::true_type(), std::true_type());
        else reverse(std::true_type(), std::false_type());
      } else if (!AB) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t h = R == Reset::Hard ? Ht[j] : acc_t(0), psi = Pt[j];  // soft: dV/dH needs no H
          const acc_t ghj =
              gst[j] * psi + l.gv[j] * dv_dh<R>(h, fires(h, r.threshold[j]), psi, r.threshold[j], vr, DETACH);
          gxt[j] = r.alpha[j] * ghj;
          l.gv[j] = r.beta[j] * ghj;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t ghj = Ht[j] + l.gv[j] * Pt[j];
          gxt[j] = r.alpha[j] * ghj;
          l.gv[j] = r.beta[j] * ghj;
        }
      }
      if (stream) stream_row(gx + t * N + i0, l.gxbuf, n);
      else row_out(gx + t * N + i0, l.gxbuf, n);
      if (PARAMS && g_alpha) {  // g_alpha += gH[t] X[t]
        const acc_t* xt = row_in(x + t * N + i0, l.xbuf, n);
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) l.ga[j] += l.gh[j] * xt[j];
      }
      if (PARAMS && g_beta) {  // g_beta += gH[t] V[t-1]
        if (t > 0) {
          const acc_t* Hp = l.H + (t - 1) * kB;
#pragma omp simd
          for (int64_t j = 0; j < n; ++j)
            l.gb[j] += l.gh[j] * reset_v<R>(Hp[j], fires(Hp[j], r.threshold[j]), r.threshold[j], vr);
        } else {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) l.gb[j] += l.gh[j] * l.v0[j];
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      if (g_v0) g_v0[i0 + j] = l.gv[j];
      if (g_beta) g_beta[i0 + j] = l.gb[j];
      if (g_alpha) g_alpha[i0 + j] = l.ga[j];
      if (g_threshold) g_threshold[i0 + j] = l.gt[j];
    }
  };
  for_each_block<acc_t, BackwardLocal<acc_t>>(p, [&](int64_t, int64_t i0, int64_t n, Rows<acc_t>& r,
                                                     BackwardLocal<acc_t>& l) {
    if (big) {
      if (detach) body(std::true_type(), std::true_type(), i0, n, r, l);
      else body(std::false_type(), std::true_type(), i0, n, r, l);
    } else {
      if (detach) body(std::true_type(), std::false_type(), i0, n, r, l);
      else body(std::false_type(), std::false_type(), i0, n, r, l);
    }
  });
}

// ---- online (ltl-method.md §4) ---------------------------------------------------------------------------------
// V and the count are detached through time, so the gradient of step t is local and written in the same pass.
// GRAD: compute the local gradients (else only spikes, loss and state).
template <typename acc_t> struct OnlineLocal {
  acc_t count[kB], y[kB], ls[kB], gb[kB], ga[kB], gt[kB], gy[kB], xbuf[kB], sbuf[kB], gxbuf[kB];
  explicit OnlineLocal(const Launch&) {}
};

template <typename scalar_t, Reset R, Surrogate K, bool GRAD>
void online_impl(const Launch& p) {
  using acc_t = typename Math<scalar_t>::type;
  const int64_t T = p.T, N = p.N;
  const scalar_t* x = static_cast<const scalar_t*>(p.x);
  scalar_t* spikes = static_cast<scalar_t*>(p.spikes);
  const acc_t* target = static_cast<const acc_t*>(p.target);
  acc_t* gx = static_cast<acc_t*>(p.grad_x);  // the local gradient, in the math type (Launch::grad_x)
  acc_t* state_v = static_cast<acc_t*>(p.state_v);
  acc_t* state_count = p.count_u8 ? nullptr : static_cast<acc_t*>(p.state_count);
  uint8_t* state_count_u8 = p.count_u8 ? static_cast<uint8_t*>(p.state_count) : nullptr;
  const uint8_t* count0_u8 = p.count_u8 ? static_cast<const uint8_t*>(p.count0.data) : nullptr;
  acc_t* g_beta = static_cast<acc_t*>(p.grad_beta);
  acc_t* g_alpha = static_cast<acc_t*>(p.grad_alpha);
  acc_t* g_threshold = static_cast<acc_t*>(p.grad_threshold);
  acc_t* g_target = static_cast<acc_t*>(p.grad_target);
  double* partials = static_cast<double*>(p.partials);
  const acc_t vr = static_cast<acc_t>(p.v_reset), sa = static_cast<acc_t>(p.surrogate_alpha);
  const acc_t inv_n = static_cast<acc_t>(1.0 / static_cast<double>(N));
  for_each_block<acc_t, OnlineLocal<acc_t>>(p, [&](int64_t b, int64_t i0, int64_t n, Rows<acc_t>& r,
                                                   OnlineLocal<acc_t>& l) {
    if (count0_u8) {
      for (int64_t j = 0; j < n; ++j) l.count[j] = static_cast<acc_t>(count0_u8[i0 + j]);
    } else if (p.count0.data) {
      load_param(l.count, p.count0, i0, n);
    } else {
      fill_value(l.count, p.count0.value, n);
    }
    for (int64_t j = 0; j < n; ++j) {
      l.y[j] = target[i0 + j];
      l.ls[j] = l.gb[j] = l.ga[j] = l.gt[j] = l.gy[j] = acc_t(0);
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t step = p.t0 + t;
      const acc_t step1 = static_cast<acc_t>(step + 1), gs_scale = online_gs_scale<acc_t>(step + 1, N);
      acc_t* gxt = gx ? gx + t * N + i0 : nullptr;
      if (step < p.warmup || !GRAD) {  // the LIF step (and the loss after the warm-up), no gradient
        step_row<R>(x + t * N + i0, spikes + t * N + i0, r, l.count, l.xbuf, l.sbuf, vr, n);
        if (step >= p.warmup) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const acc_t d = online_term(l.count[j], step1, l.y[j], gs_scale).d;
            l.ls[j] += d * d;
          }
        }
        if (gxt) fill_value(gxt, 0.0, n);
        continue;
      }
      const acc_t* xt = row_in(x + t * N + i0, l.xbuf, n);
      acc_t* st = row_dst(spikes + t * N + i0, l.sbuf);
      acc_t* gw = gxt ? gxt : l.gxbuf;
      const acc_t a = sa;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const acc_t xj = xt[j], vp = r.v[j];
        const acc_t h = charge(vp, xj, r.beta[j], r.alpha[j]);
        const acc_t s = fires(h, r.threshold[j]);
        r.v[j] = reset_v<R>(h, s, r.threshold[j], vr);
        l.count[j] += s;
        st[j] = s;
        const OnlineTerm<acc_t> o = online_term(l.count[j], step1, l.y[j], gs_scale);
        const acc_t d = o.d;
        l.ls[j] += d * d;
        const acc_t gh = o.gs * surrogate_grad_cpu<K>(h - r.threshold[j], a);
        gw[j] = r.alpha[j] * gh;
        l.gb[j] += gh * vp;
        l.ga[j] += gh * xj;
        l.gt[j] -= gh;
        l.gy[j] -= acc_t(2) * d * inv_n;
      }
      row_out(spikes + t * N + i0, l.sbuf, n);
    }
    double part = 0.0;
    for (int64_t j = 0; j < n; ++j) part += static_cast<double>(l.ls[j]);
    partials[b] = part;
    for (int64_t j = 0; j < n; ++j) {
      if (state_v) state_v[i0 + j] = r.v[j];
      if (state_count) state_count[i0 + j] = l.count[j];
      if (state_count_u8) state_count_u8[i0 + j] = static_cast<uint8_t>(l.count[j]);  // an exact integer < 256
      if (g_beta) g_beta[i0 + j] = l.gb[j];
      if (g_alpha) g_alpha[i0 + j] = l.ga[j];
      if (g_threshold) g_threshold[i0 + j] = l.gt[j];
      if (g_target) g_target[i0 + j] = l.gy[j];
    }
  });
  finish_loss<acc_t>(p);
}

// ---- the kernels of one storage dtype --------------------------------------------------------------------------
template <typename scalar_t>
void run_typed(Kernel k, const Launch& p) {
  const bool params = p.wants_param_grads();
  switch (k) {
    case Kernel::LifForward:
    case Kernel::OfflineForward:
      LTL_RESET_SWITCH(p.reset, R, [&] { forward_impl<scalar_t, R>(p, k == Kernel::OfflineForward); });
      break;
    case Kernel::LifBackward:
    case Kernel::OfflineBackward:
      LTL_RESET_SWITCH(p.reset, R, [&] {
        LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
          if (params) backward_impl<scalar_t, R, K, true>(p, k == Kernel::OfflineBackward);
          else backward_impl<scalar_t, R, K, false>(p, k == Kernel::OfflineBackward);
        });
      });
      break;
    case Kernel::Online: {
      const bool grad = p.grad_x || params || p.grad_target;
      LTL_RESET_SWITCH(p.reset, R, [&] {
        LTL_SURROGATE_SWITCH(p.surrogate, K, [&] {
          if (grad) online_impl<scalar_t, R, K, true>(p);
          else online_impl<scalar_t, R, K, false>(p);
        });
      });
      break;
    }
  }
}

}  // namespace
}  // namespace LTL_CPU_ISA
}  // namespace ltl
