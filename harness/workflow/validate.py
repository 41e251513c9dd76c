"""Loading and validating a benchmark config file: the one validator of the Snakefile and of check-config.

`load_config_file` reads a YAML config and turns every way it can be unreadable (missing, empty, a YAML syntax error,
not a mapping) into a `ConfigError` naming the file (and the line). `validate_config` checks a config against
`workflow/schemas/config.schema.yaml` (JSON Schema draft 2020-12), fills in the schema's `default`s as
`snakemake.utils.validate(set_default=True)` does, checks the keys of `method_overrides`, `variants` and `sweeps`
against the method table, resolves sweeps into variants (`harness.workflow.variants`) and runs
`harness.workflow.grid.check_grid`. Every problem becomes one line of a single `ConfigError`, e.g.

    the configuration has 2 problems:
      - data.synthetic: unknown key 'pach_size' (did you mean 'patch_size'?); allowed keys: augment, format, ...
      - data.synthetic.stride[0]: 0 is less than the minimum of 1; use a value >= 1 (Sliding-window stride ...)

The Snakefile (workflow/rules/common.smk) shows it as `config refused: <message>`, `python -m harness check-config`
as `<file>: <message>`; both print the same problem lines.

This module imports no torch so that the Snakefile can use it at DAG build time.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from harness.config import ConfigError, ProtocolConfig
from harness.run.method_table import MethodEntry
from harness.workflow.grid import check_grid, source_problems
from harness.workflow.variants import redundant_variants, resolve_variants, undefined_variants, variant_problems

#: The JSON schema of every benchmark config (its keys are explained in config/README.md).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
#: Keys of `method_overrides.<method>.protocol` (the shared protocol, per method).
PROTOCOL_KEYS = {f.name: None for f in fields(ProtocolConfig)}
#: The protocol's values where the config sets none (what a variant's `protocol` overrides are compared with).
PROTOCOL_DEFAULTS = {f.name: f.default for f in fields(ProtocolConfig)}
#: Longest repr of a config value quoted in a problem line.
MAX_VALUE_CHARS = 80
#: Longest schema description appended to a problem line as a hint.
MAX_HINT_CHARS = 100
#: Most allowed keys listed after an unknown key.
MAX_ALLOWED_KEYS = 12
#: How to write a value of each JSON type (the fix of a type error).
TYPE_PHRASES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list such as [1, 2]",
    "object": "a mapping of key: value lines",
    "null": "null",
}


# ---------------------------------------------------------------------------------------------------------------------
# reading the file


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file `path`; a `ConfigError` naming the file (and line) if there is none."""
    text = _read_text(Path(path))
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error_message(path, err)) from None
    if config is None:
        raise ConfigError(f"{path} is empty; start from config/smoke.yaml (or config/config.yaml) and edit a copy")
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys (name: ..., seeds: ..., methods: ..., datasets: ..., "
            f"data: ...), not a {type(config).__name__}; see config/smoke.yaml for the layout"
        )
    return config


def _read_text(path: Path) -> str:
    """The file's text, or a `ConfigError` saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (working directory {Path.cwd()}); pass an existing file such as "
            "config/smoke.yaml"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None


def _yaml_error_message(path: str | Path, err: yaml.YAMLError) -> str:
    """`<path>, line L, column C: invalid YAML: <problem>` (1-based, where yaml knows the position)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return f"{path}: invalid YAML: {problem}; fix the file's syntax"
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    started = f" ({context} that starts on line {context_mark.line + 1})" if context and context_mark else ""
    return (
        f"{path}, line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {problem}{started}; fix the syntax "
        "there (indentation, a missing ':' or an unclosed bracket or quote)"
    )


