"""Where the time of one training step goes: our BPTT against offline LTL, per kind of op (``torch.profiler``).

The same network and batch as ``train_memory.py`` (the zoo's VGG-11, CIFAR-shaped synthetic batch, one thread);
one warm-up step, then one profiled step per method. Self CPU time is summed by kind: convolution forward,
convolution backward (input and weight gradients for BPTT, weight gradients only for LTL: its layers' inputs are
detached spikes), the fused LIF / tandem ops, and the rest. From the convolutions alone it derives the floor of
offline LTL's step time relative to BPTT's, ``(conv fwd + conv bwd of LTL) / (conv fwd + conv bwd of BPTT)``,
with the teacher's own forward convolutions excluded from LTL's figure (counted apart).

    python scripts/step_profile.py --write          # -> docs/results/step_profile.json
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import train_memory  # noqa: E402

KINDS = {"aten::mkldnn_convolution": "conv_forward", "aten::convolution_backward": "conv_backward",
         "aten::_convolution": "conv_forward", "ltl_ext::lif_fwd": "lif_ops", "ltl_ext::lif_bwd": "lif_ops",
         "ltl_ext::tandem_offline_fwd": "lif_ops", "ltl_ext::tandem_offline_bwd": "lif_ops",
         "ltl_ext::tandem_online": "lif_ops"}


def profile_step(method: str, T: int, batch: int) -> dict:
    """Self CPU seconds by kind of op for one step of ``method`` (after a warm-up step)."""
    step = train_memory.build_step(method, T, batch, "cpu")
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    seconds = defaultdict(float)
    for e in prof.key_averages():
        seconds[KINDS.get(e.key, "other")] += e.self_cpu_time_total / 1e6
    seconds["total"] = sum(seconds.values())
    return dict(seconds)


def teacher_conv_seconds(T: int, batch: int) -> float:
    """The teacher's forward convolutions in one LTL step (its forward on the batch, without time)."""
    from ltl_ext import models
    teacher = models.vgg11().eval()
    x = torch.rand(batch, 3, 32, 32)
    with torch.no_grad():
        teacher(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            teacher(x)
    return sum(e.self_cpu_time_total for e in prof.key_averages() if KINDS.get(e.key) == "conv_forward") / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--write", action="store_true", help="write docs/results/step_profile.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for method in ("bptt", "ltl_offline"):
        s = profile_step(method, args.T, args.batch)
        rows.append({"method": method, "T": args.T, "batch": args.batch, **{k: round(v, 4) for k, v in s.items()}})
        print(rows[-1], flush=True)
    bptt, ltl = rows
    teacher = teacher_conv_seconds(args.T, args.batch)
    student_fwd = ltl["conv_forward"] - teacher
    floor = (student_fwd + ltl["conv_backward"]) / (bptt["conv_forward"] + bptt["conv_backward"])
    for r in rows:
        r["total_vs_bptt"] = round(r["total"] / bptt["total"], 3)
    ltl["teacher_conv_forward"] = round(teacher, 4)
    ltl["conv_floor_vs_bptt"] = round(floor, 3)
    print(rows)
    if args.write:
        from evidence import write_artefact
        path = write_artefact("step_profile", {"network": "vgg11 (zoo), CIFAR-shaped synthetic batch, 1 thread",
                                               "rows": rows},
                              command="python scripts/step_profile.py " + " ".join(argv or sys.argv[1:]))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
