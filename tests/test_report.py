"""``nclab report``: the report of a real tiny run (probe keys added where the run lacks them), of a
sweep built from it, and of bad inputs. The numbers in the Markdown tables are checked against
the records, recomputed here without nclab's reading code."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import math
import re
import shutil

import numpy as np
import pytest
import scipy.stats
import yaml

from nclab.cli import main
from nclab.report.html import LONG_CELL, table_html
from nclab.report.markdown import Table

SPLITS = ("train", "test", "val", "novel")


def probe_keys(epoch: int, rng) -> dict:
    """Probe keys of DESIGN.md with plausible values (what a probe callback would add)."""
    r = {"probe": True, "probe_seconds": 0.1}
    for s in SPLITS:
        deb = 0.9 * (epoch + 1) ** -0.5 * math.exp(rng.normal(0, 0.1))
        r.update({f"{s}/n_samples": 40, f"{s}/n_classes": 4, f"{s}/cdnv_debiased": deb, f"{s}/cdnv": 0.8 * deb,
                  f"{s}/cdnv_debiased_excluded": 0, f"{s}/ncc_acc": 1 - 0.5 * deb})
    for k in ("nc1", "nc1_quotient", "nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "nc2_etf_error", "nc3", "nc4",
              "nc2_equinorm_w", "nc2_equiangle_w", "nc2_maxangle_w", "nc2_etf_error_w", "min_mean_distance"):
        r[f"train/{k}"] = float(rng.uniform(0.05, 1.0))
    r["train/nc4"] = 0.0 if epoch == 3 else r["train/nc4"]          # exact zeros happen: not drawable on log axes
    for s in ("val", "novel"):
        for shot in (1, 5):
            w = f"{s}/fewshot/2w{shot}s"
            acc = float(rng.uniform(0.5, 1.0))
            r.update({f"{w}/ncc": acc, f"{w}/ncc_ci95": 0.02, f"{w}/ridge": acc - 0.01, f"{w}/ridge_ci95": 0.02,
                      f"{w}/avg_cdnv": r[f"{s}/cdnv"], f"{w}/bound": (1 + 1 / shot) * r[f"{s}/cdnv"],
                      f"{w}/ncc_error": 1 - acc})
    for L in ("block1", "block2", "block3", "block4"):
        r[f"train/stage/{L}/ncc_acc"] = float(rng.uniform(0.2, 1.0))
        r[f"train/stage/{L}/cdnv_debiased"] = float(rng.uniform(0.1, 2.0))
    return r


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def with_probes(records: list[dict], seed: int) -> list[dict]:
    """The run's records with probe keys on every epoch and an epoch-0 probe record first,
    unless the run already has real probes."""
    if any("novel/cdnv" in r for r in records):
        return records
    rng = np.random.default_rng(seed)
    out = [{"epoch": 0, "step": 0, **probe_keys(0, rng)}]
    return out + [{**r, **probe_keys(r["epoch"], rng)} for r in records]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_registered):
    from nclab.train.run import start_run
    out = tmp_path_factory.mktemp("report") / "run"
    start_run(None, [f"data.name={tiny_registered}", "data.holdout=2", "model.backbone=conv4", "train.epochs=3",
                     "train.batch_size=8", "trainer.progress=false", "optim.lr=0.05"], out=out)
    write_jsonl(out / "metrics.jsonl", with_probes(read_jsonl(out / "metrics.jsonl"), 0))
    return out


@pytest.fixture(scope="module")
def sweep_dir(run_dir, tmp_path_factory):
    """An experiment of 3 lr x 2 seeds (plus a point not started) made of copies of the real run
    with their own records; the seed of each copy is set in its config.yaml."""
    root = tmp_path_factory.mktemp("sweep") / "exp"
    points = []
    for lr in (0.01, 0.1, 1.0):
        for seed in (0, 1):
            name = f"optim.lr={lr}_seed={seed}"
            points.append({"name": name, "run": f"runs/{name}", "overrides": [f"optim.lr={lr}", f"trainer.seed={seed}"],
                           "params": {"optim.lr": lr, "seed": seed}})
            d = root / "runs" / name
            shutil.copytree(run_dir, d)
            cfg = yaml.safe_load((d / "config.yaml").read_text())
            cfg["optim"]["lr"], cfg["trainer"]["seed"] = lr, seed
            (d / "config.yaml").write_text(yaml.safe_dump(cfg))
            rng = np.random.default_rng(int(lr * 100) + seed)
            recs = read_jsonl(d / "metrics.jsonl")
            for r in recs:                       # per-run values, so means and intervals are not trivial
                for k, v in r.items():
                    if isinstance(v, float) and k not in ("lr", "seconds"):
                        r[k] = v * float(rng.uniform(0.8, 1.2))
                if (lr, seed) == (1.0, 1):
                    r.pop("train/nc1", None)         # a metric one run of a point lacks
            write_jsonl(d / "metrics.jsonl", recs)
    points.append({"name": "optim.lr=10_seed=0", "run": "runs/optim.lr=10_seed=0", "overrides": [],
                   "params": {"optim.lr": 10.0, "seed": 0}})                      # not started yet
    (root / "manifest.json").write_text(json.dumps({"kind": "experiment", "name": "exp", "seeds": [0, 1],
                                                    "grid": {"optim.lr": [0.01, 0.1, 1.0]}, "points": points}))
    (root / "analysis.json").write_text(json.dumps({
        "summary": {"question": "Does lr | matter?", "rho": -0.5},
        "tables": [{"title": "Verbatim table", "columns": ["lr", "note"], "rows": [[0.01, "a ± b"], [1.0, None]],
                    "caption": "rendered as given"}]}))
    return root


def markdown_table(md: str, title: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Markdown table under ``### title``."""
    block = md.split(f"### {title}\n", 1)[1].splitlines()
    start = next(i for i, ln in enumerate(block) if ln.startswith("|"))
    lines = list(itertools.takewhile(lambda ln: ln.startswith("|"), block[start:]))
    cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    return cells[0], cells[2:]


