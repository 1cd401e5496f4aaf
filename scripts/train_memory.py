"""Peak memory and time of ONE training step: LTL (offline, online batched, online constant memory) vs BPTT
(ours, and SpikingJelly 2.0's with and without ``memopt``) on the zoo's VGG-11, synthetic CIFAR-shaped data.

Each (method, what) runs in a fresh process, so no method inherits another's allocations:

- memory (CPU): glibc serves every block of 64 KiB or more from mmap and returns it on free
  (``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0``), so resident memory follows live bytes. After a
  warm-up step (optimiser state exists, gradients freed by ``zero_grad``), Linux's peak mark is reset
  (``/proc/self/clear_refs`` <- 5); the figure is VmHWM after one more step minus VmRSS before it: the live
  memory the step adds on top of what the process holds.
- memory (CUDA): ``torch.cuda.max_memory_allocated`` over the step minus ``memory_allocated`` before it.
- time: the default allocator, the median of ``--steps`` steps after a warm-up (CUDA events on the GPU), in
  ``--rounds`` rounds that time every method in turn; a method's figure is its median over the rounds.

    python scripts/train_memory.py                      # VGG-11, T = 8, batch 16, 1 thread -> the table
    python scripts/train_memory.py --write              # ... and docs/results/train_memory.json
    python scripts/train_memory.py --one ltl_offline --what memory     # one measurement (the child)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
METHODS = ("bptt", "ltl_offline", "ltl_online", "ltl_constant", "sj_bptt", "sj_memopt")
LTL = {"ltl_offline": ("offline", "batched"), "ltl_online": ("online", "batched"),
       "ltl_constant": ("online", "constant")}
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


# ----------------------------------------------------------------------------------------------- the child
def _proc_status(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _sj_student(student, T: int):
    """The same network with SpikingJelly's multi-step ``LIFNode`` (same beta, threshold, reset) in place of our
    LIFs; time stays folded into the batch between layers, as in SpikingJelly's ``SeqToANNContainer``."""
    from spikingjelly.activation_based import neuron, surrogate
    from ltl_ext.nn import LIF

    class SJLIF(torch.nn.Module):
        def __init__(self, lif):
            super().__init__()
            beta = float(lif.beta)                 # H = beta V + X  <=>  LIFNode(tau, decay_input=False)
            self.node = neuron.LIFNode(tau=1.0 / (1.0 - beta), decay_input=False, v_threshold=float(lif.threshold),
                                       v_reset=0.0 if lif.reset == "hard" else None, step_mode="m",
                                       surrogate_function=surrogate.Sigmoid(alpha=4.0))

        def forward(self, x):
            self.node.reset()
            return self.node(x.reshape(T, -1, *x.shape[1:])).reshape(x.shape)

    def swap(module):
        for name, child in module.named_children():
            if isinstance(child, LIF):
                setattr(module, name, SJLIF(child))
            else:
                swap(child)
    swap(student.model)
    return student


class _Block(torch.nn.Sequential):
    """One conv or fc block (conv/linear, BN, LIF): SpikingJelly memopt's checkpoint unit."""


def build_step(method: str, T: int, batch: int, device: str, precision: str = "32", network=None,
               warmup: Optional[int] = None):
    """``step()`` running one training step of ``method`` on a fixed synthetic batch, for the zoo's VGG-11 or
    ``network()`` (a factory of CIFAR-shaped models); ``warmup`` for the online LTL methods (None: the trainer's
    default, 3T/4)."""
    from ltl_ext import BPTTTrainer, LocalTandemTrainer, convert, models
    torch.manual_seed(0)
    teacher = (network or models.vgg11)()
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if method in LTL:
        mode, memory = LTL[method]
        trainer = LocalTandemTrainer(teacher, time_steps=T, mode=mode, memory=memory, device=device,
                                     precision=precision, **({} if warmup is None else {"warmup": warmup}))
        return lambda: trainer.train_step(x, y)
    student = convert(teacher.eval())
    for p in student.parameters():
        p.requires_grad_(True)
    if method == "bptt":
        trainer = BPTTTrainer(student, time_steps=T, device=device)
        return lambda: trainer.train_step(x, y)
    from ltl_ext.nn import SpikingModel
    model = _sj_student(SpikingModel(student, time_steps=T), T).to(device)
    if method == "sj_memopt":
        from spikingjelly.activation_based import memopt
        # memopt's level 1 checkpoints modules of the given types: the conv/fc blocks (conv/linear, BN, LIF), each
        # its own type here, so that the stacks holding them (``features``, ``classifier``) are not candidates
        for stack in (model.model.features, model.model.classifier):
            for block in stack:
                block.__class__ = _Block
        memopt.optimize_memory(model.model, (_Block,), lambda m: m(x.unsqueeze(0).expand(T, *x.shape)
                                                                   .reshape(T * batch, *x.shape[1:])), level=1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}
    return step


