"""Published numbers to compare with, one named source table at a time (protocol §4.8).

The project ships `harness/report/published.csv`, compiled from the papers' tables (and the results table of the
DTC README). It holds the rows of the full compilation of published numbers (one row per
source, table, dataset, labeled count and method) that a results table can use, i.e. rows of the source tables in
`SOURCES` whose method maps to a harness method key (`METHOD_KEYS`) and whose dataset maps to a dataset key
(`DATASET_KEYS`). The compilation's columns are kept verbatim (source, table, dataset, n_labeled, n_unlabeled, method,
dice, jaccard, hd95, asd, distance_unit, notes); four columns are added: `source_id` (the key of `SOURCES`),
`dataset_key`, `method_key` and `setting` ('lower bound' / 'upper bound' for the supervised rows, else '').
`extract_rows` rebuilds the shipped file from the full compilation.

A comparison never mixes sources: `published_rows(df, source_id, dataset)` returns the rows of one source, and the join
key is (dataset key, method key, setting, n_labeled). Missing published values stay NaN (the DualFete table has no
Jaccard/ASD; no source has `cvrl`, `sup_local_contrast` or the synthetic smoke dataset).

Every row also says how its number's checkpoint was chosen (`selection`: `last`, `best-on-test` or `not stated`) and
where that is written (`selection_source`: the reference code's file#line [C], an issue thread [S], or [NF]), from
`SELECTION` by source, dataset and method; the published-comparison table shows it. Rows of sources the compilation
does not hold (the AD-MT training logs, BCP's paper) are appended to the shipped file after the extracted ones
(`ADDED_SOURCES`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from harness.report.aggregate import LOWER_BOUND, UPPER_BOUND

logger = logging.getLogger(__name__)

DATA_FILE = Path(__file__).resolve().parent / "published.csv"
SPEC_COLUMNS = (
    "source",
    "table",
    "dataset",
    "n_labeled",
    "n_unlabeled",
    "method",
    "dice",
    "jaccard",
    "hd95",
    "asd",
    "distance_unit",
    "notes",
)
ADDED_COLUMNS = ("source_id", "dataset_key", "method_key", "setting", "selection", "selection_source")
VALUE_COLUMNS = ("dice", "jaccard", "hd95", "asd")
NO_SOURCE = "none"


@dataclass(frozen=True)
class Source:
    """One published source table.

    Attributes:
        source: the compilation's `source` value, verbatim.
        table: regular expression matched (from the start) against the compilation's `table` value.
        label: short citation used in captions and figure legends.
    """

    source: str
    table: str
    label: str


SOURCES = MappingProxyType(
    {
        "simcvd": Source(
            "SimCVD (You et al., IEEE TMI 2022; arXiv 2108.06227 v4)",
            r"Table II? \(",
            "SimCVD (You et al., IEEE TMI 2022), Table I (LA) / Table II (Pancreas)",
        ),
        "dtc_readme": Source(
            "HiLab-git/DTC:README.md", r"README results table \(LA\)", "HiLab-git/DTC README results table (LA)"
        ),
        "aua": Source(
            "AUA (Wu, Li, Cheng; arXiv 2111.10989v2)",
            r"Table I \(NIH Pancreas",
            "AUA (Wu et al., arXiv 2111.10989v2), Table I (Pancreas)",
        ),
        "dualfete": Source(
            "DualFete (AAAI 2025)", r"Table 1 \(NIH Pancreas", "DualFete (AAAI 2025), Table 1 (Pancreas)"
        ),
        "mcnet_repo": Source(
            "ycwu1997/MC-Net:pretrained_pth/*/mcnet3d_v2_performance.txt",
            r"released-checkpoint performance file",
            "MC-Net+ released checkpoints (ycwu1997/MC-Net pretrained_pth performance files)",
        ),
        "admt_logs": Source(
            "ZhenZHAO/AD-MT:training-logs", r"performance_", "AD-MT training logs (ZhenZHAO/AD-MT training-logs)"
        ),
        "bcp_paper": Source(
            "BCP (Bai et al., CVPR 2023)", r"Table", "BCP (Bai et al., CVPR 2023), Dice as quoted by later tables"
        ),
    }
)
#: Sources the compilation of published numbers does not hold; their rows are written in the shipped file by hand.
ADDED_SOURCES = ("admt_logs", "bcp_paper")
UA_MT_LAST = ("last", "[C] yulequan/UA-MT code/test_LA.py@88ed29a tests iter_6000.pth (the last)")
DTC_LAST = ("last", "[S] HiLab-git/DTC issue #14: the last iteration")
MCNET_BEST = (
    "best-on-test",
    "[C] ycwu1997/MC-Net code/train_mcnet_3d.py#L203-L218@fee453c keeps the best decoder-1 Dice on test.list",
)
ADMT_BEST = (
    "best-on-test",
    "[C] ZhenZHAO/AD-MT code/val_3D.py#L104-L129@03ef84c keeps the best student Dice on test.list",
)
BCP_BEST = (
    "best-on-test",
    "[C] DeepMed-Lab-ECNU/BCP code/LA_BCP_train.py#L278-L292@7879f98 keeps the best Dice on test.list; "
    "[S] BCP issue #19",
)
#: How the checkpoint of a source's number for a dataset and method was chosen, and where that is written; every other
#: row is `not stated` [NF] (a number copied from another paper, re-run by other authors with an unknown selection, or
#: from a script not checked). UA-MT's and DTC's LA numbers come from their own LA code; SimCVD's Pancreas baselines
#: were probably its own re-runs.
SELECTION = MappingProxyType(
    {
        ("simcvd", "la", "ua_mt"): UA_MT_LAST,
        ("dtc_readme", "la", "ua_mt"): UA_MT_LAST,
        ("simcvd", "la", "dtc"): DTC_LAST,
        ("dtc_readme", "la", "dtc"): DTC_LAST,
        ("mcnet_repo", "la", "mcnet_plus"): MCNET_BEST,
        ("mcnet_repo", "pancreas", "mcnet_plus"): MCNET_BEST,  # one training script for both datasets
        ("admt_logs", "la", "ad_mt"): ADMT_BEST,
        ("bcp_paper", "la", "bcp"): BCP_BEST,
    }
)
NOT_STATED = ("not stated", "[NF]")
#: Printed method name → (harness method key, setting). Names not listed have no harness counterpart.
METHOD_KEYS = MappingProxyType(
    {
        "V-Net (labeled only, lower bound)": ("supervised", LOWER_BOUND),
        "V-Net (fully supervised, upper bound)": ("supervised", UPPER_BOUND),
        "V-Net (labeled only)": ("supervised", LOWER_BOUND),
        "V-Net (fully supervised)": ("supervised", UPPER_BOUND),
        "MT": ("mean_teacher", ""),
        "UA-MT": ("ua_mt", ""),
        "DTC": ("dtc", ""),
        "SimCVD": ("simcvd", ""),
        "MC-Net+ (MedIA 2022)": ("mcnet_plus", ""),
        "MC-Net+": ("mcnet_plus", ""),
        "BCP": ("bcp", ""),
        "AD-MT": ("ad_mt", ""),
    }
)
#: Printed dataset name → config dataset key (`datasets.<key>`).
DATASET_KEYS = MappingProxyType({"LA": "la", "Pancreas": "pancreas"})


def source_ids() -> tuple[str, ...]:
    """The valid values of `report.published_source` (the keys of `SOURCES` and 'none')."""
    return (*SOURCES, NO_SOURCE)


def _source_id(source: str, table: str) -> str | None:
    """Key of the source table a row of the compilation belongs to, or None."""
    for key, spec in SOURCES.items():
        if source == spec.source and re.match(spec.table, table):
            return key
    return None


def extract_rows(spec_csv: str | os.PathLike) -> pd.DataFrame:
    """The shippable rows of the full compilation of published numbers (see the module docstring), in its row order.

    Args:
        spec_csv: path of the full compilation, a CSV file with the columns `SPEC_COLUMNS`.

    Returns:
        Frame with `SPEC_COLUMNS` + `ADDED_COLUMNS`; Dice/Jaccard in percent, distances as printed.
    """
    spec = pd.read_csv(spec_csv, dtype=str, keep_default_na=False)
    missing = [c for c in SPEC_COLUMNS if c not in spec.columns]
    if missing:
        raise ValueError(f"spec_csv: {spec_csv} lacks columns {missing}")
    rows = []
    for _, row in spec.iterrows():
        source_id = _source_id(row["source"], row["table"])
        if source_id is None or row["method"] not in METHOD_KEYS or row["dataset"] not in DATASET_KEYS:
            continue
        method_key, setting = METHOD_KEYS[row["method"]]
        dataset_key = DATASET_KEYS[row["dataset"]]
        selection, where = SELECTION.get((source_id, dataset_key, method_key), NOT_STATED)
        added = {"source_id": source_id, "dataset_key": dataset_key, "method_key": method_key}
        rows.append(
            {
                **{c: row[c] for c in SPEC_COLUMNS},
                **added,
                "setting": setting,
                "selection": selection,
                "selection_source": where,
            }
        )
    return _typed(pd.DataFrame(rows, columns=[*SPEC_COLUMNS, *ADDED_COLUMNS]), str(spec_csv))


def numeric_values(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` with the value columns (Dice, Jaccard, HD95, ASD) as floats, empty → NaN."""
    out = df.copy()
    for column in VALUE_COLUMNS:
        out[column] = pd.to_numeric(out[column].replace("", np.nan), errors="raise").astype(float)
    return out


