#!/bin/bash
# Training steps/s on idle cores under OpenMP's wait policies: libgomp's default (what nclab leaves),
# PASSIVE (what importing nclab set before stop 36) and ACTIVE, alternating, ROUNDS rounds
# (BENCHMARKS.md, "The wait policy on idle cores").
#   benchmarks/wait_policy.sh [CONFIG] [ROUNDS]
# CONFIG: what to train (default configs/omniglot.yaml, data under $NCLAB_DATA). Each measurement is a
# fresh `nclab train` (OpenMP reads the policy at start-up): steps/s over 45 s after a 35 s start.
set -euo pipefail
. "$(dirname "$0")/steps.sh"
CONFIG=${1:-configs/omniglot.yaml}
ROUNDS=${2:-3}
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
for r in $(seq "$ROUNDS"); do
  for P in default PASSIVE ACTIVE; do
    if [ "$P" = default ]; then unset OMP_WAIT_POLICY; else export OMP_WAIT_POLICY=$P; fi
    nclab train "$CONFIG" train.epochs=3 --out "$OUT/t_${P}_$r" > "$OUT/t_${P}_$r.log" 2>&1 &
    TP=$!
    sleep 35; a=$(steps "$OUT/t_${P}_$r.log"); t0=$(date +%s.%N)
    sleep 45; b=$(steps "$OUT/t_${P}_$r.log"); t1=$(date +%s.%N)
    echo "round $r $P $(rate "$a" "$b" "$t0" "$t1") steps/s"
    kill "$TP"; wait "$TP" 2>/dev/null || true
  done
done
unset OMP_WAIT_POLICY
