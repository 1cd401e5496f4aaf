"""Build ltl_ext._C: CPU kernels always, CUDA kernels when the installed torch has CUDA and nvcc is found.

    pip install -r requirements.txt                      # torch first (any build >= 2.4)
    pip install --no-build-isolation -e .                # builds against *that* torch

Environment:
    LTL_EXT_CUDA=auto|0|1      auto (default): CUDA iff torch.version.cuda is set and nvcc is found;
                               1: require CUDA (error if impossible); 0: CPU only. A visible GPU is never asked.
    TORCH_CUDA_ARCH_LIST       default "8.0;9.0" (A100, H100/H200) when unset.
    CUDA_HOME                  default /usr/local/cuda when it has bin/nvcc (torch guesses it from `which nvcc`).
    MAX_JOBS                   parallel compile jobs (ninja).
Sources are globbed: csrc/*.cpp, csrc/cpu/*.cpp, and for CUDA csrc/cuda/*.cu + csrc/cuda/*.cpp.
Objects are kept in build/<flavour>-py<ver>-torch<ver>/ so a no-change reinstall takes seconds.
"""
import glob
import os
import re
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

_NO_TORCH = """
ltl_ext needs PyTorch installed *before* it is built (it compiles against the torch you run with):

    pip install -r requirements.txt              # or: pip install torch
    pip install --no-build-isolation -e .

(Plain `pip install -e .` builds in an isolated environment without torch and cannot work.)
"""

# torch guesses CUDA_HOME from `which nvcc`; here /usr/local/bin/nvcc is a wrapper script, so point it at the
# toolkit before torch.utils.cpp_extension computes CUDA_HOME at import.
if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH") \
        and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - exercised by hand
    sys.stderr.write(_NO_TORCH)
    sys.exit(1)


def _version() -> str:
    with open(os.path.join(ROOT, "ltl_ext", "_version.py")) as f:
        return re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M).group(1)


def _nvcc():
    home = cpp_extension.CUDA_HOME
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return None


def _want_cuda() -> bool:
    mode = os.environ.get("LTL_EXT_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"LTL_EXT_CUDA must be auto, 0 or 1, got {mode!r}")
    possible = torch.version.cuda is not None and _nvcc() is not None
    if mode == "1" and not possible:
        why = ("torch is a CPU build (torch.version.cuda is None)" if torch.version.cuda is None
               else "nvcc was not found (set CUDA_HOME to the CUDA toolkit)")
        sys.exit(f"LTL_EXT_CUDA=1 but a CUDA build is impossible: {why}")
    return possible and mode != "0"


def _nvidia_wheel_includes():
    """Header folders of torch's CUDA wheels (cublas, cusparse, ...), which a bare toolkit may lack."""
    dirs = []
    for p in sys.path:
        base = os.path.join(p, "nvidia")
        if os.path.isdir(base):
            dirs += sorted(glob.glob(os.path.join(base, "*", "include")))
            dirs += sorted(glob.glob(os.path.join(base, "*", "*", "include")))
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _rel(paths):
    # *avx2* objects link last: the linker keeps the first copy of an inline function, so a baseline copy wins
    # over one compiled for AVX2 (see csrc/cpu/lif_cpu_avx2.cpp)
    return sorted((os.path.relpath(p, ROOT) for p in paths), key=lambda p: ("avx2" in os.path.basename(p), p))


def _extension(with_cuda: bool):
    sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")) + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    define = [("LTL_EXT_VERSION", f'"{_version()}"'), ("LTL_EXT_TORCH_VERSION", f'"{torch.__version__}"')]
    # -fno-trapping-math lets GCC if-convert the spike compare (else the LIF loops stay scalar and branchy: 6x
    # slower); -ffp-contract=off keeps H bit-identical between the forward and the backward recompute.
    cxx = ["-O3", "-g0", "-fopenmp", "-fno-trapping-math", "-ffp-contract=off", "-fvisibility=hidden"]
    link = ["-fopenmp"]
    if not with_cuda:
        return cpp_extension.CppExtension(
            "ltl_ext._C", sources, include_dirs=[os.path.join(ROOT, "csrc", "include")],
            define_macros=define, extra_compile_args={"cxx": cxx}, extra_link_args=link)
    sources = _rel([os.path.join(ROOT, p) for p in sources] + glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu"))
                   + glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
    define += [("WITH_CUDA", None), ("LTL_EXT_CUDA_VERSION", f'"{torch.version.cuda}"')]
    for d in _nvidia_wheel_includes():
        cxx += ["-idirafter", d]  # after the toolkit's own headers
    nvcc = ["-O3", "-lineinfo", "--fmad=false", "--expt-relaxed-constexpr", "-DWITH_CUDA"]
    return cpp_extension.CUDAExtension(
        "ltl_ext._C", sources, include_dirs=[os.path.join(ROOT, "csrc", "include")],
        define_macros=define, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)


WITH_CUDA = _want_cuda()
if WITH_CUDA:  # with no GPU to ask, torch's arch detection crashes: name the archs (A100, H100/H200)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
FLAVOUR = "cuda" if WITH_CUDA else "cpu"


class BuildExtension(cpp_extension.BuildExtension):
    """A persistent build folder per flavour/python/torch, so ninja only recompiles what changed."""

    def finalize_options(self):
        super().finalize_options()
        tag = f"{FLAVOUR}-py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}"
        self.build_temp = os.path.join(ROOT, "build", re.sub(r"[^A-Za-z0-9_.+-]", "_", tag))


print(f"ltl_ext: building the {FLAVOUR.upper()} flavour against torch {torch.__version__}"
      + (f" (CUDA {torch.version.cuda}, nvcc {_nvcc()}, arch {os.environ['TORCH_CUDA_ARCH_LIST']})" if WITH_CUDA else ""),
      file=sys.stderr)

setup(
    name="ltl_ext",
    version=_version(),
    packages=find_packages(include=["ltl_ext", "ltl_ext.*"]),
    package_data={"ltl_ext.datasets": ["*.npz", "LICENSE", "NOTICE"]},
    ext_modules=[_extension(WITH_CUDA)],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
