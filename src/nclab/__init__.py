"""nclab: neural collapse in transfer and few-shot learning.

Python entry points (imported lazily):

- ``nclab.measure(features, labels, W=None, b=None, **options)``: collapse statistics;
- ``nclab.fewshot(features, labels, way=5, shot=(1, 5), ...)``: few-shot transfer accuracy;
- ``nclab.geometric_complexity(f, x, probes=None, ...)``: geometric complexity of a map.
"""

__version__ = "0.1.0"


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
