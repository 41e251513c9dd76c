"""harness.run.method_table: what the DAG reads from a method file without importing it, and its refusals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.run.method_table import read_method, read_methods

STAGED = """
from dataclasses import dataclass, field

from harness.method import Method, Stage, register_method


@dataclass(frozen=True)
class Warmup:
    iterations: int = 10
    lr: float = 0.1


@dataclass(frozen=True)
class Config:
    warmup: Warmup = field(default_factory=Warmup)
    finetune: Warmup = field(default_factory=Warmup)
    tau: float = 0.5


@register_method("staged")
class Staged(Method):
    Config = Config
    STAGES = (
        Stage(name="warmup", data="images", settings="warmup", step="warm", modules=("net",)),
        Stage(name="finetune", data="labeled", settings="finetune", step="tune", modules=("net",)),
    )
"""
STAGES = """(
        Stage(name="warmup", data="images", settings="warmup", step="warm", modules=("net",)),
        Stage(name="finetune", data="labeled", settings="finetune", step="tune", modules=("net",)),
    )"""

BROKEN = STAGED.replace('register_method("staged")', 'register_method("broken")')


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / "methods" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_name_stages_and_nested_config_keys(tmp_path):
    entry = read_method(write(tmp_path, "staged", STAGED))
    assert entry.name == "staged" and entry.stages == ("warmup", "finetune")
    assert entry.shared_stages == ("warmup",) and entry.stage("finetune").settings == "finetune"
    nested = {"iterations": None, "lr": None}
    assert entry.config_keys == {"warmup": nested, "finetune": nested, "tau": None}
    assert entry.defaults == {
        "warmup": {"iterations": 10, "lr": 0.1},
        "finetune": {"iterations": 10, "lr": 0.1},
        "tau": 0.5,
    }


def test_a_method_without_stages_or_config(tmp_path):
    text = 'from harness.method import Method, register_method\n\n@register_method("plain")\nclass P(Method): ...\n'
    entry = read_method(write(tmp_path, "plain", text))
    assert entry.stages == () and entry.config_keys == {}


def test_every_file_but_private_ones_is_a_method(tmp_path):
    write(tmp_path, "staged", STAGED)
    write(tmp_path, "_helpers", "X = 1\n")
    assert list(read_methods(tmp_path)) == ["staged"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("X = 1\n", r"exactly one class decorated @register_method\('broken'\); found 0"),
        (STAGED, r"@register_method\('staged'\) must name the file's stem 'broken'"),
        (BROKEN.replace(STAGES, "tuple(NAMES)"), "STAGES must be a literal tuple"),
        (BROKEN.replace('name="warmup"', "name=NAME"), "'name' is not"),
        (BROKEN.replace('settings="warmup"', 'settings="warmpu"'), r"names \['warmpu'\], which are not fields"),
        (
            BROKEN.replace('data="images"', 'data="labeled"').replace(
                'data="labeled", settings="finetune"', 'data="images", settings="finetune"'
            ),
            "read no labels .* must come first",
        ),
    ],
)
def test_a_file_the_dag_cannot_read_is_refused_by_name(tmp_path, text, message):
    path = write(tmp_path, "broken", text)
    with pytest.raises(ConfigError, match=message) as err:
        read_method(path)
    assert str(path) in str(err.value)