def measure(method: str, what: str, T: int, batch: int, device: str, steps: int, precision: str = "32") -> dict:
    import gc
    step = build_step(method, T, batch, device, precision)
    step()                                                         # warm-up: optimiser state, caches
    gc.collect()
    if what == "memory":
        if device == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            return {"added_mb": (torch.cuda.max_memory_allocated() - before) / 2 ** 20}
        before = _proc_status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")              # VmHWM <- current RSS
        step()
        return {"added_mb": _proc_status("VmHWM") - before, "rss_before_mb": before}
    times = []
    for _ in range(steps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "steps": steps, "images_per_s": batch / statistics.median(times)}


# ----------------------------------------------------------------------------------------------- the driver
def run_child(method: str, what: str, T: int, batch: int, device: str, threads: int, steps: int,
              precision: str = "32") -> dict:
    """One measurement in a fresh process (the malloc settings only for CPU memory)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if what == "memory" and device == "cpu":
        env.update(MALLOC_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", method, "--what", what, "--T", str(T),
           "--batch", str(batch), "--device", device, "--threads", str(threads), "--steps", str(steps),
           "--precision", precision]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def sj_available() -> bool:
    try:
        import spikingjelly.activation_based.memopt  # noqa: F401
        return True
    except Exception:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", choices=METHODS, help="measure one method in this process (the child)")
    ap.add_argument("--what", choices=("memory", "time"), default="memory")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("32", "bf16", "16-mixed"), default="32",
                    help="LTL methods: LocalTandemTrainer(precision=...) (BPTT rows stay float32)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="timing rounds: each round times every method once, in turn, each in a fresh process; a "
                         "method's step_s is the median over the rounds (a slow spell of a shared machine then "
                         "hits every method alike instead of the one that ran through it)")
    ap.add_argument("--no-time", action="store_true", help="memory only")
    ap.add_argument("--write", action="store_true", help="write docs/results/train_memory[_cuda].json")
    args = ap.parse_args(argv)
    if args.one:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.one, args.what, args.T, args.batch, args.device, args.steps, args.precision)))
        return 0
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    rows = []
    for method in args.methods:                                     # memory: one fresh process each (exact)
        if method.startswith("sj_") and not sj_available():
            rows.append({"method": method, "skipped": "spikingjelly 2.0 not installed (pip install --no-deps "
                                                       "spikingjelly)"})
            continue
        row = {"method": method, "T": args.T, "batch": args.batch, "device": args.device, "threads": args.threads}
        row["precision"] = args.precision if method in LTL else "32"
        row.update(run_child(method, "memory", args.T, args.batch, args.device, args.threads, args.steps,
                             args.precision))
        rows.append(row)
        print(json.dumps(row), flush=True)
    timed = [] if args.no_time else [r for r in rows if "added_mb" in r]
    for _ in range(args.rounds):                                    # time: the methods interleaved, round by round
        for row in timed:
            t = run_child(row["method"], "time", args.T, args.batch, args.device, args.threads, args.steps,
                          args.precision)
            if "error" in t:
                row["error"] = t["error"]
            else:
                row.setdefault("step_s_rounds", []).append(t["step_s"])
            print(json.dumps({"method": row["method"], **t}), flush=True)
    for row in timed:
        if "step_s_rounds" in row:
            row["step_s"] = statistics.median(row["step_s_rounds"])
            row["steps"] = args.steps
            row["images_per_s"] = args.batch / row["step_s"]
            row["cifar10_epoch_s"] = 50_000 / row["images_per_s"]     # one epoch of CIFAR-10 at this T
    ref = next((r for r in rows if r["method"] == "bptt" and "added_mb" in r), None)
    if ref is not None:
        for r in rows:
            if "added_mb" in r:
                r["memory_vs_bptt"] = r["added_mb"] / ref["added_mb"]
            if "step_s" in r and "step_s" in ref:
                r["time_vs_bptt"] = r["step_s"] / ref["step_s"]
    for r in rows:
        print(f"{r['method']:>13}: " + ("skipped: " + r["skipped"] if "skipped" in r else
              r.get("error") or f"{r['added_mb']:7.1f} MB ({r.get('memory_vs_bptt', float('nan')):.2f}x BPTT)"
              + (f", {r['step_s']:.3f} s/step ({r.get('time_vs_bptt', float('nan')):.2f}x)" if "step_s" in r
                 else "")))
    if args.write:
        sys.path.insert(0, str(ROOT / "scripts"))
        from evidence import write_artefact
        name = ("train_memory" + ("" if args.device == "cpu" else f"_{args.device}")
                + ("" if args.precision == "32" else f"_{args.precision}"))
        path = write_artefact(name, {"network": "vgg11 (zoo), CIFAR-shaped synthetic batch", "rows": rows},
                              command="python " + " ".join(["scripts/" + Path(__file__).name] + (argv or sys.argv[1:])))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
