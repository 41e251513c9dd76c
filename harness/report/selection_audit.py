"""The test-set selection audit: what reporting the best TEST checkpoint would have added to each number of the main
table. A measurement of leakage, never a result: its numbers are never mixed into the main tables.

Each training job with `report.selection_audit.every` scored the test cases every `every` iterations (and at every
validation evaluation and at the last iteration) into `test_curve.csv` (`harness.train.monitor`), without changing
training. Per run: the reported checkpoint's test Dice (the last iteration, or the validation-selected one with
`protocol.selection: val`), the test Dice at the last iteration, and the best mean test Dice over the curve (the
checkpoint a repository that validates on `test.list` would keep). Per method and labeled count: mean ± std over
seeds, the difference best − reported ("what test-set selection adds", percentage points) and the paired tests of the
harness (`harness.report.stats.paired_tests`) on the per-case Dice of both checkpoints averaged over seeds.

The reported Dice read from the curve must equal `metrics_per_case.csv` of the run (the same window, stride and
metrics): a mismatch is refused, naming the run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.report.aggregate import method_rank
from harness.report.outputs import FIGURES, TABLES, selection_audit_figure, selection_audit_table
from harness.report.stats import paired_tests
from harness.report.table_model import (
    Entry,
    Table,
    format_labeled,
    format_p,
    mean_std_entry,
    write_table,
)

logger = logging.getLogger(__name__)

#: Checkpoints compared per run: column of the run frame → its label.
CHECKPOINTS = {"reported": "Reported", "last": "Last", "val": "Val-selected", "best": "Best on test"}
#: How far a curve value and metrics_per_case.csv may differ (both are the same float computed twice).
TOLERANCE = 1e-9


def read_run(curve_path: Path, run_info_path: Path, metrics_path: Path) -> dict[str, Any]:
    """One run's checkpoints: per-case test Dice at the reported, last, validation-selected and best iterations."""
    curve = pd.read_csv(curve_path, dtype={"case": str})
    info = json.loads(Path(run_info_path).read_text())
    metrics = pd.read_csv(metrics_path, dtype={"case": str})
    if curve.empty:
        raise ValueError(f"{curve_path} holds no evaluation: the run was trained without report.selection_audit")
    per_it = curve.pivot(index="iteration", columns="case", values="dice").sort_index()
    means = per_it.mean(axis=1)
    selection = info.get("selection") or {"mode": "last", "iteration": int(per_it.index.max())}
    iterations = {
        "last": int(per_it.index.max()),
        "best": int(means.idxmax()),  # the first of equal maxima: the earliest checkpoint
        "reported": int(selection["iteration"]),
        "val": int(selection["iteration"]) if selection["mode"] == "val" else None,
    }
    missing = [k for k, it in iterations.items() if it is not None and it not in per_it.index]
    if missing:
        raise ValueError(f"{curve_path}: no test evaluation at the {missing[0]} iteration {iterations[missing[0]]}")
    reported = per_it.loc[iterations["reported"]]
    expected = metrics.set_index("case")["dice"]
    same_cases = set(expected.index) == set(reported.index)
    # `<=` is False for NaN: a case the curve lacks at that iteration is a mismatch too
    if not same_cases or not (abs(reported - expected.reindex(reported.index)) <= TOLERANCE).all():
        raise ValueError(
            f"{curve_path}: the test Dice at the reported iteration {iterations['reported']} differs from "
            f"{metrics_path}: the curve and the evaluated model do not belong together; rerun the run's jobs"
        )
    row = metrics.iloc[0]
    run = {
        "dataset": row["dataset"],
        "method": row["method"],
        "n_labeled": int(row["n_labeled"]),
        "n_train": int(row["n_train"]),
        "seed": int(row["seed"]),
        "mode": selection["mode"],
    }
    for name, it in iterations.items():
        run[f"{name}_iteration"] = it
        run[name] = per_it.loc[it] if it is not None else None
    run["curve"] = means
    return run


def audit_cells(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per dataset, method and labeled count: per checkpoint the mean and std over seeds of the runs' mean
    test Dice (percent), the difference best − reported, and the paired tests on the seed-averaged per-case Dice."""
    rows = []
    for (dataset, method, n_labeled), group in _groups(runs):
        row: dict[str, Any] = {
            "dataset": dataset,
            "method": method,
            "n_labeled": n_labeled,
            "n_train": group[0]["n_train"],
            "n_seeds": len(group),
            "mode": group[0]["mode"],
        }
        for name in CHECKPOINTS:
            values = [100.0 * r[name].mean() for r in group if r[name] is not None]
            row[f"{name}_mean"] = float(np.mean(values)) if values else np.nan
            row[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
        gains = [100.0 * (r["best"].mean() - r["reported"].mean()) for r in group]
        row["gain_mean"] = float(np.mean(gains))
        row["gain_std"] = float(np.std(gains, ddof=1)) if len(gains) > 1 else np.nan
        best = pd.concat([r["best"] for r in group], axis=1).mean(axis=1)
        reported = pd.concat([r["reported"] for r in group], axis=1).mean(axis=1)
        test = paired_tests(100.0 * best.to_numpy(), 100.0 * reported.to_numpy())
        row |= {"n_cases": test.n, "wilcoxon_p": test.wilcoxon_p, "t_p": test.t_p}
        row["best_iterations"] = ";".join(str(r["best_iteration"]) for r in group)
        rows.append(row)
    return pd.DataFrame(rows)


def _groups(runs: list[dict[str, Any]]) -> list[tuple[tuple, list[dict[str, Any]]]]:
    """The runs by (dataset, method, labeled count), in table order, each group's runs by seed."""
    grouped: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["dataset"], run["method"], run["n_labeled"]), []).append(run)
    order = sorted(grouped, key=lambda k: (k[0], k[2], method_rank(k[1]), k[1]))
    return [(k, sorted(grouped[k], key=lambda r: r["seed"])) for k in order]


