"""Figures of the aggregated results: Dice vs labeled count, and per-case Dice distributions per method.

Matplotlib and seaborn are imported inside `write_figures` (with the non-interactive "Agg" backend), so importing this
module has no side effects. Every figure is closed after it is written; files are written atomically.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from harness.aggregate import PER_CASE_COLUMNS, RUN_COLUMNS, UPPER_BOUND, method_rank, require_columns, setting_label
from harness.tables import atomic_write, format_labeled

logger = logging.getLogger(__name__)

DPI = 150


def _plotting_modules() -> tuple[ModuleType, ModuleType]:
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


def _save_png(fig: Any, path: Path) -> Path:
    """Save `fig` as PNG atomically (temporary file + os.replace), without a software-version stamp."""
    return atomic_write(
        path,
        lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None}),
    )


def _draw_upper_bound(ax: Any, upper: pd.DataFrame) -> bool:
    """Dashed horizontal line at the upper-bound mean Dice with a ±std band; True if one was drawn."""
    if upper.empty:
        return False
    mean, std = upper["dice_pct"].mean(), upper["dice_pct"].std(ddof=1)
    ax.axhline(mean, color="black", linestyle="--", linewidth=1.2, zorder=1)
    if pd.notna(std):
        ax.axhspan(mean - std, mean + std, color="black", alpha=0.08, linewidth=0, zorder=0)
    return True


def _panel_dice_vs_labeled(ax: Any, sns: ModuleType, runs: pd.DataFrame, palette: Mapping[str, Any]) -> bool:
    """One dataset: per-method mean ± std over seeds (bars), seeds as dots, upper bound as a dashed line."""
    dataset, n_train = runs["dataset"].iloc[0], int(runs["n_train"].iloc[0])
    semi = runs[runs["setting"] != UPPER_BOUND].copy()
    has_upper = _draw_upper_bound(ax, runs[runs["setting"] == UPPER_BOUND])
    counts = sorted(semi["n_labeled"].unique())
    if counts:
        methods = _ordered_methods(semi["method"])
        width = 0.3 if len(methods) > 1 else 0.0
        offsets = {m: width * (i / max(len(methods) - 1, 1) - 0.5) for i, m in enumerate(methods)}
        position = {n: i for i, n in enumerate(counts)}
        semi["x"] = semi["n_labeled"].map(position) + semi["method"].map(offsets)
        common = {"data": semi, "x": "x", "y": "dice_pct", "hue": "method", "hue_order": methods, "palette": palette}
        sns.lineplot(**common, errorbar="sd", err_style="bars", marker="o", err_kws={"capsize": 3}, ax=ax, legend=False)
        sns.scatterplot(**common, s=16, alpha=0.55, linewidth=0, ax=ax, legend=False, zorder=3)
        ax.set_xticks(range(len(counts)), [format_labeled(int(n), n_train) for n in counts])
        ax.set_xlim(-0.5, len(counts) - 0.5)
    ax.set_title(f"{dataset} (training set: {n_train} cases)")
    ax.set_xlabel("Labeled training cases (count, % of training set)")
    ax.set_ylabel("Dice (%)")
    ax.grid(axis="y", alpha=0.3)
    return has_upper


def _method_handles(palette: Mapping[str, Any], methods: Sequence[str], upper: bool) -> list[Any]:
    """Legend handles: one coloured line per method, plus the dashed upper-bound line."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=palette[m], marker="o", label=m) for m in methods]
    if upper:
        handles.append(
            Line2D([], [], color="black", linestyle="--", label="supervised, all labeled\n(upper bound ± std)")
        )
    return handles


