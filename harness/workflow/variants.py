"""Method variants and sweeps as grid entries (docs/ablations.md), at DAG build time (no torch import).

A variant is a base method plus overrides, named `<method>@<variant>` in the grid (`methods:`), its run folders and
every table. Two ways to define one:

* `variants: {<method>: {<name>: {<overrides>}}}`: a named variant; it runs when `<method>@<name>` is in `methods`.
* `sweeps: {<method>: {<key>: [values], product: false}}`: one variant per value, named `<key>=<value>`; several keys
  vary one at a time (the others at the base value) unless `product: true` asks for their product. A value equal to
  the base run's (its `method_overrides` value, else the Config default) is the base run itself, not a second copy.

`resolve_variants` (called by `harness.workflow.validate.validate_config`) adds the sweep variants to `variants` and
`methods`, so the validated config is the resolved grid; `run_overrides` gives one grid entry's merged overrides
(`method_overrides.<method>` ← the variant's), which `harness.workflow.grid.cell_params` hands to the run. Overrides
take the keys of `method_overrides` (the method's Config keys and `protocol`), checked the same way.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

from harness.config import VARIANT_SEPARATOR as SEPARATOR
from harness.config import base_of, same_value

#: A grid entry: a method file stem, optionally `@` and a variant name (it becomes a path and reaches a shell).
GRID_NAME = re.compile(r"^[a-z][a-z0-9_]*(@[A-Za-z0-9_.=+-]+)?$")
#: The name of a variant written under `variants:`.
VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
#: A swept value as it appears in a variant name.
VALUE_TEXT = re.compile(r"^[A-Za-z0-9_.-]+$")
#: The name of a sweep point (`head_dropout=0.05`, `a=1+b=true`), as `resolve_variants` writes it under `variants:`.
SWEEP_NAME = re.compile(r"^[a-z][a-z0-9_]*=[A-Za-z0-9_.-]+(\+[a-z][a-z0-9_]*=[A-Za-z0-9_.-]+)*$")
PRODUCT = "product"


def variant_of(method: str) -> str:
    """The variant name of a grid entry ('' for a base method)."""
    return method.split(SEPARATOR, 1)[1] if SEPARATOR in method else ""


def value_text(value: Any) -> str:
    """A swept value as written in a variant name: 0.05, 128, true, avg, 150_40."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "_".join(value_text(v) for v in value)
    return str(value)


def sweep_name(assignment: Mapping[str, Any]) -> str:
    """`head_dropout=0.05`, or `head_dropout=0.05+head_pool=64` for a point of a product sweep."""
    return "+".join(f"{key}={value_text(value)}" for key, value in assignment.items())


def base_value(config: Mapping[str, Any], base: str, key: str, defaults: Mapping[str, Any]) -> Any:
    """The value of `key` in the base run: `method_overrides.<base>.<key>`, else the Config default (or a sentinel
    that equals nothing when the default is not a literal)."""
    overrides = config.get("method_overrides", {}).get(base, {})
    return overrides.get(key, defaults.get(key, _NoLiteralDefault()))


class _NoLiteralDefault:
    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


def sweep_points(config: Mapping[str, Any], base: str, defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The assignments of `sweeps.<base>` that differ from the base run, in the configured order."""
    spec = dict(config.get("sweeps", {}).get(base, {}))
    product = spec.pop(PRODUCT, False)
    keys = list(spec)
    if product:
        points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(spec[k] for k in keys))]
    else:
        points = [{key: value} for key in keys for value in spec[key]]
    points = [{k: v for k, v in p.items() if not same_value(v, base_value(config, base, k, defaults))} for p in points]
    unique: list[dict[str, Any]] = []
    for point in points:
        if point and point not in unique:
            unique.append(point)
    return unique


def resolve_variants(config: dict[str, Any], defaults: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Add the sweep variants of `config` to `variants` and `methods` (in place; idempotent). Returns one line per
    sweep point that a user variant of the same name defines otherwise (variants and sweep points share one
    namespace: the grid entry `<method>@<name>`).

    `defaults` maps each method to its literal Config defaults (`harness.run.method_table.MethodEntry.defaults`).
    """
    variants = config.setdefault("variants", {})
    clashes = []
    for base in config.get("sweeps", {}):
        if base not in defaults:
            continue  # reported by variant_problems
        for point in sweep_points(config, base, defaults[base]):
            name = sweep_name(point)
            defined = variants.setdefault(base, {})
            if name in defined and defined[name] != point:  # a user's variant of the sweep point's name
                clashes.append(
                    f"sweeps.{base}: its point {name} ({json.dumps(point)}) and variants.{base}.{name} "
                    f"({json.dumps(defined[name])}) are two definitions of one grid entry {base}{SEPARATOR}{name}; "
                    "rename the variant or drop the value from the sweep"
                )
                continue
            defined[name] = point
            entry = f"{base}{SEPARATOR}{name}"
            if entry not in config["methods"]:
                config["methods"].append(entry)
    return clashes


def variant_problems(config: Mapping[str, Any], methods: Mapping[str, Any]) -> list[str]:
    """One line per unknown base method, badly named or undefined variant, or bad sweep (before `resolve_variants`)."""
    problems = []
    for where, bases in (("variants", config.get("variants", {})), ("sweeps", config.get("sweeps", {}))):
        problems += [
            f"{where}.{base}: unknown method; methods: {', '.join(sorted(methods))}"
            for base in bases
            if base not in methods
        ]
    for base, named in config.get("variants", {}).items():
        problems += [
            f"variants.{base}.{name}: a variant name must match {VARIANT_NAME.pattern} (it becomes a folder name)"
            for name in named
            if not (VARIANT_NAME.match(str(name)) or SWEEP_NAME.match(str(name)))
        ]
    for base, spec in config.get("sweeps", {}).items():
        problems += _sweep_problems(config, base, spec)
    return problems


def redundant_variants(
    config: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]], protocol_defaults: Mapping[str, Any]
) -> list[str]:
    """One line per grid variant that changes nothing (every override equals the base run's value) and per pair of
    grid variants with the same effective settings: either would train a copy and add a test to the Holm family."""
    problems, seen = [], {}
    for entry in config["methods"]:
        name, base = variant_of(entry), base_of(entry)
        if not name or name not in config.get("variants", {}).get(base, {}):
            continue
        where = f"variants.{base}.{name}" if not SWEEP_NAME.match(name) else f"sweeps.{base} (point {name})"
        effective = _changed(config, base, config["variants"][base][name], defaults.get(base, {}), protocol_defaults)
        if not effective:
            problems.append(f"{where}: every value equals the base run's ({base}); it would train a copy: remove it")
            continue
        key = json.dumps(effective, sort_keys=True)
        if key in seen:
            problems.append(f"{where}: the same settings as {seen[key]} ({key}); keep one of the two")
        seen.setdefault(key, where)
    return problems


