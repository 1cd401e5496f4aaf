#!/usr/bin/env bash
# CMake and CUDA checks for a GPU-less CI machine (called by .ci/run after `make test`):
#   1. CMake configures and builds ltl_ext._C (CPU) from csrc/sources.txt with the flags of
#      ltl_ext/ops/build_config.py, the same extension setup.py builds; the module it made loads and runs an op.
#   2. With -DLTL_EXT_CUDA=OBJECTS the same build compiles every [cuda] source: the .cu kernels with nvcc (sm_80 and
#      sm_90) and their host glue with the host compiler. The glue includes ATen/cuda/CUDAContext.h, which needs a
#      CUDA build of torch's headers (a CPU torch lacks c10/cuda/impl/cuda_cmake_macros.h) and cusparse.h,
#      cublas_v2.h, cusolverDn.h (this toolkit lacks them): both are unpacked from their wheels (pip download, from
#      local disk) into $WORK/headers, which is reused only when its stamp names the same versions.
#   3. LTL_CI_CUDA_FULL=1: the full CUDA flavour built by setup.py against a CUDA torch in its own venv ($WORK/venv,
#      ~5.4 GB, reused only when its stamp matches), on a fresh copy of the tree; it must import and report CUDA
#      kernels. Off by default: CI's 30 minutes on 2 cores do not hold it.
# Every check that cannot run prints "SKIPPED: <what>: <why>"; a check that runs and fails exits non-zero.
# Environment: LTL_CI_CUDA_DIR (default /tmp/ltl_ci_cuda), LTL_CI_CUDA_FULL=0|1, LTL_CI_CUDA_TORCH (default
#              torch==2.14.1, a CUDA 13.0 build), CUDA_HOME (default /usr/local/cuda), MAX_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
WORK=${LTL_CI_CUDA_DIR:-/tmp/ltl_ci_cuda}
FULL=${LTL_CI_CUDA_FULL:-0}
TORCH_SPEC=${LTL_CI_CUDA_TORCH:-torch==2.14.1}
# the versions torch 2.14.1 (CUDA 13.0) installs, on this platform's local disk
HEADER_WHEELS=(nvidia-cublas==13.1.1.3 nvidia-cusparse==12.6.3.3 nvidia-cusolver==12.0.4.66)
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
JOBS=${MAX_JOBS:-2}
t0=$SECONDS
log() { echo "[ci_cuda $((SECONDS - t0))s] $*"; }
skip() { echo "SKIPPED: $*"; }
mkdir -p "$WORK"

# ---- CUDA headers for the host glue: a CUDA torch's include/ and the cuBLAS/cuSPARSE/cuSOLVER headers ----------
# Echoes the folder (laid out as site-packages: torch/include, nvidia/*/include) or nothing, with a SKIPPED reason.
cuda_headers() {
  local dir="$WORK/headers" want="$TORCH_SPEC ${HEADER_WHEELS[*]}"
  local macros=torch/include/c10/cuda/impl/cuda_cmake_macros.h   # what a CPU torch lacks
  if [ -f "$dir/STAMP" ] && [ "$(cat "$dir/STAMP")" = "$want" ] && [ -f "$dir/$macros" ]; then
    echo "$dir"; return
  fi
  rm -rf "$dir" "$dir.tmp" "$WORK/wheels"       # anything else there is from another version or a broken run
  mkdir -p "$dir.tmp" "$WORK/wheels"
  if ! "$PY" -m pip download -q --no-deps -d "$WORK/wheels" "$TORCH_SPEC" "${HEADER_WHEELS[@]}" \
      >"$WORK/download.log" 2>&1; then
    skip "CUDA host glue: could not download $want (see $WORK/download.log: $(tail -1 "$WORK/download.log"))" >&2
    return
  fi
  for w in "$WORK"/wheels/*.whl; do
    unzip -q -o "$w" 'torch/include/*' 'nvidia/*/include/*' -d "$dir.tmp" 2>/dev/null || true   # headers only
  done
  rm -rf "$WORK/wheels"                                 # ~1.5 GB of wheels: only their headers are kept
  if [ ! -f "$dir.tmp/$macros" ] || ! ls "$dir.tmp"/nvidia/*/include/cusparse.h >/dev/null 2>&1; then
    skip "CUDA host glue: the downloaded wheels hold no CUDA torch headers or no cusparse.h" >&2
    rm -rf "$dir.tmp"; return
  fi
  echo "$want" >"$dir.tmp/STAMP"
  mv "$dir.tmp" "$dir"
  echo "$dir"
}

# ---- 1 + 2: CMake ---------------------------------------------------------------------------------------------------
if ! command -v cmake >/dev/null; then
  skip "CMake build: cmake is not installed (apt-get install cmake)"
