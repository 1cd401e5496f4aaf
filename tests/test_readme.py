"""Every ``python`` block of README.md runs, in order, in one namespace (as a reader would paste them).

The blocks are run as written except for the few substitutions below, which only make them small (a slice of
the embedded data, one epoch, a few calibration steps); each must apply, so a README edit that drops one fails
here instead of silently running the full-size job. ``bash`` blocks are not run.
"""
from __future__ import annotations

import re
from pathlib import Path


README = Path(__file__).resolve().parent.parent / "README.md"

#: (as written in the README, as run here): size only, never behaviour
SMALL = [
    ('load_dataset("embedded")', 'load_dataset("embedded", limit=200)'),
    ("train_teacher(teacher, train, epochs=3, val_loader=val)",
     "train_teacher(teacher, train, epochs=1, val_loader=val, progress=False)"),
    ("trainer.fit(train, epochs=5, val_loader=val,", "trainer.fit(train, epochs=1, val_loader=val, progress=False,"),
    ("time_steps=16, mode=\"offline\"", "time_steps=4, mode=\"offline\""),
    ("best.calibrate(chip, train, steps=300,", "best.calibrate(chip, train, steps=2,"),
    ('schedule="step:30,60:0.1"', 'schedule="step:1:0.1"'),
]


def python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _runnable(block: str) -> bool:
    """A block that starts with ``# needs: a, b`` runs only where those optional packages import."""
    first = block.lstrip().splitlines()[0] if block.strip() else ""
    if not first.startswith("# needs:"):
        return True
    for name in first[len("# needs:"):].split(","):
        try:
            __import__(name.strip())
        except ImportError:
            return False
    return True


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2, "the quick start and the API screenful"
    source = "\n".join(b for b in blocks if _runnable(b))
    for written, small in SMALL:
        assert written in source, f"README changed: {written!r} is gone (update tests/test_readme.py)"
        source = source.replace(written, small)
    monkeypatch.chdir(tmp_path)                     # the snippets write run/last.pt, run/best.pt
    namespace: dict = {}
    exec(compile(source, str(README), "exec"), namespace)   # noqa: S102 - our own README
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
    report = namespace["report"]
    assert 0 <= report["student_acc"] <= 100 and report["samples"] == 200
    assert namespace["history"][0]["val_student_acc"] >= 0
    assert namespace["spikes"].shape == namespace["x"].shape


def test_readme_mentions_only_existing_commands():
    from ltl_ext.cli import build_parser
    text = README.read_text()
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for used in re.findall(r"python -m ltl_ext (\w+)", text):
        assert used in commands, used
