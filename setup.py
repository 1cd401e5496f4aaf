"""Install ltl_ext; build its native library ltl_ext._C now when torch is here, else at first use.

Two ways, both supported:

    pip install -e .                                     # pip's isolated build: no torch at build time, so no
                                                         # extension now; ltl_ext compiles it at first import
                                                         # against *your* torch (ltl_ext/ops/jit.py), cached
    pip install -r requirements.txt                      # torch first (any build >= 2.4), then
    pip install --no-build-isolation -e .                # builds ltl_ext._C ahead of time against *that* torch

`python -m ltl_ext info` says which way the library was built. The sources are listed in csrc/sources.txt and the
flags, the C++ standard and the CUDA decision live in ltl_ext/ops/build_config.py (shared with CMakeLists.txt and
the first-use builder).

Environment:
    LTL_EXT_CUDA=auto|0|1      auto (default): CUDA iff torch.version.cuda is set and nvcc is found;
                               1: require CUDA (error if impossible); 0: CPU only. A visible GPU is never asked.
    TORCH_CUDA_ARCH_LIST       default "8.0;9.0+PTX" (A100, H100/H200; PTX for newer GPUs) when unset.
    CUDA_HOME                  default /usr/local/cuda when it has bin/nvcc (torch guesses it from `which nvcc`).
    MAX_JOBS                   parallel compile jobs (ninja).
Objects are kept in build/<flavour>-py<ver>-torch<ver>/ so a no-change reinstall takes seconds.
"""
import importlib.util
import os
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_build_config():
    """ltl_ext/ops/build_config.py by path: importing the package would import torch, which may be absent."""
    spec = importlib.util.spec_from_file_location("_ltl_ext_build_config",
                                                  os.path.join(ROOT, "ltl_ext", "ops", "build_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cfg = _load_build_config()
VERSION = cfg.package_version(ROOT)
SOURCES = cfg.read_sources(ROOT)


class BuildPyWithSources(build_py):
    """A wheel carries the C++/CUDA sources as ltl_ext/_native/ (same layout as the repository), so the first-use
    builder can compile them when the wheel was built without torch."""

    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's csrc/ directly
            return
        native = os.path.join(self.build_lib, "ltl_ext", "_native")
        shutil.rmtree(native, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, "csrc"), os.path.join(native, "csrc"),
                        ignore=shutil.ignore_patterns("*.o", "*.so", "__pycache__"))


cmdclass = {"build_py": BuildPyWithSources}
ext_modules = []

if cfg.default_cuda_home():  # before torch.utils.cpp_extension computes CUDA_HOME at import
    os.environ.setdefault("CUDA_HOME", cfg.default_cuda_home())
try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    torch = None
    print("ltl_ext: no torch in this build environment (pip's build isolation), so no native library now: "
          "ltl_ext compiles it at first import against the torch you run, cached under ~/.cache/ltl_ext "
          "(needs a C++ compiler and ninja). To build it ahead of time instead: install torch, then "
          "pip install --no-build-isolation -e .", file=sys.stderr)

if torch is not None:
    def _nvcc():
        home = cpp_extension.CUDA_HOME
        path = os.path.join(home, "bin", "nvcc") if home else None
        return path if path and os.path.exists(path) else None

    try:
        WITH_CUDA, WHY = cfg.want_cuda(os.environ.get("LTL_EXT_CUDA", "auto"), torch.version.cuda, _nvcc())
    except (ValueError, RuntimeError) as e:
        sys.exit(str(e))
    if WITH_CUDA:  # with no GPU to ask, torch's arch detection crashes: name the archs
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", cfg.CUDA_ARCH_LIST)
    FLAVOUR = "cuda" if WITH_CUDA else "cpu"

    def _extension():
        sources = SOURCES["cpu"] + (SOURCES["cuda"] if WITH_CUDA else [])
        define = cfg.defines(VERSION, torch.__version__, torch.version.cuda if WITH_CUDA else None)
        cxx = cfg.CXX_FLAGS + [cfg.std_flag()]
        kwargs = dict(include_dirs=[os.path.join(ROOT, d) for d in cfg.INCLUDE_DIRS], define_macros=define,
                      extra_link_args=list(cfg.LINK_FLAGS))
        if not WITH_CUDA:
            return cpp_extension.CppExtension(f"ltl_ext.{cfg.MODULE_NAME}", sources,
                                              extra_compile_args={"cxx": cxx}, **kwargs)
        cxx += [f for d in cfg.nvidia_wheel_includes() for f in ("-idirafter", d)]  # after the toolkit's headers
        nvcc = cfg.NVCC_FLAGS + [cfg.std_flag(), "-DWITH_CUDA"]
        return cpp_extension.CUDAExtension(f"ltl_ext.{cfg.MODULE_NAME}", sources,
                                           extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)

    class BuildExtension(cpp_extension.BuildExtension):
        """A persistent build folder per flavour/python/torch, so ninja only recompiles what changed."""

        def finalize_options(self):
            super().finalize_options()
            self.build_temp = os.path.join(ROOT, "build", cfg.build_tag(FLAVOUR, torch.__version__))

    print(f"ltl_ext: building the {FLAVOUR.upper()} flavour of ltl_ext._C ahead of time against torch "
          f"{torch.__version__} ({WHY}" + (f", arch {os.environ['TORCH_CUDA_ARCH_LIST']})" if WITH_CUDA else ")"),
          file=sys.stderr)
    ext_modules = [_extension()]
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(
    name="ltl_ext",
    version=VERSION,
    packages=find_packages(include=["ltl_ext", "ltl_ext.*"]),
    package_data={"ltl_ext.datasets": ["*.npz", "LICENSE", "NOTICE"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
