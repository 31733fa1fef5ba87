"""The recipes in configs/: every file and every profile of it is a valid run config; the RFS
paper profiles train a few steps (on generated stand-ins of CIFAR-FS, FC-100 and mini-ImageNet in
their real formats and native sizes), and so do the profiles of the omniglot and tiny recipes
(stand-ins of the shared Omniglot copy and of the tiny-imagenet-32 tree), then evaluate with
`nclab evaluate`."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nclab.cli import main
from nclab.config import config_profiles, load_config
from nclab.train.loop import build_model
from nclab.data.transforms import Preprocess
from nclab.data.class_lists import CIFAR_FS, FC100
from nclab.train.run import start_run
from tests.conftest import REPO
from tests.test_datasets import make_mini, make_split_pickles

CONFIGS = sorted((REPO / "src" / "nclab" / "configs").glob("*.yaml"))
FEW_STEPS = ["train.epochs=1", "train.batch_size=4", "data.source_classes=2", "trainer.accelerator=cpu",
             "trainer.progress=false", "trainer.threads=1", "data.num_workers=0"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_recipe_is_a_valid_config(path):
    assert load_config(path).name == path.stem            # runs are named after their recipe
    for profile in config_profiles(path):
        cfg = load_config(path, profile=profile)
        if cfg.data.name in ("omniglot", "folder", "glyphs"):
            channels = 1 if cfg.data.name != "folder" else 3
            build_model(cfg, Preprocess(cfg.data.image_size or 28, channels, [0.0], [1.0]), 10)


def test_omniglot_profiles_keep_the_optimiser_settings_they_were_measured_with():
    # the body moved to lr 0.2 / weight decay 1e-3 (stop 35); --profile long's numbers are at 0.1 / 5e-4
    path = REPO / "configs" / "omniglot.yaml"
    # (lr, weight decay, epochs, batch_per_class, regularizers); quick15-epyc's numbers are with proto (stop 40)
    plain = (0, [])
    measured = {"quick": (0.2, 1e-3, 4, *plain), "quick15": (0.2, 1e-3, 7, *plain),
                "quick15-epyc": (0.2, 1e-3, 13, 4, [{"proto": {"strength": 1}}]),
                "long": (0.1, 5e-4, 10, *plain), "paper": (0.2, 5e-4, 60, *plain)}
    assert set(config_profiles(path)) == set(measured)
    for profile, expected in measured.items():
        cfg = load_config(path, profile=profile)
        t = cfg.train
        assert (cfg.optim.lr, cfg.optim.weight_decay, t.epochs, t.batch_per_class, t.regularizers) == expected, profile
    assert (load_config(path).optim.lr, load_config(path).optim.weight_decay) == measured["quick"][:2]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["rfs-cifar-fs", "rfs-fc100", "rfs-mini-imagenet"])
def test_rfs_paper_profile_trains_a_few_steps_and_evaluates(tmp_path, recipe, capsys):
    root = tmp_path / "data"
    if recipe == "rfs-mini-imagenet":
        make_mini(root, "images", per=12, size=84)                  # 84 x 84 RGB, images/ + CSVs
    else:
        lists, pattern = (CIFAR_FS, "CIFAR_FS_{}.pickle") if recipe == "rfs-cifar-fs" else (FC100, "FC100_{}.pickle")
        make_split_pickles(root, pattern, lists, per=12)            # 32 x 32 RGB, MetaOptNet / RFS pickles
    run = start_run(REPO / "configs" / f"{recipe}.yaml", [f"data.root={root}"] + FEW_STEPS, out=tmp_path / "run")
    cfg = run.config()
    assert cfg.model.options == {"drop_rate": 0.1, "dropblock_size": 5 if "mini" in recipe else 2}
    assert cfg.data.jitter == 0.4 and cfg.train.epochs == 1 and run.records()[-1]["step"] == 1
    assert main(["evaluate", str(run.path), "--way", "2", "--shot", "1", "--query", "2", "--episodes", "4",
                 "--head", "logistic", "ncc"]) == 0
    assert "logistic" in capsys.readouterr().out
    assert Path(run.path / "model.safetensors").exists()


def make_tiny_tree(root: Path, classes=("n01", "n02", "n03", "n04", "n05", "n06"), per: int = 6) -> Path:
    """32 x 32 RGB JPEGs in <wnid>/<wnid>_<k>.JPEG folders and a splits.csv, as tiny-imagenet-32."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(per):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{c}_{k}.JPEG")
    kinds = ["source", "source", "source", "val", "novel", "novel"]
    (root / "splits.csv").write_text("class,split\n" + "".join(f"{c},{k}\n" for c, k in zip(classes, kinds)))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("recipe, profile", [("omniglot", None), ("omniglot", "quick15"), ("omniglot", "paper"), ("tiny", "quick"),
                                             ("tiny", "trainval"), ("tiny", "trainval30"), ("tiny", "paper")])
def test_omniglot_and_tiny_profiles_train_a_few_steps_and_evaluate(tmp_path, recipe, profile, capsys):
    from tests.test_omniglot import make_npz_layout
    if recipe == "omniglot":
        make_npz_layout(tmp_path / "omniglot")
        data = [f"data.root={tmp_path / 'omniglot'}"]
    else:
        root = make_tiny_tree(tmp_path / "tiny")
        data = [f"data.root={root}", f"data.split={root / 'splits.csv'}", "data.holdout=1"]
    args = ["train", str(REPO / "configs" / f"{recipe}.yaml"), *data, *FEW_STEPS, "--out", str(tmp_path / "run")]
    assert main(args + (["--profile", profile] if profile else [])) == 0
    cfg = load_config(tmp_path / "run" / "config.yaml")
    assert cfg.name == recipe + ("" if profile in (None, "quick") else f"-{profile}")
    if profile in ("trainval", "trainval30"):    # the stand-in's val class moved into the source classes
        splits = json.loads((tmp_path / "run" / "data.json").read_text())["splits"]
        assert cfg.data.trainval and cfg.train.epochs == 1 and splits["val"]["n_classes"] == 0
        assert cfg.train.ema == (0.999 if profile == "trainval30" else 0.0)
    assert cfg.model.backbone == "resnet12"
    assert main(["evaluate", str(tmp_path / "run"), "--way", "2", "--shot", "1", "--query", "2", "--episodes", "4",
                 "--head", "ncc", "logistic"]) == 0
    out = capsys.readouterr().out
    assert "center+l2" in out and "logistic" in out
