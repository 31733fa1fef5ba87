import pytest

from nclab.config import RunConfig, from_dict, load_config, packaged_config, to_dict
from nclab.errors import NclabError


def test_overrides_are_typed_and_applied_in_order():
    cfg = load_config(packaged_config("quickstart"), ["optim.lr=0.3", "train.epochs=2", "optim.lr=0.2",
                                                      "schedule.milestones=[3, 5]", "optim.weight_decay=1e-4",
                                                      "model.options.width=32", "data.root=null"])
    assert cfg.optim.lr == 0.2 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 2 and cfg.schedule.milestones == [3, 5]
    assert cfg.optim.weight_decay == 1e-4            # YAML 1.1 would read "1e-4" as a string
    assert cfg.model.options == {"width": 32} and cfg.data.root is None
    assert cfg.model.backbone == "conv4"             # from the file


def test_regularizer_list_parses_exponent_floats():
    cfg = load_config(None, ["train.regularizers=[{gc: {alpha: 1e-6, probes: 1}}]"])
    assert cfg.train.regularizers == [{"gc": {"alpha": 1e-6, "probes": 1}}]


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=0.1", ["optim.lrr", "optim.lr"]),
    ("optm.lr=0.1", ["optm", "optim"]),
    ("trainer.devcies=2", ["trainer.devcies", "trainer.devices"]),
])
def test_misspelt_key_names_key_and_neighbours(override, words):
    with pytest.raises(NclabError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("override, field", [("train.epochs=abc", "train.epochs"), ("optim.nesterov=3", "optim.nesterov"),
                                             ("optim.lr=[1]", "optim.lr"), ("train.epochs", "train.epochs")])
def test_wrong_types_name_the_field(override, field):
    with pytest.raises(NclabError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_resolved_config_round_trips():
    cfg = load_config(packaged_config("rfs-mini-imagenet"), ["model.options.drop_rate=0.2"])
    assert from_dict(to_dict(cfg)) == cfg
    assert from_dict(to_dict(RunConfig())) == RunConfig()


def test_bad_yaml_file_is_one_line_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {epochs: [1,\n")
    with pytest.raises(NclabError, match=str(p)):
        load_config(p)
    p.write_text("train:\n  epochz: 3\n")
    with pytest.raises(NclabError, match=r"train\.epochz.*train\.epochs"):
        load_config(p)
    with pytest.raises(NclabError, match="not found"):
        load_config(tmp_path / "missing.yaml")
