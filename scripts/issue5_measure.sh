#!/usr/bin/env bash
# The issue-5 measurements on the embedded subset (docs/results.md), one after the other, one thread each:
#   init="random" vs "teacher" (epochs to reach the teacher), LTL vs BPTT (time, saved bytes, convergence).
# Needs runs/demo/teacher.pt (python -m ltl_ext demo --out runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for INIT in teacher random; do
  $PY -m ltl_ext train --data embedded --teacher runs/demo/teacher.pt --init $INIT -T 8 --epochs 5 \
      --out runs/init_$INIT --quiet > runs/init_$INIT.log 2>&1
done
PYTHONPATH=. $PY scripts/ltl_vs_bptt.py --T 8 16 32 --steps 5 --teacher-epochs 3 --epochs 3 --conv-T 8 \
    --out runs/ltl_vs_bptt > runs/ltl_vs_bptt.log 2>&1
