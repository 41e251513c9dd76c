"""Every method of the benchmark, one module each; importing this package registers them (DESIGN.md §2)."""

from . import supervised  # noqa: F401
