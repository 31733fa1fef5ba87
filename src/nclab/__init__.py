"""nclab: neural collapse in transfer and few-shot learning.

Python entry points (imported lazily):

- ``nclab.measure(features, labels, W=None, b=None, **options)``: collapse statistics;
- ``nclab.fewshot(features, labels, way=5, shot=(1, 5), ...)``: few-shot transfer accuracy.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "measure":
        from nclab.metrics import measure
        return measure
    if name == "fewshot":
        from nclab.fewshot import fewshot
        return fewshot
    raise AttributeError(f"module 'nclab' has no attribute {name!r}")