def read_shipped(path: str | os.PathLike, columns: tuple[str, ...]) -> pd.DataFrame:
    """A shipped CSV of published numbers as text, ValueError naming the file if it lacks one of `columns`."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: lacks columns {missing}")
    return df


def _typed(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Numeric value and count columns (empty → NaN), validated join keys."""
    out = numeric_values(df)
    for column in ("n_labeled", "n_unlabeled"):
        out[column] = pd.to_numeric(out[column].replace("", np.nan), errors="raise").astype("Int64")
    if out["n_labeled"].isna().any():
        raise ValueError(f"{where}: every shipped row needs n_labeled")
    for column in ("notes", "distance_unit", "setting", "selection", "selection_source"):
        out[column] = out[column].fillna("")
    keys = ["source_id", "dataset_key", "method_key", "setting", "n_labeled"]
    duplicated = out.duplicated(subset=keys)
    if duplicated.any():
        raise ValueError(f"{where}: duplicate published rows for {out.loc[duplicated, keys].iloc[0].tolist()}")
    return out.reset_index(drop=True)


def load_published(path: str | os.PathLike = DATA_FILE) -> pd.DataFrame:
    """The shipped published rows (see `extract_rows` for the columns)."""
    return _typed(read_shipped(path, (*SPEC_COLUMNS, *ADDED_COLUMNS)), str(path))


