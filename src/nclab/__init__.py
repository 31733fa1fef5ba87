"""nclab: neural collapse in transfer and few-shot learning.

Python entry points (imported lazily):

- ``nclab.measure(features, labels, W=None, b=None, **options)``: collapse statistics;
- ``nclab.fewshot(features, labels, way=5, shot=(1, 5), ...)``: few-shot transfer accuracy;
- ``nclab.geometric_complexity(f, x, probes=None, ...)``: geometric complexity of a map.
"""

__version__ = "0.1.0"

# OpenMP's wait policy is left to the user (libgomp's default: a waiting thread spins briefly,
# then sleeps). Until stop 36 nclab set OMP_WAIT_POLICY=PASSIVE, which helped 2-thread steps on
# cores shared with other jobs but cost the omniglot recipe 19% of its steps/s on idle cores
# (BENCHMARKS.md, "OpenMP wait policy"); on shared cores trainer.threads=1 is the remedy.


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