def build_table(cells: pd.DataFrame, dataset: str) -> Table:
    """Table '<dataset>_selection_audit'."""
    data = cells[cells["dataset"] == dataset].reset_index(drop=True)
    with_val = bool((data["mode"] == "val").any())
    names = ["reported", "last", *(["val"] if with_val else []), "best"]
    rows = []
    for _, r in data.iterrows():
        rows.append(
            (
                Entry(r["method"]),
                Entry(format_labeled(r["n_labeled"], r["n_train"])),
                Entry(str(r["n_seeds"])),
                *(mean_std_entry(r[f"{n}_mean"], r[f"{n}_std"]) for n in names),
                mean_std_entry(r["gain_mean"], r["gain_std"]),
                Entry(format_p(r["wilcoxon_p"])),
                Entry(format_p(r["t_p"])),
            )
        )
    header = (
        "Method",
        "Labeled",
        "Seeds",
        *(f"{CHECKPOINTS[n]} Dice (%)" for n in names),
        "Test selection adds (pp)",
        "Wilcoxon p",
        "t-test p",
    )
    caption = (
        f"{dataset}: test-set selection audit, a measurement of leakage, not a result. Test Dice (%) of the checkpoint "
        "the main table reports (Reported: the last iteration, or the one selected on the validation split), of the "
        "last iteration, and of the best of the test evaluations made during training (Best on test: what a "
        "repository that keeps its best checkpoint on test.list would report), mean ± std over seeds. "
        "Test selection adds = best − reported, in percentage points; p = paired tests on the per-case Dice of both "
        "checkpoints averaged over seeds. These numbers never enter the main tables."
    )
    return Table(
        name=selection_audit_table(dataset).stem,
        title=f"Test-set selection audit ({dataset})",
        caption=caption,
        header=header,
        rows=tuple(rows),
        groups=tuple(data["n_labeled"]),
        data=data,
        text_columns=3,
    )


def plot_curves(runs: list[dict[str, Any]], dataset: str, path: Path) -> list[Path]:
    """Test Dice over iterations, one panel per method and labeled count, seeds as thin lines; the last, the
    validation-selected and the best-on-test checkpoints marked."""
    from harness.report.plots import plotting_modules, save_figure

    plt, _ = plotting_modules()
    groups = _groups([r for r in runs if r["dataset"] == dataset])
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    markers = {"last": ("o", "last"), "val": ("^", "val-selected"), "best": ("*", "best on test")}
    try:
        for ax, ((_, method, n_labeled), group) in zip(axes.flat, groups, strict=False):
            for run in group:
                curve = 100.0 * run["curve"]
                line = ax.plot(curve.index, curve.to_numpy(), lw=0.8, alpha=0.8)[0]
                for name, (marker, _) in markers.items():
                    it = run[f"{name}_iteration"]
                    if it is not None:
                        ax.plot(
                            [it], [curve.loc[it]], marker=marker, color=line.get_color(), ms=7 if marker == "*" else 5
                        )
            ax.set_title(f"{method}, {n_labeled} labeled", fontsize=8)
            ax.set_xlabel("iteration", fontsize=8)
        for ax in axes.flat[len(groups) :]:
            ax.axis("off")
        axes[0][0].set_ylabel("test Dice (%)")
        handles = [plt.Line2D([], [], marker=m, ls="", color="grey", label=label) for m, label in markers.values()]
        fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.suptitle(f"{dataset}: test Dice during training (selection audit: leakage measurement)", fontsize=9)
        fig.tight_layout(rect=(0, 0.06, 1, 0.95))
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def write_audit(
    curves: Iterable[str | os.PathLike],
    run_infos: Iterable[str | os.PathLike],
    metrics: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
) -> dict[str, list[Path]]:
    """Tables and figures of the audit for every dataset (the `selection_audit` rule); the three lists are aligned
    by run."""
    runs = [read_run(Path(c), Path(i), Path(m)) for c, i, m in zip(curves, run_infos, metrics, strict=True)]
    cells = audit_cells(runs)
    out, written = Path(out_dir), {}
    for dataset in sorted(cells["dataset"].unique()):
        paths = list(write_table(build_table(cells, dataset), out / TABLES).values())
        paths += plot_curves(runs, dataset, out / FIGURES / f"{selection_audit_figure(dataset).stem}.png")
        written[dataset] = paths
    logger.info("selection audit of %d runs: %s", len(runs), ", ".join(written))
    return written
