"""nclab: neural collapse in transfer and few-shot learning.

Python entry points (imported lazily):

- ``nclab.measure(features, labels, W=None, b=None, **options)``: collapse statistics;
- ``nclab.fewshot(features, labels, way=5, shot=(1, 5), ...)``: few-shot transfer accuracy;
- ``nclab.geometric_complexity(f, x, probes=None, ...)``: geometric complexity of a map.
"""

import os

__version__ = "0.1.0"

# OpenMP threads that sleep instead of spinning while they wait: on a CPU shared with other
# processes (more runnable threads than cores) spinning threads burn the cycles their siblings
# need, and a 2-thread conv4 step ran ~4x slower than with passive waiting (BENCHMARKS.md,
# "Training throughput"). Read by libgomp when torch is first imported, so it only takes effect
# when nclab is imported before torch (as in the nclab command); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name):
    if name == "measure":
        from nclab.metrics import measure
        return measure
    if name == "fewshot":
        from nclab.fewshot import fewshot
        return fewshot
    if name == "geometric_complexity":
        from nclab.metrics.gc import geometric_complexity
        return geometric_complexity
    raise AttributeError(f"module 'nclab' has no attribute {name!r}")
