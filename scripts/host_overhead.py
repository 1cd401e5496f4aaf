"""The host's share of a training step: the step time of the zoo's VGG-11 layer structure with 4 channels per
convolution (hidden 8), T = 16, batch 2, one CPU thread, per method. At that size the arithmetic is negligible
and what remains is what every step pays whatever the layer sizes: Python, module calls, op dispatch, one
backward call per layer. On a GPU this is the time the host needs to issue a step; where it exceeds the kernels'
time the GPU waits (``scripts/step_profile.py --device cuda`` shows it as ``wall_s`` above ``total``).

Interleaved: every method's median of 20 steps, ``--reps`` rounds in turn, the minimum over rounds reported.

    python scripts/host_overhead.py                           # the table
    python scripts/host_overhead.py --write host_overhead     # -> docs/results/host_overhead.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import train_memory  # noqa: E402

METHODS = ("bptt", "ltl_offline", "ltl_online", "ltl_constant")


def narrow_vgg11():
    """The zoo's VGG-11 layers with 4 channels per convolution and hidden layers of 8."""
    from ltl_ext.nn.zoo import VGG, VGG11_CONVS
    return VGG([(4, stride) for _, stride in VGG11_CONVS], 10, 3, 32, None, hidden=(8, 8))


def measure(T: int, batch: int, reps: int) -> list:
    torch.set_num_threads(1)
    steps = {m: train_memory.build_step(m, T, batch, "cpu", network=narrow_vgg11) for m in METHODS}
    for step in steps.values():
        for _ in range(3):
            step()
    best = {}
    for _ in range(reps):
        for method, step in steps.items():
            ts = []
            for _ in range(20):
                t0 = time.perf_counter()
                step()
                ts.append(time.perf_counter() - t0)
            best[method] = min(best.get(method, float("inf")), statistics.median(ts))
    return [{"method": m, "T": T, "batch": batch, "step_ms": best[m] * 1e3, "vs_bptt": best[m] / best["bptt"]}
            for m in METHODS]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--write", metavar="NAME", help="write docs/results/NAME.json")
    args = ap.parse_args(argv)
    rows = measure(args.T, args.batch, args.reps)
    for r in rows:
        print(f"{r['method']:>13}: {r['step_ms']:6.2f} ms per step ({r['vs_bptt']:.2f}x BPTT)")
    if args.write:
        from evidence import write_artefact
        path = write_artefact(args.write, {"network": "VGG-11 layers, 4 channels per conv, hidden 8; 1 CPU thread",
                                           "rows": rows},
                              command="python scripts/host_overhead.py " + " ".join(argv or sys.argv[1:]))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
