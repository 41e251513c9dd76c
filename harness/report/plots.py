"""Figures of the results (seaborn; each written as PNG and PDF with the same stem).

* `dice_vs_labeled`: Dice vs labeled count per method, mean ± std over seeds with the seeds as dots, the upper bound as
  a dashed line, and the values of one published source table as star markers;
* `{metric}_per_case_{dataset}`: per-case Dice and HD95 distributions per method, one panel per labeled count;
* `training_curves_{dataset}`: every numeric key of the JSONL training logs (losses, consistency weight, LR) vs
  iteration, mean over seeds, one row per key and one column per labeled count;
* `qualitative_{dataset}`: for one test case, the same axial slices with the ground truth and each method's prediction
  contoured (first seed of each cell).

Matplotlib and seaborn are imported inside the functions (with the non-interactive "Agg" backend), so importing this
module has no side effects. Every figure is closed after it is written; files are written atomically and without
timestamps (PNG "Software" and PDF dates removed), so reruns give identical bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from harness.io import atomic_path
from harness.report.aggregate import (
    PER_CASE_COLUMNS,
    RUN_COLUMNS,
    UPPER_BOUND,
    method_rank,
    require_columns,
    setting_label,
)
from harness.report.outputs import PER_CASE_METRICS, figures
from harness.report.table_model import format_labeled

logger = logging.getLogger(__name__)

DPI = 150
FORMATS = ("png", "pdf")
GT_COLOR = "#00e000"


def plotting_modules() -> tuple[ModuleType, ModuleType]:
    """pyplot and seaborn, with matplotlib switched to the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def _ordered_methods(methods: Sequence[str] | pd.Series) -> list[str]:
    """Distinct method names in the table order (known methods first, then alphabetical)."""
    return sorted(set(methods), key=lambda m: (method_rank(m), m))


