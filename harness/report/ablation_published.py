"""Published ablation values, each tied to the configuration it measured (docs/ablations.md).

`harness/report/published_ablations.csv` holds the ablation rows of the compilation of published numbers (SimCVD's
three LA ablation tables and its full-model row) with three added columns: `source_id`, `method_key` (the harness
method) and `overrides` (canonical JSON of the Config values that define the row, `{}` for the method as
published). A run matches a published row when it is of that method, every key of `overrides` has that value in the
run's effective configuration, and the run changes nothing else (its own variant overrides are among those keys):
rows are joined by what was run, never by guessing from names. `extract_ablation_rows` rebuilds the file from the
compilation.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config import same_value
from harness.report.published import SOURCES, SPEC_COLUMNS, numeric_values, read_shipped

DATA_FILE = Path(__file__).resolve().parent / "published_ablations.csv"
ADDED_COLUMNS = ("source_id", "dataset_key", "method_key", "overrides")
SIMCVD = "SimCVD (You et al., IEEE TMI 2022; arXiv 2108.06227 v4)"
#: Printed name of an ablation row → (harness method, the Config values it was run with).
ABLATION_ROWS: Mapping[str, tuple[str, dict[str, Any]]] = {
    "Ablation baseline (labelled UA-MT in the paper; numbers equal the MT row)": ("mean_teacher", {}),
    "SimCVD w/o SDM": ("simcvd", {"sdm_input": False, "use_sdm_loss": False}),
    "SimCVD w/ adaptive max pooling": ("simcvd", {"head_pool_mode": "max"}),
    "SimCVD w/o L_contrast + L_pd": ("simcvd", {"use_contrast": False, "use_pd": False}),
    "SimCVD w/o L_contrast": ("simcvd", {"use_contrast": False}),
    "SimCVD w/o L_pd": ("simcvd", {"use_pd": False}),
    "SimCVD w/o L_sdm": ("simcvd", {"use_sdm_loss": False}),
}
#: Swept rows: printed-name pattern → (harness method, Config key, value parser).
SWEPT_ROWS = (
    (re.compile(r"^SimCVD, AlphaDropout p=([0-9.]+)$"), "simcvd", "head_dropout", float),
    (re.compile(r"^SimCVD, AdaptiveAvgPool2d (\d+)x\1$"), "simcvd", "head_pool", int),
)
#: The full model's row of Table I, which the paper's term ablation table repeats.
FULL_MODEL = ("Table I (LA, 10% labeled)", "SimCVD")


def row_identity(table: str, method: str) -> tuple[str, dict[str, Any]] | None:
    """(harness method, overrides) of one printed ablation row, or None if it is not one."""
    if method in ABLATION_ROWS:
        return ABLATION_ROWS[method]
    if (table, method) == FULL_MODEL:
        return "simcvd", {}
    for pattern, method_key, key, parse in SWEPT_ROWS:
        found = pattern.match(method)
        if found:
            return method_key, {key: parse(found.group(1))}
    return None


def extract_ablation_rows(spec_csv: str | os.PathLike) -> pd.DataFrame:
    """The ablation rows of the compilation of published numbers, with `ADDED_COLUMNS` (see the module docstring)."""
    spec = pd.read_csv(spec_csv, dtype=str, keep_default_na=False)
    rows = []
    for _, row in spec.iterrows():
        identity = row_identity(row["table"], row["method"]) if row["source"] == SIMCVD else None
        if identity is None or (row["table"], row["method"]) != FULL_MODEL and "blation" not in row["table"]:
            continue
        method_key, overrides = identity
        added = {
            "source_id": "simcvd",
            "dataset_key": row["dataset"].lower(),
            "method_key": method_key,
            "overrides": canonical(overrides),
        }
        rows.append({**{c: row[c] for c in SPEC_COLUMNS}, **added})
    return _typed(pd.DataFrame(rows, columns=[*SPEC_COLUMNS, *ADDED_COLUMNS]))


def canonical(overrides: Mapping[str, Any]) -> str:
    """Canonical JSON of a set of Config values (sorted keys, no spaces)."""
    return json.dumps(dict(overrides), sort_keys=True, separators=(",", ":"))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    out = numeric_values(df)
    out["n_labeled"] = pd.to_numeric(out["n_labeled"], errors="raise").astype(int)
    return out.reset_index(drop=True)


def load_ablation_published(path: str | os.PathLike = DATA_FILE) -> pd.DataFrame:
    """The shipped ablation rows."""
    return _typed(read_shipped(path, (*SPEC_COLUMNS, *ADDED_COLUMNS)))


def matches(run: Mapping[str, Any], published: Mapping[str, Any]) -> bool:
    """Whether a run measured a published row: same method and dataset, the row's values in the run's effective
    configuration, and nothing else changed by the run's variant.

    `run`: {"base", "dataset", "method_config", "variant_overrides"}; `published`: a row of
    `load_ablation_published`.
    """
    overrides = json.loads(published["overrides"])
    if run["base"] != published["method_key"] or run["dataset"] != published["dataset_key"]:
        return False
    if not set(run["variant_overrides"]) <= set(overrides):
        return False
    config = run["method_config"]
    return all(key in config and same_value(config[key], value) for key, value in overrides.items())


def published_for(run: Mapping[str, Any], n_labeled: int, published: pd.DataFrame) -> pd.Series | None:
    """The published row a run measured at `n_labeled` (the one with the fewest overrides when several match)."""
    rows = [row for _, row in published[published["n_labeled"] == n_labeled].iterrows() if matches(run, row)]
    return min(rows, key=lambda r: len(json.loads(r["overrides"]))) if rows else None


def source_label() -> str:
    return SOURCES["simcvd"].label.split(",")[0] + ", ablation tables (LA, 10 % labeled)"
