"""The chip study of issue 15 as an artefact: ``docs/results/hw_drift_<preset>.json`` (+ ``docs/figures/``).

Runs ``python -m ltl_ext robustness --preset ...`` (the drift study: chips from a device preset, calibrated
white-box and in the loop, aged over drift time) on a trained student, and writes its results with their
provenance through ``scripts/evidence.py``::

    python scripts/robustness_study.py --checkpoint runs/hw_student/best.pt [--preset pcm] [--chips 3]
        [--steps 300] [--calib-time 86400] [--drift-times 1,3600,86400,604800,2592000] [--in-the-loop spikes]

Without ``--checkpoint`` the student is trained first with the demo recipe (``python -m ltl_ext demo``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence import write_artefact  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--preset", default="pcm")
    p.add_argument("--chips", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--calib-time", default="86400")
    p.add_argument("--drift-times", default="1,3600,86400,604800,2592000")
    p.add_argument("--in-the-loop", default="spikes", choices=("spikes", "membrane", "none"))
    p.add_argument("--out", default="runs/hw_drift")
    args = p.parse_args(argv)
    from ltl_ext.cli import main as cli
    argv = ["robustness", "--preset", args.preset, "--chips", str(args.chips), "--steps", str(args.steps),
            "--calib-time", args.calib_time, "--drift-times", args.drift_times, "--out", args.out, "--quiet",
            "--overwrite"]   # this script re-measures its artefact: its own --out is its scratch
    if args.checkpoint:
        argv += ["--checkpoint", args.checkpoint]
    if args.in_the_loop != "none":
        argv += ["--in-the-loop", args.in_the_loop]
    rc = cli(argv)
    if rc:
        return rc
    res = json.loads((Path(args.out) / "drift.json").read_text())
    path = write_artefact(f"hw_drift_{args.preset}", res,
                          command="python scripts/robustness_study.py " + " ".join(sys.argv[1:]))
    figure = Path(__file__).resolve().parent.parent / "docs" / "figures" / f"hw_drift_{args.preset}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args.out) / "drift.png", figure)
    print(f"artefact: {path}, plot: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
