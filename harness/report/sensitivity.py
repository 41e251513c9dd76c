"""Protocol sensitivity: how each method's mean Dice, HD95 and ASD move under the alternative evaluation choices
of protocol §4.4–4.6, recomputed from the saved predictions (no retraining, no re-prediction).

Variants (`VARIANTS`), each a full set of per-case Dice, Jaccard, HD95 and ASD:

* `primary`: the configured empty-prediction policy, no post-processing, voxel units, pooled HD95 (medpy), directed
  ASD (prediction → ground truth) — the main table's numbers;
* `empty=<policy>`: the two empty-prediction policies (of worst_case, nan, reference_zero) other than the configured
  one; they differ from the primary values only on empty predictions;
* `lcc`: the prediction reduced to its largest connected component (`skimage.measure.label`, 26-connectivity); an empty
  prediction is left as it is (the reference code would crash on it, protocol §4.4);
* `mm`: distances in millimetres (the configured voxel size);
* `hd95_max_dir`: HD95 as the maximum of the two directed 95th percentiles (MONAI / Metrics Reloaded); other
  metrics as primary;
* `assd`: symmetric ASSD (mean of the pooled distances) in the ASD column; other metrics as primary.

For the two secondary distance variants an empty prediction gets the primary policy's value. The per-case rows carry
the per-case file's identity and provenance columns, so `harness.report.aggregate.per_run`/`per_cell` aggregate each
variant exactly like the main table (mean over cases, then mean ± std over seeds).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data.prepared import PreparedData
from harness.evaluate.metrics import EMPTY_PRED_POLICIES, case_metrics, secondary_metrics
from harness.evaluate.predictions import voxel_size
from harness.report.aggregate import CELL_KEYS, MISSING, PER_CASE_COLUMNS, per_cell, per_run
from harness.report.table_model import (
    Entry,
    Table,
    format_labeled,
    format_number,
    mean_std_entry,
    method_label,
    write_table,
    write_text_atomic,
)

logger = logging.getLogger(__name__)

VARIANTS = ("primary", *(f"empty={p}" for p in EMPTY_PRED_POLICIES), "lcc", "mm", "hd95_max_dir", "assd")
VARIANT_LABELS = {
    "primary": "primary",
    **{f"empty={p}": f"empty prediction → {p}" for p in EMPTY_PRED_POLICIES},
    "lcc": "largest connected component",
    "mm": "distances in mm",
    "hd95_max_dir": "95HD = max of directions",
    "assd": "ASD → symmetric ASSD",
}
SENSITIVITY_COLUMNS = (*PER_CASE_COLUMNS[:6], "variant", "unit", *PER_CASE_COLUMNS[6:])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary mask (`skimage.measure.label`, connectivity 3).

    Args:
        mask: (X, Y, Z) array; nonzero = object.

    Returns:
        bool (X, Y, Z); an empty mask is returned unchanged (as bool). Ties between equally large components keep
        the one with the lowest label (first in C order).
    """
    from skimage.measure import label

    binary = np.asarray(mask).astype(bool)
    if binary.ndim != 3:
        raise ValueError(f"mask: expected a 3D array (X, Y, Z), got shape {binary.shape}")
    if not binary.any():
        return binary
    labels = label(binary, connectivity=3)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _policy_metrics(pred: np.ndarray, gt: np.ndarray, base: dict, policy: str) -> dict:
    """Primary metrics under `policy`: the non-empty values do not depend on it, so only empty predictions recompute."""
    if not base["empty_pred"]:
        return {**base, "empty_pred_policy": policy}
    return case_metrics(pred, gt, spacing=None, empty_pred=policy)


