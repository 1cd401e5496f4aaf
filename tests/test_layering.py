"""The house by floors (docs/architecture.md): no module imports from a floor above its own, and no import cycles.

Every ``import`` of an ``ltl_ext`` module is read from the source with ``ast`` (also the lazy ones inside
functions: an upward import is upward wherever it is written), resolved to its floor, and compared.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

PACKAGE = Path(__file__).resolve().parent.parent / "ltl_ext"

#: floor of each top-level part of the package, from the ground up. Equal floors may use each other.
FLOORS = {
    "_C": 0, "_version": 0, "datasets": 0,
    "ops": 1, "functional": 1,
    "data": 1,
    "nn": 2,
    "ltl": 3,
    "distributed": 3, "dist": 3,
    "train": 4,
    "hw": 5, "interop": 5,
    "cli": 6,
    "__init__": 7, "__main__": 7,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool = False) -> Iterator[Tuple[str, int]]:
    """(imported ltl_ext module, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ltl_ext"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("ltl_ext"):
                continue
            for alias in node.names:       # `from . import tandem` imports the submodule ltl_ext.tandem
                sub = f"{target}.{alias.name}"
                yield (sub if _is_module(sub) else target), node.lineno


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir() or any(path.parent.glob(path.name + ".*.so"))


def _floor(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in FLOORS, f"{module}: part {key!r} of the package has no floor in FLOORS (add it)"
    return FLOORS[key]


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_part_of_the_package_has_a_floor():
    for path in _sources():
        _floor(_module_name(path))


def test_no_module_imports_from_a_floor_above():
    upward = []
    for path in _sources():
        here = _module_name(path)
        for target, line in _imports(path):
            if _floor(target) > _floor(here):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}, floor {_floor(here)}) imports "
                              f"{target} (floor {_floor(target)})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph: Dict[str, Set[str]] = {}
    for path in _sources():
        here = _module_name(path)
        graph.setdefault(here, set()).update(t for t, _ in _imports(path, top_level_only=True) if t != here)
    state: Dict[str, int] = {}
    stack = []

    def visit(node: str):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test above can fail: an ``nn`` module importing ``train`` is reported."""
    fake = PACKAGE / "nn" / "_layering_probe.py"
    try:
        fake.write_text("from ..train import trainer\n")
        found = [t for t, _ in _imports(fake)]
        assert found == ["ltl_ext.train.trainer"]
        assert _floor("ltl_ext.train.trainer") > _floor(_module_name(fake))
    finally:
        fake.unlink()