def close(printed: str, value: float) -> bool:
    """``printed`` is ``value`` to 4 significant digits."""
    if value == 0:
        return float(printed) == 0
    return abs(float(printed) - value) <= 0.51 * 10 ** (math.floor(math.log10(abs(value))) - 3)


def t_interval(values):
    v = np.asarray(values, dtype=np.float64)
    return v.mean(), scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))


@pytest.fixture(scope="module")
def run_report(run_dir):
    """``nclab report RUN`` once for the tests that read it: (report folder, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(run_dir)]) == 0
    return run_dir / "report", printed.getvalue()


def test_report_of_a_run(run_report):
    out, printed = run_report
    assert f"open {out / 'index.html'}" in printed
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(f"{n}.png" for n in ("training", "cdnv", "ncc_accuracy", "fewshot", "cdnv_vs_fewshot",
                                                 "nc_train", "bound", "stages"))
    html = (out / "index.html").read_text()
    # self-contained: every PNG embedded byte for byte, nothing fetched from elsewhere
    for name in pngs:
        assert base64.b64encode((out / name).read_bytes()).decode() in html
    assert html.count('<img src="data:image/png;base64,') == len(pngs)
    assert not re.search(r"(src|href)=\"(?!data:|#)", html) and "<script" not in html and "<link" not in html
    md = (out / "report.md").read_text()
    assert all(f"]({name})" in md for name in pngs)
    # a few captions say what is drawn
    assert "debiased" in html and "plug-in" in html and "epoch + 1 on a log scale" in md
    assert "1 non-positive values are not drawn on the log axes" in md          # NC4 = 0 at epoch 3


def test_run_table_equals_the_records(run_report, run_dir):
    out, _ = run_report
    md = (out / "report.md").read_text()
    cols, rows = markdown_table(md, "Final epoch, per run")
    assert cols == ["", "run"]                    # one run: one column, a row per field
    value = dict(rows)
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert value["epoch"] == str(records[-1]["epoch"]) and value["seed"] == "0"
    metrics = [r[0] for r in rows[2:]]
    assert {"train_acc", "test_acc", "novel/cdnv_debiased", "train/nc1", "novel/fewshot/2w1s/ncc"} <= set(metrics)
    for k in metrics:
        last = [r[k] for r in records if r.get(k) is not None][-1]
        assert close(value[k], last), k
    csv = (out / "records.csv").read_text().splitlines()
    assert csv[0] == "run,seed,epoch,step,metric,value"
    assert len(csv) - 1 == sum(isinstance(v, (int, float)) and not isinstance(v, bool)
                               for r in records for k, v in r.items() if k not in ("epoch", "step"))


def test_sweep_tables_equal_the_records(sweep_dir):
    assert main(["report", str(sweep_dir)]) == 0
    out = sweep_dir / "report"
    md = (out / "report.md").read_text()
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    finals = {}                                  # run -> metric -> last value, read here independently
    for p in manifest["points"]:
        f = sweep_dir / p["run"] / "metrics.jsonl"
        if f.exists():
            recs = read_jsonl(f)
            finals[p["name"]] = {k: [r[k] for r in recs if r.get(k) is not None][-1]
                                 for k in {k for r in recs for k in r}
                                 if any(isinstance(r.get(k), float) for r in recs)}
    cols, rows = markdown_table(md, "Final epoch, per point")
    assert [r[0] for r in rows] == ["optim.lr=0.01", "optim.lr=0.1", "optim.lr=1"]
    assert all(r[1] == "2" for r in rows)
    for row in rows:
        lr = row[0].split("=")[1]
        names = [n for n in finals if n.startswith(f"optim.lr={float(lr)}_")]
        assert len(names) == 2
        for k in cols[2:]:
            values = [finals[n][k] for n in names if k in finals[n]]
            if len(values) == 1:
                assert row[cols.index(k)] == f"{values[0]:.4g} (n=1)" and (lr, k) == ("1", "train/nc1")
                continue
            mean, half = t_interval(values)
            m, h = row[cols.index(k)].split(" ± ")
            assert close(m, mean) and close(h, half), (row[0], k)
    # the per-run table: seeds from config.yaml, the manifest's parameter, last values
    cols, rows = markdown_table(md, "Final epoch, per run")
    assert len(rows) == 6 and cols[:3] == ["run", "seed", "optim.lr"]
    for row in rows:
        assert row[1] == row[0][-1] and float(row[2]) == float(row[0].split("=")[1].split("_")[0])
        assert close(row[cols.index("novel/cdnv_debiased")], finals[row[0]]["novel/cdnv_debiased"])
    # Spearman of a final metric against the swept lr, over runs
    cols, rows = markdown_table(md, "Rank correlations")
    row = next(r for r in rows if r[0] == "optim.lr" and r[1] == "final novel/cdnv_debiased")
    x = [float(n.split("=")[1].split("_")[0]) for n in finals]
    y = [finals[n]["novel/cdnv_debiased"] for n in finals]
    assert row[3] == "6" and float(row[4]) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=5e-4)
    # the bound: how often the term lies above the error, every run and epoch
    cols, rows = markdown_table(md, "Bound term against NCC error")
    row = next(r for r in rows if r[:3] == ["novel", "2", "1"])
    pairs = [(r["novel/fewshot/2w1s/bound"], r["novel/fewshot/2w1s/ncc_error"])
             for n in finals for r in read_jsonl(sweep_dir / "runs" / n / "metrics.jsonl")]
    assert row[3] == str(len(pairs))
    assert row[4] == f"{100 * np.mean([b > e for b, e in pairs]):.1f}%"
    # analysis.json: summary and tables verbatim (a pipe escaped in Markdown)
    assert "| question | Does lr \\| matter? |" in md
    cols, rows = markdown_table(md, "Verbatim table")
    assert cols == ["lr", "note"] and rows == [["0.01", "a ± b"], ["1.0", ""]]
    html = (out / "index.html").read_text()
    assert "Verbatim table" in html and "rendered as given" in html
    assert (out / "final_vs_optim_lr.png").is_file()
    assert "95% Student-t" in html


def test_half_written_record_and_rebuild(run_dir, tmp_path):
    """A run being written (half a line at the end) is read up to its last full record; a new
    report replaces the old folder, leaving none of its files behind."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("report"))
    f = run / "metrics.jsonl"
    f.write_text(f.read_text() + '{"epoch": 4, "step": 40, "loss": 0.')
    out = tmp_path / "rep"
    assert main(["report", str(run), "--out", str(out)]) == 0
    (out / "stale.png").write_bytes(b"x")
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert not (out / "stale.png").exists() and (out / "index.html").is_file()
    assert "epochs 0-3" in (out / "report.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]          # no temporary folders left


def test_several_runs_group_by_their_differing_config(run_dir, tmp_path):
    from nclab.report.data import ReportData
    for seed in (0, 1, 2):
        d = tmp_path / f"s{seed}"
        shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("report"))
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        cfg["trainer"]["seed"] = seed
        cfg["optim"]["lr"] = 0.05 if seed < 2 else 0.5
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    data = ReportData([tmp_path / f"s{s}" for s in (0, 1, 2)])
    assert [(g.label, g.runs) for g in data.groups] == [("optim.lr=0.05", ["s0", "s1"]), ("optim.lr=0.5", ["s2"])]
    assert data.params == ["optim.lr"] and data.swept() == ["optim.lr"]
    same = ReportData([tmp_path / "s0", tmp_path / "s1"])
    assert [(g.label, g.runs) for g in same.groups] == [("all runs", ["s0", "s1"])] and same.params == []


