"""Which tensors are alive at the peak of one training step, and their bytes: the floor analysis of issue 12.

The same step as ``train_memory.py`` (the zoo's VGG-11, synthetic CIFAR-shaped batch, CPU, one thread). After a
warm-up step, a ``TorchDispatchMode`` sees every tensor an op creates during one more step and follows its storage
until it is freed. An op's output that shares storage with one of its inputs (a view, an in-place update:
parameters, optimiser state) is not new and is not counted; nor are storages under 64 KiB (train_memory.py's malloc
settings leave those out of its figure too). The new weight gradients (what is still alive when the step ends) are
reported apart: ``zero_grad(set_to_none=True)`` frees the previous step's at its start, so they replace memory
rather than add it, and train_memory.py's figure nets them out the same way.

    python scripts/peak_tensors.py --method ltl_constant           # the live set at the peak, by producing op
    python scripts/peak_tensors.py --method ltl_constant --trace   # and the live MiB at every LIF / tandem call
    python scripts/peak_tensors.py --method ltl_constant --rss     # and where train_memory.py's RSS peak is
    python scripts/peak_tensors.py --method ltl_constant --write   # -> docs/results/peak_tensors_ltl_constant.json

``--rss`` also follows resident memory op by op, under train_memory.py's malloc settings (the script re-runs
itself with them): Linux's peak mark is reset before every op (``/proc/self/clear_refs`` <- 5) and read after it,
so the RSS peak of the step (train_memory.py's figure) is found at its op, with the part of it that the op used
and freed before returning (a kernel's workspace, such as oneDNN's reorders of a convolution's operands: memory
that no tensor holds, so the live-tensor count cannot see it).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import weakref
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import train_memory  # noqa: E402

MIB = 2 ** 20
SMALLEST = 64 * 1024          # bytes: smaller storages are not followed
LIF_OPS = ("lif_fwd", "lif_bwd", "tandem_online", "tandem_online_", "tandem_offline_fwd", "tandem_offline_bwd")


class LiveTensors(TorchDispatchMode):
    """Follows the storages that ops create (each under its own serial number: a freed address is soon reused);
    keeps the live set at the peak and, with ``trace``, the live set at every LIF / tandem op call."""

    def __init__(self, trace: bool = False):
        super().__init__()
        self.live: Dict[int, Tuple[int, int, Tuple[int, ...], str]] = {}  # address -> (serial, bytes, shape, op)
        self.serial = 0
        self.bytes = 0
        self.peak = 0
        self.at_peak: Dict[int, Tuple[int, Tuple[int, ...], str]] = {}   # serial -> (bytes, shape, op)
        self.peak_op = ""
        self.trace = trace
        self.calls: List[Tuple[str, Tuple[int, ...], bool, Dict[int, int]]] = []

    def snapshot(self) -> Dict[int, Tuple[int, Tuple[int, ...], str]]:
        return {serial: (nbytes, shape, op) for serial, nbytes, shape, op in self.live.values()}

    def _freed(self, address: int, serial: int) -> None:
        entry = self.live.get(address)
        if entry is not None and entry[0] == serial:
            del self.live[address]
            self.bytes -= entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            address = storage.data_ptr()
            if address in inputs or address in self.live or storage.nbytes() < SMALLEST:
                continue
            self.serial += 1
            self.live[address] = (self.serial, storage.nbytes(), tuple(t.shape), func.__name__)
            self.bytes += storage.nbytes()
            weakref.finalize(storage, self._freed, address, self.serial)
        if self.bytes > self.peak:
            self.peak, self.at_peak, self.peak_op = self.bytes, self.snapshot(), func.__name__
        if self.trace and func.__name__.split(".")[0] in LIF_OPS:
            self.calls.append((func.__name__, tuple(args[0].shape), torch.is_grad_enabled(),
                               {serial: nbytes for serial, nbytes, _, _ in self.live.values()}))
        return out


class RssPeak(TorchDispatchMode):
    """Resident memory op by op (a step of its own: following tensors costs Python memory that would show here):
    the peak mark is reset before every op and read after it. ``peak``: (VmHWM - ``start``, op, its first input's
    shape, the MiB the op used and freed before returning)."""

    def __init__(self):
        super().__init__()
        self.start = train_memory._proc_status("VmRSS")
        self.peak = (0.0, "", (), 0.0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        Path("/proc/self/clear_refs").write_text("5")                 # VmHWM <- current RSS
        out = func(*args, **(kwargs or {}))
        hwm = train_memory._proc_status("VmHWM")
        if hwm - self.start > self.peak[0]:
            shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else ()
            self.peak = (hwm - self.start, func.__name__, shape, hwm - train_memory._proc_status("VmRSS"))
        return out


def measure(method: str, T: int, batch: int, trace: bool = False, rss: bool = False) -> dict:
    """The live set at the peak of one step of ``method`` (after a warm-up step), the new weight gradients apart;
    with ``trace``, the live MiB (gradients apart) at every LIF / tandem op call; with ``rss``, the step's RSS peak
    at its op."""
    import gc
    torch.set_num_threads(1)
    step = train_memory.build_step(method, T, batch, "cpu")
    step()
    gc.collect()
    mode = LiveTensors(trace)
    with mode:
        step()
    kept = {serial for serial, _, _, _ in mode.live.values()}      # alive after the step: the new weight gradients
    grads = sum(e[0] for serial, e in mode.at_peak.items() if serial in kept)
    groups: Dict[Tuple[str, Tuple[int, ...]], List[int]] = collections.defaultdict(list)
    for serial, (nbytes, shape, op) in mode.at_peak.items():
        if serial not in kept:
            groups[(op, shape)].append(nbytes)
    rows = [{"op": op, "shape": "x".join(map(str, shape)) or "scalar", "tensors": len(b), "mib": sum(b) / MIB}
            for (op, shape), b in sorted(groups.items(), key=lambda kv: (-sum(kv[1]), kv[0]))]
    out = {"method": method, "T": T, "batch": batch, "peak_at_op": mode.peak_op, "peak_mib": mode.peak / MIB,
           "new_gradients_mib": grads / MIB, "live_without_gradients_mib": (mode.peak - grads) / MIB, "rows": rows}
    # the summary: one row per figure, each at its op (docs/results.md renders it)
    summary = [{"measure": "live tensors at their peak (the new weight gradients apart)",
                "mib": out["live_without_gradients_mib"], "at_op": mode.peak_op}]
    if trace:
        out["calls"] = [{"op": op, "input_shape": list(shape), "grad_enabled": g,
                         "live_without_gradients_mib": sum(b for s, b in live.items() if s not in kept) / MIB}
                        for op, shape, g, live in mode.calls]
        if out["calls"]:
            last = out["calls"][-1]
            summary.append({"measure": "live tensors at the last LIF call (what stays across time steps)",
                            "mib": last["live_without_gradients_mib"], "at_op": last["op"]})
    if rss:
        gc.collect()
        resident = RssPeak()
        with resident:
            step()
        added, op, shape, inside = resident.peak
        out["rss"] = {"added_mib": added, "at_op": op, "op_input_shape": list(shape), "inside_op_mib": inside,
                      "malloc": {k: os.environ.get(k) for k in train_memory.MALLOC_ENV}}
        summary.append({"measure": "resident memory at its peak (train_memory.py's figure)", "mib": added,
                        "at_op": f"{op} ({'x'.join(map(str, shape))})", "of_which_inside_the_op_mib": inside})
    out["summary"] = summary
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", choices=("bptt", "ltl_offline", "ltl_online", "ltl_constant"), default="ltl_constant")
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--trace", action="store_true", help="also the live MiB at every LIF / tandem op call")
    ap.add_argument("--write", action="store_true", help="write docs/results/peak_tensors_<method>.json")
    ap.add_argument("--rss", action="store_true", help="also the step's RSS peak (train_memory.py's figure) at its op")
    args = ap.parse_args(argv)
    if args.rss and any(os.environ.get(k) != v for k, v in train_memory.MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, __file__, *(argv or sys.argv[1:])],
                  {**os.environ, **train_memory.MALLOC_ENV})          # RSS follows live bytes only under these
    r = measure(args.method, args.T, args.batch, args.trace, args.rss)
    print(f"{r['method']}, T = {r['T']}, batch {r['batch']}: peak {r['peak_mib']:.1f} MiB at {r['peak_at_op']}, of "
          f"which the step's new weight gradients {r['new_gradients_mib']:.1f} MiB; the rest, "
          f"{r['live_without_gradients_mib']:.1f} MiB, by producing op:")
    for row in r["rows"]:
        print(f"  {row['mib']:7.2f} MiB  {row['tensors']:2d} x  {row['op']:32s} {row['shape']}")
    if "rss" in r:
        q = r["rss"]
        print(f"RSS peak of the step: +{q['added_mib']:.1f} MiB (train_memory.py's figure) at {q['at_op']} "
              f"(input {'x'.join(map(str, q['op_input_shape']))}), of which {q['inside_op_mib']:.1f} MiB the op used "
              f"and freed before returning (no tensor holds it)")
    for c in r.get("calls", []):
        print(f"  call {c['op']:28s} {'x'.join(map(str, c['input_shape'])):22s} grad={c['grad_enabled']!s:5s} "
              f"live {c['live_without_gradients_mib']:6.1f} MiB")
    if args.write:
        from evidence import write_artefact
        path = write_artefact(f"peak_tensors_{args.method}", r,
                              command="python scripts/peak_tensors.py " + " ".join(argv or sys.argv[1:]))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
