"""Render the docs' tables from the JSON artefacts under ``docs/results/`` (the one place figures live).

A doc marks each table it publishes::

    <!-- table:demo -->
    (everything here is rewritten from docs/results/demo.json)
    <!-- /table -->

``NAME`` is an artefact written by :func:`evidence.write_artefact` (``docs/results/NAME.json``, sub-folders with
``/``). The artefact holds ``rows``: a list of dicts, one per table row; the columns are the keys in order of first
appearance, or the artefact's ``columns`` (a list of keys) when it has one. Each rendered block ends with the
artefact's provenance (commit, machine, load), so a reader sees where every figure comes from.

    python scripts/render_docs.py            # rewrite the blocks of README.md, docs/results.md, bench/README.md
    python scripts/render_docs.py --check    # exit 1 and name the blocks that differ (tests/test_docs.py)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "docs" / "results"
DOCS = ("README.md", "docs/results.md", "bench/README.md")

#: ``<!-- table:NAME -->`` or ``<!-- table:NAME columns=a,b,c -->`` (a choice of the artefact's row keys, in order);
#: ``NAME:KEY`` renders the artefact's list ``KEY`` instead of its ``rows``
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w./-]+)(?::(?P<key>\w+))?(?: columns=(?P<columns>[\w,]+))? -->\n)"
                   r"(?P<body>.*?)"
                   r"(?P<end><!-- /table -->)", re.S)


class RenderError(ValueError):
    """A block names an artefact that is missing or holds no table."""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:                                   # NaN
            return "nan"
        return f"{v:.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v).replace("|", "\\|")


def table(artefact: Dict[str, Any], name: str = "?", columns: Optional[List[str]] = None, key: str = "rows") -> str:
    """The markdown table (and provenance line) of one artefact's list ``key`` (``columns``: which row keys,
    default all)."""
    rows = artefact.get(key)
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise RenderError(f"artefact {name!r} has no {key!r} (a non-empty list of dicts) to render")
    columns = list(columns or artefact.get("columns") or [])
    if not columns:
        for r in rows:
            columns += [k for k in r if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    prov = artefact.get("provenance") or {}
    load = prov.get("load_average")
    machine = prov.get("machine") or {}
    where = ", ".join(x for x in (machine.get("gpu"), f"{machine.get('cpus')} CPUs" if machine.get("cpus") else None,
                                  f"torch {machine['torch']}" if machine.get("torch") else None) if x)
    lines.append("")
    lines.append(f"<sub>`docs/results/{name}.json`: `{prov.get('command', '?')}` at commit "
                 f"{(prov.get('commit') or '?')[:10]}{' (dirty tree)' if prov.get('dirty') else ''}, {where}, "
                 f"load average {', '.join(f'{x:.1f}' for x in load) if load else '?'}, "
                 f"{prov.get('time_utc', '?')}</sub>")
    return "\n".join(lines) + "\n"


def load(name: str, results_dir: Path = RESULTS_DIR) -> Dict[str, Any]:
    path = results_dir / f"{name}.json"
    if not path.is_file():
        raise RenderError(f"the table {name!r} has no artefact {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return json.loads(path.read_text())


def render(text: str, results_dir: Path = RESULTS_DIR) -> str:
    """``text`` with every marked block rewritten from its artefact."""
    return BLOCK.sub(lambda m: m.group(1) + _table_of(m, results_dir) + m.group("end"), text)


def _table_of(m: "re.Match", results_dir: Path) -> str:
    columns = m.group("columns").split(",") if m.group("columns") else None
    return table(load(m.group("name"), results_dir), m.group("name"), columns, m.group("key") or "rows")


def stale_blocks(text: str, results_dir: Path = RESULTS_DIR) -> List[str]:
    """Names of the blocks whose content differs from what their artefact renders to."""
    return [m.group("name") for m in BLOCK.finditer(text)
            if m.group("body") != _table_of(m, results_dir)]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    ap.add_argument("docs", nargs="*", default=list(DOCS), help="docs to render (default: %(default)s)")
    args = ap.parse_args(argv)
    bad = []
    for doc in args.docs:
        path = ROOT / doc
        text = path.read_text()
        if args.check:
            bad += [f"{doc}: table {n}" for n in stale_blocks(text)]
        else:
            new = render(text)
            if new != text:
                path.write_text(new)
                print(f"rendered {doc}")
    if bad:
        print("stale tables (run python scripts/render_docs.py):\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
