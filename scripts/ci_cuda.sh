#!/usr/bin/env bash
# CUDA checks for a GPU-less CI machine (called by .ci/run after `make test`):
#   1. every csrc/cuda/*.cu compiles with nvcc alone for sm_80 and sm_90 with torch's nvcc flags (kernels are on
#      plain pointers, so no CUDA torch is needed; seconds per file);
#   2. if the disk allows (~8 GB free), a full CUDA build of a COPY of the tree against torch==2.14.1 (a CUDA 13.0
#      build that pip takes from local disk) in its own venv: it must link and import, report cuda_kernels=True,
#      and pass the CPU tests (its CUDA tests skip: no GPU). The checkout's CPU build is left untouched.
# Environment: LTL_CI_CUDA_DIR (work dir, default /tmp/ltl_ci_cuda; reused between runs: venv + build folder),
#              LTL_CI_CUDA_FULL=auto|0|1, LTL_CI_CUDA_TORCH (default torch==2.14.1), NVCC (default: CUDA_HOME/bin/nvcc).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
WORK=${LTL_CI_CUDA_DIR:-/tmp/ltl_ci_cuda}
FULL=${LTL_CI_CUDA_FULL:-auto}
TORCH_SPEC=${LTL_CI_CUDA_TORCH:-torch==2.14.1}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$CUDA_HOME/bin/nvcc}
t0=$SECONDS
log() { echo "[ci_cuda $((SECONDS - t0))s] $*"; }

if [ ! -x "$NVCC" ]; then
  log "no nvcc at $NVCC: skipping the CUDA checks"
  exit 0
fi
mkdir -p "$WORK/obj"

# ---- 1. nvcc alone ---------------------------------------------------------------------------------------------
# torch's own nvcc flags (-D__CUDA_NO_HALF_OPERATORS__ ...), from whatever torch is installed (CPU builds have them)
TORCH_NVCC_FLAGS=$("$PY" -c "from torch.utils.cpp_extension import COMMON_NVCC_FLAGS as f; print(' '.join(f))")
shopt -s nullglob
CU=(csrc/cuda/*.cu)
if [ ${#CU[@]} -eq 0 ]; then
  log "no .cu files"
else
  log "nvcc $("$NVCC" --version | tail -1): ${#CU[@]} file(s) for sm_80 + sm_90"
  pids=()
  for f in "${CU[@]}"; do
    o="$WORK/obj/$(basename "$f" .cu)"
    ( "$NVCC" -std=c++17 -O3 --fmad=false -lineinfo $TORCH_NVCC_FLAGS -DWITH_CUDA -Icsrc/include -Icsrc \
        -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -Xptxas -warn-spills \
        -c "$f" -o "$o.o" >"$o.log" 2>&1 && echo "ok   $f" || { echo "FAIL $f"; cat "$o.log"; exit 1; } ) &
    pids+=($!)
    if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
  if grep -l "spill" "$WORK"/obj/*.log >/dev/null 2>&1; then
    log "warning: register spills:"; grep -h "spill" "$WORK"/obj/*.log | sort | uniq -c | head
  fi
  log "nvcc: all .cu files compile"
fi

# ---- 2. full CUDA build against a CUDA torch --------------------------------------------------------------------
free_gb=$(df -Pk "$(dirname "$WORK")" | awk 'NR==2 {print int($4 / 1048576)}')
have_venv=0; [ -x "$WORK/venv/bin/python" ] && have_venv=1
if [ "$FULL" = 0 ] || { [ "$FULL" = auto ] && [ "$have_venv" = 0 ] && [ "$free_gb" -lt 8 ]; }; then
  log "skipping the full CUDA build (LTL_CI_CUDA_FULL=$FULL, ${free_gb} GB free, needs ~8 GB)"
  exit 0
fi
if [ "$have_venv" = 0 ]; then
  log "creating $WORK/venv with $TORCH_SPEC (CUDA build, ~5.4 GB)"
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q "$TORCH_SPEC" numpy ninja pybind11 pytest expecttest
fi
CPY="$WORK/venv/bin/python"
"$CPY" -c "import torch; assert torch.version.cuda, 'not a CUDA torch'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

# a copy of the tree (sources only): the checkout's CPU-built ltl_ext/_C*.so stays untouched
mkdir -p "$WORK/src"
tar --exclude=./.venv --exclude=./.git --exclude=./build --exclude='./ltl_ext/_C*.so' --exclude='*.egg-info' \
    --exclude=./runs --exclude=./out --exclude=./.benchmarks --exclude='__pycache__' -cf - . | (cd "$WORK/src" && tar -xf -)
log "building the CUDA flavour in $WORK/src (TORCH_CUDA_ARCH_LIST=9.0; sm_80 was checked above)"
( cd "$WORK/src" && rm -f ltl_ext/_C*.so && \
  CUDA_HOME=$CUDA_HOME LTL_EXT_CUDA=1 TORCH_CUDA_ARCH_LIST=${LTL_CI_CUDA_ARCH:-9.0} MAX_JOBS=${MAX_JOBS:-2} \
  "$CPY" -m pip install -q --no-build-isolation --no-deps -e . )
log "import check"
( cd "$WORK/src" && "$CPY" - <<'PY'
import torch, ltl_ext
from ltl_ext.ops import build_info
info = build_info()
print({k: info[k] for k in ("torch_built_against", "cuda_kernels", "cuda_built_against", "openmp")})
assert info["compiled"] and info["cuda_kernels"], info
assert torch.ops.ltl_ext.lif_fwd.default is not None
x = torch.randn(4, 8)
from ltl_ext.functional import lif
lif(x, beta=0.9)
PY
)
log "CPU tests in the CUDA build (CUDA tests skip without a GPU)"
( cd "$WORK/src" && "$CPY" -m pytest -q -x tests/test_build.py tests/test_lif.py -k "not opcheck" -p no:cacheprovider )
log "done"
