"""``nclab measure F.npz | RUN_DIR --split S [--json OUT]``: print the collapse table, write JSON."""

from __future__ import annotations

from nclab.atomic import atomic_write_json
from nclab.metrics.collapse import CollapseRecord, measure

_ROWS = [
    ("cdnv", "CDNV (Galanti, symmetric, mean over pairs)"),
    ("cdnv_cov", "CDNV coefficient of variation"),
    ("nc1", "NC1 = Tr(Sigma_W Sigma_B^+)/K"),
    ("nc1_quotient", "Tr Sigma_W / Tr Sigma_B"),
    ("nc2_equinorm", "NC2 equinorm CoV (means)"),
    ("nc2_equiangle", "NC2 equiangularity std (means)"),
    ("nc2_maxangle", "NC2 max-angle |cos + 1/(K-1)| (means)"),
    ("nc2_etf_error", "NC2 ETF error (means)"),
    ("min_mean_distance", "min ||mu_i - mu_j|| / mean ||m_c||"),
    ("ncc_accuracy", "NCC accuracy"),
    ("nc2_equinorm_w", "NC2 equinorm CoV (W)"),
    ("nc2_equiangle_w", "NC2 equiangularity std (W)"),
    ("nc2_maxangle_w", "NC2 max-angle (W)"),
    ("nc3", "NC3 ||W/||W|| - M/||M|| ||^2"),
    ("nc3_zhu", "NC3 (Zhu, W M^T vs ETF)"),
    ("nc4", "NC4 NCC vs network mismatch"),
]


def format_table(rec: CollapseRecord, title: str = "") -> str:
    d = rec.to_dict()
    lines = [f"{title}: {rec.n_samples} samples, {rec.n_classes} classes, dim {rec.dim}"
             f" (input {rec.dtype}; rank of M {rec.nc1_rank}, tol {rec.nc1_tol:.1e})"]
    if rec.classes_dropped:
        more = " ..." if len(rec.classes_dropped) > 20 else ""
        lines.append(f"  empty classes dropped: {rec.classes_dropped[:20]}{more}")
    if rec.n_coincident_pairs:
        lines.append(f"  WARNING: {rec.n_coincident_pairs} pairs of coincident class means "
                     f"(CDNV undefined), e.g. {rec.coincident_pairs[:5]}")
    width = max(len(label) for _, label in _ROWS)
    for key, label in _ROWS:
        if key in d:
            v = d[key]
            lines.append(f"  {label:<{width}}  {'undefined' if v is None else f'{v:.6g}'}")
    return "\n".join(lines)


def _load(source: str, split: str | None):
    try:
        from nclab.extract import load_feature_source
    except ImportError:  # run directories need nclab.extract; feature files do not
        from pathlib import Path

        from nclab.errors import NclabError
        from nclab.featurefile import load_features
        if Path(source).is_dir():
            raise NclabError(f"{source}: reading a run directory needs nclab.extract, which is not installed") from None
        return load_features(source)
    return load_feature_source(source, split)


def measure_command(args) -> int:
    fs = _load(args.source, args.split)
    rec = measure(fs.features, fs.labels, fs.W, fs.b, n_classes=fs.n_classes)
    title = args.source + (f" [{args.split}]" if args.split else "")
    print(format_table(rec, title))
    if args.json_out:
        atomic_write_json(args.json_out, rec.to_dict())
        print(f"wrote {args.json_out}")
    return 0
