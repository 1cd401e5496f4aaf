// ltl/tandem_math.h: the local tandem loss's error terms (floor 1 of docs/architecture.md), on top of lif_math.h.
//
// Host + device, templated on the math type `real` (float or double; half/bf16 callers compute in float).
// Semantics (ltl-method.md §3, §4; the spec is ltl_ext/ops/reference.py, tandem_loss_reference):
//
// Offline:  r = C[T-1] / T (the firing rate),  d = r - y,  L = mean_n d^2.
//           dL/dS[t] = 2 d / (N T), the same for every t: the backward needs only the [N] vector d.
// Online:   at step t (global index, counted from 0), C[t] = C[t-1] + S[t] (C detached through time),
//           d_t = C[t] / (t+1) - y,  L = sum_{t >= warmup} mean_n d_t^2,
//           dL/dS[t] = 2 d_t / ((t+1) N) and, V being detached, gH[t] = dL/dS[t] psi[t]:
//           gX[t] = alpha gH,  g_beta += gH V[t-1],  g_alpha += gH X[t],  g_threshold -= gH,  g_y -= 2 d_t / N.
#pragma once

#include <stdint.h>

#include "ltl/lif_math.h"

namespace ltl {

// ---- offline ----------------------------------------------------------------------------------------------
// d = r - y with r = count / T (division, like the reference's `sum(0) / T`).
template <typename real> LTL_HD real offline_rate_error(real count, real steps, real y) { return count / steps - y; }
// dL/dS[t] for every t, given d and grad_scale = 2 * dL_out / (N T).
template <typename real> LTL_HD real offline_gs(real d, real grad_scale) { return d * grad_scale; }

// ---- online -----------------------------------------------------------------------------------------------
template <typename real> struct OnlineTerm {
  real d;   // C[t] / (t+1) - y
  real gs;  // dL/dS[t] = 2 d / ((t+1) N)
};
// dL/dS[t] per unit of d at step t: 2 / ((t+1) N), one factor for every neuron of the step, computed in double and
// rounded once (no division per neuron-step). step1 = t + 1 (the number of steps seen).
template <typename real> LTL_HD real online_gs_scale(int64_t step1, int64_t n) {
  return static_cast<real>(2.0 / (static_cast<double>(n) * static_cast<double>(step1)));
}
// gs_scale = online_gs_scale(step1, N).
template <typename real> LTL_HD OnlineTerm<real> online_term(real count, real step1, real y, real gs_scale) {
  OnlineTerm<real> o;
  o.d = count / step1 - y;
  o.gs = o.d * gs_scale;
  return o;
}

}  // namespace ltl