def case_variants(
    pred: np.ndarray, gt: np.ndarray, *, spacing_mm: Sequence[float], policy: str
) -> dict[str, dict[str, Any]]:
    """Dice, Jaccard, HD95 and ASD of one case under every variant of `VARIANTS`.

    Args:
        pred: prediction (X, Y, Z); nonzero = object.
        gt: ground truth (X, Y, Z), not empty.
        spacing_mm: voxel size (x, y, z) in mm for the `mm` variant.
        policy: the configured (primary) empty-prediction policy.

    Returns:
        variant → {"dice", "jaccard" (fractions), "hd95", "asd", "empty_pred", "empty_pred_policy", "unit"} for every
        variant of `VARIANTS` except `empty=<policy>` (that one is `primary`).
    """
    if policy not in EMPTY_PRED_POLICIES:
        raise ValueError(f"policy: expected one of {EMPTY_PRED_POLICIES}, got {policy!r}")
    primary = case_metrics(pred, gt, spacing=None, empty_pred=policy)
    out = {"primary": primary}
    for other in EMPTY_PRED_POLICIES:
        if other != policy:
            out[f"empty={other}"] = _policy_metrics(pred, gt, primary, other)
    lcc = largest_component(pred)
    same = np.array_equal(lcc, np.asarray(pred).astype(bool))
    out["lcc"] = primary if same else case_metrics(lcc, gt, spacing=None, empty_pred=policy)
    out["mm"] = case_metrics(pred, gt, spacing=spacing_mm, empty_pred=policy)
    secondary = None if primary["empty_pred"] else secondary_metrics(pred, gt, spacing=None)
    out["hd95_max_dir"] = {**primary, "hd95": primary["hd95"] if secondary is None else secondary["hd95_max_dir"]}
    out["assd"] = {**primary, "asd": primary["asd"] if secondary is None else secondary["assd"]}
    return out


def _load_prediction(path: Path) -> np.ndarray:
    """A saved label map (X, Y, Z) from NIfTI."""
    import nibabel as nib

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prediction; rerun the predict rule")
    return np.asarray(nib.load(path).dataobj)


def _case_task(task: tuple[PreparedData, str, list[dict], tuple[float, float, float], str]) -> list[dict]:
    """All runs' variant rows of one test case (one sha256-verified ground-truth read); top-level for process pools."""
    data, case, runs, spacing_mm, policy = task
    _, gt = data.load(case, with_label=True)
    rows = []
    for run in runs:
        pred = _load_prediction(Path(run["predictions"]) / f"{case}.nii.gz")
        if pred.shape != gt.shape:
            raise ValueError(f"{run['predictions']}/{case}.nii.gz: shape {pred.shape} differs from the label's")
        for variant, m in case_variants(pred, gt, spacing_mm=spacing_mm, policy=policy).items():
            unit = "mm" if variant == "mm" else "voxel"
            rows.append(
                {
                    **run["identity"],
                    "case": case,
                    "variant": variant,
                    "unit": unit,
                    "dice": m["dice"],
                    "jaccard": m["jaccard"],
                    "hd95": m["hd95"],
                    "asd": m["asd"],
                    "hd95_mm": np.nan,
                    "asd_mm": np.nan,
                    "empty_pred": int(m["empty_pred"]),
                    "empty_pred_policy": m["empty_pred_policy"],
                    **run["provenance"],
                }
            )
    return rows


def _run_entry(run_config: Path, data: PreparedData, spacing_mm: Sequence[float]) -> dict:
    """Task entry of one run: predictions folder (its record checked against the run and the data), identity and
    provenance columns (as `metrics_per_case.csv`)."""
    import json

    from harness.config import load_run_config
    from harness.evaluate.predictions import check_record, provenance_columns, read_record

    cfg = load_run_config(run_config)
    info = json.loads((run_config.parent / "run_info.json").read_text(encoding="utf-8"))
    predictions = run_config.parent / "predictions"
    record = read_record(predictions)
    check_record(record, predictions, info, data, spacing_mm)
    identity = {
        "dataset": cfg.dataset,
        "method": cfg.method,
        "n_labeled": cfg.n_labeled,
        "n_train": cfg.data.n_train,
        "seed": cfg.seed,
    }
    return {"predictions": str(predictions), "identity": identity, "provenance": provenance_columns(record, info)}


def _data_of(run_configs: list[Path]) -> PreparedData:
    """The one prepared dataset of all runs (the roots of their configs must agree)."""
    from harness.config import load_run_config

    roots = {(str(cfg.data.root), cfg.data.format) for cfg in map(load_run_config, run_configs)}
    if len(roots) != 1:
        raise ValueError(f"run_configs: expected runs of one dataset root, got {sorted(roots)}")
    return PreparedData.open(*roots.pop())


