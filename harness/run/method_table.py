"""The methods as the DAG and the run folders see them, read from `methods/*.py` without importing them (no torch):
each method's name, its pre-training stages, the keys of its `Config` (the keys `method_overrides.<method>` may set)
and their literal defaults (what a sweep compares its values with, `harness.workflow.variants`; the cost estimate
reads a stage's iterations from them).

A method file declares these as plain Python that `ast` can read: one class decorated `@register_method("<stem>")`,
`STAGES = (Stage(name="stage1", data="images", settings="stage1", ...), ...)` in its body if it has pre-training
stages (the keywords `name`, `data` and `settings` written as literals) and `Config = <a dataclass of the module>`.
The contract test (tests/methods/test_contract.py) checks that this table equals what the imported methods say, so
the DAG and the jobs never disagree.
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
#: A stage that reads this data reads no label: it is trained once per dataset, method and seed (`shared`).
IMAGES_ONLY = "images"


@dataclass(frozen=True)
class StageEntry:
    """A pre-training stage as the DAG sees it (`harness.method.contract.Stage`, read without importing it)."""

    name: str
    data: str
    settings: str
    """The Config field (a dataclass) holding the stage's iterations, batch, learning rate and weight decay."""

    @property
    def shared(self) -> bool:
        """Reads no labels: the runs of every labeled count share one training of it (`harness.run.stages`)."""
        return self.data == IMAGES_ONLY


@dataclass(frozen=True)
class MethodEntry:
    """One method file: its registry name, pre-training stages (in order) and Config keys (nested for dataclasses)."""

    name: str
    stage_entries: tuple[StageEntry, ...] = ()
    config_keys: Keys = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Config fields whose default is a Python literal, with that value (tuples as lists, as YAML gives); a field
    holding a dataclass of the module maps to that dataclass's literal defaults."""

    @property
    def stages(self) -> tuple[str, ...]:
        """The pre-training stages' names, in the order they run."""
        return tuple(s.name for s in self.stage_entries)

    @property
    def shared_stages(self) -> tuple[str, ...]:
        """The stages that read no labels (always the first ones)."""
        return tuple(s.name for s in self.stage_entries if s.shared)

    def stage(self, name: str) -> StageEntry:
        for entry in self.stage_entries:
            if entry.name == name:
                return entry
        raise KeyError(f"method {self.name} has no pre-training stage {name!r}; its stages: {list(self.stages)}")


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
    stages = _declared_stages(path, body.get("STAGES"))
    config = body.get("Config")
    config_cls = classes[config.id] if isinstance(config, ast.Name) and config.id in classes else None
    if config_cls is None:
        return MethodEntry(name=name, stage_entries=stages)
    keys, defaults = _fields(config_cls, classes), _literal_defaults(config_cls, classes)
    unknown = [s.settings for s in stages if s.settings not in keys]
    if unknown:
        raise ConfigError(f"{path}: Stage(settings=...) names {unknown}, which are not fields of {config.id}")
    return MethodEntry(name, stages, keys, defaults)


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


def _declared_stages(path: Path, value: ast.expr | None) -> tuple[StageEntry, ...]:
    """The `Stage(name=..., data=..., settings=...)` calls of a literal STAGES tuple."""
    if value is None:
        return ()
    if not isinstance(value, ast.Tuple | ast.List):
        raise ConfigError(f"{path}: STAGES must be a literal tuple of Stage(...) declarations")
    stages = tuple(_stage_entry(path, item) for item in value.elts)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: STAGES declares a stage name twice: {names}")
    shared = [s.shared for s in stages]
    if shared != sorted(shared, reverse=True):
        raise ConfigError(f"{path}: stages that read no labels (data={IMAGES_ONLY!r}) must come first: {names}")
    return stages


def _stage_entry(path: Path, call: ast.expr) -> StageEntry:
    keywords = {k.arg: k.value for k in call.keywords} if isinstance(call, ast.Call) else {}
    values = {}
    for key in ("name", "data", "settings"):
        node = keywords.get(key)
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            raise ConfigError(
                f'{path}: each STAGES entry must be Stage(name="...", data="...", settings="...", ...) with '
                f"those three as string literals (the DAG reads them without importing the method); {key!r} is not"
            )
        values[key] = node.value
    return StageEntry(**values)


def _fields(cls: ast.ClassDef, classes: Mapping[str, ast.ClassDef], depth: int = 0) -> dict[str, Any]:
    """The annotated fields of a dataclass body; a field typed with another class of the module nests its fields."""
    keys: dict[str, Any] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = node.annotation
            nested = annotation.id if isinstance(annotation, ast.Name) and annotation.id in classes else None
            keys[node.target.id] = _fields(classes[nested], classes, depth + 1) if nested and depth < 4 else None
    return keys


def _literal_defaults(cls: ast.ClassDef, classes: Mapping[str, ast.ClassDef], depth: int = 0) -> dict[str, Any]:
    """`field: type = <literal>` of a dataclass body, by name (fields without a literal default are left out); a field
    typed with another class of the module maps to that class's literal defaults."""
    defaults: dict[str, Any] = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        annotation = node.annotation
        if isinstance(annotation, ast.Name) and annotation.id in classes and depth < 4:
            defaults[node.target.id] = _literal_defaults(classes[annotation.id], classes, depth + 1)
        elif node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            defaults[node.target.id] = list(value) if isinstance(value, tuple) else value
    return defaults
