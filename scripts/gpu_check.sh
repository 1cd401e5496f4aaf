#!/usr/bin/env bash
# One command for the lent GPU machine (H200, sm_90; Python 3.12, torch 2.11 + cu130, nvcc 13.0, no network):
#   build the CUDA flavour, run every CUDA test (pytest -m cuda: node ids containing "cuda", see tests/conftest.py),
#   run the CUDA benchmarks (incl. the GPU target: fused LIF fwd+bwd >= 85 % of copy bandwidth, N = 2^24, T = 16),
#   and one VGG-11 training step per method and precision (bench/bench_train.py: images/s, memory, CIFAR-10 epoch;
#   SKIP_TRAIN=1 leaves it out), where a step's time goes (scripts/step_profile.py --device cuda),
#   and leave logs + JSON under $OUT (default docs/results/gpu/, where the evidence rule puts artefacts; summary.json
#   records the commit, so a GPU figure is published only with the log made at that commit). Each stage is bounded
#   with `timeout`; the whole run < 9 minutes.
#
#   Exit status: 0 only when the build has CUDA kernels, every test ran passes, at least one CUDA test ran (not all
#   skipped), and the benchmarks pass; otherwise 1, with the reasons in summary.json ("failures") and the log.
#
#   bash scripts/gpu_check.sh                       # on the GPU machine, from the repository root
#   LTL_TREE_COMMIT=<sha> bash scripts/gpu_check.sh # a copied tree whose git metadata is older: name its commit
#   OUT=/tmp/o SKIP_BUILD=1 PY=.venv/bin/python bash scripts/gpu_check.sh    # dry run on a CPU box: exits 1
set -uo pipefail
export LTL_GPU_CHECK_RUNNING=1    # its pytest runs must not start gpu_check.sh again (tests/test_docs.py)
export LTL_EXT_JIT=${LTL_EXT_JIT:-0}   # a failed build is reported, not retried by a JIT compile on import
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/docs/results/gpu}
PY=${PY:-python}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
t0=$SECONDS
say() { echo "[gpu_check $((SECONDS - t0))s] $*" | tee -a "$LOG"; }
status_build=skip status_tests=skip status_bench=skip
print_train_rows() {  # the rows of a bench_train artefact, one line each
  "$PY" - "$1" <<'PY'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["rows"]
except Exception as e:
    sys.exit(f"no training rows: {e}")
for r in rows:
    print(f"{r['method']:>13} {r['precision']:>8} T={r['T']} b={r['batch']}: {r['images_per_s']:8.1f} images/s, "
          f"{r.get('added_mb', float('nan')):7.1f} MB, CIFAR-10 epoch {r['cifar10_epoch_s']:6.1f} s")
PY
}

say "host: $(hostname); $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.is_available() and torch.cuda.get_device_name())" 2>&1 | tee -a "$LOG"
command -v nvcc >/dev/null && nvcc --version | tail -1 | tee -a "$LOG"

# ---- 1. build (sm_90 only: fast) ----------------------------------------------------------------------------------
say "build: pip install --no-build-isolation --no-deps -e . (LTL_EXT_CUDA=${LTL_EXT_CUDA:-1}, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0})"
LOCK=""; command -v flock >/dev/null && LOCK="flock /tmp/ltl_ext_build.lock"
if [ "${SKIP_BUILD:-0}" = 1 ]; then   # a rerun on the same machine: the extension is built already
  echo "build skipped (SKIP_BUILD=1)" >"$OUT/build.log"
  status_build=ok
elif LTL_EXT_CUDA=${LTL_EXT_CUDA:-1} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    timeout 150 $LOCK "$PY" -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
  status_build=ok
else
  status_build="FAILED(rc=$?)"
  tail -40 "$OUT/build.log" | tee -a "$LOG"
fi
say "build: $status_build"
"$PY" - <<'PY' 2>&1 | tee -a "$LOG"
try:
    from ltl_ext.ops import build_info
    info = build_info()
    print("build_info:", {k: info.get(k) for k in ("compiled", "torch_built_against", "cuda_kernels",
                                                 "cuda_built_against", "openmp", "cuda_device", "error")})
except Exception as e:
    print("build_info failed:", type(e).__name__, e)
PY