def sensitivity_per_case(
    run_configs: Iterable[str | os.PathLike],
    *,
    spacing_mm: Sequence[float] | None,
    policy: str,
    workers: int = 1,
) -> pd.DataFrame:
    """Per-case metrics of every run under every variant, from the runs' saved predictions.

    Args:
        run_configs: run_config.yaml of each run; run_info.json and predictions/<case>.nii.gz are read beside it.
            All runs must share one dataset root; its test cases come from `PreparedData` (the manifest's verified
            test.list, sha256-checked label files).
        spacing_mm: voxel size (x, y, z) in mm for the `mm` variant (None: the prepared data's).
        policy: the configured empty-prediction policy (the `primary` variant).
        workers: processes (one test case per task; 1 = in this process).

    Returns:
        Frame with `SENSITIVITY_COLUMNS`, one row per (run, case, variant); distances in `unit`; `hd95_mm`/`asd_mm`
        are NaN (the `mm` variant holds mm distances in `hd95`/`asd`).
    """
    paths = [Path(p) for p in run_configs]
    if not paths:
        raise ValueError("run_configs: expected at least one run_config.yaml")
    data = _data_of(paths)
    spacing = voxel_size(spacing_mm, data)
    entries = [_run_entry(p, data, spacing) for p in paths]
    tasks = [(data, case, entries, spacing, policy) for case in data.test_ids]
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            results = list(pool.map(_case_task, tasks))
    else:
        results = [_case_task(t) for t in tasks]
    frame = pd.DataFrame([row for rows in results for row in rows], columns=list(SENSITIVITY_COLUMNS))
    logger.info("sensitivity: %d runs x %d cases x %d variants", len(entries), len(tasks), len(VARIANTS))
    return frame


