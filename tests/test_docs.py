"""Evidence that cannot drift: every figure in the docs is rendered from a JSON artefact under docs/results/.

- every marked table (``<!-- table:NAME -->``) of README.md, docs/results.md and bench/README.md equals what
  ``scripts/render_docs.py`` renders from ``docs/results/NAME.json``;
- outside those tables (and code blocks) the docs hold no measured figure (a percentage, a time, a bandwidth,
  a speed-up) and no hand-written status note ("running at ...", "not yet timed");
- the checker itself fails on a doctored table, and ``scripts/gpu_check.sh`` fails on a build without CUDA.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import render_docs  # noqa: E402

DOCS = [ROOT / d for d in render_docs.DOCS]

#: what a measured figure looks like in prose: 86.4 %, 1.85 ms, 161 s, 2909 GB/s, 10.2 MiB, 11.2x. A goal is not a
#: measurement: a figure right after "<=", ">=" or "the" ("<= 1.5x", "the 1.5x-the-floor target") is one.
FIGURE = re.compile(r"(?<![\w.])(?<!<= )(?<!>= )(?<!the )\d+(?:\.\d+)?\s?"
                    r"(?:%|ms\b|s\b|min\b|minutes\b|seconds\b|GB/s|MiB\b|GiB\b|x\b)")
#: hand-written status notes: a doc states what was measured, not what is under way
STATUS = re.compile(r"running at|not yet (?:timed|measured|run)|\bTODO\b|\bTBD\b|to be measured|should take about|"
                    r"\(running|in progress|will be (?:measured|added)", re.I)


def _prose(text: str) -> str:
    """The doc without its rendered tables and code blocks (where commands and their flags live)."""
    text = render_docs.BLOCK.sub("", text)
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_tables_equal_their_artefacts(doc):
    text = doc.read_text()
    assert render_docs.stale_blocks(text) == [], f"run: python scripts/render_docs.py ({doc})"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_figure_without_artefact_and_no_status_notes(doc):
    prose = _prose(doc.read_text())
    figures = sorted(set(m.group(0) for m in FIGURE.finditer(prose)))
    assert not figures, f"{doc.relative_to(ROOT)}: figures outside rendered tables (publish them as an artefact): {figures}"
    notes = sorted(set(m.group(0) for m in STATUS.finditer(prose)))
    assert not notes, f"{doc.relative_to(ROOT)}: hand-written status notes: {notes}"


def test_the_readme_renders_the_demo_from_its_artefact():
    assert "<!-- table:demo -->" in (ROOT / "README.md").read_text()
    demo = render_docs.load("demo")
    assert demo["provenance"]["commit"] and demo["rows"][0]["student, test (%)"] > 0


def test_checker_catches_a_doctored_table_and_a_missing_artefact(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"provenance": {"command": "x"}, "rows": [{"acc (%)": 86.4}]}))
    doc = "intro\n<!-- table:t -->\n<!-- /table -->\nend\n"
    rendered = render_docs.render(doc, tmp_path)
    assert "| 86.40 |" in rendered and render_docs.stale_blocks(rendered, tmp_path) == []
    assert render_docs.stale_blocks(rendered.replace("86.40", "88.00"), tmp_path) == ["t"]
    with pytest.raises(render_docs.RenderError, match="no artefact"):
        render_docs.render("<!-- table:missing -->\n<!-- /table -->", tmp_path)
    # NAME:KEY renders another list of the same artefact
    (tmp_path / "s.json").write_text(json.dumps({"rows": [{"a": 1}], "summary": [{"measure": "peak", "mib": 47.5}]}))
    summary = render_docs.render("<!-- table:s:summary -->\n<!-- /table -->", tmp_path)
    assert "| measure | mib |" in summary and "| peak | 47.50 |" in summary and "`docs/results/s.json`" in summary
    with pytest.raises(render_docs.RenderError, match="no 'other'"):
        render_docs.render("<!-- table:s:other -->\n<!-- /table -->", tmp_path)
    assert FIGURE.search("the student reached 86.4 % after 161 s") and not FIGURE.search("T = 16, 3 epochs")
    assert not FIGURE.search("goals: <= 1.5x the floor, a fresh 64 MB output") and FIGURE.search("it took 1.49x")
    assert STATUS.search("(running at 16:14, see the log)") and STATUS.search("Not yet timed on a quiet machine")


@pytest.mark.skipif(os.environ.get("LTL_GPU_CHECK_DRY_RUN", "1") == "0", reason="LTL_GPU_CHECK_DRY_RUN=0")
def test_gpu_check_fails_on_a_cpu_only_build(tmp_path):
    """On a build without CUDA kernels every CUDA test skips: gpu_check.sh must say so and exit non-zero."""
    from ltl_ext.ops import HAS_CUDA_KERNELS
    if os.environ.get("LTL_GPU_CHECK_RUNNING"):      # inside gpu_check.sh's own pytest: never recurse
        pytest.skip("already inside scripts/gpu_check.sh")
    if HAS_CUDA_KERNELS:
        pytest.skip("this build has CUDA kernels: the dry run is for CPU builds")
    env = dict(os.environ, OUT=str(tmp_path), SKIP_BUILD="1", PY=sys.executable)
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stdout[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["ok"] and summary["commit"]
    assert "the build has no CUDA kernels" in summary["failures"]
    assert any(f.startswith("no CUDA test ran") for f in summary["failures"])


def test_provenance_names_the_commit_of_a_copied_tree(monkeypatch):
    """The GPU machine gets the working tree with older git metadata: LTL_TREE_COMMIT names the commit instead,
    and whether the tree is dirty is then unknown (None), never a wrong False/True read off the old metadata."""
    import evidence
    monkeypatch.delenv("LTL_TREE_COMMIT", raising=False)
    own = evidence.provenance("x")
    assert own["dirty"] in (True, False) and "commit_source" not in own
    monkeypatch.setenv("LTL_TREE_COMMIT", "0123abc")
    named = evidence.provenance("x")
    assert (named["commit"], named["dirty"], named["commit_source"]) == ("0123abc", None, "LTL_TREE_COMMIT")


def test_artefacts_written_by_a_run_do_not_make_the_tree_dirty(tmp_path, monkeypatch):
    """A run that writes several artefacts would otherwise mark every one after the first as from a dirty tree:
    ``dirty`` counts changes outside docs/results/ only."""
    import subprocess
    import evidence
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "a.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.delenv("LTL_TREE_COMMIT", raising=False)
    monkeypatch.setattr(evidence, "ROOT", tmp_path)
    (tmp_path / "docs" / "results" / "a.json").write_text('{"rows": []}')
    assert evidence.tree_commit()["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert evidence.tree_commit()["dirty"] is True


def test_interleaved_timing_calls_the_cases_in_turn_and_takes_the_median(monkeypatch):
    """The timing helper of bench/ and scripts/: warm-up calls first, then the cases round-robin, each case's
    median (the upper middle one of an even count) in seconds."""
    import evidence
    clock, order = [0.0], []
    monkeypatch.setattr(evidence.time, "perf_counter", lambda: clock[0])

    def case(name, durations):
        it = iter(durations)

        def call():
            order.append(name)
            clock[0] += next(it)
        return call
    got = evidence.interleaved_medians({"a": case("a", [9, 5, 1, 3, 7]), "b": case("b", [9, 2, 2, 4, 4])},
                                       calls=4, warmup_calls=1)
    assert order == ["a", "b"] + ["a", "b"] * 4
    assert got == {"a": 5, "b": 4}
    order.clear()
    times = evidence.interleaved_times({"a": case("a", [9, 6, 8]), "b": case("b", [9, 1, 2])}, calls=2,
                                       warmup_calls=1)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert times == {"a": [6, 8], "b": [1, 2]}          # every timed call, in order, warm-up left out
    assert evidence.upper_median([3.0, 1.0, 2.0]) == 2.0 and evidence.upper_median([4.0, 1.0]) == 4.0
