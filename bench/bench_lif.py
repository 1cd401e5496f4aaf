"""Fused multi-step LIF vs the floor, the reference and SpikingJelly's multi-step LIF (figures, not pass/fail).

    .venv/bin/python -m pytest bench/bench_lif.py --benchmark-only -q          # default: short
    LTL_BENCH_FULL=1 .venv/bin/python -m pytest bench/bench_lif.py --benchmark-only -q

float32, sigmoid surrogate, soft reset, beta = 0.9, threshold = 1. Modes: fwd (forward only, no autograd graph),
bwd (backward only: a fresh forward in the untimed setup of every round), both (forward + backward).
Floor = plain torch ops that read the op's inputs and write fresh outputs of the same sizes: fwd x.clone(),
bwd torch.add(grad_s, x), both = the two. SpikingJelly: `pip install --no-deps spikingjelly loguru`; its
LIFNode(tau=10, decay_input=True, v_reset=None) is the same neuron as beta = 0.9, alpha = 0.1 (skipped if absent).
"""
from __future__ import annotations

import pytest
import torch

from conftest import DEVICES, EXTRA, FULL, cuda_ok, run_bench, sync, write_bench_artefact
from evidence import interleaved_medians, interleaved_times, upper_median
from ltl_ext.functional import lif, lif_reference, tandem_loss

TS = [8, 16, 64]
NS = [1 << 14, 1 << 20]
MODES = ["fwd", "bwd", "both"]
KW = dict(beta=0.9, threshold=1.0, reset="soft", surrogate="sigmoid")

try:
    from spikingjelly.activation_based import neuron as sj_neuron, surrogate as sj_surrogate
except Exception:  # pragma: no cover
    sj_neuron = None


def _inputs(T, N, device):
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(T, N, generator=g, device=device) + 0.3
    gs = torch.randn(T, N, generator=g, device=device)
    return x, gs


def _fused(x):
    return lif(x, **KW)


def _reference(x):
    return lif_reference(x, **KW)


def _spikingjelly_fn():
    node = sj_neuron.LIFNode(tau=10.0, decay_input=True, v_threshold=1.0, v_reset=None,
                             surrogate_function=sj_surrogate.Sigmoid(alpha=4.0), step_mode="m")

    def f(x):
        node.reset()
        return node(x)
    return f


def _fwd_bwd(fwd_fn, x, gs):
    """One forward + backward through autograd, as a model calls it: returns the call, which returns dL/dx."""
    def run():
        xx = x.detach().requires_grad_()
        fwd_fn(xx).backward(gs)
        return xx.grad
    return run


def _floor(x, gs):
    """The floor of each mode: plain torch ops that read the op's inputs and write fresh outputs of the same sizes."""
    return {"fwd": lambda: x.clone(), "bwd": lambda: torch.add(gs, x),
            "both": lambda: (x.clone(), torch.add(gs, x))}


def _bench_impl(benchmark, impl, fwd_fn, mode, T, N, device):
    x, gs = _inputs(T, N, device)
    key = (device, "lif", mode, T, N)
    if impl == "floor":
        return run_bench(benchmark, key, impl, _floor(x, gs)[mode], device=device)
    if mode == "fwd":
        with torch.no_grad():
            fwd_fn(x)
        def f():
            with torch.no_grad():
                return fwd_fn(x)
        return run_bench(benchmark, key, impl, f, device=device)
    if mode == "both":
        return run_bench(benchmark, key, impl, _fwd_bwd(fwd_fn, x, gs), device=device)

    def setup():  # bwd: the forward is untimed
        xx = x.detach().requires_grad_()
        return (fwd_fn(xx),)

    return run_bench(benchmark, key, impl, lambda s: s.backward(gs), setup=setup, device=device)


def _skip_slow(impl, T, N, device):
    if impl in ("reference", "spikingjelly") and not FULL and (T != 16 or device == "cuda" and N < (1 << 20)):
        pytest.skip("slow Python-loop baseline: only T = 16 unless LTL_BENCH_FULL=1")
    if impl == "spikingjelly" and sj_neuron is None:
        pytest.skip("spikingjelly not installed (pip install --no-deps spikingjelly loguru)")