def _with_setting(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of `df` with `dice_pct` (Dice in percent) and `setting` ('upper bound', 'lower bound' or '')."""
    out = df.copy()
    out["dice_pct"] = 100.0 * out["dice"]
    out["setting"] = [setting_label(*r) for r in out[["method", "n_labeled", "n_train"]].itertuples(False)]
    return out


def save_figure(fig: Any, png_path: str | os.PathLike) -> list[Path]:
    """Save `fig` as PNG (at `png_path`) and PDF (same stem), atomically and without timestamps; returns both paths."""
    png = Path(png_path)
    if png.suffix != ".png":
        raise ValueError(f"png_path: expected a .png path, got {png}")
    metadata = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}
    paths = []
    for fmt in FORMATS:
        path = png.with_suffix(f".{fmt}")

        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata[fmt])
        paths.append(path)
    return paths


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's legacy global generator for the block and restore its previous state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


# -------------------------------------------------------------------------------------------- Dice vs labeled count
def _draw_upper_bound(ax: Any, upper: pd.DataFrame) -> bool:
    """Dashed horizontal line at the upper-bound mean Dice with a ±std band; True if one was drawn."""
    if upper.empty:
        return False
    mean, std = upper["dice_pct"].mean(), upper["dice_pct"].std(ddof=1)
    ax.axhline(mean, color="black", linestyle="--", linewidth=1.2, zorder=1)
    if pd.notna(std):
        ax.axhspan(mean - std, mean + std, color="black", alpha=0.08, linewidth=0, zorder=0)
    return True


def _draw_published(ax: Any, published: pd.DataFrame, x_of: Mapping[tuple[str, int], float], palette: Mapping) -> bool:
    """Star markers at the published Dice of the plotted methods; a dotted line for a published upper bound."""
    drawn = False
    for _, row in published.iterrows():
        if not math.isfinite(row["dice"]):
            continue
        if row["setting"] == UPPER_BOUND:
            ax.axhline(row["dice"], color="black", linestyle=":", linewidth=1.2, zorder=1)
            drawn = True
        elif (row["method_key"], int(row["n_labeled"])) in x_of:
            x = x_of[(row["method_key"], int(row["n_labeled"]))]
            color = palette.get(row["method_key"], "black")
            ax.scatter([x], [row["dice"]], marker="*", s=140, color=color, edgecolor="black", linewidth=0.7, zorder=5)
            drawn = True
    return drawn


def _panel_dice_vs_labeled(
    ax: Any, sns: ModuleType, runs: pd.DataFrame, palette: Mapping[str, Any], published: pd.DataFrame
) -> tuple[bool, bool]:
    """One dataset: per-method mean ± std over seeds (bars), seeds as dots, upper bound dashed, published stars.

    Returns:
        (upper bound drawn, published values drawn).
    """
    dataset, n_train = runs["dataset"].iloc[0], int(runs["n_train"].iloc[0])
    semi = runs[runs["setting"] != UPPER_BOUND].copy()
    has_upper = _draw_upper_bound(ax, runs[runs["setting"] == UPPER_BOUND])
    counts = sorted(semi["n_labeled"].unique())
    x_of: dict[tuple[str, int], float] = {}
    if counts:
        methods = _ordered_methods(semi["method"])
        width = 0.3 if len(methods) > 1 else 0.0
        offsets = {m: width * (i / max(len(methods) - 1, 1) - 0.5) for i, m in enumerate(methods)}
        position = {n: i for i, n in enumerate(counts)}
        semi["x"] = semi["n_labeled"].map(position) + semi["method"].map(offsets)
        x_of = {(m, int(n)): position[n] + offsets[m] for m in methods for n in counts}
        common = {"data": semi, "x": "x", "y": "dice_pct", "hue": "method", "hue_order": methods, "palette": palette}
        sns.lineplot(**common, errorbar="sd", err_style="bars", marker="o", err_kws={"capsize": 3}, ax=ax, legend=False)
        sns.scatterplot(**common, s=16, alpha=0.55, linewidth=0, ax=ax, legend=False, zorder=3)
        ax.set_xticks(range(len(counts)), [format_labeled(int(n), n_train) for n in counts])
        ax.set_xlim(-0.5, len(counts) - 0.5)
    has_published = _draw_published(ax, published[published["dataset_key"] == str(dataset).lower()], x_of, palette)
    ax.set_title(f"{dataset} (training set: {n_train} cases)")
    ax.set_xlabel("Labeled training cases (count, % of training set)")
    ax.set_ylabel("Dice (%)")
    ax.grid(axis="y", alpha=0.3)
    return has_upper, has_published


def _method_handles(palette: Mapping[str, Any], methods: Sequence[str], upper: bool, published_label: str) -> list[Any]:
    """Legend handles: one coloured line per method, the dashed upper-bound line, the published markers."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=palette[m], marker="o", label=m) for m in methods]
    if upper:
        handles.append(
            Line2D([], [], color="black", linestyle="--", label="supervised, all labeled\n(upper bound ± std)")
        )
    if published_label:
        handles.append(
            Line2D(
                [],
                [],
                color="0.6",
                marker="*",
                markersize=11,
                markeredgecolor="black",
                linestyle=":",
                label=f"published (stars; dotted =\nupper bound): {published_label}",
            )
        )
    return handles


def _empty_published() -> pd.DataFrame:
    return pd.DataFrame(columns=["dataset_key", "method_key", "setting", "n_labeled", "dice"])


def plot_dice_vs_labeled(
    runs: pd.DataFrame,
    path: str | os.PathLike,
    *,
    published: pd.DataFrame | None = None,
    published_label: str = "",
) -> list[Path]:
    """Write the Dice-vs-labeled-count figure (one panel per dataset) as PNG (`path`) and PDF.

    Args:
        runs: per-run frame (`harness.report.aggregate.per_run`; Dice as fractions, one row per seed).
        path: destination PNG.
        published: rows of one source table (`harness.report.published.load_published` filtered to a
            `source_id`); Dice in %.
        published_label: the source's citation, for the legend.

    Returns:
        The paths written (PNG, PDF).
    """
    plt, sns = plotting_modules()
    published = _empty_published() if published is None else published
    data = _with_setting(runs)
    datasets = sorted(data["dataset"].unique())
    methods = _ordered_methods(data.loc[data["setting"] != UPPER_BOUND, "method"])
    palette = dict(zip(methods, sns.color_palette("colorblind", max(len(methods), 1)), strict=False))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.3), squeeze=False)
    try:
        panels = zip(axes[0], datasets, strict=True)
        drawn = [_panel_dice_vs_labeled(ax, sns, data[data["dataset"] == d], palette, published) for ax, d in panels]
        label = published_label if any(p for _, p in drawn) else ""
        handles = _method_handles(palette, methods, any(u for u, _ in drawn), label)
        fig.legend(handles=handles, title="Method", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.suptitle("Test Dice vs labeled count: mean ± std over seeds (bars), individual seeds (dots)")
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------------ per case
def _panel_per_case(
    ax: Any, sns: ModuleType, cases: pd.DataFrame, seed_palette: Mapping[str, Any], column: str, label: str
) -> None:
    """One labeled count: box plot of a per-case metric per method with the cases as dots coloured by seed."""
    methods = _ordered_methods(cases["method"])
    n_labeled, n_train = int(cases["n_labeled"].iloc[0]), int(cases["n_train"].iloc[0])
    common = {"data": cases, "x": "method", "y": column, "order": methods, "ax": ax}
    with warnings.catch_warnings():  # seaborn 0.13.2 passes `vert` to Axes.bxp, deprecated in matplotlib 3.11
        warnings.filterwarnings("ignore", message=r"vert: bool was deprecated", category=DeprecationWarning)
        sns.boxplot(**common, color="0.88", showfliers=False, width=0.6)
    with _seeded_global_numpy(0):  # seaborn's jitter draws from the global NumPy state
        sns.stripplot(
            **common, hue="seed_label", hue_order=list(seed_palette), palette=seed_palette, size=3.5, jitter=0.2
        )
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    suffix = ": upper bound" if n_labeled == n_train else " labeled"
    ax.set_title(f"{format_labeled(n_labeled, n_train)}{suffix}")
    ax.set_xlabel("Method")
    ax.set_ylabel(label)
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(axis="y", alpha=0.3)


def plot_per_case(per_case: pd.DataFrame, dataset: str, path: str | os.PathLike, *, metric: str = "dice") -> list[Path]:
    """Write the per-case distribution of one metric of one dataset (one panel per labeled count) as PNG and PDF.

    Args:
        per_case: per-case frame (`harness.report.aggregate.load_per_case`; Dice as fractions, HD95 in voxels).
        dataset: dataset to plot.
        path: destination PNG.
        metric: 'dice' (plotted in %) or 'hd95' (voxels; NaN distances of the nan policy are left out).

    Returns:
        The paths written (PNG, PDF).
    """
    if metric not in PER_CASE_METRICS:
        raise ValueError(f"metric: expected one of {sorted(PER_CASE_METRICS)}, got {metric!r}")
    column, label = PER_CASE_METRICS[metric]
    plt, sns = plotting_modules()
    from matplotlib.lines import Line2D

    data = _with_setting(per_case[per_case["dataset"] == dataset])
    if data.empty:
        raise ValueError(f"dataset: no per-case rows for {dataset!r}")
    data["seed_label"] = data["seed"].astype(str)
    seeds = [str(s) for s in sorted(data["seed"].unique())]
    seed_palette = dict(zip(seeds, sns.color_palette("dark", len(seeds)), strict=True))
    counts = sorted(data["n_labeled"].unique())
    n_methods = [data.loc[data["n_labeled"] == n, "method"].nunique() for n in counts]
    fig, axes = plt.subplots(
        1,
        len(counts),
        figsize=(sum(1.1 * m + 1.2 for m in n_methods) + 1.0, 4.6),
        sharey=True,
        squeeze=False,
        gridspec_kw={"width_ratios": [m + 1.0 for m in n_methods]},
    )
    try:
        for ax, n in zip(axes[0], counts, strict=True):
            _panel_per_case(ax, sns, data[data["n_labeled"] == n], seed_palette, column, label)
        handles = [Line2D([], [], color=c, marker="o", linestyle="", label=s) for s, c in seed_palette.items()]
        fig.legend(handles=handles, title="Seed", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        title = label.split(" (")[0]
        fig.suptitle(
            f"{dataset}: per-case test {title} (boxes: cases pooled over seeds; dots: cases, coloured by seed)"
        )
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ training curves
def _read_log(path: Path) -> list[dict[str, Any]]:
    """The numeric entries of one JSONL training log as records {it, key, value} (non-finite values skipped)."""
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_no}: not a JSON line ({err})") from err
        it = entry.get("it")
        for key, value in entry.items():
            if key != "it" and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                records.append({"it": int(it), "key": key, "value": float(value)})
    return records


def load_train_logs(run_info_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Long frame of every run's train_log.jsonl (read beside each run_info.json; runs without a log are skipped).

    Args:
        run_info_paths: run_info.json of each run (its `config` gives dataset, method, n_labeled, seed).

    Returns:
        Columns dataset, method, n_labeled, n_train, seed, it, key, value (one row per logged number).
    """
    frames = []
    for path in (Path(p) for p in run_info_paths):
        config = json.loads(path.read_text(encoding="utf-8"))["config"]
        log = path.parent / "train_log.jsonl"
        if not log.is_file():
            logger.warning("%s: no train_log.jsonl beside it; skipped in the training curves", path)
            continue
        identity = {k: config[k] for k in ("dataset", "method", "n_labeled", "seed")}
        identity["n_train"] = config["data"]["n_train"]
        frames.append(pd.DataFrame([{**identity, **r} for r in _read_log(log)]))
    columns = ["dataset", "method", "n_labeled", "n_train", "seed", "it", "key", "value"]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _key_order(keys: Iterable[str]) -> list[str]:
    """Log keys in plotting order: loss, loss/*, w/* (weights), other keys, lr last."""

    def rank(key: str) -> tuple[int, str]:
        """Sort key: (group, name)."""
        if key == "loss":
            return 0, key
        if key.startswith("loss/"):
            return 1 if key in ("loss/sup", "loss/cons") else 2, key
        if key.startswith("w/"):
            return 3, key
        return (5 if key == "lr" else 4), key

    return sorted(set(keys), key=rank)


def _curve_panel(ax: Any, sns: ModuleType, part: pd.DataFrame, methods: list[str], palette: Mapping) -> None:
    """One log key at one labeled count: the mean over seeds per method, or 'not logged'."""
    if part.empty:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", color="0.5", transform=ax.transAxes)
        ax.set_yticks([])
        return
    sns.lineplot(
        data=part,
        x="it",
        y="value",
        hue="method",
        hue_order=methods,
        palette=palette,
        estimator="mean",
        errorbar=None,
        linewidth=1.2,
        ax=ax,
        legend=False,
    )
    ax.grid(alpha=0.3)


def plot_training_curves(logs: pd.DataFrame, dataset: str, path: str | os.PathLike) -> list[Path]:
    """Write the training curves of one dataset as PNG and PDF: rows = log keys, columns = labeled counts.

    Args:
        logs: frame from `load_train_logs`.
        dataset: dataset to plot.
        path: destination PNG.

    Returns:
        The paths written (PNG, PDF). With no logs for `dataset` the figure says so.
    """
    plt, sns = plotting_modules()
    data = logs[logs["dataset"] == dataset]
    keys = _key_order(data["key"]) or ["loss"]
    counts = sorted(data["n_labeled"].unique()) or [0]
    n_train = int(data["n_train"].iloc[0]) if not data.empty else 0
    methods = _ordered_methods(data["method"])
    palette = dict(zip(methods, sns.color_palette("colorblind", max(len(methods), 1)), strict=False))
    fig, axes = plt.subplots(
        len(keys), len(counts), figsize=(3.4 * len(counts) + 1.8, 1.9 * len(keys) + 0.8), squeeze=False, sharex=True
    )
    try:
        for r, key in enumerate(keys):
            for c, n in enumerate(counts):
                ax = axes[r][c]
                _curve_panel(ax, sns, data[(data["n_labeled"] == n) & (data["key"] == key)], methods, palette)
                if r == 0:
                    ax.set_title(f"{format_labeled(int(n), n_train)} labeled" if n_train else dataset, fontsize=10)
                ax.set_ylabel(key if c == 0 else "", fontsize=9)
                ax.set_xlabel("iteration" if r == len(keys) - 1 else "")
        if data.empty:
            axes[0][0].text(0.5, 0.3, f"no training logs for {dataset}", ha="center", transform=axes[0][0].transAxes)
        _curve_legend(fig, palette)
        fig.suptitle(f"{dataset}: training logs vs iteration, mean over seeds (columns: labeled count)")
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # keep the title clear of the top row
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def _curve_legend(fig: Any, palette: Mapping[str, Any]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=m) for m, c in palette.items()]
    if handles:
        fig.legend(handles=handles, title="Method", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


# --------------------------------------------------------------------------------------------------- qualitative
def axial_slices(gt: np.ndarray, n_slices: int) -> list[int]:
    """`n_slices` z indices evenly inside the ground truth's z extent (excluding its first and last slice).

    Args:
        gt: ground-truth mask (X, Y, Z), not empty.
        n_slices: number of slices (≥ 1).

    Returns:
        Sorted distinct z indices.
    """
    if n_slices < 1:
        raise ValueError(f"n_slices: expected at least 1, got {n_slices}")
    z = np.flatnonzero(np.asarray(gt).any(axis=(0, 1)))
    if z.size == 0:
        raise ValueError("gt: the ground-truth mask is empty")
    lo, hi = int(z[0]), int(z[-1])
    picks = [round(lo + (hi - lo) * (i + 1) / (n_slices + 1)) for i in range(n_slices)]
    return sorted(set(picks))


def _view_box(gt: np.ndarray, margin: int = 12) -> tuple[slice, slice]:
    """x/y window around the ground truth (over all slices), grown by `margin` and clipped to the array."""
    box = []
    for axis in (0, 1):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(gt.any(axis=other))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, gt.shape[axis])))
    return box[0], box[1]


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks (2|P∩G| / (|P| + |G|)); the ground truth is never empty here."""
    p, g = pred.astype(bool), gt.astype(bool)
    return 2.0 * np.count_nonzero(p & g) / (np.count_nonzero(p) + np.count_nonzero(g))


def _draw_slice(ax: Any, image: np.ndarray, gt: np.ndarray, pred: np.ndarray | None, z: int, box: tuple) -> None:
    """One panel: the image slice (x right, y up) with the GT contour (green) and the prediction (red, dashed)."""
    lo, hi = np.percentile(image, [1, 99])
    view = (box[0], box[1], z)
    ax.imshow(image[view].T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    for mask, color, style in ((gt, GT_COLOR, "solid"), (pred, "red", "dashed")):
        if mask is not None and mask[view].any() and not mask[view].all():
            ax.contour(mask[view].T.astype(float), levels=[0.5], colors=[color], linewidths=1.0, linestyles=style)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_qualitative(
    image: np.ndarray,
    gt: np.ndarray,
    predictions: Sequence[tuple[str, np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str,
    n_slices: int = 3,
) -> list[Path]:
    """Write the qualitative overlay figure: rows = ground truth, then one row per prediction; columns = slices.

    Args:
        image: the case's image (X, Y, Z).
        gt: its ground truth (X, Y, Z), not empty.
        predictions: (row label, label map (X, Y, Z)) per method/labeled count, in display order.
        path: destination PNG.
        title: figure title (dataset, case, seed).
        n_slices: axial slices shown (the same for every row).

    Returns:
        The paths written (PNG, PDF).
    """
    plt, _ = plotting_modules()
    slices, box = axial_slices(gt, n_slices), _view_box(np.asarray(gt).astype(bool))
    rows = [("ground truth", None), *predictions]
    fig, axes = plt.subplots(len(rows), len(slices), figsize=(2.4 * len(slices) + 2.8, 2.4 * len(rows)), squeeze=False)
    try:
        for r, (label, pred) in enumerate(rows):
            for c, z in enumerate(slices):
                _draw_slice(axes[r][c], image, gt, pred, z, box)
                if r == 0:
                    axes[r][c].set_title(f"z = {z}", fontsize=9)
            text = label if pred is None else f"{label}\nDice {100 * _dice(pred, gt):.1f}%"
            axes[r][0].set_ylabel(text, fontsize=8, rotation=0, ha="right", va="center")
        fig.suptitle(f"{title}\nground truth: green, solid; prediction: red, dashed")
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / fig.get_figheight()))
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def _qualitative_runs(run_configs: Iterable[str | os.PathLike]) -> list[tuple[Any, Path]]:
    """(RunConfig, predictions folder) of the lowest seed of each (method, n_labeled), in paper row order."""
    from harness.config import load_run_config

    runs = [(load_run_config(Path(p)), Path(p).parent / "predictions") for p in run_configs]
    if not runs:
        raise ValueError("run_configs: expected at least one run_config.yaml")
    first: dict[tuple[str, int], tuple[Any, Path]] = {}
    for cfg, pred_dir in sorted(runs, key=lambda r: r[0].seed):
        first.setdefault((cfg.method, cfg.n_labeled), (cfg, pred_dir))

    def paper_order(run: tuple[Any, Path]) -> tuple:
        """Upper bound last, then labeled count, method order, name."""
        cfg = run[0]
        return cfg.n_labeled == cfg.data.n_train, cfg.n_labeled, method_rank(cfg.method), cfg.method

    return sorted(first.values(), key=paper_order)


def write_qualitative(
    run_configs: Iterable[str | os.PathLike], path: str | os.PathLike, *, case: str | None = None, n_slices: int = 3
) -> list[Path]:
    """Qualitative overlays of one dataset from the runs' saved predictions (lowest seed of each cell).

    Args:
        run_configs: run_config.yaml of the runs (predictions/ beside each); one dataset root, opened as
            `harness.data.prepared.PreparedData` (verified lists, sha256-checked case file).
        path: destination PNG (a PDF is written beside it).
        case: test case ID; None = the first ID of test.list.
        n_slices: axial slices shown.

    Returns:
        The paths written (PNG, PDF).
    """
    import nibabel as nib

    from harness.data.prepared import PreparedData

    runs = _qualitative_runs(run_configs)
    cfg0 = runs[0][0]
    data = PreparedData.open(cfg0.data.root, cfg0.data.format)
    case = case or data.test_ids[0]
    if case not in data.test_ids:
        raise ValueError(f"case: {case!r} is not in {data.root / 'test.list'} (first IDs: {list(data.test_ids[:3])})")
    image, gt = data.load(case, with_label=True)
    predictions = []
    for cfg, pred_dir in runs:
        pred = np.asarray(nib.load(pred_dir / f"{case}.nii.gz").dataobj)
        label = f"{cfg.method}, {format_labeled(cfg.n_labeled, cfg.data.n_train)}"
        predictions.append((label, pred))
    seeds = sorted({cfg.seed for cfg, _ in runs})
    title = f"{cfg0.dataset}: test case {case} (seed {', '.join(map(str, seeds))})"
    return plot_qualitative(image, gt, predictions, path, title=title, n_slices=n_slices)


# ------------------------------------------------------------------------------------------------------- all figures
def figure_names(datasets: Iterable[str], *, training_curves: bool = True) -> list[str]:
    """PNG file names written by `write_figures` for `datasets` (each also has a PDF twin; `harness.report.outputs`)."""
    return [f"{out.stem}.png" for out in figures(datasets, training_curves=training_curves)]


def write_figures(
    runs_df: pd.DataFrame,
    per_case_df: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    published: pd.DataFrame | None = None,
    published_label: str = "",
    train_logs: pd.DataFrame | None = None,
) -> list[Path]:
    """Write all figures of `figure_names` (PNG and PDF) into `out_dir` (e.g. `results/<name>/figures/`).

    Args:
        runs_df: per-run frame from `harness.report.aggregate.per_run` (columns `RUN_COLUMNS`).
        per_case_df: per-case frame from `harness.report.aggregate.load_per_case` (columns `PER_CASE_COLUMNS`).
        out_dir: destination folder, created if needed.
        published: rows of one published source table (Dice in %) for the star markers; None = no markers.
        published_label: that source's citation (legend).
        train_logs: frame from `load_train_logs`; None = no training-curve figures.

    Returns:
        Paths written, PNG then PDF for each figure, in the order of `figure_names` (datasets sorted by name).
    """
    require_columns(runs_df, RUN_COLUMNS, "runs_df")
    require_columns(per_case_df, PER_CASE_COLUMNS, "per_case_df")
    if runs_df.empty or per_case_df.empty:
        raise ValueError("runs_df, per_case_df: expected at least one row each")
    out = Path(out_dir)
    paths = plot_dice_vs_labeled(
        runs_df, out / "dice_vs_labeled.png", published=published, published_label=published_label
    )
    for dataset in sorted(per_case_df["dataset"].unique()):
        for metric in PER_CASE_METRICS:
            paths += plot_per_case(per_case_df, dataset, out / f"{metric}_per_case_{dataset}.png", metric=metric)
        if train_logs is not None:
            paths += plot_training_curves(train_logs, dataset, out / f"training_curves_{dataset}.png")
    logger.info("wrote %d figure files to %s", len(paths), out)
    return paths