@pytest.mark.parametrize("case", ["missing", "not-a-run", "no-records", "out-is-file", "out-is-foreign", "out-is-a-run",
                                  "bad-analysis"])
def test_bad_inputs_exit_2_and_write_nothing(case, run_dir, sweep_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["report", str(run_dir), "--out", str(out)]
    if case == "missing":
        args[1] = str(tmp_path / "nope")
    elif case == "not-a-run":
        (tmp_path / "empty").mkdir()
        args[1] = str(tmp_path / "empty")
    elif case == "no-records":                   # started, nothing recorded yet
        shutil.copytree(run_dir, tmp_path / "new", ignore=shutil.ignore_patterns("report"))
        (tmp_path / "new" / "metrics.jsonl").write_text("")
        args[1] = str(tmp_path / "new")
    elif case == "out-is-a-run":                 # a report never replaces a folder of other files
        shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns("report"))
    elif case == "out-is-file":
        out.write_text("x")
    elif case == "out-is-foreign":
        out.mkdir()
        (out / "thesis.tex").write_text("x")
    elif case == "bad-analysis":
        exp = tmp_path / "exp"
        shutil.copytree(sweep_dir, exp, ignore=shutil.ignore_patterns("report"))
        (exp / "analysis.json").write_text('{"tables": [{"title": "t"}]}')
        args[1] = str(exp)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("nclab: error: ") and err.count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert {"missing": "no such directory", "not-a-run": "not a run, experiment or sweep directory",
            "no-records": "no run has written a record yet", "out-is-file": "is not a directory",
            "out-is-foreign": "not part of an nclab report", "out-is-a-run": "not part of an nclab report",
            "bad-analysis": "analysis.json: expected"}[case] in err