# ---------------------------------------------------------------------------------------------------------------------
# validation


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config schema as a mapping."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def validate_config(config: dict[str, Any], methods: Mapping[str, MethodEntry]) -> dict[str, Any]:
    """Check `config` against the schema (filling in its defaults, in place), the grid and the methods; return it.

    `methods` is the method table (`harness.run.method_table.read_methods`). Raises one `ConfigError` listing
    every schema problem (one line each: key path, problem, fix); once the schema is satisfied, every unknown method
    or key of `method_overrides`, `variants` and `sweeps` (each method's `Config` keys, nested ones included, with
    did-you-mean) and every badly named variant, so a typo never passes `snakemake -n`; then resolves the sweeps into
    variants (in place: `methods` and `variants` list them, `harness.workflow.variants`) and refuses undefined
    variants and the grid problems of `harness.workflow.grid.check_grid`.
    """
    schema = load_schema()
    coerce_command_line_text(config, schema)
    problems = moved_key_problems(config) or schema_problems(config, schema)
    if problems:
        raise ConfigError(_problem_list(problems))
    problems = variant_problems(config, methods) + override_problems(config.get("method_overrides", {}), methods)
    for ds, spec in config["datasets"].items():
        where = f"datasets.{ds}.method_overrides"
        problems += override_problems(spec.get("method_overrides", {}), methods, where)
    problems += _variant_key_problems(config, methods)
    if problems:
        raise ConfigError(_problem_list(problems))
    defaults = {name: entry.defaults for name, entry in methods.items()}
    problems = resolve_variants(config, defaults)
    problems += undefined_variants(config) or redundant_variants(config, defaults, PROTOCOL_DEFAULTS)
    problems += reference_problems(config, methods)
    if problems:
        raise ConfigError(_problem_list(problems))
    check_grid(config, sorted(methods))
    return config


#: Keys that moved, with where they live now: bookkeeping is not part of a run's identity, so not of `protocol`.
MOVED_KEYS = {
    "protocol.checkpoint_every": "compute.checkpoint_every",
    "protocol.log_every": "compute.log_every",
    "protocol.num_workers": "compute.loader_workers",
}


def moved_key_problems(config: Mapping[str, Any]) -> list[str]:
    """One line per key written where it no longer lives (`MOVED_KEYS`), naming the new place."""
    problems = []
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(config.get(section), Mapping) and key in config[section]:
            problems.append(
                f"{old}: moved to {new} (bookkeeping: it changes no number, so it is not part of a "
                f"run's identity); write `{new}: {config[section][key]}` instead"
            )
    return problems


def reference_problems(config: Mapping[str, Any], methods: Mapping[str, MethodEntry]) -> list[str]:
    """`report.reference_method` must name a method (the paired tests compare every method with it; one that is not
    in this grid gives tables without tests, said in their captions; a misspelt one is refused here)."""
    reference = config.get("report", {}).get("reference_method")
    known = list(dict.fromkeys([*config["methods"], *methods]))
    if reference is None or reference in known:
        return []
    close = difflib.get_close_matches(str(reference), known, n=1)
    suggestion = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(config['methods'])}"
    return [
        f"report.reference_method: {reference!r} is no method ({suggestion}); the paired tests compare every "
        "method of the grid with it"
    ]


