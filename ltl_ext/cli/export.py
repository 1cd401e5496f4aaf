"""``export``: write a trained student (a run's ckpt.pt) as a NIR file for SpikingJelly, snnTorch, Norse, Lava..."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional, Sequence, Tuple

from .common import UserError, _spec_arguments, _table


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="write a trained student as a NIR graph (needs: pip install nir)")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--out", required=True, metavar="FILE", help="the NIR file to write, e.g. student.nir")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="one sample's shape (default: from the checkpoint's model)")
    p.add_argument("--mean", default=None, metavar="M1,M2,..",
                   help="input normalisation to put in front of the graph, for a model that does not carry its own")
    p.add_argument("--std", default=None, metavar="S1,S2,..", help="goes with --mean")
    p.add_argument("--dt", type=float, default=None, help="seconds per time step in the NIR time constants "
                                                          "(default 1e-4, as SpikingJelly/snnTorch/Norse read it)")
    p.set_defaults(func=run)
    return p


def _floats(flag: str, text: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise UserError(f"{flag} must be numbers separated by commas, got {text!r}")
    return values


def _shape(text: str) -> Tuple[int, ...]:
    """--input-shape as whole sizes: int() would make 28.7 a silent 28."""
    values = _floats("--input-shape", text)
    if any(not math.isfinite(v) or v != int(v) or v < 1 for v in values):
        raise UserError(f"--input-shape must be whole sizes >= 1 separated by commas, got {text!r}")
    return tuple(int(v) for v in values)


def _spec_input_shape(spec) -> Optional[Tuple[int, ...]]:
    """(C, S, S) or (F,) from a zoo model's spec, its builder's defaults filling the gaps; None if unknown."""
    kw = _spec_arguments(spec)
    if kw is None:
        return None
    if "input_size" in kw and "in_channels" in kw:
        return (int(kw["in_channels"]), int(kw["input_size"]), int(kw["input_size"]))
    if "in_features" in kw:
        return (int(kw["in_features"]),)
    return None


def _normalization(args, student) -> Optional[Tuple[Sequence[float], Sequence[float]]]:
    """--mean/--std, for a student whose model does not normalise its own input (zoo models built with mean/std
    carry a ``Normalize`` module, exported as the affine node in front)."""
    from ..interop.nir import _is_normalize
    if args.mean is None:
        return None
    if any(_is_normalize(m) for m in student.modules()):
        raise UserError("the model already normalises its input (its checkpoint carries mean/std); "
                        "drop --mean/--std")
    return _floats("--mean", args.mean), _floats("--std", args.std)


def run(args) -> int:
    from ..interop.nir import DEFAULT_DT, _nir, export_nir
    from ..train import LocalTandemTrainer
    if (args.mean is None) != (args.std is None):
        raise UserError("--mean and --std go together")
    shape = _shape(args.input_shape) if args.input_shape else None
    out = Path(args.out)
    if out.is_dir():     # --overwrite would not help: the NIR writer cannot replace a folder
        raise UserError(f"--out {out} is a folder: name the file to write, e.g. {out / 'student.nir'}")
    if any(p.exists() and not p.is_dir() for p in out.parents):      # mkdir would fail with a traceback
        raise UserError(f"--out {out}: a file stands where its folder should be")
    if out.exists() and not args.overwrite:     # e.g. --out best.pt by mistake: never replaced without asking
        raise UserError(f"{out} exists already: pass --overwrite to replace it, or choose another --out")
    try:
        nir = _nir()
    except ImportError as e:
        raise UserError(str(e)) from None
    trainer = LocalTandemTrainer.load(args.checkpoint, device="cpu", restore_rng=False)
    shape = shape or _spec_input_shape(trainer.teacher_spec)
    normalization = _normalization(args, trainer.student)
    try:
        graph = export_nir(trainer.student, input_shape=shape, normalization=normalization,
                           dt=args.dt if args.dt is not None else DEFAULT_DT)
    except ValueError as e:
        raise UserError(str(e)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(out), graph)
    kinds = sorted({type(n).__name__ for n in graph.nodes.values()})
    print(_table([("wrote", str(out)), ("nodes", f"{len(graph.nodes)} ({', '.join(kinds)})"),
                  ("time steps", str(graph.metadata["time_steps"])), ("dt", f"{graph.metadata['dt']:g} s"),
                  ("input", graph.metadata["input"]),
                  ("note", graph.metadata["notes"])]))
    return 0
