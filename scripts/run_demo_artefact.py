"""``make demo``: run the main job (``python -m ltl_ext demo``) and publish its figures as an artefact.

Runs the demo in this process, then writes ``docs/results/demo.json`` (:func:`evidence.write_artefact`: the
figures with the command, commit, machine and load) from the run's ``metrics.json``; the README's demo table is
rendered from it (``scripts/render_docs.py``). Every accuracy in it is a **test** figure, measured once at the end
on the epoch selected on validation.

    python scripts/run_demo_artefact.py [--out runs/demo] [--no-artefact] [demo flags ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence import write_artefact  # noqa: E402


def figures(metrics: dict, wall_seconds: float) -> dict:
    """The artefact's table: one row for the run."""
    return {"rows": [{
        "teacher, test (%)": metrics["teacher_acc"],
        "student, test (%)": metrics["student_acc"],
        "gap (points)": metrics["gap"],
        "epoch (selected on validation)": metrics["selected_epoch"],
        "student, validation (%)": metrics["val_student_acc"],
        "LTL epochs": metrics["epochs"],
        "mode": metrics["mode"],
        "T": metrics["time_steps"],
        "test images": metrics["test_samples"],
        "wall time (s)": wall_seconds,
    }], "metrics": {k: v for k, v in metrics.items() if k != "history"}, "history": metrics["history"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--no-artefact", action="store_true", help="run the demo only")
    args, demo_flags = ap.parse_known_args(argv)
    from ltl_ext.cli import main as cli
    t0 = time.perf_counter()
    rc = cli(["demo", "--out", args.out, *demo_flags])
    wall = time.perf_counter() - t0
    if rc or args.no_artefact:
        return rc
    metrics = json.loads((Path(args.out) / "metrics.json").read_text())
    command = " ".join(["python scripts/run_demo_artefact.py", "--out", args.out, *demo_flags])
    path = write_artefact("demo", figures(metrics, wall), command=command)
    print(f"  artefact: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