def validate_eval_config(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Check what evaluating `dataset` reads of `config` (`data.<dataset>`, `eval`, `protocol`, filling in their
    defaults): an evaluation-only config needs no training grid (`harness.external`)."""
    schema = load_schema()
    wanted = ("name", "data", "eval", "protocol")
    sub = {"type": "object", "properties": {k: schema["properties"][k] for k in wanted}, "additionalProperties": True}
    part = {"data": {dataset: config["data"][dataset]}, **{k: config.get(k, {}) for k in ("eval", "protocol")}}
    coerce_command_line_text(part, sub)
    problems = schema_problems(part, sub) or source_problems(dataset, part["data"][dataset])
    if problems:
        raise ConfigError(_problem_list(problems))
    config.update({"eval": part["eval"], "protocol": part["protocol"]})
    config["data"][dataset] = part["data"][dataset]
    return config


def _problem_list(problems: list[str]) -> str:
    count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
    return f"the configuration has {count}:\n  - " + "\n  - ".join(problems)


def override_problems(
    overrides: Mapping[str, Any], methods: Mapping[str, MethodEntry], written: str = "method_overrides"
) -> list[str]:
    """One line per unknown method or key in `method_overrides` (or a dataset's, `written` there): a method's `Config`
    keys plus `protocol`."""
    problems = []
    for method, values in overrides.items():
        where = f"{written}.{method}"
        if method not in methods:
            close = difflib.get_close_matches(str(method), list(methods), n=1)
            suggestion = f"did you mean {close[0]!r}?" if close else "remove or rename it"
            problems.append(f"{where}: unknown method ({suggestion}); methods: {', '.join(sorted(methods))}")
            continue
        allowed = {**methods[method].config_keys, "protocol": PROTOCOL_KEYS}
        problems += _nested_key_problems(where, values, allowed)
    return problems


def _variant_key_problems(config: Mapping[str, Any], methods: Mapping[str, MethodEntry]) -> list[str]:
    """Unknown keys in `variants.<method>.<name>` and `sweeps.<method>` (the keys of `method_overrides.<method>`)."""
    problems = []
    for base, named in config.get("variants", {}).items():
        if base in methods:
            allowed = {**methods[base].config_keys, "protocol": PROTOCOL_KEYS}
            problems += [
                p
                for name, values in named.items()
                for p in _nested_key_problems(f"variants.{base}.{name}", values, allowed)
            ]
    for base, spec in config.get("sweeps", {}).items():
        if base in methods:
            swept = {k: v for k, v in spec.items() if k != "product"}
            problems += _nested_key_problems(f"sweeps.{base}", swept, dict.fromkeys(methods[base].config_keys))
    return problems


def _nested_key_problems(where: str, values: Any, allowed: Mapping[str, Any]) -> list[str]:
    if not isinstance(values, Mapping):
        return [f"{where}: expected a mapping of keys ({', '.join(sorted(allowed))}), got {_short(values)}"]
    problems = []
    for key, value in values.items():
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            suggestion = f"did you mean {close[0]!r}?" if close else "remove or rename it"
            names = sorted(allowed)
            shown = ", ".join(names[:MAX_ALLOWED_KEYS]) + (", ..." if len(names) > MAX_ALLOWED_KEYS else "")
            problems.append(f"{where}: unknown key {_short(key)} ({suggestion}); allowed keys: {shown}")
        elif allowed[key] is not None:
            problems += _nested_key_problems(f"{where}.{key}", value, allowed[key])
    return problems


#: JSON types whose values Snakemake's `--config key=value` can hand over as text.
SCALAR_TYPES = {"integer": int, "number": (int, float), "boolean": bool}


def coerce_command_line_text(value: Any, schema: Any) -> Any:
    """Turn text the schema wants as a number or boolean into one, in place, where YAML reads it so (`--config
    'seeds=[1,2]'` gives the list ['1', '2']: Snakemake reads list items with YAML's BaseLoader). Returns `value`."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key in value:
            value[key] = coerce_command_line_text(value[key], props.get(key, extra))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = coerce_command_line_text(item, schema.get("items"))
    elif isinstance(value, str):
        kinds = schema.get("type", [])
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if "string" in kinds or not any(k in SCALAR_TYPES for k in kinds):
            return value
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        for kind in kinds:
            wanted = SCALAR_TYPES.get(kind)
            if wanted and isinstance(parsed, wanted) and (kind == "boolean") == isinstance(parsed, bool):
                return parsed
    return value


def schema_problems(config: Any, schema: dict[str, Any]) -> list[str]:
    """One line per schema violation of `config`, sorted by key path; fills in the schema's defaults on the way."""
    validator = _filling_validator(schema)
    lines = []
    for error in validator.iter_errors(config):
        lines += [(_sort_key(error.absolute_path), line) for line in _problem_lines(error, schema)]
    return [line for _, line in sorted(lines)]


def _filling_validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A draft 2020-12 validator that sets each missing property with a `default` before checking an object.

    The same rule as snakemake.utils.validate(set_default=True), so nested objects get theirs too (`eval: {}` gets
    `empty_pred`), but each default is a copy: two datasets never share one `synthetic: {}` mapping.
    """
    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, subschema) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for key, prop in properties.items():
                if isinstance(prop, dict) and "default" in prop and key not in instance:
                    instance[key] = copy.deepcopy(prop["default"])
        yield from check_properties(validator, properties, instance, subschema)

    filling = validators.extend(Draft202012Validator, {"properties": fill_then_check})
    return filling(schema)


def _sort_key(path: Iterable[Any]) -> tuple[tuple[int, Any], ...]:
    """Order key paths: the top level first, then by key (list positions numerically)."""
    return tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in path)


def dotted(path: Iterable[Any]) -> str:
    """A key path as written in the messages: `data.synthetic.stride[0]`, or `top level` for the empty path."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "top level"


# ---------------------------------------------------------------------------------------------------------------------
# problem lines


def _problem_lines(error: ValidationError, root: dict[str, Any]) -> list[str]:
    """The lines describing one schema error (one per unknown key; one for anything else)."""
    where = dotted(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = list(error.schema.get("properties", {}))
        extra = sorted((k for k in error.instance if k not in known), key=str)
        return [f"{where}: {_unknown_key(key, known, root)}" for key in extra]
    fix = _fix(error)
    hint = _hint(error, root)
    return [f"{where}: {_message(error)}{f'; {fix}' if fix else ''}{f' ({hint})' if hint else ''}"]


def _unknown_key(key: Any, known: list[str], root: dict[str, Any]) -> str:
    """`unknown key 'pach_size' (did you mean 'patch_size'?); allowed keys: ...` (the allowed list kept short)."""
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        suggestion = f"did you mean {close[0]!r}?"
    else:
        elsewhere = _keys_elsewhere(str(key), root)
        suggestion = f"did you mean {' or '.join(elsewhere)}?" if elsewhere else "remove or rename it"
    names = sorted(known)
    allowed = ", ".join(names[:MAX_ALLOWED_KEYS]) + (", ..." if len(names) > MAX_ALLOWED_KEYS else "")
    return f"unknown key {_short(key)} ({suggestion}); allowed keys: {allowed or 'none'}"


def _keys_elsewhere(key: str, root: dict[str, Any], limit: int = 2) -> list[str]:
    """Full paths of schema keys spelt like `key` at another level (`iterations` -> `protocol.iterations`)."""
    keys = list(_schema_keys(root, ()))
    names = difflib.get_close_matches(key, sorted({name for _, name in keys}), n=1, cutoff=0.8)
    return [path for path, name in keys if name in names][:limit]


def _schema_keys(schema: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(dotted path, key) of every property the schema names; `<name>` stands for a free key."""
    if not isinstance(schema, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        path = (*prefix, name)
        yield dotted(path), name
        yield from _schema_keys(sub, path)
    yield from _schema_keys(schema.get("additionalProperties"), (*prefix, "<name>"))


def _short(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """repr(value), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(error: ValidationError) -> str:
    """jsonschema's message with the offending value's repr shortened (never a dump of a whole mapping)."""
    message = error.message.replace(repr(error.instance), _short(error.instance))
    return message if len(message) <= 2 * MAX_VALUE_CHARS else message[: 2 * MAX_VALUE_CHARS - 3] + "..."


def _fix(error: ValidationError) -> str:
    """What to write instead, for the common kinds of error ('' where the message already says it)."""
    kind, limit = error.validator, error.validator_value
    fixes = {
        "minimum": f"use a value >= {limit}",
        "exclusiveMinimum": f"use a value > {limit}",
        "maximum": f"use a value <= {limit}",
        "minItems": f"give at least {limit} item{'s' if limit != 1 else ''}",
        "maxItems": f"give at most {limit} item{'s' if limit != 1 else ''}",
        "minProperties": "add at least one entry",
        "minLength": "give a non-empty string",
        "required": "add it",
    }
    if kind == "type":
        kinds = [limit] if isinstance(limit, str) else list(limit)
        return "write " + " or ".join(TYPE_PHRASES.get(k, k) for k in kinds)
    if kind == "uniqueItems":
        return f"remove the repeated {', '.join(_short(v) for v in _repeated(error.instance))}"
    if kind == "multipleOf" and isinstance(error.instance, int | float):
        lower = int(error.instance // limit * limit)
        return f"use a multiple of {limit}, e.g. {max(lower, limit)} or {lower + limit}"
    return fixes.get(kind, "")


def _repeated(items: list[Any]) -> list[Any]:
    """Values that occur more than once in `items`, in first-seen order."""
    seen: list[Any] = []
    repeated: list[Any] = []
    for item in items:
        if item in seen and item not in repeated:
            repeated.append(item)
        seen.append(item)
    return repeated


def _hint(error: ValidationError, root: dict[str, Any]) -> str:
    """A short description of the key concerned (from the schema), or ''.

    For a missing key, that key's description; otherwise the failing schema's, or else its parent's when the failing
    schema describes the parent's list items or free keys (`stride[0]` -> `stride`).
    """
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance and repr(k) in error.message]
        prop = error.schema.get("properties", {}).get(missing[0], {}) if missing else {}
        return _short_text(prop.get("description", ""))
    description = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
    if not description and error.absolute_path:
        parent = _schema_at(root, list(error.absolute_path)[:-1])
        if parent is not None and error.schema in (parent.get("items"), parent.get("additionalProperties")):
            description = parent.get("description", "")
    return _short_text(description)


def _schema_at(schema: Any, path: list[Any]) -> dict[str, Any] | None:
    """The subschema describing the config value at `path` (None where the schema says nothing)."""
    for part in path:
        if not isinstance(schema, dict):
            return None
        if isinstance(part, int):
            schema = schema.get("items")
        else:
            schema = schema.get("properties", {}).get(part, schema.get("additionalProperties"))
    return schema if isinstance(schema, dict) else None


def _short_text(text: str, limit: int = MAX_HINT_CHARS) -> str:
    """`text` on one line, cut at its first sentence or at a word within `limit` characters."""
    text = " ".join(text.split())
    first = text.split(". ")[0].rstrip(".")
    if len(first) <= limit:
        return first
    return first[: limit - 3].rsplit(" ", 1)[0] + "..."
