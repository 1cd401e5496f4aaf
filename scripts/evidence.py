"""Evidence that cannot drift: every published figure is a JSON artefact under ``docs/results/``.

A script (or a benchmark) that measures something calls :func:`write_artefact`; the file records the figures
together with the command that produced them, the commit it ran at (and whether the tree was dirty), the machine
and its load. Docs never carry hand-typed numbers: ``scripts/render_docs.py`` renders their tables from these
files, and a test fails when a doc disagrees with its artefact.

    import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))   # from scripts/ or bench/
    from evidence import write_artefact
    write_artefact("lif_cpu", {"rows": [...]})            # -> docs/results/lif_cpu.json
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "docs" / "results"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # no git: an unpacked source tree
        return ""


def tree_commit() -> Dict[str, Any]:
    """The commit the tree is at and whether it is dirty (outside docs/results/). ``LTL_TREE_COMMIT`` names it
    for a copied tree whose git metadata is older or absent (the lent GPU machine receives the working tree, not
    the history): then ``dirty`` is unknown (None) and ``commit_source`` says where the name came from."""
    named = os.environ.get("LTL_TREE_COMMIT", "").strip()
    if named:
        return {"commit": named, "dirty": None, "commit_source": "LTL_TREE_COMMIT"}
    # the artefacts themselves do not count: a run that writes several leaves the later ones "dirty" otherwise
    return {"commit": _git("rev-parse", "HEAD") or None,
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                               ":(exclude)docs/results"))}


def provenance(command: Optional[str] = None) -> Dict[str, Any]:
    """Where a figure comes from: command, commit, machine, load."""
    try:
        load = list(os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        load = None
    machine: Dict[str, Any] = {"platform": platform.platform(), "processor": platform.machine(),
                               "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch
        machine.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            machine["gpu"] = torch.cuda.get_device_name()
    except ImportError:  # pragma: no cover
        pass
    return {
        "command": command or " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        **tree_commit(),
        "machine": machine,
        "load_average": load,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def interleaved_times(cases: Dict[str, Callable[[], Any]], calls: int, warmup_calls: int = 1) -> Dict[str, list]:
    """Wall time of every call of each case, in seconds, the cases called in turn (round-robin) after
    ``warmup_calls`` warm-up calls each: on a shared machine a slow spell then hits every case alike, so their
    ratios hold (timed one case after another, a ratio moved by as much as the load did)."""
    for fn in cases.values():
        for _ in range(warmup_calls):
            fn()
    times: Dict[str, list] = {name: [] for name in cases}
    for _ in range(calls):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def interleaved_medians(cases: Dict[str, Callable[[], Any]], calls: int, warmup_calls: int = 1) -> Dict[str, float]:
    """The median of :func:`interleaved_times` per case, in seconds (of an even number of calls, the upper middle
    one)."""
    return {name: upper_median(t) for name, t in interleaved_times(cases, calls, warmup_calls).items()}


def upper_median(values: list) -> float:
    """The median; of an even number of values, the upper middle one (a value that was measured)."""
    return sorted(values)[len(values) // 2]


def write_artefact(name: str, figures: Dict[str, Any], *, command: Optional[str] = None,
                   directory: Optional[Path] = None) -> Path:
    """Write ``docs/results/<name>.json`` atomically: ``{"provenance": ..., **figures}``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"artefact name must be a plain file stem, got {name!r}")
    directory = Path(directory) if directory is not None else RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"provenance": provenance(command), **figures}, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def read_artefact(name: str, directory: Optional[Path] = None) -> Dict[str, Any]:
    directory = Path(directory) if directory is not None else RESULTS_DIR
    return json.loads((directory / f"{name}.json").read_text())
