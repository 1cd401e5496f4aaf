"""How ``ltl_ext._C`` is compiled, in one place: the source list's reader, the C++ standard, the flags, the CUDA
decision and the build folder's name.

Three builders use it, so the library they make is the same one:

- ``setup.py`` loads this file *by path* (pip's isolated build has no torch, and importing the package would
  import torch): only the standard library is imported here at module level;
- ``ltl_ext.ops.jit`` (the build at first use, against the torch that runs) imports it as a module;
- ``CMakeLists.txt`` runs ``python build_config.py --cmake OUT`` (which imports torch, in that mode only) and
  includes the CMake variables it writes; it reads ``csrc/sources.txt`` itself with ``file(STRINGS)``.

The sources are listed in ``csrc/sources.txt`` (one path per line, relative to the repository root; ``#``
comments; CPU sources first, then a line ``[cuda]`` and the CUDA kernels with their host glue).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import sys
from typing import Dict, List, Optional, Sequence, Tuple

#: the source list, relative to the repository root (or to ``ltl_ext/_native`` in a wheel)
SOURCE_LIST = "csrc/sources.txt"
#: header folders, relative to the same root
INCLUDE_DIRS = ["csrc/include"]

#: torch's headers need C++20 since torch 2.10 (torch.utils.cpp_extension itself passes -std=c++20); every builder
#: passes this standard explicitly, to the host compiler and to nvcc, so none of them falls back to its default.
CXX_STANDARD = 20

# -fno-trapping-math lets GCC if-convert the spike compare (else the LIF loops stay scalar and branchy: 6x slower);
# -ffp-contract=off keeps H bit-identical between the forward and the backward recompute (no fused multiply-add);
# -fvisibility=hidden: only the module's init symbol is exported.
CXX_FLAGS = ["-O3", "-g0", "-fopenmp", "-fno-trapping-math", "-ffp-contract=off", "-fvisibility=hidden"]
#: without -fopenmp at link time at::parallel_for silently runs on one thread (tests/test_build.py checks it)
LINK_FLAGS = ["-fopenmp"]
# --fmad=false: like -ffp-contract=off on the CPU, no fused multiply-add, so the forward and the backward recompute
# agree bit for bit; torch's own nvcc flags (half/bf16 operators off: the kernels convert to float) come on top.
NVCC_FLAGS = ["-O3", "-lineinfo", "--fmad=false", "--expt-relaxed-constexpr"]
#: TORCH_CUDA_ARCH_LIST when it is unset and no GPU can be asked: A100 (8.0) and H100/H200 (9.0) machine code, and
#: sm_90 PTX that the driver compiles for newer GPUs at load time (CMake's "90" embeds both)
CUDA_ARCH_LIST = "8.0;9.0+PTX"
#: the module's name inside the package: ltl_ext._C
MODULE_NAME = "_C"


def std_flag() -> str:
    return f"-std=c++{CXX_STANDARD}"


def read_sources(root: str) -> Dict[str, List[str]]:
    """``{"cpu": [...], "cuda": [...]}``: the paths of ``csrc/sources.txt`` under ``root``, in the listed order.

    Raises ``ValueError`` for an unknown section and ``FileNotFoundError`` naming a listed file that is missing.
    """
    sections: Dict[str, List[str]] = {"cpu": [], "cuda": []}
    current = "cpu"
    list_path = os.path.join(root, SOURCE_LIST)
    with open(list_path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                current = line.strip("[]").strip()
                if current not in sections:
                    raise ValueError(f"{list_path}:{number}: unknown section {line!r} (known: [cuda])")
                continue
            path = os.path.join(root, line)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{list_path}:{number}: listed source {line!r} does not exist")
            sections[current].append(line)
    return sections


def defines(version: str, torch_version: str, cuda_version: Optional[str] = None) -> List[Tuple[str, Optional[str]]]:
    """The preprocessor definitions (name, value or None); the string values carry their C quotes."""
    out = [("LTL_EXT_VERSION", f'"{version}"'), ("LTL_EXT_TORCH_VERSION", f'"{torch_version}"')]
    if cuda_version is not None:
        out += [("WITH_CUDA", None), ("LTL_EXT_CUDA_VERSION", f'"{cuda_version}"')]
    return out


def package_version(root: str) -> str:
    with open(os.path.join(root, "ltl_ext", "_version.py")) as f:
        return re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M).group(1)


def default_cuda_home() -> Optional[str]:
    """The CUDA toolkit: $CUDA_HOME / $CUDA_PATH, else /usr/local/cuda when it has bin/nvcc.

    torch guesses CUDA_HOME from ``which nvcc``, which fails when nvcc is a wrapper script (as here, in
    /usr/local/bin): the builders set CUDA_HOME from this before torch.utils.cpp_extension is imported.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def want_cuda(mode: str, torch_cuda: Optional[str], nvcc: Optional[str]) -> Tuple[bool, str]:
    """Whether to build the CUDA flavour, and why (for the build's message).

    ``mode`` is ``$LTL_EXT_CUDA``: ``auto`` (CUDA iff torch is a CUDA build and nvcc is found), ``1`` (require it:
    ``RuntimeError`` if impossible) or ``0`` (CPU only). A visible GPU is never asked.
    """
    mode = (mode or "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"LTL_EXT_CUDA must be auto, 0 or 1, got {mode!r}")
    if torch_cuda is None:
        why = "torch is a CPU build (torch.version.cuda is None)"
    elif nvcc is None:
        why = "nvcc was not found (set CUDA_HOME to the CUDA toolkit)"
    else:
        why = ""
    if mode == "1" and why:
        raise RuntimeError(f"LTL_EXT_CUDA=1 but a CUDA build is impossible: {why}")
    if mode == "0":
        return False, "LTL_EXT_CUDA=0"
    return not why, why or f"CUDA {torch_cuda}, nvcc {nvcc}"


def nvidia_wheel_includes(paths: Sequence[str] = ()) -> List[str]:
    """Header folders of torch's CUDA wheels (nvidia/cusparse/include, ...), which a bare toolkit may lack.

    ATen/cuda/CUDAContext.h includes cusparse.h and cublas_v2.h; a CUDA build of torch brings them as
    nvidia-* wheels. They go *after* the toolkit's own headers (-idirafter). Searched in ``paths`` (default
    ``sys.path``) and in ``$LTL_EXT_CUDA_HEADERS`` (more folders laid out like site-packages, with an
    ``nvidia/`` inside; ``os.pathsep``-separated).
    """
    extra = [p for p in os.environ.get("LTL_EXT_CUDA_HEADERS", "").split(os.pathsep) if p]
    found: List[str] = []
    for base in list(paths or sys.path) + extra:
        for pattern in ("nvidia/*/include", "nvidia/*/*/include"):
            found += sorted(glob.glob(os.path.join(base, pattern)))
    return list(dict.fromkeys(found))


def build_tag(flavour: str, torch_version: str) -> str:
    """``cpu-py311-torch2.13.0+cpu``: one build folder per flavour, Python and torch (objects never mix)."""
    tag = f"{flavour}-py{sys.version_info.major}{sys.version_info.minor}-torch{torch_version}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", tag)