# first in the file: gpu_check.sh runs this file under a time limit, and this is the GPU target
@pytest.mark.skipif(not cuda_ok(), reason="GPU target: needs a GPU and the CUDA kernels")
def test_gpu_bandwidth_cuda(benchmark):
    """GPU target: fused fwd+bwd at >= 85 % (issue 13) of the measured copy bandwidth, N = 2^24, T = 16 (float32).

    Effective bandwidth of the fused pair = the [T, N] streams it must move (forward: read x, write spikes;
    backward: read x and grad_s, write grad_x = 5 x T x N x 4 bytes) / time. Copy bandwidth = 2 x bytes / time of
    y.copy_(x) into an existing tensor.
    """
    T, N, device = 16, 1 << 24, "cuda"
    x, gs = _inputs(T, N, device)
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    for _ in range(3):
        y.copy_(x)
    sync(device)
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    ts = []
    for _ in range(20):
        ev[0].record(); y.copy_(x); ev[1].record(); torch.cuda.synchronize()
        ts.append(ev[0].elapsed_time(ev[1]) / 1e3)
    copy_bw = 2 * nbytes / min(ts)

    best = run_bench(benchmark, (device, "lif", "both", T, N), "fused", _fwd_bwd(_fused, x, gs), device=device)
    fused_bw = 5 * nbytes / best
    row = {"target": "gpu_fwd_bwd_vs_copy", "T": T, "N": N, "copy_GBps": round(copy_bw / 1e9, 1),
           "fused_effective_GBps": round(fused_bw / 1e9, 1), "fraction_of_copy": round(fused_bw / copy_bw, 3),
           "fused_fwd_bwd_ms": round(best * 1e3, 3), "goal": 0.85}
    EXTRA.append(row)
    benchmark.extra_info.update(row)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("N", NS, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("T", TS, ids=lambda t: f"T{t}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["fused", "floor", "reference", "spikingjelly"])
def test_lif(benchmark, impl, mode, T, N, device):
    _skip_slow(impl, T, N, device)
    benchmark.group = f"lif-{device}-{mode}-T{T}-N2^{N.bit_length() - 1}"
    fn = {"fused": _fused, "reference": _reference, "floor": None}.get(impl)
    if impl == "spikingjelly":
        fn = _spikingjelly_fn()
    _bench_impl(benchmark, impl, fn, mode, T, N, device)


def _interleaved_median_us(cases: dict, calls: int = 400) -> dict:
    """``evidence.interleaved_medians`` in microseconds, after 20 warm-up calls of each case."""
    return {name: t * 1e6 for name, t in interleaved_medians(cases, calls, warmup_calls=20).items()}


def test_cpu_large_layer(benchmark):
    """The CPU targets at a real layer size (issue 13): fused fwd+bwd at N = 2^20, T = 16 (default threads, the
    autograd path as a model calls it) <= 1.5x the floor and >= 6x faster than SpikingJelly's CPU path.

    The three are called in turn, 61 rounds, and each round gives a ratio of two neighbouring calls, so a slow spell
    of this shared VM (its clock and its memory bandwidth both change from one second to the next) hits both sides
    of a ratio alike; the target's figure is the median of the rounds' ratios, with its quartiles. ``test_lif``
    times the implementations one after another, where a ratio moves with the machine. Writes
    docs/results/cpu_large_layer_<allocator>.json (SpikingJelly's row only when it is installed)."""
    T, N, rounds = 16, 1 << 20, 61
    x, gs = _inputs(T, N, "cpu")
    cases = {"fused": _fwd_bwd(_fused, x, gs), "floor": _floor(x, gs)["both"]}
    if sj_neuron is not None:
        cases["spikingjelly"] = _fwd_bwd(_spikingjelly_fn(), x, gs)
    times = interleaved_times(cases, rounds, warmup_calls=2)  # warm-up: first-touch page faults, pools
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)

    def row(target, slow, fast, goal, meets):
        ratios = sorted(a / b for a, b in zip(times[slow], times[fast]))
        q = lambda f: round(ratios[int(f * (len(ratios) - 1))], 2)
        median = upper_median(ratios)
        return {"target": target, "median_ratio": round(median, 2), "ratio_q1": q(0.25), "ratio_q3": q(0.75),
                "goal": goal, "meets_goal": meets(median),
                **{f"{name}_median_ms": round(upper_median(times[name]) * 1e3, 2) for name in (slow, fast)}}
    rows = [row("fused / floor", "fused", "floor", "<= 1.5", lambda r: r <= 1.5)]
    if "spikingjelly" in cases:
        rows.append(row("spikingjelly / fused", "spikingjelly", "fused", ">= 6", lambda r: r >= 6))
    write_bench_artefact("cpu_large_layer", {
        "what": f"fused LIF fwd+bwd (autograd) vs the floor (x.clone(), torch.add(grad_s, x)) and SpikingJelly's "
                f"LIFNode fwd+bwd, T = {T}, N = 2^20, float32, sigmoid surrogate, {rounds} rounds of the cases "
                f"called in turn; the ratio of each round's two calls, its median and quartiles",
        "T": T, "N": N, "rounds": rounds,
        "columns": ["target", "median_ratio", "ratio_q1", "ratio_q3", "goal", "meets_goal", "fused_median_ms",
                    "floor_median_ms", "spikingjelly_median_ms"],
        "rows": rows})
    EXTRA.extend(rows)


def test_cpu_per_call_overhead(benchmark):
    """Per-call cost at a small layer (N = 4096, T = 16, one thread): fused fwd+bwd over ``torch.sigmoid`` fwd+bwd
    on the same tensor. Goals (issue 13): lif <= 1.5x with scalar and with per-neuron tensor parameters; the
    tandem ops <= 2x. Writes docs/results/cpu_per_call_overhead_<allocator>.json."""
    T, N = 16, 4096
    x, gs = _inputs(T, N, "cpu")
    y = torch.rand(N, generator=torch.Generator().manual_seed(1))
    threshold = torch.full((N,), 1.0, requires_grad=True)

    def grad_of(f):
        def run():
            xx = x.detach().requires_grad_()
            f(xx)
            return xx.grad
        return run

    cases = {
        "sigmoid": grad_of(lambda xx: torch.sigmoid(xx).backward(gs)),
        "lif_scalar": grad_of(lambda xx: lif(xx, **KW).backward(gs)),
        "lif_tensor_threshold": grad_of(lambda xx: lif(xx, **{**KW, "threshold": threshold}).backward(gs)),
        "tandem_offline": grad_of(lambda xx: tandem_loss(xx, y, mode="offline", **KW)[1].backward()),
        "tandem_online": grad_of(lambda xx: tandem_loss(xx, y, mode="online", **KW)[1].backward()),
    }
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        us = _interleaved_median_us(cases)
        benchmark.pedantic(cases["lif_scalar"], rounds=20, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(old)
    goals = {"lif_scalar": 1.5, "lif_tensor_threshold": 1.5, "tandem_offline": 2.0, "tandem_online": 2.0}
    rows = [{"case": name, "median_us": round(us[name], 1), "ratio_to_sigmoid": round(us[name] / us["sigmoid"], 2),
             "goal_ratio": goals[name], "meets_goal": us[name] / us["sigmoid"] <= goals[name]} for name in goals]
    write_bench_artefact("cpu_per_call_overhead", {
        "what": "fused fwd+bwd vs torch.sigmoid fwd+bwd on the same tensor, median of 400 calls each, the cases "
                "interleaved, 1 thread",
        "T": T, "N": N, "sigmoid_median_us": round(us["sigmoid"], 1), "rows": rows})
    EXTRA.extend(rows)


def test_cpu_where_the_time_goes(benchmark):
    """Where the time of a fused fwd+bwd goes on the CPU: the forward op and the backward op alone (no autograd),
    for every surrogate (only the sigmoid needs a transcendental: an exp and a division per neuron-step in the
    backward's recompute), next to the floor, at N = 4096 (one thread) and N = 2^20 (the default threads).
    Writes docs/results/cpu_where_the_time_goes_<allocator>.json."""
    import ltl_ext  # noqa: F401  (registers torch.ops.ltl_ext)
    ops = torch.ops.ltl_ext
    rows = []
    for N, threads in ((4096, 1), (1 << 20, torch.get_num_threads())):
        T = 16
        x, gs = _inputs(T, N, "cpu")
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        calls = 400 if N <= 4096 else 20
        threshold = torch.full((N,), 1.0)

        def bwd(surrogate, need_threshold=False):
            return lambda: ops.lif_bwd.default(
                gs, None, x, None, None, threshold if need_threshold else None, None, 0.9, 1.0, 1.0, "soft", 0.0,
                surrogate, None, False, False, False, False, need_threshold)
        floor = _floor(x, gs)
        cases = {"floor_fwd_us": floor["fwd"], "floor_bwd_us": floor["bwd"],
                 "fwd_op_us": lambda: ops.lif_fwd.default(
                     x, None, None, None, None, 0.9, 1.0, 1.0, "soft", 0.0, "sigmoid", None, False)}
        cases.update({f"bwd_op_{sur}_us": bwd(sur) for sur in ("rect", "sigmoid", "atan", "fast_sigmoid")})
        cases["bwd_op_sigmoid_threshold_grad_us"] = bwd("sigmoid", need_threshold=True)
        try:
            us = _interleaved_median_us(cases, calls)
            row = {"T": T, "N": N, "threads": threads, **{name: round(v, 1) for name, v in us.items()}}
        finally:
            torch.set_num_threads(old)
        rows.append(row)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    write_bench_artefact("cpu_where_the_time_goes", {
        "what": "median wall time of the LIF forward op and backward op alone (no autograd), soft reset, float32, "
                "the cases interleaved; bwd_op_sigmoid_threshold_grad: with a per-neuron threshold's gradient",
        "rows": rows})
    EXTRA.extend(rows)
