#!/bin/bash
# Evaluating a run again: `nclab evaluate` with the feature cache off (every call embeds the run's
# splits), then cold (embeds and stores) and warm (reads the stored features), 3 calls each, in one go.
#
#   benchmarks/bench_feature_cache.sh RUN [nclab evaluate options]
#
# Default options: --way 5 20 --shot 1 5 --head ncc logistic --episodes 1000. The calls share the
# dataset cache of $NCLAB_CACHE_DIR (linked into a temporary cache folder) and start from an empty
# feature cache; each cold call gets its own empty one. Prints the median seconds of each and checks
# that the three give the same JSON results.
set -euo pipefail
RUN=$1; shift
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--way 5 20 --shot 1 5 --head ncc logistic --episodes 1000)
REAL=$(python -c "from nclab.data.cache import cache_dir; print(cache_dir())")
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

fresh() {          # a cache folder with the real dataset entries and no features
  rm -rf "$T/cache"; mkdir -p "$T/cache/datasets"
  for d in "$REAL"/datasets/*; do [ "$(basename "$d")" = features ] || ln -s "$d" "$T/cache/datasets/"; done
}
timed() {          # timed MODE I: one nclab evaluate, its wall seconds to stdout
  local s e; s=$(date +%s.%N)
  NCLAB_CACHE_DIR="$T/cache" nclab evaluate "$RUN" "${ARGS[@]}" --json "$T/$1.$2.json" > /dev/null
  e=$(date +%s.%N); python -c "print(round($e - $s, 2))"
}
declare -A SECS
for i in 1 2 3; do
  fresh; SECS[off]+="$(NCLAB_FEATURE_CACHE_GB=0 timed off $i) "
  fresh; SECS[cold]+="$(timed cold $i) "
  SECS[warm]+="$(timed warm $i) "
done
python - "$T" "${SECS[off]}" "${SECS[cold]}" "${SECS[warm]}" <<'PY'
import json, statistics, sys
from pathlib import Path
T, off, cold, warm = sys.argv[1], *[[float(v) for v in a.split()] for a in sys.argv[2:5]]
res = {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k in ("rows", "summary")} for p in Path(T).glob("*.json")}
same = len({json.dumps(r, sort_keys=True) for r in res.values()}) == 1
m = {k: statistics.median(v) for k, v in (("off", off), ("cold", cold), ("warm", warm))}
print(f"nclab evaluate, median of 3 (s): cache off {m['off']:.1f} {off}, cold {m['cold']:.1f} {cold}, "
      f"warm {m['warm']:.1f} {warm}; warm is x{m['off'] / m['warm']:.1f} faster than off, cold costs "
      f"x{m['cold'] / m['off']:.2f} of off; identical results: {same}")
sys.exit(0 if same else 1)
PY