def cuda_architectures(arch_list: Optional[str] = None) -> List[str]:
    """TORCH_CUDA_ARCH_LIST ("8.0;9.0", "9.0+PTX") as CMake's CUDA_ARCHITECTURES ("80", "90")."""
    arch_list = arch_list or os.environ.get("TORCH_CUDA_ARCH_LIST") or CUDA_ARCH_LIST
    return [a.replace("+PTX", "").replace(".", "") for a in re.split(r"[;\s]+", arch_list.strip()) if a]


def _cmake_list(values: Sequence[str]) -> str:
    return " ".join('"' + str(v).replace("\\", "/").replace('"', '\\"') + '"' for v in values)


def write_cmake(out_path: str, root: str, cuda: str = "off") -> None:
    """Write the CMake variables CMakeLists.txt includes: this file's flags, plus what torch.utils.cpp_extension
    would pass (include and library folders, libraries, the ABI definition), so CMake compiles what setup.py does.

    ``cuda``: ``off`` (CPU flavour), ``on`` (CUDA flavour: torch's CUDA libraries, WITH_CUDA), ``objects`` (the
    toolkit's headers for compiling the CUDA sources, while the module stays the CPU flavour). Imports torch.
    """
    if cuda not in ("off", "on", "objects"):
        raise ValueError(f"cuda must be off, on or objects, got {cuda!r}")
    home = default_cuda_home()
    if home:  # before torch.utils.cpp_extension computes CUDA_HOME at import
        os.environ.setdefault("CUDA_HOME", home)
    import torch
    from torch.utils import cpp_extension

    if cuda != "off" and not home:
        raise RuntimeError("the CUDA sources need the CUDA toolkit: set CUDA_HOME")
    if cuda == "on" and torch.version.cuda is None:
        raise RuntimeError(f"the CUDA flavour needs a CUDA build of torch (torch {torch.__version__} is a CPU build); "
                           "LTL_EXT_CUDA=OBJECTS compiles the CUDA sources without linking them")
    linked = cuda == "on"
    # torch.utils.cpp_extension's CUDA folders are CUDA_HOME's include/ and lib64/ (it knows no CUDA_HOME when
    # torch is a CPU build, so they are joined here)
    includes = cpp_extension.include_paths("cpu")
    lib_dirs = cpp_extension.library_paths("cpu") + ([os.path.join(home, "lib64")] if linked else [])
    libs = ["c10", "torch", "torch_cpu", "torch_python"] + (["cudart", "c10_cuda", "torch_cuda"] if linked else [])
    torch_defines = ["TORCH_API_INCLUDE_EXTENSION_H", f"TORCH_EXTENSION_NAME={MODULE_NAME}",
                     f"_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    ours = [name if value is None else f"{name}={value}"
            for name, value in defines(package_version(root), torch.__version__,
                                       torch.version.cuda if linked else None)]
    variables = {
        "LTL_MODULE_NAME": [MODULE_NAME],
        "LTL_CXX_STANDARD": [str(CXX_STANDARD)],
        "LTL_CXX_FLAGS": CXX_FLAGS,
        "LTL_LINK_FLAGS": LINK_FLAGS,
        "LTL_NVCC_FLAGS": NVCC_FLAGS + list(cpp_extension.COMMON_NVCC_FLAGS),  # + the standard: CUDA_STANDARD
        "LTL_CUDA_ARCHITECTURES": cuda_architectures(),
        "LTL_DEFINES": ours + torch_defines,
        "LTL_INCLUDE_DIRS": [os.path.join(root, d) for d in INCLUDE_DIRS],
        "LTL_TORCH_INCLUDE_DIRS": includes,
        "LTL_CUDA_INCLUDE_DIRS": [os.path.join(home, "include")] if cuda != "off" else [],
        "LTL_TORCH_LIBRARY_DIRS": lib_dirs,
        "LTL_TORCH_LIBRARIES": libs,
        "LTL_CUDA_WHEEL_INCLUDE_DIRS": nvidia_wheel_includes(),
        "LTL_TORCH_VERSION": [torch.__version__],
        "LTL_TORCH_CUDA": [torch.version.cuda or ""],
    }
    with open(out_path, "w") as f:
        f.write(f"# written by {os.path.abspath(__file__)} --cmake: do not edit\n")
        for name, values in variables.items():
            f.write(f"set({name} {_cmake_list(values)})\n")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write the build configuration as CMake variables")
    parser.add_argument("--cmake", required=True, metavar="OUT", help="the CMake file to write")
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    parser.add_argument("--cuda", choices=("off", "on", "objects"), default="off", help="see write_cmake")
    args = parser.parse_args()
    try:
        write_cmake(args.cmake, args.root, args.cuda)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"build_config.py: {e}")
