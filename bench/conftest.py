"""Benchmark helpers (pytest-benchmark): devices, timing of fwd / bwd / both, and a ratio table at the end.

Every benchmark records its best time (min over rounds: the machine is shared and noisy, and the minimum is the
least disturbed estimate) under a key (device, op, mode, T, N, impl); the terminal summary prints, per key, the
fused time and its ratio to the floor and to the other implementations from the SAME run. Set
LTL_BENCH_TABLE=path.json to also write the rows as JSON (scripts/gpu_check.sh does).

LTL_BENCH_FULL=1 runs every implementation at every (T, N); the default runs the slow Python-loop
implementations (reference, SpikingJelly) only at T = 16.

Artefacts (scripts/evidence.py, under docs/results/): the ratio table of a run goes to
``bench_<devices>_<allocator>.json``; bench_lif.py's CPU target tests write their own:
``cpu_large_layer_<allocator>.json`` (N = 2^20, interleaved), ``cpu_per_call_overhead_<allocator>.json`` (N = 4096)
and ``cpu_where_the_time_goes_<allocator>.json``, where <allocator> is ``steady_allocator`` when glibc is told to keep
freed memory (MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296: a training loop's steady
state, as PyTorch's caching allocator gives on a GPU) and ``default_allocator`` otherwise (every fresh large
output is a new mmap whose page faults are timed too). Run both regimes to publish CPU figures.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from evidence import write_artefact  # noqa: E402

FULL = os.environ.get("LTL_BENCH_FULL") == "1"
RESULTS: dict = defaultdict(dict)  # (device, op, mode, T, N) -> {impl: seconds}
EXTRA: list = []                   # free-form rows (bandwidth figures)


def allocator_regime() -> str:
    """``steady_allocator`` when glibc keeps freed memory for reuse (see the module docstring), else default."""
    steady = os.environ.get("MALLOC_MMAP_THRESHOLD_") and os.environ.get("MALLOC_TRIM_THRESHOLD_")
    return "steady_allocator" if steady else "default_allocator"


def bench_command() -> str:
    """The command line that reproduces this run: glibc's allocator settings (when set: they choose the regime)
    and pytest's arguments, each quoted for the shell."""
    env = [f"{k}={os.environ[k]}" for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if k in os.environ]
    return " ".join(env + ["python -m pytest"] + [shlex.quote(a) for a in sys.argv[1:]])


def write_bench_artefact(stem: str, figures: dict) -> Path:
    """docs/results/<stem>_<allocator regime>.json, with the regime and the thread count among the figures."""
    figures = {"allocator": allocator_regime(), "threads": torch.get_num_threads(), **figures}
    return write_artefact(f"{stem}_{allocator_regime()}", figures, command=bench_command())


def cuda_ok() -> bool:
    try:
        from ltl_ext.ops import HAS_CUDA_KERNELS
    except Exception:  # pragma: no cover
        return False
    return torch.cuda.is_available() and HAS_CUDA_KERNELS


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not cuda_ok(), reason="no GPU / CUDA kernels"))]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_bench(benchmark, key, impl, fn, *, setup=None, device="cpu", rounds=None):
    """Time ``fn(*setup())`` (setup untimed, fresh per round) and record the best round under ``key``/``impl``."""
    def target(*args):
        out = fn(*args)
        sync(device)
        return out

    if rounds is None:
        rounds = 5 if device == "cpu" else 20
    if setup is None:
        benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=1)
    else:
        def _setup():
            args = setup()
            sync(device)
            return args, {}
        benchmark.pedantic(target, setup=_setup, rounds=rounds, warmup_rounds=1)
    best = benchmark.stats.stats.min
    RESULTS[key][impl] = best
    benchmark.extra_info.update(impl=impl, key=list(key), best_ms=best * 1e3)
    return best


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS and not EXTRA:
        return
    tr = terminalreporter
    impls = ["fused", "floor", "reference", "spikingjelly"]
    tr.write_sep("=", "ltl_ext: best times (ms) and ratios from this run")
    head = "| device | op | mode | T | N | " + " | ".join(impls) + " | fused/floor | reference/fused | SJ/fused |"
    tr.write_line(head)
    tr.write_line("|" + "---|" * (head.count("|") - 1))
    rows = []
    for key in sorted(RESULTS, key=lambda k: (k[0], k[1], ["fwd", "bwd", "both"].index(k[2]) if k[2] in ("fwd", "bwd", "both") else 9, k[3], k[4])):
        r = RESULTS[key]
        f = r.get("fused")
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
        cells = [f"{r[i] * 1e3:.2f}" if i in r else "-" for i in impls]
        tr.write_line(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | 2^{int(key[4]).bit_length() - 1} | "
                      + " | ".join(cells) + f" | {ratio(f, r.get('floor'))} | {ratio(r.get('reference'), f)} | "
                      f"{ratio(r.get('spikingjelly'), f)} |")
        rows.append({"device": key[0], "op": key[1], "mode": key[2], "T": key[3], "N": key[4],
                     **{f"{i}_ms": r[i] * 1e3 for i in r},
                     "fused_vs_floor": f / r["floor"] if f and r.get("floor") else None})
    for e in EXTRA:
        tr.write_line(" ".join(f"{k}={v}" for k, v in e.items()))
    if rows:
        devices = "_".join(sorted({r["device"] for r in rows}))
        written = write_bench_artefact(f"bench_{devices}", {"rows": rows, "extra": EXTRA})
        tr.write_line(f"artefact: {written}")
    path = os.environ.get("LTL_BENCH_TABLE")
    if path:
        with open(path, "w") as fh:
            json.dump({"rows": rows, "extra": EXTRA, "torch": torch.__version__}, fh, indent=1)
