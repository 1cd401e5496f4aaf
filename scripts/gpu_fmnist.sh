#!/usr/bin/env bash
# The issue-5 accuracy figures on a GPU in one call: the demo, then full Fashion-MNIST (CNN teacher, offline and
# online LTL, T = 16, 5 epochs). Usage: DATA=/path/to/fashion-mnist OUT=/tmp/o bash scripts/gpu_fmnist.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}; DATA=${DATA:-/usr/share/datasets/fashion-mnist}; OUT=${OUT:-out/gpu_fmnist}; RUNS=${RUNS:-/tmp/ltl_runs}
mkdir -p "$OUT" "$RUNS"
run() { local name=$1 limit=$2; shift 2; echo "== $name: $*"; timeout "$limit" "$PY" -m ltl_ext "$@" --quiet \
        >"$RUNS/$name.log" 2>&1; echo "rc=$?"; tail -12 "$RUNS/$name.log"; cp "$RUNS/$name.log" "$OUT/" 2>/dev/null; }
run demo 100 demo --out "$RUNS/demo"
cp "$RUNS/demo/metrics.json" "$OUT/demo_metrics.json" 2>/dev/null
run offline 170 train --data fashion-mnist --data-dir "$DATA" --arch cnn_small --teacher-epochs 10 --mode offline \
    --epochs 5 -T 16 --out "$RUNS/offline"
cp "$RUNS/offline/metrics.json" "$OUT/offline_metrics.json" 2>/dev/null
run online 120 train --data fashion-mnist --data-dir "$DATA" --teacher "$RUNS/offline/teacher.pt" --mode online \
    --epochs 5 -T 16 --out "$RUNS/online"
cp "$RUNS/online/metrics.json" "$OUT/online_metrics.json" 2>/dev/null
