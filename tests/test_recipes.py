"""The recipes in configs/: every file is a valid run config, and the RFS paper profiles train a
few steps (on generated stand-ins of CIFAR-FS, FC-100 and mini-ImageNet in their real formats and
native sizes) and evaluate with `nclab evaluate`."""

from pathlib import Path

import pytest

from nclab.cli import main
from nclab.config import load_config
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
