"""The folder layout is the architecture: data flows one way (data -> models -> train -> metrics /
fewshot -> experiments -> report -> cli). Every ``nclab`` import in the source is checked
against that order, so a module that reaches back upstream fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import nclab

SRC = Path(nclab.__file__).parent

# a module may import its own layer and the layers below it
LAYER = {
    "errors": 0, "atomic": 0, "parallel": 0, "config": 0, "featurefile": 0,
    "data": 1, "models": 1,
    "metrics": 2, "fewshot": 3, "ufm": 3,  # leaf computation units (fewshot, ufm reuse metrics)
    "train": 4, "extract": 5, "experiments": 6, "report": 7,
    "commands": 8, "cli": 8, "__init__": 8, "__main__": 8,
}


def _unit(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imported_units(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "nclab" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in SRC.rglob("*.py")}
    assert units <= set(LAYER), f"give these a layer: {sorted(units - set(LAYER))}"


def test_imports_flow_one_way():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        unit = _unit(path)
        for target in _imported_units(ast.parse(path.read_text(), str(path))):
            if LAYER[target] > LAYER[unit]:
                wrong.append(f"{path.relative_to(SRC)} imports nclab.{target}")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_the_checker_sees_a_violation():
    tree = ast.parse("from nclab.train.loop import train_worker\nimport nclab.cli\n")
    assert _imported_units(tree) == {"train", "cli"}
    assert LAYER["train"] > LAYER["metrics"] and LAYER["cli"] > LAYER["fewshot"]
