"""Benchmarks of the fused local tandem loss (issue 3): figures, not pass/fail.

    .venv/bin/python -m pytest bench/bench_tandem.py --benchmark-only -q -k fwd_bwd     # conftest's summary table
    .venv/bin/python -m pytest bench/bench_tandem.py --benchmark-only -q -s -k "ratios or memory"  # medians, memory

Float32, T = 16, N = 2^20 (env LTL_BENCH_T / LTL_BENCH_N to change), fwd+bwd (``torch.autograd.grad`` of the
loss w.r.t. x, so no accumulation into x.grad is timed):
- fused offline / online (batched) / stepwise, and the reference;
- the floor: plain torch ops that read the same inputs and write fresh outputs of the same sizes (forward: x - y
  -> [T, N] like the spikes; backward: x * y -> [T, N] like grad_x);
- memory: bytes saved for backward per neuron-step (``saved_tensors_hooks``), fused and reference.
``test_ratios`` times everything interleaved in one process and prints the ratios (the machine is shared: only
ratios from one run mean anything).
"""
from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from conftest import DEVICES, run_bench
from ltl_ext.functional import tandem_loss, tandem_loss_reference, tandem_step

T = int(os.environ.get("LTL_BENCH_T", 16))
N = int(os.environ.get("LTL_BENCH_N", 1 << 20))
# the LTL paper's neuron (hard reset, rect surrogate); test_ratios also runs the sigmoid surrogate (an exp per step)
LIF = dict(beta=0.9048, threshold=0.6, reset="hard", surrogate=os.environ.get("LTL_BENCH_SURROGATE", "rect"))


def _data(device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(T, N, generator=g) * 0.6 + 0.45).to(device)
    y = torch.rand(N, generator=g).to(device)
    return x, y


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def fused(mode, lif=LIF):
    def run(x, y):
        x = x.detach().requires_grad_()
        _, loss = tandem_loss(x, y, mode=mode, warmup=12 if mode == "online" else 0, **lif)
        return torch.autograd.grad(loss, x)[0]
    return run


def stepwise_(lif=LIF):
    def run(x, y):
        v = c = None
        for t in range(T):
            x_t = x[t].detach().requires_grad_()
            _, l_t, v, c = tandem_step(x_t, y, v, c, t, warmup=12, **lif)
            torch.autograd.grad(l_t, x_t)
        return v
    return run


def reference_(lif=LIF):
    def run(x, y):
        x = x.detach().requires_grad_()
        _, loss = tandem_loss_reference(x, y, mode="offline", **lif)
        return torch.autograd.grad(loss, x)[0]
    return run


stepwise, reference = stepwise_(), reference_()


def floor(x, y):
    spikes = torch.sub(x, y)  # forward: reads x and target, writes a fresh [T, N]
    gx = torch.mul(x, y)      # backward: reads x and the [N] error, writes a fresh [T, N]
    return spikes, gx


def reference_online(x, y):
    x = x.detach().requires_grad_()
    _, loss = tandem_loss_reference(x, y, mode="online", warmup=12, **LIF)
    return torch.autograd.grad(loss, x)[0]


# op -> impl -> function; the rows of bench/conftest.py's summary table (fused / floor / reference, one run)
OPS = {
    "tandem_offline": {"fused": fused("offline"), "floor": floor, "reference": reference},
    "tandem_online": {"fused": fused("online"), "floor": floor, "reference": reference_online},
    "tandem_stepwise": {"fused": stepwise, "floor": floor},
}
CASES = {"fused_offline": fused("offline"), "fused_online": fused("online"), "stepwise_online": stepwise,
         "reference_offline": reference, "floor": floor}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,impl", [(op, impl) for op, impls in OPS.items() for impl in impls])
def test_fwd_bwd(benchmark, op, impl, device):
    x, y = _data(device)
    rounds = (1 if device == "cpu" else 3) if impl == "reference" else None
    benchmark.extra_info.update(surrogate=LIF["surrogate"])
    run_bench(benchmark, (device, op, "both", T, N), impl, OPS[op][impl], setup=lambda: (x, y), device=device,
              rounds=rounds)


def saved_bytes(fn):
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def memory_table(n=1 << 14, steps=16):
    """Bytes saved for backward per neuron-step (float32), fused vs reference; stepwise: the worst single step."""
    x = torch.randn(steps, n) * 0.6 + 0.45
    y = torch.rand(n)
    xr = x.requires_grad_()
    rows = {}
    for mode in ("offline", "online"):
        kw = dict(mode=mode, warmup=12 if mode == "online" else 0, **LIF)
        rows[f"{mode} fused"] = saved_bytes(lambda: tandem_loss(xr, y, **kw)) / (steps * n)
        rows[f"{mode} reference"] = saved_bytes(lambda: tandem_loss_reference(xr, y, **kw)) / (steps * n)
    worst = 0
    v = c = None
    for t in range(steps):
        x_t = x[t].detach().requires_grad_()
        out = {}

        def step():
            out["r"] = tandem_step(x_t, y, v, c, t, warmup=12, **LIF)

        worst = max(worst, saved_bytes(step))
        _, _, v, c = out["r"]
    rows["stepwise fused (per neuron, any T)"] = worst / n
    return rows


def test_memory(benchmark):
    rows = benchmark.pedantic(memory_table, rounds=1, iterations=1)
    benchmark.extra_info.update({k: round(v, 3) for k, v in rows.items()})
    print("\nbytes saved for backward per neuron-step (float32):")
    for k, v in rows.items():
        print(f"  {k:40s} {v:8.3f}")
    assert rows["offline fused"] <= 4 + 1 and rows["online fused"] <= 4 + 1


def _median_ms(fn, x, y, device, reps):
    ts = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn(x, y)
        _sync(device)
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate", ["rect", "sigmoid"])
def test_ratios(benchmark, surrogate, device):
    """Everything interleaved in one process, several rounds; prints medians and the ratios of the issue."""
    x, y = _data(device)
    lif = dict(LIF, surrogate=surrogate)
    cases = {"fused_offline": fused("offline", lif), "fused_online": fused("online", lif),
             "stepwise_online": stepwise_(lif), "reference_offline": reference_(lif), "floor": floor}
    for fn in cases.values():  # warm up (allocator, page cache, lazy init)
        fn(x, y)
    reps = {k: (2 if k.startswith("reference") else 5) for k in cases}
    times = {k: [] for k in cases}
    for _ in range(3):
        for k, fn in cases.items():
            times[k].append(_median_ms(fn, x, y, device, reps[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        "reference / fused_offline": med["reference_offline"] / med["fused_offline"],
        "fused_offline / floor": med["fused_offline"] / med["floor"],
        "fused_online / floor": med["fused_online"] / med["floor"],
        "stepwise_online / floor": med["stepwise_online"] / med["floor"],
    }
    benchmark.extra_info.update({f"{k} ms": round(v, 2) for k, v in med.items()})
    benchmark.extra_info.update({k: round(v, 2) for k, v in ratios.items()})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\n{device}, float32, T={T}, N={N}, {surrogate} surrogate, fwd+bwd, threads={torch.get_num_threads()} "
          "(median ms):")
    for k, v in med.items():
        print(f"  {k:22s} {v:9.2f}")
    for k, v in ratios.items():
        print(f"  {k:28s} {v:6.2f}x")