def _changed(
    config: Mapping[str, Any],
    base: str,
    overrides: Mapping[str, Any],
    defaults: Mapping[str, Any],
    protocol_defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """The overrides of a variant that differ from its base run's values (its `protocol` ones too)."""
    changed = {}
    for key, value in overrides.items():
        if key == "protocol":
            base_protocol = {
                **protocol_defaults,
                **config.get("protocol", {}),
                **config.get("method_overrides", {}).get(base, {}).get("protocol", {}),
            }
            diff = {k: v for k, v in value.items() if not same_value(v, base_protocol.get(k, _NoLiteralDefault()))}
            if diff:
                changed["protocol"] = diff
        elif not same_value(value, base_value(config, base, key, defaults)):
            changed[key] = value
    return changed


def undefined_variants(config: Mapping[str, Any]) -> list[str]:
    """Grid entries `<method>@<name>` whose variant neither `variants` nor a sweep defines (after resolving)."""
    return [
        f"methods: {entry!r} names variant {variant_of(entry)!r}, which variants.{base_of(entry)} does not define"
        for entry in config["methods"]
        if variant_of(entry) and variant_of(entry) not in config.get("variants", {}).get(base_of(entry), {})
    ]


def _sweep_problems(config: Mapping[str, Any], base: str, spec: Mapping[str, Any]) -> list[str]:
    where = f"sweeps.{base}"
    problems = (
        []
        if base in config["methods"]
        else [f"{where}: add {base!r} to methods (its base run is the sweep's default point)"]
    )
    for key, values in spec.items():
        if key == PRODUCT:
            continue
        bad = [v for v in values if isinstance(v, dict) or not VALUE_TEXT.match(value_text(v))]
        if bad:
            problems.append(f"{where}.{key}: values {bad} cannot name a folder; use numbers, booleans or words")
    return problems


def run_overrides(config: Mapping[str, Any], method: str, dataset: str | None = None) -> dict[str, Any]:
    """`method_overrides.<base>`, then `datasets.<dataset>.method_overrides.<base>`, then the variant's overrides, each
    on top of the one before (the `protocol` mapping merged key by key)."""
    base = base_of(method)
    per_dataset = config.get("datasets", {}).get(dataset, {}).get("method_overrides", {}) if dataset else {}
    layers = [per_dataset.get(base, {}), own_overrides(config, method)]
    merged = json.loads(json.dumps(config.get("method_overrides", {}).get(base, {})))
    for layer in layers:
        for key, value in layer.items():
            if key == "protocol":
                merged["protocol"] = {**merged.get("protocol", {}), **value}
            else:
                merged[key] = value
    return merged


def written_at(config: Mapping[str, Any], method: str, dataset: str | None = None) -> str:
    """Where a grid entry's method overrides are written, for messages: `method_overrides.<m>` (and
    `datasets.<dataset>.method_overrides.<m>` where that dataset has some), `variants.<m>.<name>` or, for a sweep
    point, `sweeps.<m>.<key>` (the keys it sets)."""
    name, base = variant_of(method), base_of(method)
    per_dataset = config.get("datasets", {}).get(dataset, {}).get("method_overrides", {}) if dataset else {}
    if not name:
        extra = f" or datasets.{dataset}.method_overrides.{base}" if base in per_dataset else ""
        return f"method_overrides.{base}{extra}"
    swept = config.get("sweeps", {}).get(base, {})
    point = config.get("variants", {}).get(base, {}).get(name, {})
    if SWEEP_NAME.match(name) and point and all(key in swept for key in point):
        return " and ".join(f"sweeps.{base}.{key}" for key in point)
    return f"variants.{base}.{name}"


def own_overrides(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The overrides that define a grid entry's variant ({} for a base method)."""
    name = variant_of(method)
    if not name:
        return {}
    defined = config.get("variants", {}).get(base_of(method), {})
    if name not in defined:
        raise KeyError(f"{method}: variants.{base_of(method)} has no {name!r} (validate_config resolves sweeps first)")
    return dict(defined[name])
