"""The methods as the DAG sees them, read from `methods/*.py` without importing them (no torch): each method's name,
its pre-training stages, the keys of its `Config` (the keys `method_overrides.<method>` may set) and their literal
defaults (what a sweep compares its values with, `harness.workflow.variants`).

A method file declares these as plain Python that `ast` can read: one class decorated `@register_method("<stem>")`,
a literal `STAGES = ("stage1", ...)` in its body (if it has pre-training stages) and `Config = <a dataclass of the
module>`. The contract test (tests/methods/test_contract.py) checks that this table equals what the imported
methods say, so the DAG and the jobs never disagree.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import ConfigError

#: The folder of method files, relative to the project root.
METHODS_DIR = "methods"
#: Nested keys of a Config field: None for a plain value, else the fields of its dataclass.
Keys = Mapping[str, Any]


@dataclass(frozen=True)
class MethodEntry:
    """One method file: its registry name, pre-training stages (in order) and Config keys (nested for dataclasses)."""

    name: str
    stages: tuple[str, ...]
    config_keys: Keys
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Top-level Config fields whose default is a Python literal, with that value (tuples as lists, as YAML gives)."""
    shared_stages: tuple[str, ...] = ()
    """The first stages, which read no labels: run once per dataset, method and seed (`Method.SHARED_STAGES`)."""


def read_methods(project_root: str | Path) -> dict[str, MethodEntry]:
    """Every method of `<project_root>/methods/` by name (files starting with `_` are not methods)."""
    folder = Path(project_root) / METHODS_DIR
    entries = [read_method(p) for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")]
    return {e.name: e for e in entries}


def read_method(path: Path) -> MethodEntry:
    """The table entry of one method file; ConfigError naming the file and what to write when it cannot be read."""
    tree = ast.parse(path.read_text(), filename=str(path))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    registered = [c for c in classes.values() if _registered_name(c) is not None]
    if len(registered) != 1:
        raise ConfigError(
            f"{path}: a method file holds exactly one class decorated @register_method({path.stem!r}); "
            f"found {len(registered)}"
        )
    cls = registered[0]
    name = _registered_name(cls)
    if name != path.stem:
        raise ConfigError(f"{path}: @register_method({name!r}) must name the file's stem {path.stem!r}")
    body = _class_assignments(cls)
    stages = _literal_stages(path, body.get("STAGES"))
    shared = _literal_stages(path, body.get("SHARED_STAGES"))
    if shared != stages[: len(shared)]:
        raise ConfigError(f"{path}: SHARED_STAGES {shared} must be the first stages of STAGES {stages}")
    config = body.get("Config")
    config_cls = classes[config.id] if isinstance(config, ast.Name) and config.id in classes else None
    if config_cls is None:
        return MethodEntry(name=name, stages=stages, config_keys={}, shared_stages=shared)
    return MethodEntry(name, stages, _fields(config_cls, classes), _literal_defaults(config_cls), shared)


def _registered_name(cls: ast.ClassDef) -> str | None:
    for deco in cls.decorator_list:
        called = getattr(deco.func, "id", getattr(deco.func, "attr", "")) if isinstance(deco, ast.Call) else ""
        if called == "register_method" and deco.args and isinstance(deco.args[0], ast.Constant):
            return str(deco.args[0].value)
    return None


def _class_assignments(cls: ast.ClassDef) -> dict[str, ast.expr]:
    """`NAME = value` statements of a class body (the last one wins, as at run time)."""
    found = {}
    for node in cls.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            found[node.target.id] = node.value
    return found


def _literal_stages(path: Path, value: ast.expr | None) -> tuple[str, ...]:
    if value is None:
        return ()
    try:
        stages = ast.literal_eval(value)
    except ValueError:
        raise ConfigError(f"{path}: STAGES must be a literal tuple of stage names, e.g. ('stage1', 'stage2')") from None
    if not isinstance(stages, tuple | list) or not all(isinstance(s, str) for s in stages):
        raise ConfigError(f"{path}: STAGES must be a tuple of strings; got {stages!r}")
    return tuple(stages)


def _fields(cls: ast.ClassDef, classes: Mapping[str, ast.ClassDef], depth: int = 0) -> dict[str, Any]:
    """The annotated fields of a dataclass body; a field typed with another class of the module nests its fields."""
    keys: dict[str, Any] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = node.annotation
            nested = annotation.id if isinstance(annotation, ast.Name) and annotation.id in classes else None
            keys[node.target.id] = _fields(classes[nested], classes, depth + 1) if nested and depth < 4 else None
    return keys


def _literal_defaults(cls: ast.ClassDef) -> dict[str, Any]:
    """`field: type = <literal>` of a dataclass body, by name (fields without a literal default are left out)."""
    defaults: dict[str, Any] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            defaults[node.target.id] = list(value) if isinstance(value, tuple) else value
    return defaults
