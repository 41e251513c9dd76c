"""Method registry: a plain dict filled by the `register_method` decorator (key = file stem of `methods/<name>.py`).

Methods are found, not listed: `_load` imports every module of the `methods` package (each file registers its
class when imported), so adding a method is adding one file. The DAG side reads the same files without importing
them (`harness.run.method_table`).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from typing import TypeVar

from harness.method.contract import Method

_METHODS: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])
#: The package whose modules are the methods (a directory of one file per method).
METHODS_PACKAGE = "methods"


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a method under `name`, which must equal its module's file stem."""

    def deco(cls: M) -> M:
        stem = cls.__module__.rsplit(".", 1)[-1]
        if name != stem:
            raise ValueError(f"method {name!r} must be registered from methods/{name}.py, not from {cls.__module__}")
        if _METHODS.get(name, cls) is not cls:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def _load() -> None:
    """Import every module of the methods package (each registers its method); a module that registers nothing is
    refused by name."""
    package = importlib.import_module(METHODS_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{METHODS_PACKAGE}.{info.name}")
        if info.name not in _METHODS:
            raise ValueError(
                f"{METHODS_PACKAGE}/{info.name}.py registers no method: decorate its class with "
                f"@register_method({info.name!r})"
            )


def get_method(name: str) -> type[Method]:
    """The method class registered as `name`; a KeyError lists close matches and all names."""
    _load()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown method {name!r}.{hint} Available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def list_methods(pattern: str = "*") -> list[str]:
    """Sorted registered method names matching the fnmatch `pattern`."""
    _load()
    return sorted(n for n in _METHODS if fnmatch.fnmatch(n, pattern))
