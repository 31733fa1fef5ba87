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


PROFILED = """\
name: base
optim: {lr: 0.1}
train: {epochs: 4, batch_size: 32}
data: {root: "${NCLAB_TEST_ROOT:-/default}/sub"}
profiles:
  long:
    overrides: {train.epochs: 40, optim.lr: 0.2}
  gpu:
    description: long, on a GPU
    extends: long
    overrides: {optim.lr: 0.4, trainer.accelerator: auto, data.root: "${NCLAB_TEST_ROOT:-/gpu}/x"}
"""


def test_profiles_apply_after_the_body_before_the_command_line(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text(PROFILED)
    monkeypatch.delenv("NCLAB_TEST_ROOT", raising=False)
    body = load_config(p)
    assert (body.train.epochs, body.optim.lr, body.data.root) == (4, 0.1, "/default/sub")
    gpu = load_config(p, ["optim.lr=0.8"], profile="gpu")
    # extends: long's overrides first, then gpu's (lr 0.4), then the command line (0.8)
    assert (gpu.train.epochs, gpu.optim.lr, gpu.trainer.accelerator, gpu.train.batch_size) == (40, 0.8, "auto", 32)
    assert gpu.data.root == "/gpu/x"
    monkeypatch.setenv("NCLAB_TEST_ROOT", "/env")
    assert load_config(p).data.root == "/env/sub" and load_config(p, profile="long").optim.lr == 0.2
    assert from_dict(to_dict(gpu)) == gpu                       # the resolved config has no profiles left


@pytest.mark.parametrize("text, profile, match", [
    (PROFILED, "tpu", r"unknown profile 'tpu' \(valid: long, gpu\)"),
    ("profiles:\n  a: {extends: b}\n  b: {extends: a}\n", "a", r"cycle \(a -> b -> a\)"),
    ("profiles:\n  a: {override: {train.epochs: 2}}\n", "a", r"profile a: unknown key 'override'"),
    ("profiles:\n  a: {overrides: {train.epoch: 2}}\n", "a", r"train\.epoch"),
    ("train: {epochs: 2}\n", "a", "defines no profiles"),
    ("data: {root: '${NCLAB_SURELY_UNSET_VAR}'}\n", None, "NCLAB_SURELY_UNSET_VAR is not set"),
])
def test_bad_profiles_are_one_line_errors_naming_the_file(tmp_path, text, profile, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(NclabError, match=match) as e:
        load_config(p, profile=profile)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)
    with pytest.raises(NclabError, match="give one"):
        load_config(None, profile="a")