def plot_dice_vs_labeled(runs: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the Dice-vs-labeled-count figure (one panel per dataset) to `path` (PNG).

    Args:
        runs: per-run frame (`harness.aggregate.per_run`; Dice as fractions, one row per seed).
        path: destination PNG.

    Returns:
        The path written.
    """
    plt, sns = _plotting_modules()
    data = _with_setting(runs)
    datasets = sorted(data["dataset"].unique())
    methods = _ordered_methods(data.loc[data["setting"] != UPPER_BOUND, "method"])
    palette = dict(zip(methods, sns.color_palette("colorblind", max(len(methods), 1)), strict=False))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.3), squeeze=False)
    try:
        panels = zip(axes[0], datasets, strict=True)
        upper = [_panel_dice_vs_labeled(ax, sns, data[data["dataset"] == d], palette) for ax, d in panels]
        handles = _method_handles(palette, methods, any(upper))
        fig.legend(handles=handles, title="Method", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.suptitle("Test Dice vs labeled count: mean ± std over seeds (bars), individual seeds (dots)")
        fig.tight_layout()
        return _save_png(fig, Path(path))
    finally:
        plt.close(fig)


def _panel_per_case(ax: Any, sns: ModuleType, cases: pd.DataFrame, seed_palette: Mapping[str, Any]) -> None:
    """One labeled count: box plot of per-case Dice per method with the cases as dots coloured by seed."""
    methods = _ordered_methods(cases["method"])
    n_labeled, n_train = int(cases["n_labeled"].iloc[0]), int(cases["n_train"].iloc[0])
    common = {"data": cases, "x": "method", "y": "dice_pct", "order": methods, "ax": ax}
    with warnings.catch_warnings():  # seaborn 0.13.2 passes `vert` to Axes.bxp, deprecated in matplotlib 3.11
        warnings.filterwarnings("ignore", message=r"vert: bool was deprecated", category=DeprecationWarning)
        sns.boxplot(**common, color="0.88", showfliers=False, width=0.6)
    sns.stripplot(**common, hue="seed_label", hue_order=list(seed_palette), palette=seed_palette, size=3.5, jitter=0.2)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    suffix = ": upper bound" if n_labeled == n_train else " labeled"
    ax.set_title(f"{format_labeled(n_labeled, n_train)}{suffix}")
    ax.set_xlabel("Method")
    ax.set_ylabel("Dice (%)")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(axis="y", alpha=0.3)


def plot_dice_per_case(per_case: pd.DataFrame, dataset: str, path: str | os.PathLike) -> Path:
    """Write the per-case Dice distribution of one dataset (one panel per labeled count) to `path` (PNG).

    Args:
        per_case: per-case frame (`harness.aggregate.load_per_case`; Dice as fractions).
        dataset: dataset to plot.
        path: destination PNG.

    Returns:
        The path written.
    """
    plt, sns = _plotting_modules()
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
            _panel_per_case(ax, sns, data[data["n_labeled"] == n], seed_palette)
        handles = [Line2D([], [], color=c, marker="o", linestyle="", label=s) for s, c in seed_palette.items()]
        fig.legend(handles=handles, title="Seed", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.suptitle(f"{dataset}: per-case test Dice (boxes: cases pooled over seeds; dots: cases, coloured by seed)")
        fig.tight_layout()
        return _save_png(fig, Path(path))
    finally:
        plt.close(fig)


def write_figures(runs_df: pd.DataFrame, per_case_df: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Write all figures into `out_dir` (e.g. `results/figures/`).

    Files: `dice_vs_labeled.png` and `dice_per_case_{dataset}.png` for each dataset in `per_case_df`.

    Args:
        runs_df: per-run frame from `harness.aggregate.per_run` (columns `RUN_COLUMNS`).
        per_case_df: per-case frame from `harness.aggregate.load_per_case` (columns `PER_CASE_COLUMNS`).
        out_dir: destination folder, created if needed.

    Returns:
        Paths written, in the order above (datasets sorted by name).
    """
    require_columns(runs_df, RUN_COLUMNS, "runs_df")
    require_columns(per_case_df, PER_CASE_COLUMNS, "per_case_df")
    if runs_df.empty or per_case_df.empty:
        raise ValueError("runs_df, per_case_df: expected at least one row each")
    out = Path(out_dir)
    paths = [plot_dice_vs_labeled(runs_df, out / "dice_vs_labeled.png")]
    for dataset in sorted(per_case_df["dataset"].unique()):
        paths.append(plot_dice_per_case(per_case_df, dataset, out / f"dice_per_case_{dataset}.png"))
    logger.info("wrote %d figures to %s", len(paths), out)
    return paths
