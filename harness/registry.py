"""Method registry: a plain dict filled by the `register_method` decorator (key = file stem of `methods/<name>.py`)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import TypeVar

from harness.method import Method

_METHODS: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a method under `name`, which must equal its module's file stem."""

    def deco(cls: M) -> M:
        stem = cls.__module__.rsplit(".", 1)[-1]
        if name != stem:
            raise ValueError(f"method {name!r} must be registered from methods/{name}.py, not from {cls.__module__}")
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def _load() -> None:
    import methods  # noqa: F401  (importing the package registers every method)


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
