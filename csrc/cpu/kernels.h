// The CPU kernels (floor 2), one source for every ISA: kernels_base.cpp includes it for the baseline x86-64 and
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

namespace ltl {
namespace LTL_CPU_ISA {
namespace {

constexpr int64_t kB = kLossBlock;

template <typename scalar_t> struct Math { using type = float; };
template <> struct Math<double> { using type = double; };

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// Software prefetch of the row pieces that the kernels read kPrefetchRows pieces later (in the order of (block, row):
// past a block's last row come the next block's first rows): the [T, N] inputs are walked in 1 KB pieces 4 MB
// apart (N = 2^20), too short for the hardware prefetchers, whose streams then stall every load. Into L2 (locality
// 2, prefetcht1): at N = 2^k the T pieces of one column map to the same L1 set and evict each other from L1 before
// use. Measured at N = 2^20, T = 16, 2 threads: distance 8 into L2 took the rect backward from 12 to 8.5 ms; into
// L1 (prefetcht0) or at distance 2 it gained far less. One hint per 64-byte line.
constexpr int64_t kPrefetchRows = 8;
template <int RW = 0, int LOC = 2, typename T> inline void prefetch_piece(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, RW, LOC);
}

// Multiply-add: one fused instruction where the ISA has it (kernels_avx2.cpp defines LTL_CPU_FMA). Used only
// for the surrogate's exp below, never for H (the build's -ffp-contract=off keeps H = beta V + alpha X rounded as
// in the reference, so the backward's recompute reproduces the forward's spikes exactly).
#ifdef LTL_CPU_FMA
#define LTL_MADD(a, b, c) __builtin_fmaf(a, b, c)
#else
#define LTL_MADD(a, b, c) ((a) * (b) + (c))
#endif

// e^z for float, z <= 0 (what the sigmoid surrogate asks for: z = -a |u|), to ~2 ulp, branch-free so that
// `#pragma omp simd` vectorises it (glibc's expf has no SIMD variant without -ffast-math): 2^t with t = z log2(e)
// clamped to [-125, 0] (e^z below 2^-125 is 0 to the surrogate), t = n + f with n = round(t) (the 1.5 * 2^23
// trick, whose low mantissa bits then hold n) and |f| <= 1/2, 2^f by a degree-5 minimax polynomial (relative error
// 1.8e-7 in float), times 2^n built from n's bits. A NaN stays NaN (the polynomial's NaN times any scale).
constexpr float kLog2e = 1.44269504088896341f;
inline float vec_exp2(float t) {  // 2^t, t <= 0: e^z is vec_exp2(z * kLog2e)
  t = t < -125.0f ? -125.0f : t;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float tm = t + magic;
  const float f = t - (tm - magic);
  float p = 1.3282304862514138e-3f;
  p = LTL_MADD(p, f, 9.675589390099049e-3f);
  p = LTL_MADD(p, f, 5.550695210695267e-2f);
  p = LTL_MADD(p, f, 2.4022118747234344e-1f);
  p = LTL_MADD(p, f, 6.931470036506653e-1f);
  p = LTL_MADD(p, f, 1.0000001192092896f);
  uint32_t bits;
  std::memcpy(&bits, &tm, sizeof(bits));
  bits = (bits << 23) + (uint32_t(127) << 23);  // (n + 127) << 23: tm's low bits are n (mod 2^9)
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// lif_math.h's surrogate_grad with vec_exp2 for the float sigmoid (the other surrogates have no transcendental):
// exp(-a |u|) = 2^((-a log2 e) |u|), the factor loop-invariant (one multiply per neuron-step, not two).
template <Surrogate K, typename acc_t> inline acc_t surrogate_grad_cpu(acc_t u, acc_t a) {
  if constexpr (K == Surrogate::Sigmoid && std::is_same<acc_t, float>::value)
    return sigmoid_grad_from_exp(vec_exp2((-a * kLog2e) * ltl_abs(u)), a);
  return surrogate_grad<K>(u, a);
}

// Whole blocks per thread chunk: about 64K neuron-steps, serial below that.
inline int64_t grain_blocks(int64_t T) { return imax(1, (int64_t(1) << 16) / (kB * imax(T, 1))); }

// A thread's malloc'd buffer of n math-type values.
template <typename acc_t> struct Scratch {
  acc_t* data;
  explicit Scratch(int64_t n) : data(static_cast<acc_t*>(std::malloc(sizeof(acc_t) * static_cast<size_t>(n > 0 ? n : 1)))) {
    if (!data) throw std::bad_alloc();
  }
  ~Scratch() { std::free(data); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// A row of a storage-dtype array in the math type: the row itself for float/double, else converted into `buf` (a
// separate loop, so the math loops stay branch-free and vectorise).
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

// Non-temporal stores for [T, N] outputs bigger than the caches (kStreamBytes and up): a row piece is computed into
// an L1 buffer and streamed out, so the output lines are never read from memory first (write-allocate) and do not
// evict the inputs. Float only (the AVX2 / SSE stream instructions); the last store of a thread's chunk is
// followed by an sfence (stream_fence), so the results are visible when at::parallel_for returns.
constexpr int64_t kStreamBytes = int64_t(16) << 20;
// Also the size from which the inputs are prefetched (prefetch_piece): below it they are mostly cache resident and
// the hints cost more than they save (N = 4096, T = 16: the backward 13 % slower with them).
template <typename scalar_t> inline bool is_big(const Launch& p) {
  return p.T * p.N * int64_t(sizeof(scalar_t)) >= kStreamBytes;
}
template <typename scalar_t> inline bool use_stream(const Launch& p) {
  return std::is_same<scalar_t, float>::value && is_big<scalar_t>(p);
}
inline void stream_row(float* dst, const float* src, int64_t n) {
  int64_t j = 0;
  for (; j < n && (reinterpret_cast<uintptr_t>(dst + j) & 31); ++j) dst[j] = src[j];
#ifdef LTL_CPU_FMA
  for (; j + 8 <= n; j += 8) _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
#else
  for (; j + 4 <= n; j += 4) _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
#endif
  for (; j < n; ++j) dst[j] = src[j];
}
template <typename scalar_t, typename acc_t> inline void stream_row(scalar_t* dst, const acc_t* src, int64_t n) {
  if constexpr (std::is_same<scalar_t, float>::value && std::is_same<acc_t, float>::value) stream_row(static_cast<float*>(dst), static_cast<const float*>(src), n);
  else row_out(dst, src, n);
}
inline void stream_fence() { _mm_sfence(); }

// Neurons i0 .. i0+n of a broadcast parameter into dst (a value: filled once, in fill_values).
template <typename acc_t> inline void load_param(acc_t* dst, const Param& q, int64_t i0, int64_t n) {
  const acc_t* src = static_cast<const acc_t*>(q.data);
  if (q.inner == 1 && q.period >= i0 + n) {  // per neuron here: a contiguous row
    for (int64_t j = 0; j < n; ++j) dst[j] = src[i0 + j];
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = src[param_index(q, i0 + j)];
  }
}
template <typename acc_t> inline void fill_value(acc_t* dst, double value, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<acc_t>(value);
}

// The block's rows of the parameters and of V. Scalars are filled once per thread (at T = 8, refilling them per
// block cost as much as the LIF itself).
template <typename acc_t> struct Rows {
  acc_t beta[kB], alpha[kB], threshold[kB], v[kB];

  explicit Rows(const Launch& p) {
    if (!p.beta.data) fill_value(beta, p.beta.value, kB);
    if (!p.alpha.data) fill_value(alpha, p.alpha.value, kB);
    if (!p.threshold.data) fill_value(threshold, p.threshold.value, kB);
  }
  void load(const Launch& p, int64_t i0, int64_t n) {
    if (p.beta.data) load_param(beta, p.beta, i0, n);
    if (p.alpha.data) load_param(alpha, p.alpha, i0, n);
    if (p.threshold.data) load_param(threshold, p.threshold, i0, n);
    if (p.v0.data) load_param(v, p.v0, i0, n);
    else fill_value(v, p.v0.value, n);
  }
};

// The block loop, once for every kernel: whole blocks of kB neurons per thread chunk (so the loss partial sums
// have fixed boundaries); per thread one Rows and one Local (the kernel's per-thread buffers, built from p).
template <typename acc_t, typename Local, typename Body>
void for_each_block(const Launch& p, Body&& body) {
  at::parallel_for(0, loss_blocks(p.N), grain_blocks(p.T), [&](int64_t b0, int64_t b1) {
    Rows<acc_t> r(p);
    Local local(p);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kB, n = imin(kB, p.N - i0);
      r.load(p, i0, n);
      body(b, i0, n, r, local);
    }
    stream_fence();  // the non-temporal stores (if any) visible before the chunk ends
  });
}

// The loss: the per-block partials summed in block order, / N, stored in the math type.
template <typename acc_t> void finish_loss(const Launch& p) {
  const double* partials = static_cast<const double*>(p.partials);
  double sum = 0.0;
  for (int64_t b = 0; b < loss_blocks(p.N); ++b) sum += partials[b];
  *static_cast<acc_t*>(p.loss) = static_cast<acc_t>(sum / static_cast<double>(p.N));
}

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
    const int64_t nn = imin(kB, N - i0 - kB);  // the next block's neurons (<= 0: none)
    auto pf = [&](int64_t t) {
      int64_t u = t + kPrefetchRows, j0 = i0, m = n;
      if (u >= T) u -= T, j0 += kB, m = nn;
      if (big && u < T && m > 0) {
        prefetch_piece(x + u * N + j0, m);
        if (!stream) prefetch_piece<1>(spikes + u * N + j0, m);
      }
    };
    auto run = [&](auto count_tag, auto stream_tag) {
      constexpr bool COUNT = decltype(count_tag)::value, STREAM = decltype(stream_tag)::value;
      for (int64_t t = 0; t < T; ++t) {
        pf(t);
        step_row<R, COUNT, STREAM>(x + t * N + i0, spikes + t * N + i0, r, l.count, l.xbuf, l.sbuf, vr, n);
      }
    };
    if (offline) fill_value(l.count, 0.0, n);
    if (offline) {
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
// grad_x, gV[t-1] and g_threshold, and gH kept in gh for g_alpha and g_beta (their own loops, only when wanted:
// x is read a second time only for g_alpha).
template <Reset R, bool DETACH, typename acc_t>
inline void reverse_row_params(const acc_t* Ht, const acc_t* Pt, const acc_t* gs, acc_t* gv, acc_t* gh, acc_t* gt,
                               acc_t* gxt, const Rows<acc_t>& r, acc_t vr, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const LifGradStep<acc_t> g = lif_backward_step<R>(Ht[j], Pt[j], gs[j], gv[j], r.threshold[j], vr, DETACH);
    gh[j] = g.gh;
    gxt[j] = r.alpha[j] * g.gh;
    gt[j] += g.g_threshold;
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
    const int64_t nn = imin(kB, N - i0 - kB);  // the next block's neurons (<= 0: none)
    for (int64_t t = 0; t < T; ++t) {
      int64_t u = t + kPrefetchRows, j0 = i0, m = n;
      if (u >= T) u -= T, j0 += kB, m = nn;
      if (big && u < T && m > 0) {
        prefetch_piece(x + u * N + j0, m);
        if (gs_rows) prefetch_piece(grad_spikes + u * N + j0, m);
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
    // 2. BPTT in reverse, from the scratch only
    for (int64_t t = T - 1; t >= 0; --t) {
      acc_t* gxt = stream ? l.gxbuf : row_dst(gx + t * N + i0, l.gxbuf);
      const acc_t* Ht = l.H + t * kB;
      const acc_t* Pt = l.PSI + t * kB;
      // !AB: dL/dS[t] from grad_spikes now (its rows read in reverse)
      const acc_t* gst = AB ? l.GS + t * kB
                            : offline ? l.gs : gs_rows ? row_in(grad_spikes + t * N + i0, l.gsbuf, n) : l.zeros;
      if (PARAMS) {
        reverse_row_params<R, DETACH>(Ht, Pt, gst, l.gv, l.gh, l.gt, gxt, r, vr, n);
      } else if (!AB) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const acc_t h = R == Reset::Hard ? Ht[j] : acc_t(0), psi = Pt[j];  // soft: dV/dH needs no H
          const acc_t ghj = gst[j] * psi + l.gv[j] * dv_dh<R>(h, fires(h, r.threshold[j]), psi, r.threshold[j], vr, DETACH);
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
  acc_t* state_count = static_cast<acc_t*>(p.state_count);
  acc_t* g_beta = static_cast<acc_t*>(p.grad_beta);
  acc_t* g_alpha = static_cast<acc_t*>(p.grad_alpha);
  acc_t* g_threshold = static_cast<acc_t*>(p.grad_threshold);
  acc_t* g_target = static_cast<acc_t*>(p.grad_target);
  double* partials = static_cast<double*>(p.partials);
  const acc_t vr = static_cast<acc_t>(p.v_reset), sa = static_cast<acc_t>(p.surrogate_alpha);
  const acc_t inv_n = static_cast<acc_t>(1.0 / static_cast<double>(N));
  for_each_block<acc_t, OnlineLocal<acc_t>>(p, [&](int64_t b, int64_t i0, int64_t n, Rows<acc_t>& r,
                                                   OnlineLocal<acc_t>& l) {
    if (p.count0.data) load_param(l.count, p.count0, i0, n);
    else fill_value(l.count, p.count0.value, n);
    for (int64_t j = 0; j < n; ++j) {
      l.y[j] = target[i0 + j];
      l.ls[j] = l.gb[j] = l.ga[j] = l.gt[j] = l.gy[j] = acc_t(0);
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t step = p.t0 + t;
      const acc_t step1 = static_cast<acc_t>(step + 1);
      acc_t* gxt = gx ? gx + t * N + i0 : nullptr;
      if (step < p.warmup || !GRAD) {  // the LIF step (and the loss after the warm-up), no gradient
        step_row<R>(x + t * N + i0, spikes + t * N + i0, r, l.count, l.xbuf, l.sbuf, vr, n);
        if (step >= p.warmup) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const acc_t d = online_term(l.count[j], step1, l.y[j], inv_n).d;
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
      // dL/dS[t] = 2 d / ((t+1) N) as d times this step's factor (online_term's gs to float rounding, without a
      // division per neuron-step)
      const acc_t gs_scale = static_cast<acc_t>(2.0 / (static_cast<double>(N) * static_cast<double>(step + 1)));
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const acc_t xj = xt[j], vp = r.v[j];
        const acc_t h = charge(vp, xj, r.beta[j], r.alpha[j]);
        const acc_t s = fires(h, r.threshold[j]);
        r.v[j] = reset_v<R>(h, s, r.threshold[j], vr);
        l.count[j] += s;
        st[j] = s;
        const acc_t d = online_term(l.count[j], step1, l.y[j], inv_n).d;
        l.ls[j] += d * d;
        const acc_t gh = (d * gs_scale) * surrogate_grad_cpu<K>(h - r.threshold[j], a);
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
