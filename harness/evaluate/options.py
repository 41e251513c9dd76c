"""Command-line options shared by the evaluation and report commands (no imports beyond the standard library, so
that a command's code identity, `harness.run.code`, does not reach the other commands)."""

from __future__ import annotations

SPACING_HELP = "voxel size x y z in mm, or `data`: the prepared dataset's (manifest.json spacing_mm)"
EMPTY_PRED_POLICIES = ("worst_case", "nan", "reference_zero")


def spacing_value(value: str) -> float | str:
    return value if value == "data" else float(value)


def spacing_arg(values: list) -> tuple[float, float, float] | None:
    """`--spacing x y z` as a tuple, `--spacing data` as None (the prepared data's voxel size)."""
    if values == ["data"]:
        return None
    if len(values) != 3 or any(isinstance(v, str) for v in values):
        raise SystemExit(f"--spacing: give x y z in mm, or `data`; got {values}")
    return tuple(values)