# ---- 2. CUDA tests: the LIF's first (bounded on their own), then every other CUDA test --------------------------
if [ "$status_build" = ok ]; then
  say "tests: pytest tests/test_lif.py tests/test_build.py -m cuda, then pytest tests -m cuda (the rest)"
  timeout 60 "$PY" -m pytest tests/test_lif.py tests/test_build.py -m cuda -q -p no:cacheprovider -rfE --durations=5 \
      --junitxml="$OUT/tests_cuda_lif.xml" >"$OUT/tests_cuda.log" 2>&1
  rc1=$?
  echo "---- other CUDA tests ----" >>"$OUT/tests_cuda.log"
  timeout 45 "$PY" -m pytest tests -m cuda -q -p no:cacheprovider -rfE --durations=5 \
      --junitxml="$OUT/tests_cuda_others.xml" \
      --ignore=tests/test_lif.py --ignore=tests/test_build.py >>"$OUT/tests_cuda.log" 2>&1
  rc2=$?
  verdict() { [ "$1" = 0 ] && echo ok || { [ "$1" = 5 ] && echo none; } || echo "FAILED(rc=$1)"; }
  status_tests="lif:$(verdict $rc1),others:$(verdict $rc2)"
  grep -E "passed|failed|error|^FAILED|^ERROR" "$OUT/tests_cuda.log" | tail -30 | tee -a "$LOG"
  say "tests: $status_tests"

  # ---- 3. CUDA kernel benchmarks: every file but the training one, in one run (one table and artefact) ----------
  say "bench: pytest bench -k cuda --benchmark-only --ignore=bench/bench_train.py (LIF first: the GPU target)"
  LTL_BENCH_TABLE="$OUT/bench_cuda.json" timeout 75 "$PY" -m pytest bench -k cuda --benchmark-only -q -s \
      -p no:cacheprovider --ignore=bench/bench_train.py --benchmark-json="$OUT/bench_raw.json" \
      --benchmark-columns=min,median,rounds >"$OUT/bench.log" 2>&1
  rc1=$?
  cp docs/results/bench_cuda_default_allocator.json "$OUT/" 2>/dev/null
  sed -n '/ltl_ext: best times/,/^$/p' "$OUT/bench.log" | head -50 | tee -a "$LOG"
  grep -E "^(FAILED|ERROR)|target=|/ floor" "$OUT/bench.log" | head -20 | tee -a "$LOG"
  status_bench="kernels:$(verdict $rc1)"
  say "bench: $status_bench"

  # ---- 4. one training step of VGG-11 on the GPU: LTL offline / online / constant (float32, bf16, float16) vs BPTT
  if [ "${SKIP_TRAIN:-0}" = 1 ]; then
    say "train: skipped (SKIP_TRAIN=1)"
  else
    say "train: pytest bench/bench_train.py -k cuda (T x batch = ${LTL_BENCH_SHAPES:-16x64}; -> train_bench_cuda.json)"
    LTL_BENCH_SHAPES=${LTL_BENCH_SHAPES:-16x64} LTL_BENCH_WRITE=1 timeout 150 "$PY" -m pytest bench/bench_train.py \
        -k cuda --benchmark-only -q -p no:cacheprovider --benchmark-columns=min,median,rounds \
        >"$OUT/bench_train.log" 2>&1
    rc3=$?
    cp docs/results/train_bench_cuda.json "$OUT/" 2>/dev/null
    print_train_rows "$OUT/train_bench_cuda.json" 2>&1 | tee -a "$LOG"
    status_bench="$status_bench,train:$(verdict $rc3)"
    say "train: $(verdict $rc3)"
  fi

  # ---- 5. where a GPU training step's time goes: kernel time by kind against the step's wall time -------------
  say "profile: python scripts/step_profile.py --device cuda --T 16 --batch 64 --write (-> step_profile_cuda.json)"
  timeout 90 "$PY" scripts/step_profile.py --device cuda --T 16 --batch 64 --write >"$OUT/step_profile.log" 2>&1
  rc4=$?
  cp docs/results/step_profile_cuda.json "$OUT/" 2>/dev/null
  grep -E "^\{'method'" "$OUT/step_profile.log" | tee -a "$LOG"
  status_bench="$status_bench,profile:$(verdict $rc4)"
  say "profile: $(verdict $rc4)"
fi

# ---- summary and verdict ---------------------------------------------------------------------------------------
"$PY" - "$OUT" "$status_build" "$status_tests" "$status_bench" "$((SECONDS - t0))" <<'PY' 2>&1 | tee -a "$LOG"
import json, os, sys
import xml.etree.ElementTree as ET
out, b, t, be, secs = sys.argv[1:6]
sys.path.insert(0, "scripts")
from evidence import tree_commit     # the commit, or LTL_TREE_COMMIT for a copied tree (see scripts/evidence.py)
s = {"build": b, "tests_cuda": t, "bench_cuda": be, "seconds": int(secs), **tree_commit()}
try:
    from ltl_ext.ops import build_info
    s["cuda_kernels"] = bool(build_info().get("cuda_kernels"))
except Exception as e:  # the library does not load: no kernels at all
    s["cuda_kernels"] = False
counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for name in ("tests_cuda_lif.xml", "tests_cuda_others.xml"):
    path = os.path.join(out, name)
    if os.path.exists(path):
        for suite in ET.parse(path).getroot().iter("testsuite"):
            for k in counts:
                counts[k] += int(suite.get(k, 0))
counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
s["cuda_tests"] = counts
p = os.path.join(out, "bench_cuda.json")
if os.path.exists(p):
    for e in json.load(open(p)).get("extra", []):
        if e.get("target") == "gpu_fwd_bwd_vs_copy":
            s["gpu_target"] = e
            s["gpu_target_met"] = e["fraction_of_copy"] >= e["goal"]
failures = []
if b != "ok":
    failures.append(f"build {b}")
if not s["cuda_kernels"]:
    failures.append("the build has no CUDA kernels")
if counts["failures"] or counts["errors"] or "FAILED" in t:
    failures.append(f"CUDA tests failed: {t}, {counts}")
if counts["passed"] == 0:
    failures.append(f"no CUDA test ran (all {counts['skipped']} skipped, or none collected)")
if "FAILED" in be or be == "skip":
    failures.append(f"CUDA benchmarks: {be}")
s["failures"], s["ok"] = failures, not failures
json.dump(s, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("SUMMARY", json.dumps(s))
sys.exit(0 if s["ok"] else 1)
PY
verdict_rc=${PIPESTATUS[0]}
say "done ($([ "$verdict_rc" = 0 ] && echo PASSED || echo FAILED)); files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$verdict_rc"