else
  GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
  CMAKE_ARGS=(-DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release)
  TARGETS=(--target ltl_ext_C)
  if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    skip "CUDA compile checks (.cu kernels and host glue): no nvcc at $CUDA_HOME/bin/nvcc"
    CMAKE_ARGS+=(-DLTL_EXT_CUDA=OFF)
  else
    CMAKE_ARGS+=(-DLTL_EXT_CUDA=OBJECTS -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc")
    TARGETS+=(ltl_ext_cuda_kernels)
    HDR=$(cuda_headers)
    if [ -n "$HDR" ]; then
      CMAKE_ARGS+=(-DLTL_EXT_CUDA_TORCH_INCLUDE="$HDR/torch/include")
      export LTL_EXT_CUDA_HEADERS="$HDR"               # build_config.py finds nvidia/*/include there
      TARGETS+=(ltl_ext_cuda_glue)
    fi
  fi
  BUILD="$ROOT/build/ci-cmake"                          # inside the clone: nothing from an earlier clone is reused
  log "cmake configure: ${CMAKE_ARGS[*]}"
  cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" "${CMAKE_ARGS[@]}" >"$WORK/cmake-configure.log" 2>&1 \
    || { cat "$WORK/cmake-configure.log"; exit 1; }
  log "cmake build: ${TARGETS[*]:1} ($("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | tail -1 || true))"
  cmake --build "$BUILD" -j "$JOBS" "${TARGETS[@]}"
  log "the CMake-built module loads and runs an op (without the package's own _C)"
  "$PY" - "$BUILD" <<'PY'
import glob, importlib.util, sys, torch
path = glob.glob(f"{sys.argv[1]}/_C*.so")
assert len(path) == 1, path
spec = importlib.util.spec_from_file_location("_C", path[0])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)              # registers torch.ops.ltl_ext.*
info = dict(module.build_info())
assert info["cpu_kernels"] and info["openmp"] and info["torch_built_against"] == torch.__version__, info
assert not info["cuda_kernels"], "the OBJECTS check must leave the module CPU-only"
out = torch.ops.ltl_ext.lif_fwd  # the op is registered
print({k: info[k] for k in ("torch_built_against", "cpu_vector_path", "openmp")}, "ops:", out)
PY
  if [ -n "${HDR:-}" ]; then
    log "CUDA: the kernels and their host glue compile"
  elif [ -x "$CUDA_HOME/bin/nvcc" ]; then
    log "CUDA: the kernels compile (the host glue was SKIPPED above)"
  fi
fi

# ---- 3. the full CUDA flavour (opt-in) ------------------------------------------------------------------------------
if [ "$FULL" != 1 ]; then
  skip "full CUDA build against $TORCH_SPEC: LTL_CI_CUDA_FULL=$FULL (set LTL_CI_CUDA_FULL=1; needs ~8 GB and ~15 min)"
  log "done"; exit 0
fi
if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  skip "full CUDA build: no nvcc at $CUDA_HOME/bin/nvcc"; exit 0
fi
VENV="$WORK/venv" STAMP_WANT="$TORCH_SPEC python$("$PY" -c 'import sys; print(sys.version.split()[0])')"
if [ ! -f "$VENV/STAMP" ] || [ "$(cat "$VENV/STAMP")" != "$STAMP_WANT" ] \
    || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  log "creating $VENV with $TORCH_SPEC (a stale or broken one is removed)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$TORCH_SPEC" numpy ninja pybind11 pytest expecttest setuptools wheel
  echo "$STAMP_WANT" >"$VENV/STAMP"
fi
CPY="$VENV/bin/python"
"$CPY" -c "import torch; assert torch.version.cuda, 'not a CUDA torch'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
rm -rf "$WORK/src" && mkdir -p "$WORK/src"             # a fresh copy every run: no file of an earlier tree survives
git ls-files -z -co --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | (cd "$WORK/src" && tar -xf -)
log "building the CUDA flavour in $WORK/src (TORCH_CUDA_ARCH_LIST=${LTL_CI_CUDA_ARCH:-9.0})"
( cd "$WORK/src" && LTL_EXT_CUDA=1 TORCH_CUDA_ARCH_LIST=${LTL_CI_CUDA_ARCH:-9.0} MAX_JOBS=$JOBS \
  "$CPY" -m pip install -q --no-build-isolation --no-deps -e . )
( cd "$WORK/src" && "$CPY" - <<'PY'
import torch
from ltl_ext.ops import build_info, jit
info = build_info()
assert info["compiled"] and info["cuda_kernels"], info
assert jit.HOW_BUILT.startswith("ahead of time"), jit.HOW_BUILT
from ltl_ext.functional import lif
lif(torch.randn(4, 8), beta=0.9)
print({k: info[k] for k in ("torch_built_against", "cuda_kernels", "cuda_built_against", "openmp")})
PY
)
log "done"