def check_source(source_id: str) -> None:
    """ValueError unless `source_id` is a key of `SOURCES` or 'none'."""
    if source_id not in source_ids():
        raise ValueError(f"published_source: expected one of {source_ids()}, got {source_id!r}")


def published_rows(published: pd.DataFrame, source_id: str, dataset: str) -> pd.DataFrame:
    """The rows of one source table for one harness dataset key (compared case-insensitively; none for 'none')."""
    check_source(source_id)
    mask = (published["source_id"] == source_id) & (published["dataset_key"] == dataset.lower())
    return published[mask].reset_index(drop=True)


def join_published(cells: pd.DataFrame, published: pd.DataFrame, source_id: str) -> pd.DataFrame:
    """Left-join one source's values onto table rows.

    Args:
        cells: rows with `dataset`, `method`, `setting`, `n_labeled` (e.g. `harness.report.aggregate.per_cell`).
        published: shipped rows (`load_published`).
        source_id: key of `SOURCES`, or 'none' (no values).

    Returns:
        `cells` (same row order and index) plus `{metric}_published` for Dice/Jaccard (%) and HD95/ASD (as printed),
        `published_table` and `published_unit`; NaN / '' where the source has no row or no value.
    """
    check_source(source_id)
    out = cells.copy()
    values = {m: [] for m in VALUE_COLUMNS}
    tables, units, selections = [], [], []
    for _, row in cells.iterrows():
        match = published_rows(published, source_id, str(row["dataset"]))
        match = match[
            (match["method_key"] == row["method"])
            & (match["setting"] == row["setting"])
            & (match["n_labeled"] == int(row["n_labeled"]))
        ]
        hit = match.iloc[0] if len(match) else None
        for metric in VALUE_COLUMNS:
            values[metric].append(np.nan if hit is None else float(hit[metric]))
        tables.append("" if hit is None else hit["table"])
        units.append("" if hit is None else hit["distance_unit"])
        selections.append("" if hit is None else hit["selection"])
    for metric in VALUE_COLUMNS:
        out[f"{metric}_published"] = values[metric]
    out["published_table"] = tables
    out["published_unit"] = units
    out["published_selection"] = selections
    return out
