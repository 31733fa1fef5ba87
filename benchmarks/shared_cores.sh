#!/bin/bash
# Training steps/s alone and beside an `nclab evaluate` of another run on the same cores, for
# trainer.threads = torch's default and 1 (README, speed on CPU; BENCHMARKS.md).
#   benchmarks/shared_cores.sh RUN [CONFIG] [OUT_DIR]
# RUN: a finished run to evaluate (e.g. an omniglot recipe run); CONFIG: what to train
# (default configs/omniglot.yaml, data under $NCLAB_DATA); OUT_DIR: scratch (default a temp dir).
set -euo pipefail
RUN=${1:?usage: shared_cores.sh RUN [CONFIG] [OUT_DIR]}
CONFIG=${2:-configs/omniglot.yaml}
OUT=${3:-$(mktemp -d)}
. "$(dirname "$0")/steps.sh"
for TH in default 1; do
    extra=(); [ "$TH" != default ] && extra=("trainer.threads=$TH")
    nclab train "$CONFIG" train.epochs=3 "${extra[@]}" --out "$OUT/train_$TH" > "$OUT/train_$TH.log" 2>&1 &
    TP=$!
    sleep 40; a=$(steps "$OUT/train_$TH.log"); t0=$(date +%s.%N)
    sleep 40; b=$(steps "$OUT/train_$TH.log"); t1=$(date +%s.%N)
    echo "threads $TH alone:           $(rate "$a" "$b" "$t0" "$t1") steps/s"
    a=$b; t0=$(date +%s.%N)
    nclab evaluate "$RUN" --way 5 --shot 1 --head ncc --episodes 1000 > "$OUT/eval_$TH.txt" 2>&1
    b=$(steps "$OUT/train_$TH.log"); t1=$(date +%s.%N)
    echo "threads $TH beside evaluate: $(rate "$a" "$b" "$t0" "$t1") steps/s, evaluate $(secs "$t0" "$t1") s"
    kill "$TP"; wait "$TP" 2>/dev/null || true
done
t0=$(date +%s.%N); nclab evaluate "$RUN" --way 5 --shot 1 --head ncc --episodes 1000 > "$OUT/eval_alone.txt" 2>&1
echo "evaluate alone: $(secs "$t0" "$(date +%s.%N)") s"
