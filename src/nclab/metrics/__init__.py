"""Collapse metrics: streaming class statistics (``ClassStats``) and NC1-NC4 / CDNV / ETF geometry."""

from nclab.metrics.collapse import (CollapseRecord, cdnv, centred_pass, equiangularity, equinorm, etf_error,
                                    max_angle, mean_geometry, measure, measure_from_stats, nc1_pinv, nc1_quotient,
                                    nc3, nc3_zhu, ncc_accuracy, ncc_mismatch, pair_stats)
from nclab.metrics.stats import CentredPass, ClassMoments, ClassStats

__all__ = ["CentredPass", "ClassMoments", "ClassStats", "CollapseRecord", "cdnv", "centred_pass", "equiangularity",
           "equinorm", "etf_error", "max_angle", "mean_geometry", "measure", "measure_from_stats", "nc1_pinv",
           "nc1_quotient", "nc3", "nc3_zhu", "ncc_accuracy", "ncc_mismatch", "pair_stats", "geometric_complexity"]
from nclab.metrics.gc import geometric_complexity  # noqa: E402,F401
