"""Few-shot transfer: seeded episodes, batched heads, confidence intervals, Galanti's bound term.

``fewshot(features, labels, way=5, shot=(1, 5), query=15, episodes=2000, heads=(...), seed=0)``
returns one row per (shot, head); see :mod:`nclab.fewshot.evaluate`.
"""

import sys
import types

from nclab.fewshot.bound import class_cdnv_matrix, episode_cdnv, transfer_bound_term
from nclab.fewshot.episodes import Episodes, EpisodeSampler, load_episodes, save_episodes
from nclab.fewshot.evaluate import FewshotResult, evaluate_episodes, fewshot, fewshot_report
from nclab.fewshot.heads import (HEADS, EpisodeHead, LogisticHead, NCCHead, NearestNeighbourHead, RidgeHead,
                                 gram_coordinates, make_head, span_coordinates)
from nclab.fewshot.stats import confidence_interval
from nclab.fewshot.transforms import TRANSFORMS, base_mean, center, l2_normalize

__all__ = [
    "fewshot", "fewshot_report", "evaluate_episodes", "FewshotResult",
    "Episodes", "EpisodeSampler", "save_episodes", "load_episodes",
    "EpisodeHead", "NCCHead", "RidgeHead", "LogisticHead", "NearestNeighbourHead", "HEADS", "make_head",
    "span_coordinates", "gram_coordinates", "confidence_interval", "TRANSFORMS", "l2_normalize", "center", "base_mean",
    "class_cdnv_matrix", "episode_cdnv", "transfer_bound_term",
]


class _CallableModule(types.ModuleType):
    """``nclab.fewshot`` is both this package and the function ``nclab.fewshot(...)``: importing
    the package binds the module as the attribute ``nclab.fewshot``, so the module forwards calls."""

    def __call__(self, *args, **kwargs):
        return fewshot(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
