#!/usr/bin/env bash
# Full Fashion-MNIST (60k/10k, apt-get install dataset-fashion-mnist): a CNN teacher, then offline and online LTL
# students at T = 16 from that same teacher. Each step is one CLI command; logs and metrics under $OUT.
#   bash scripts/fmnist_full.sh                   # OUT=runs/fmnist, LTL_EPOCHS=2, INIT=teacher
#   INIT=random LTL_EPOCHS=5 OUT=runs/fmnist_random bash scripts/fmnist_full.sh
# On a shared 2-core machine, one thread per process is much faster than two fighting for the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/fmnist}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
LTL_EPOCHS=${LTL_EPOCHS:-2}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-8}
INIT=${INIT:-teacher}
T=${T:-16}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
TEACHER=${TEACHER:-$OUT/teacher/teacher.pt}
if [ ! -f "$TEACHER" ]; then
  $PY -m ltl_ext train --data fashion-mnist --data-dir "$DATA_DIR" --arch cnn_small --channels 16,32,32 \
      --hidden 128 --teacher-epochs "$TEACHER_EPOCHS" --epochs 0 -T 2 --quiet --out "$OUT/teacher" \
      2>&1 | tee "$OUT/teacher.log"
fi
for MODE in offline online; do
  $PY -m ltl_ext train --data fashion-mnist --data-dir "$DATA_DIR" --teacher "$TEACHER" --mode $MODE -T "$T" \
      --epochs "$LTL_EPOCHS" --init "$INIT" --out "$OUT/$MODE" > "$OUT/$MODE.log" 2>&1 &
done
wait
tail -n 7 "$OUT"/offline.log "$OUT"/online.log
