"""LTL vs surrogate-gradient BPTT: time per training step / epoch and bytes saved for backward, over T.

For each T, the same student (the converted CNN of the demo recipe by default) is trained on the same batches by
  - LTL offline, LTL online (batched), LTL online constant-memory (LocalTandemTrainer), and
  - BPTT (BPTTTrainer: surrogate gradients through all layers and time steps, CE on the averaged readout).
Measured per method and T:
  - seconds per training step (median of --steps timed steps after --warmup-steps), and per epoch of the
    embedded subset (5000 images) and of full Fashion-MNIST (60000), extrapolated from the step time;
  - bytes saved for backward: the peak of the tensors autograd holds for backward (torch.autograd.graph.
    saved_tensors_hooks; unique storages, the model's parameters excluded). For the constant-memory form the peak
    is over the per-step graphs (each is freed by its own backward).
Optionally (--epochs N) it also trains LTL offline and BPTT for N epochs on the embedded subset at --conv-T and
records validation accuracy per epoch (the paper's "faster convergence" claim; the validation split carved from
the training images by make_loaders: the test set is not read).

    python scripts/ltl_vs_bptt.py --out runs/ltl_vs_bptt            # T in 8 16 32, timing + memory
    python scripts/ltl_vs_bptt.py --epochs 3 --conv-T 8 --out runs/ltl_vs_bptt_conv

Writes OUT/ltl_vs_bptt.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import weakref
from pathlib import Path

import torch

from ltl_ext import data
from ltl_ext.ltl.convert import convert
from ltl_ext.nn.zoo import cnn_small
from ltl_ext.nn import LIF, SpikingModel
from ltl_ext.train import BPTTTrainer, LocalTandemTrainer, train_teacher, write_json


class SavedBytes:
    """Peak bytes of the tensors autograd saves for backward (unique storages, parameters excluded)."""

    def __init__(self, exclude=()):
        self.exclude = {p.untyped_storage().data_ptr() for p in exclude}
        self.live = {}      # storage ptr -> [refcount, nbytes]
        self.current = 0
        self.peak = 0

    def _pack(self, t):
        ptr = t.untyped_storage().data_ptr()
        if ptr in self.exclude or t.numel() == 0:
            return t
        entry = self.live.get(ptr)
        if entry is None:
            entry = self.live[ptr] = [0, t.untyped_storage().nbytes()]
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        return _Held(t, self, ptr)

    def _release(self, ptr):
        entry = self.live[ptr]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.live[ptr]

    @staticmethod
    def _unpack(h):
        return h.t if isinstance(h, _Held) else h

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


class _Held:
    __slots__ = ("t", "__weakref__")

    def __init__(self, t, meter, ptr):
        self.t = t
        weakref.finalize(self, meter._release, ptr)


def make_teacher(channels, hidden, epochs, train_loader):
    torch.manual_seed(0)
    teacher = cnn_small(channels=channels, hidden=hidden)
    if epochs:
        train_teacher(teacher, train_loader, epochs, progress=False)
    return teacher.eval()


def methods(teacher, T):
    """name -> a fresh object with train_step(x, y) and .student."""
    yield "LTL offline", lambda: LocalTandemTrainer(teacher, time_steps=T, mode="offline", lr=1e-3, device="cpu")
    yield "LTL online", lambda: LocalTandemTrainer(teacher, time_steps=T, mode="online", lr=1e-3,
                                                   percentile=99.0, device="cpu")
    yield "LTL online constant", lambda: LocalTandemTrainer(teacher, time_steps=T, mode="online", lr=1e-3,
                                                            memory="constant", percentile=99.0, device="cpu")
    yield "BPTT", lambda: BPTTTrainer(SpikingModel(convert(teacher, neuron=LIF()), time_steps=T), time_steps=T,
                                      lr=1e-3, device="cpu")


def measure(make, batches, steps, warmup_steps):
    torch.manual_seed(0)
    tr = make()
    x0, y0 = batches[0]
    with SavedBytes(exclude=list(tr.student.parameters())) as meter:
        tr.train_step(x0, y0)
    times = []
    for i in range(warmup_steps + steps):
        x, y = batches[(i + 1) % len(batches)]
        t0 = time.perf_counter()
        tr.train_step(x, y)
        if i >= warmup_steps:
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "step_s_all": times, "saved_bytes": meter.peak}


def convergence(teacher, T, epochs, train_loader, val_loader):
    out = {}
    torch.manual_seed(1)
    ltl = LocalTandemTrainer(teacher, time_steps=T, mode="offline", lr=1e-3, device="cpu")
    ltl.fit(train_loader, epochs, val_loader=val_loader, progress=False)
    out["LTL offline"] = [{"epoch": h["epoch"], "acc": h["val_student_acc"], "seconds": h["seconds"]}
                          for h in ltl.history]
    torch.manual_seed(1)
    bptt = BPTTTrainer(SpikingModel(convert(teacher, neuron=LIF()), time_steps=T), time_steps=T, lr=1e-3,
                       device="cpu")
    bptt.fit(train_loader, epochs, val_loader=val_loader, progress=False)
    out["BPTT"] = [{"epoch": h["epoch"], "acc": h["val_student_acc"], "seconds": h["seconds"]} for h in bptt.history]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per method and T")
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--channels", default="16,32,32")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--teacher-epochs", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=0, help="also train LTL offline vs BPTT for N epochs")
    ap.add_argument("--conv-T", type=int, default=8)
    ap.add_argument("--out", default="runs/ltl_vs_bptt")
    args = ap.parse_args(argv)
    channels = tuple(int(c) for c in args.channels.split(","))
    splits = data.load_dataset("embedded")
    train_loader, val_loader, _ = data.make_loaders(splits, batch_size=args.batch_size, augment=False, seed=0)
    teacher = make_teacher(channels, args.hidden, args.teacher_epochs, train_loader)
    batches = [b for _, b in zip(range(args.steps + args.warmup_steps + 1), train_loader)]
    n_embedded = len(splits.y_train)
    results = {"config": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "timing": []}
    for T in args.T:
        for name, make in methods(teacher, T):
            r = measure(make, batches, args.steps, args.warmup_steps)
            r.update(method=name, T=T,
                     epoch_s_embedded=r["step_s"] * n_embedded / args.batch_size,
                     epoch_s_full_fmnist=r["step_s"] * 60000 / args.batch_size)
            results["timing"].append(r)
            print(f"T={T:3d} {name:22s} step {r['step_s'] * 1e3:8.1f} ms  saved {r['saved_bytes'] / 2**20:8.2f} MiB",
                  flush=True)
            write_json(Path(args.out) / "ltl_vs_bptt.json", results)
    if args.epochs:
        results["convergence"] = {"T": args.conv_T, "epochs": convergence(teacher, args.conv_T, args.epochs,
                                                                           train_loader, val_loader)}
        write_json(Path(args.out) / "ltl_vs_bptt.json", results)
    print(table(results))
    return 0


def table(results) -> str:
    rows = ["| T | method | s / step (B=%d) | s / epoch, embedded 3.7k | s / epoch, full 60k (extrapolated) | "
            "saved for backward (MiB) | vs BPTT time | vs BPTT memory |" % results["config"]["batch_size"],
            "|---|---|---|---|---|---|---|---|"]
    by = {(r["T"], r["method"]): r for r in results["timing"]}
    for r in results["timing"]:
        b = by.get((r["T"], "BPTT"))
        rows.append(f"| {r['T']} | {r['method']} | {r['step_s']:.3f} | {r['epoch_s_embedded']:.0f} | "
                    f"{r['epoch_s_full_fmnist']:.0f} | {r['saved_bytes'] / 2**20:.1f} | "
                    f"{r['step_s'] / b['step_s']:.2f}x | {r['saved_bytes'] / b['saved_bytes']:.2f}x |")
    conv = results.get("convergence")
    if conv:
        rows += ["", f"validation accuracy per epoch (embedded subset, T = {conv['T']}):", "",
                 "| method | " + " | ".join(f"epoch {e['epoch']}" for e in conv["epochs"]["BPTT"]) + " |",
                 "|---|" + "---|" * len(conv["epochs"]["BPTT"])]
        for name, hist in conv["epochs"].items():
            rows.append(f"| {name} | " + " | ".join(f"{e['acc']:.2f} % ({e['seconds']:.0f} s)" for e in hist) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
