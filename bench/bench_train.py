"""One training step of the zoo's VGG-11 on synthetic CIFAR-shaped data: LTL offline / online (batched) / online
(constant memory) vs BPTT (ours, and SpikingJelly 2.0's with and without ``memopt``).

Time: pytest-benchmark times the step in this process (images/s in ``extra_info``). Memory: the live memory the
step adds, measured in a fresh process per method by ``scripts/train_memory.py`` (see its docstring: malloc
settings, ``clear_refs``, VmHWM; on CUDA ``max_memory_allocated``).

    pytest bench/bench_train.py --benchmark-only                       # T = 8, batch 16, CPU (and CUDA)
    LTL_BENCH_FULL=1 pytest bench/bench_train.py --benchmark-only      # T in {4, 8, 16}, batch in {16, 64}
    LTL_BENCH_SHAPES=16x64 ...                                         # these (T x batch) only
    LTL_BENCH_WRITE=1 ...                                              # -> docs/results/train_bench[_cuda].json

On a GPU the LTL methods also run in bfloat16 and float16 mixed precision (images/s per precision), and each row
gives the time one epoch of CIFAR-10 (50 000 images) takes at its T and batch (``cifar10_epoch_s``).

The step time on a shared 2-core machine is noisy: the table in docs/results/train_memory.json (fresh processes,
one thread, median of several steps) is the reference figure.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import train_memory  # noqa: E402

FULL = os.environ.get("LTL_BENCH_FULL") == "1"
SHAPES = [(T, b) for T in (4, 8, 16) for b in (16, 64)] if FULL else [(8, 16)]
if os.environ.get("LTL_BENCH_SHAPES"):       # "16x64,8x16": T x batch
    SHAPES = [tuple(int(v) for v in shape.split("x")) for shape in os.environ["LTL_BENCH_SHAPES"].split(",")]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
ROWS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _write_rows():
    yield
    if os.environ.get("LTL_BENCH_WRITE") == "1" and ROWS:
        from evidence import write_artefact
        for device in {r["device"] for r in ROWS.values()}:
            rows = [r for r in ROWS.values() if r["device"] == device]
            write_artefact("train_bench" + ("" if device == "cpu" else f"_{device}"),
                           {"network": "vgg11 (zoo), CIFAR-shaped synthetic batch", "rows": rows},
                           command="pytest bench/bench_train.py --benchmark-only")


@pytest.mark.parametrize("precision", ["32", "bf16", "16-mixed"])     # mixed: LTL on a GPU only
@pytest.mark.parametrize("T,batch", SHAPES, ids=[f"T{T}-b{b}" for T, b in SHAPES])
@pytest.mark.parametrize("method", train_memory.METHODS)
@pytest.mark.parametrize("device", DEVICES)
def test_train_step(benchmark, method, T, batch, device, precision):
    if method.startswith("sj_") and not train_memory.sj_available():
        pytest.skip("spikingjelly 2.0 not installed (pip install --no-deps spikingjelly)")
    if precision != "32" and (device != "cuda" or method not in train_memory.LTL):
        pytest.skip("mixed precision: LTL on a GPU only")
    step = train_memory.build_step(method, T, batch, device, precision)

    def timed():
        step()
        if device == "cuda":
            torch.cuda.synchronize()
    benchmark.pedantic(timed, rounds=2 if device == "cpu" else 5, warmup_rounds=1, iterations=1)
    memory = train_memory.run_child(method, "memory", T, batch, device, torch.get_num_threads(), 1, precision)
    seconds = benchmark.stats.stats.median
    row = {"method": method, "precision": precision, "T": T, "batch": batch, "device": device,
           "threads": torch.get_num_threads(), "step_s": seconds, "images_per_s": batch / seconds,
           "cifar10_epoch_s": 50_000 * seconds / batch, **memory}
    benchmark.extra_info.update(row)
    ROWS[(device, method, precision, T, batch)] = row
    assert "error" not in memory, memory["error"]
