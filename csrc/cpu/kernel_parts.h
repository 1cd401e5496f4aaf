// The building blocks of the CPU kernels (floor 2), for kernels.h, in the same per-ISA namespace (LTL_CPU_ISA):
// the math type, the vectorised exp of the sigmoid surrogate, the surrogate gradients, the per-block scratch, row
// input/output (conversion of 16-bit rows, non-temporal stores of large outputs, prefetch), parameter loads, the
// block iteration (for_each_block) and the loss's block-ordered sum. Included by kernels.h only; the including file
// provides what kernels.h's header comment lists. Everything has internal linkage.
#ifndef LTL_CPU_ISA
#error "define LTL_CPU_ISA (the namespace of this instantiation) before including kernel_parts.h"
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
// Which piece of a [T, N] array to prefetch while row t of the block at neuron i0 (n neurons) is processed: row
// t + kPrefetchRows of the block, past the last row the next block's first rows. `offset` into the array, `n`
// neurons (0: nothing to prefetch).
struct Ahead {
  int64_t offset, n;
};
inline Ahead ahead(int64_t t, int64_t T, int64_t N, int64_t i0, int64_t n) {
  int64_t u = t + kPrefetchRows, j0 = i0, m = n;
  if (u >= T) u -= T, j0 += kB, m = imin(kB, N - j0);
  return {u * N + j0, u < T && m > 0 ? m : 0};
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
  explicit Scratch(int64_t n)
      : data(static_cast<acc_t*>(std::malloc(sizeof(acc_t) * static_cast<size_t>(n > 0 ? n : 1)))) {
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
  if constexpr (std::is_same<scalar_t, float>::value && std::is_same<acc_t, float>::value)
    stream_row(static_cast<float*>(dst), static_cast<const float*>(src), n);
  else
    row_out(dst, src, n);
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

}  // namespace
}  // namespace LTL_CPU_ISA
}  // namespace ltl