def test_gc_against_transfer_figure_one_colour_per_knob(run_dir, tmp_path):
    """Munn et al.'s Fig. 4 from a gc-sweep-like experiment: final train/gc against the final novel
    CDNV and the 5-shot accuracy; the Spearman it shows is that of the runs' last values."""
    from nclab.report.data import ReportData
    from nclab.report.figures import gc_transfer_figure
    root = tmp_path / "exp"
    points, finals = [], {}
    rng = np.random.default_rng(3)
    for knob, lr in (("base", 0.05), ("lr", 0.1), ("lr", 0.2)):
        for seed in (0, 1):
            name = f"{knob}={lr}_seed={seed}"
            points.append({"name": name, "run": f"runs/{name}", "overrides": [],
                           "params": {"knob": knob, "optim.lr": lr, "seed": seed}})
            shutil.copytree(run_dir, root / "runs" / name)
            recs = read_jsonl(root / "runs" / name / "metrics.jsonl")
            for r in recs:
                r["train/gc"] = float(rng.uniform(1, 100))
                r["novel/cdnv_debiased"] *= float(rng.uniform(0.5, 1.5))
                r["novel/fewshot/2w5s/ncc"] *= float(rng.uniform(0.8, 1.0))
            write_jsonl(root / "runs" / name / "metrics.jsonl", recs)
            finals[name] = recs[-1]
    (root / "manifest.json").write_text(json.dumps({"kind": "experiment", "name": "gc-sweep", "points": points}))
    data = ReportData([root])
    assert gc_transfer_figure(ReportData([run_dir])) == []            # no train/gc: no figure
    fig, = gc_transfer_figure(data)
    assert fig.name == "gc_vs_transfer" and fig.png.startswith(b"\x89PNG") and "colour: knob" in fig.caption
    gc = [r["train/gc"] for r in finals.values()]
    for c, key in zip(fig.correlations, ("novel/cdnv_debiased", "novel/fewshot/2w5s/ncc")):
        assert c["y"] == f"final {key}" and c["n"] == 6
        assert c["rho"] == pytest.approx(scipy.stats.spearmanr(gc, [r[key] for r in finals.values()]).statistic)


def test_html_cells_numbers_right_prose_wraps_short_text_stays():
    prose = "Does explicitly enforcing neural collapse during pre-training improve few-shot transfer? " * 2
    assert len(prose) > LONG_CELL
    html = table_html(Table("t", ["key", "value"], [["runs", "12"], ["question", prose],
                                                     ["delta", "-0.12 [-0.46, +0.22] (n=3)"]]))
    assert '<td class="num">12</td>' in html                       # a number: right-aligned
    assert f"<td class=\"long\">{prose}</td>" in html             # prose: wraps
    assert '<td>-0.12 [-0.46, +0.22] (n=3)</td>' in html           # short text: one line
    assert "<td>runs</td>" in html
