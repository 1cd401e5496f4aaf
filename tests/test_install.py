"""Installing ltl_ext: one source list for every builder, and both install ways on a fresh copy of the repo.

The quick tests run everywhere. ``test_fresh_install`` builds the native library twice in fresh venvs (about 10
minutes on 2 cores), so it runs only with ``LTL_EXT_TEST_INSTALL=1`` (``.ci/run`` sets it, once):

- ``pip install -e .`` with pip's build isolation (no torch at build time): the first import compiles the library
  against the venv's torch, into a cache folder, and says so;
- ``pip install --no-build-isolation -e .``: setup.py builds it ahead of time.
Each then runs one fused op against its reference and ``python -m ltl_ext info`` says which way it was built.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time

import pytest

from ltl_ext.ops import build_config as cfg
from ltl_ext.ops import jit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_SPEC = os.environ.get("LTL_EXT_TEST_TORCH", "torch==2.13.0")  # the CPU build on this platform's local disk


def test_source_list_names_every_source_once():
    """csrc/sources.txt is the one list: every .cpp/.cu under csrc is in it once, .cu files only under [cuda]."""
    sources = cfg.read_sources(ROOT)
    listed = sources["cpu"] + sources["cuda"]
    assert len(listed) == len(set(listed)), "a source is listed twice"
    on_disk = {os.path.relpath(p, ROOT) for ext in ("cpp", "cu") for p in glob.glob(f"{ROOT}/csrc/**/*.{ext}",
                                                                                    recursive=True)}
    assert set(listed) == on_disk, f"not listed: {sorted(on_disk - set(listed))}"
    assert not [p for p in sources["cpu"] if p.endswith(".cu")]
    assert [p for p in sources["cuda"] if p.endswith(".cu")], "no CUDA kernel listed under [cuda]"


def test_source_list_errors_name_the_line(tmp_path):
    (tmp_path / "csrc").mkdir()
    (tmp_path / "csrc" / "sources.txt").write_text("# comment\ncsrc/missing.cpp\n")
    with pytest.raises(FileNotFoundError, match=r"sources.txt:2: .*csrc/missing.cpp"):
        cfg.read_sources(str(tmp_path))
    (tmp_path / "csrc" / "sources.txt").write_text("[rocm]\n")
    with pytest.raises(ValueError, match="unknown section"):
        cfg.read_sources(str(tmp_path))


def test_flavour_decision():
    assert cfg.want_cuda("auto", None, "/usr/bin/nvcc")[0] is False
    assert cfg.want_cuda("auto", "13.0", None)[0] is False
    assert cfg.want_cuda("auto", "13.0", "/usr/bin/nvcc")[0] is True
    assert cfg.want_cuda("0", "13.0", "/usr/bin/nvcc")[0] is False
    with pytest.raises(RuntimeError, match="CPU build"):
        cfg.want_cuda("1", None, "/usr/bin/nvcc")
    with pytest.raises(ValueError, match="auto, 0 or 1"):
        cfg.want_cuda("yes", None, None)


def _python_without_torch():
    for py in ("/usr/bin/python3", shutil.which("python3")):
        if py and subprocess.run([py, "-c", "import torch"], capture_output=True).returncode != 0:
            return py
    pytest.skip("no python without torch on this machine")


def test_setup_without_torch_builds_nothing_and_says_when_it_will():
    """What pip's isolated build runs: setup.py with no torch loads the build configuration by path and succeeds."""
    py = _python_without_torch()
    r = subprocess.run([py, os.path.join(ROOT, "setup.py"), "--version"], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == cfg.package_version(ROOT)
    assert "at first import" in r.stderr and "pip install --no-build-isolation -e ." in r.stderr


def test_missing_tools_are_named(monkeypatch, tmp_path):
    """No compiler and no ninja: the first-use build names both (and how to get them) instead of a traceback."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-c++")
    monkeypatch.setitem(sys.modules, "ninja", None)  # the ninja wheel would put its binary back on PATH
    missing = jit.missing_tools(with_cuda=True, nvcc=None)
    text = "; ".join(missing)
    assert "C++ compiler" in text and "no-such-c++" in text
    assert "ninja (pip install ninja)" in text and "nvcc" in text
    monkeypatch.setenv("LTL_EXT_CUDA", "0")
    monkeypatch.delenv("CUDA_HOME", raising=False)  # build() sets it: undone after the test
    monkeypatch.setenv("LTL_EXT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(jit.JitBuildError, match="missing a C\\+\\+ compiler .*ninja"):
        jit.build()
    assert not (tmp_path / "cache").exists() or not glob.glob(str(tmp_path / "cache" / "*" / "*.so"))


def test_jit_mode_is_checked(monkeypatch):
    monkeypatch.setenv("LTL_EXT_JIT", "sometimes")
    with pytest.raises(ValueError, match="LTL_EXT_JIT must be auto, 0 or 1"):
        jit.mode()


def test_cmake_configuration_matches_setup(tmp_path):
    """build_config.py --cmake writes the same flags, standard and definitions setup.py and the JIT use."""
    out = tmp_path / "cfg.cmake"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "ltl_ext", "ops", "build_config.py"), "--cmake", str(out),
                        "--root", ROOT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert f'set(LTL_CXX_STANDARD "{cfg.CXX_STANDARD}")' in text
    assert "set(LTL_CXX_FLAGS " + " ".join(f'"{f}"' for f in cfg.CXX_FLAGS) + ")" in text
    assert '"TORCH_EXTENSION_NAME=_C"' in text and "WITH_CUDA" not in text


# ---- the slow one: both install ways on a fresh copy ----------------------------------------------------------

_OP_CHECK = """
import sys, torch, ltl_ext
from ltl_ext.functional import lif, lif_reference
from ltl_ext.ops import jit, HAS_C
assert HAS_C, "the native library did not load"
x = torch.randn(6, 4, 32)
out, ref = lif(x, beta=0.9), lif_reference(x, beta=0.9)
s = out[0] if isinstance(out, tuple) else out
r = ref[0] if isinstance(ref, tuple) else ref
torch.testing.assert_close(s, r)
assert ltl_ext.__file__.startswith(sys.argv[1]), (ltl_ext.__file__, sys.argv[1])
print("HOW:", jit.HOW_BUILT)
"""


def _copy_of_the_repo(dst: str) -> str:
    """The working tree as a fresh clone would have it (tracked and untracked-but-not-ignored files)."""
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel))
    return dst


def _run(cmd, **kw):
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    print(f"[{time.time() - start:5.0f} s] {' '.join(map(str, cmd))[:160]}")
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


@pytest.mark.skipif(os.environ.get("LTL_EXT_TEST_INSTALL") != "1",
                    reason="two fresh venvs and two native builds (~10 min): LTL_EXT_TEST_INSTALL=1 (.ci/run sets it)")
@pytest.mark.parametrize("way", ["isolated", "no-build-isolation"])
def test_fresh_install(way, tmp_path):
    src = _copy_of_the_repo(str(tmp_path / "src"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    env = dict(os.environ, LTL_EXT_CACHE=str(tmp_path / "cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    for var in ("PYTHONPATH", "LTL_EXT_JIT", "VIRTUAL_ENV"):
        env.pop(var, None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(ROOT))
    _run([py, "-m", "pip", "install", "-q", TORCH_SPEC], env=env)
    if way == "isolated":
        _run([py, "-m", "pip", "install", "-q", "-e", src], env=env, cwd=str(tmp_path))
        assert not glob.glob(os.path.join(src, "ltl_ext", "_C*.so")), "the isolated build compiled the library"
        first = _run([py, "-c", _OP_CHECK, src], env=env, cwd=str(tmp_path))
        assert "compiling the native library" in first.stderr  # the visible message while it builds
        assert "HOW: at first use" in first.stdout
        again = _run([py, "-c", _OP_CHECK, src], env=env, cwd=str(tmp_path))  # from the cache: no build message
        assert "compiling" not in again.stderr and "HOW: at first use" in again.stdout
        assert glob.glob(str(tmp_path / "cache" / "cpu-py*-torch*" / "_C*.so"))
        expected = "at first use"
    else:
        _run([py, "-m", "pip", "install", "-q", "ninja", "setuptools>=64", "wheel"], env=env)
        _run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "-e", src], env=env, cwd=str(tmp_path))
        assert glob.glob(os.path.join(src, "ltl_ext", "_C*.so")), "no library built ahead of time"
        first = _run([py, "-c", _OP_CHECK, src], env=env, cwd=str(tmp_path))
        assert "HOW: ahead of time" in first.stdout and "compiling" not in first.stderr
        assert not (tmp_path / "cache").exists()
        expected = "ahead of time"
    info = _run([py, "-m", "ltl_ext", "info"], env=env, cwd=str(tmp_path))
    row = [line for line in info.stdout.splitlines() if "native library built" in line]
    assert row and expected in row[0], info.stdout