def variant_cells(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of the per-run case means, per (variant, dataset, method, n_labeled).

    Args:
        per_case: frame from `sensitivity_per_case`.

    Returns:
        The `harness.report.aggregate.per_cell` columns plus `variant` and `unit`, in paper order within each variant.
    """
    frames = []
    for variant in VARIANTS:
        subset = per_case[per_case["variant"] == variant]
        if subset.empty:
            continue
        cells = per_cell(per_run(subset[list(PER_CASE_COLUMNS)]))
        cells.insert(0, "variant", variant)
        cells.insert(1, "unit", subset["unit"].iloc[0])
        frames.append(cells)
    if not frames:
        raise ValueError("per_case: no rows")
    return pd.concat(frames, ignore_index=True)


def _with_deltas(cells: pd.DataFrame) -> pd.DataFrame:
    """Add display-unit means/stds and Δ vs the primary variant (Δ NaN for the mm variant: another unit)."""
    out = cells.copy()
    for metric, scale in (("dice", 100.0), ("jaccard", 100.0), ("hd95", 1.0), ("asd", 1.0)):
        out[f"{metric}_mean"] = out[f"{metric}_mean"] * scale
        out[f"{metric}_std"] = out[f"{metric}_std"] * scale
    primary = out[out["variant"] == "primary"].set_index(list(CELL_KEYS))
    keyed = out.set_index(list(CELL_KEYS))
    for metric in ("dice", "jaccard", "hd95", "asd"):
        base = primary[f"{metric}_mean"].reindex(keyed.index).to_numpy()
        delta = keyed[f"{metric}_mean"].to_numpy() - base
        out[f"{metric}_delta"] = np.where(out["unit"].to_numpy() == "voxel", delta, np.nan)
    keep = ["variant", "unit", *CELL_KEYS, "setting", "n_train", "n_seeds", "n_empty_pred", "empty_pred_policy"]
    stats = [f"{m}_{s}" for m in ("dice", "jaccard", "hd95", "asd") for s in ("mean", "std", "delta")]
    return out[keep + stats]


def _ordered(data: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by cell in paper order (the primary variant's order), variants in `VARIANTS` order."""
    primary = data[data["variant"] == "primary"].reset_index(drop=True)
    cell_order = {tuple(r): i for i, r in enumerate(primary[list(CELL_KEYS)].itertuples(index=False))}
    key = data[list(CELL_KEYS)].apply(tuple, axis=1).map(cell_order)
    order = pd.DataFrame({"cell": key, "variant": data["variant"].map(VARIANTS.index)})
    return data.loc[order.sort_values(["cell", "variant"], kind="stable").index].reset_index(drop=True)


def _sensitivity_caption(dataset: str, policy: str) -> str:
    return (
        f"{dataset}: protocol sensitivity, recomputed from the saved predictions. Values are mean ± std over seeds "
        "of the per-run means over test cases; Dice in %, distances in voxels except for the 'distances in mm' row. "
        f"primary = the main table: empty prediction → {policy}, no post-processing, voxel units, pooled 95HD "
        "(medpy), ASD directed prediction → ground truth. Each other row changes one choice: the empty-prediction "
        "policy (worst_case = volume diagonal, nan = excluded from distance means, reference_zero = 0 as in the "
        "reference code), the largest 26-connected component (skipped on empty predictions), mm units, 95HD as "
        "the maximum of the two directed 95th percentiles, or the symmetric ASSD in the ASD column. Δ = change of "
        "the mean against primary (percentage points for Dice)."
    )


def build_sensitivity_table(per_case: pd.DataFrame, dataset: str) -> Table:
    """The sensitivity table of one dataset: per cell, one row per variant with means and Δ vs primary.

    Args:
        per_case: frame from `sensitivity_per_case` (may hold several datasets).
        dataset: which dataset's rows to take.

    Returns:
        Table '<dataset>_sensitivity'; its data holds `{metric}_{mean,std,delta}` per variant and cell.
    """
    subset = per_case[per_case["dataset"] == dataset]
    if subset.empty:
        raise ValueError(f"dataset: no sensitivity rows for {dataset!r}")
    data = _ordered(_with_deltas(variant_cells(subset)))
    rows = []
    for _, r in data.iterrows():
        primary = r["variant"] == "primary"
        label = [
            Entry(method_label(r["method"], r["setting"], "") if primary else ""),
            Entry(format_labeled(int(r["n_labeled"]), int(r["n_train"])) if primary else ""),
            Entry(VARIANT_LABELS[r["variant"]]),
        ]
        values = []
        for metric in ("dice", "hd95", "asd"):
            delta = MISSING if primary else format_number(r[f"{metric}_delta"], signed=True)
            values += [mean_std_entry(r[f"{metric}_mean"], r[f"{metric}_std"]), Entry(delta)]
        rows.append((*label, *values, Entry(str(int(r["n_empty_pred"])))))
    header = ("Method", "Labeled", "Evaluation", "Dice (%)", "Δ Dice", "95HD", "Δ 95HD", "ASD", "Δ ASD", "Empty preds")
    policy = subset.loc[subset["variant"] == "primary", "empty_pred_policy"].iloc[0]
    return Table(
        name=f"{dataset}_sensitivity",
        title=f"Protocol sensitivity ({dataset})",
        caption=_sensitivity_caption(dataset, policy),
        header=header,
        rows=tuple(rows),
        groups=tuple(int(i) for i in data[list(CELL_KEYS)].apply(tuple, axis=1).factorize()[0]),
        data=data,
        text_columns=3,
    )


def write_sensitivity(
    run_configs: Iterable[str | os.PathLike],
    out_csv: str | os.PathLike,
    tables_dir: str | os.PathLike,
    *,
    spacing_mm: Sequence[float] | None,
    policy: str,
    workers: int = 1,
) -> dict[str, Path]:
    """Compute the variants of one dataset's runs and write the per-case CSV and `<dataset>_sensitivity.*` tables.

    Returns:
        {"per_case": out_csv path, "md"/"csv"/"tex"/"html": table paths}.
    """
    per_case = sensitivity_per_case(run_configs, spacing_mm=spacing_mm, policy=policy, workers=workers)
    datasets = per_case["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError(f"run_configs: expected runs of one dataset, got {sorted(datasets)}")
    written = {"per_case": write_text_atomic(out_csv, per_case.to_csv(index=False, lineterminator="\n"))}
    written.update(write_table(build_sensitivity_table(per_case, datasets[0]), tables_dir))
    return written
