"""Ablation tables and sweep figures (docs/ablations.md).

For every method that has variants in the results (`<method>@<variant>` rows), one table per dataset: per labeled
count, one row per variant with its overrides, Dice mean ± std over seeds, the paired per-case difference to the base
method with the harness's tests (`harness.report.stats.compare_to_reference`, Holm within the table's labeled count),
95HD and ASD, and the published value the run measured where one exists (`harness.report.ablation_published`, joined
by configuration). Methods without variants that have a published row in the same ablation tables (SimCVD's
mean-teacher baseline) are added as baseline rows. Each swept key gets a figure: Dice against the key's value, one dot
per seed, the mean as a line, the published values as markers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.config import VARIANT_SEPARATOR, same_value
from harness.report.ablation_published import load_ablation_published, published_for, source_label
from harness.report.aggregate import load_per_case, per_cell, per_run
from harness.report.plots import plotting_modules, save_figure
from harness.report.stats import compare_to_reference
from harness.report.table_model import MISSING, Entry, Table, format_number, format_p, mean_std_entry, write_table

logger = logging.getLogger(__name__)

HEADER = (
    "Variant",
    "Overrides",
    "Labeled",
    "Dice (%)",
    "Δ Dice vs base",
    "p (Wilcoxon, Holm)",
    "95HD (voxel)",
    "ASD (voxel)",
    "Seeds",
    "Published Dice (%)",
    "Published in",
)


@dataclass(frozen=True)
class RunSetting:
    """What a grid entry ran with (from its run_config.yaml): base method, variant overrides, effective Config."""

    dataset: str
    method: str
    base: str
    variant_overrides: Mapping[str, Any]
    method_config: Mapping[str, Any]

    def as_match(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "dataset": self.dataset,
            "method_config": self.method_config,
            "variant_overrides": self.variant_overrides,
        }


def read_settings(run_configs: Iterable[str | os.PathLike]) -> dict[tuple[str, str], RunSetting]:
    """(dataset, method) → its `RunSetting`, from the runs' run_config.yaml files (all seeds agree)."""
    settings: dict[tuple[str, str], RunSetting] = {}
    for path in run_configs:
        raw = yaml.safe_load(Path(path).read_text())
        method = raw["method"]
        setting = RunSetting(
            raw["dataset"],
            method,
            method.split(VARIANT_SEPARATOR, 1)[0],
            raw.get("variant_overrides") or {},
            raw.get("method_config") or {},
        )
        settings.setdefault((setting.dataset, method), setting)
    return settings


def ablation_bases(methods: Iterable[str]) -> list[str]:
    """Base methods with at least one variant among `methods`, in order of appearance."""
    return list(dict.fromkeys(m.split(VARIANT_SEPARATOR, 1)[0] for m in methods if VARIANT_SEPARATOR in m))


def _family(base: str, methods: Sequence[str], settings: Mapping, dataset: str, published: pd.DataFrame) -> list[str]:
    """Rows of one ablation table, in order: baselines with a published ablation row, the base, its variants."""
    own = [m for m in methods if m == base or m.startswith(base + VARIANT_SEPARATOR)]
    tables = set(published.loc[published["method_key"] == base, "table"])
    in_tables = published[published["table"].isin(tables)]
    baselines = [
        m
        for m in methods
        if VARIANT_SEPARATOR not in m
        and m != base
        and (dataset, m) in settings
        and (in_tables["method_key"] == m).any()
    ]
    return baselines + own


def _overrides_text(setting: RunSetting | None) -> str:
    if setting is None or not setting.variant_overrides:
        return MISSING
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in setting.variant_overrides.items())


def _row(cell: pd.Series, test: pd.Series | None, setting: RunSetting | None, hit: pd.Series | None) -> list[Entry]:
    is_base = test is not None and bool(test["is_reference"])
    delta = MISSING if test is None or is_base else format_number(100 * test["mean_diff"], signed=True)
    p = MISSING if test is None or is_base else format_p(test["wilcoxon_p_holm"])
    return [
        Entry(cell["method"] + (" (base)" if is_base else "")),
        Entry(_overrides_text(setting)),
        Entry(str(cell["n_labeled"])),
        mean_std_entry(cell["dice_mean"], cell["dice_std"], scale=100),
        Entry(delta),
        Entry(p),
        mean_std_entry(cell["hd95_mean"], cell["hd95_std"]),
        mean_std_entry(cell["asd_mean"], cell["asd_std"]),
        Entry(str(cell["n_seeds"])),
        Entry(MISSING if hit is None else format_number(hit["dice"])),
        Entry("" if hit is None else hit["table"]),
    ]


def build_ablation_table(
    per_case: pd.DataFrame, base: str, dataset: str, settings: Mapping, published: pd.DataFrame, methods: Sequence[str]
) -> Table:
    """The ablation table of `base` on `dataset` (see the module docstring)."""
    family = _family(base, methods, settings, dataset, published)
    rows_in = per_case[(per_case["dataset"] == dataset) & per_case["method"].isin(family)]
    cells = per_cell(per_run(rows_in))
    tests = compare_to_reference(rows_in, reference=base).set_index(["method", "n_labeled"])
    rows, groups, data = [], [], []
    for n_labeled in sorted(cells["n_labeled"].unique()):
        for method in family:
            found = cells[(cells["method"] == method) & (cells["n_labeled"] == n_labeled)]
            if found.empty:
                continue
            cell, setting = found.iloc[0], settings.get((dataset, method))
            test = tests.loc[(method, n_labeled)] if (method, n_labeled) in tests.index else None
            hit = published_for(setting.as_match(), int(n_labeled), published) if setting else None
            rows.append(tuple(_row(cell, test, setting, hit)))
            groups.append(int(n_labeled))
            data.append([entry.text for entry in rows[-1]])
    caption = (
        f"Ablation of {base} on {dataset}: mean ± std over seeds of per-run means over the test cases; "
        f"Δ = mean per-case Dice difference to {base} (points), Wilcoxon signed-rank p, Holm-corrected per "
        f"labeled count. Published: {source_label()}, joined by configuration."
    )
    return Table(
        name=f"ablation_{base}_{dataset}",
        title=f"Ablation ({base}, {dataset})",
        caption=caption,
        header=HEADER,
        rows=tuple(rows),
        groups=tuple(groups),
        data=pd.DataFrame(data, columns=list(HEADER)),
        text_columns=3,
    )


def sweep_rows(per_case: pd.DataFrame, settings: Mapping, base: str, key: str, dataset: str) -> pd.DataFrame:
    """Per-run mean Dice of the base run and of the variants that change `key` only, with the key's value.

    Returns columns method, n_labeled, seed, value, dice (fraction).
    """
    runs = per_run(per_case[per_case["dataset"] == dataset])
    rows = []
    for _, run in runs.iterrows():
        setting = settings.get((dataset, run["method"]))
        if setting is None or setting.base != base or set(setting.variant_overrides) - {key}:
            continue
        if key in setting.method_config:
            rows.append(
                {
                    "method": run["method"],
                    "n_labeled": int(run["n_labeled"]),
                    "seed": int(run["seed"]),
                    "value": setting.method_config[key],
                    "dice": float(run["dice"]),
                }
            )
    return pd.DataFrame(rows, columns=["method", "n_labeled", "seed", "value", "dice"])


def published_sweep(published: pd.DataFrame, base: str, key: str, dataset: str) -> pd.DataFrame:
    """Published (n_labeled, value, dice %) of the rows that vary `key` alone."""
    rows = []
    for _, row in published[(published["method_key"] == base) & (published["dataset_key"] == dataset)].iterrows():
        overrides = json.loads(row["overrides"])
        if list(overrides) == [key]:
            rows.append({"n_labeled": int(row["n_labeled"]), "value": overrides[key], "dice": float(row["dice"])})
    return pd.DataFrame(rows, columns=["n_labeled", "value", "dice"])


def plot_sweep(points: pd.DataFrame, published: pd.DataFrame, title: str, key: str, path: Path) -> list[Path]:
    """Dice (%) against the swept value: seeds as dots, their mean as a line per labeled count, published markers.

    Values are placed at equal spacing in sorted order (the paper's sweeps are on log-like grids)."""
    plt, _ = plotting_modules()
    values = sorted({*points["value"], *published["value"]}, key=float)
    x_of = {v: i for i, v in enumerate(values)}
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for n_labeled, group in points.groupby("n_labeled"):
        xs = [x_of[_key_of(values, v)] for v in group["value"]]
        ax.scatter(xs, 100 * group["dice"], s=14, alpha=0.6, label=f"seeds, {n_labeled} labeled")
        means = group.groupby("value")["dice"].mean()
        ax.plot(
            [x_of[_key_of(values, v)] for v in means.index],
            100 * means.to_numpy(),
            marker="o",
            label=f"mean, {n_labeled} labeled",
        )
    for n_labeled, group in published.groupby("n_labeled"):
        ax.scatter(
            [x_of[_key_of(values, v)] for v in group["value"]],
            group["dice"],
            marker="*",
            s=90,
            color="black",
            label=f"published, {n_labeled} labeled",
            zorder=3,
        )
    ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set(xlabel=key, ylabel="Dice (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = save_figure(fig, path)
    plt.close(fig)
    return paths


def _key_of(values: Sequence[Any], value: Any) -> Any:
    """The entry of `values` equal to `value` as a configured value (0 and 0.0 alike)."""
    return next(v for v in values if same_value(v, value))


def write_ablation(
    per_case_paths: Iterable[str | os.PathLike],
    run_configs: Iterable[str | os.PathLike],
    tables_dir: str | os.PathLike,
    figures_dir: str | os.PathLike,
    *,
    methods: Sequence[str],
    sweeps: Sequence[str] = (),
    published: pd.DataFrame | None = None,
) -> list[Path]:
    """Every ablation table and sweep figure of the results; `methods` in grid order, `sweeps` as `<base>:<key>`."""
    per_case = load_per_case([Path(p) for p in per_case_paths])
    settings = read_settings(run_configs)
    published = load_ablation_published() if published is None else published
    written: list[Path] = []
    for dataset in sorted(per_case["dataset"].unique()):
        for base in ablation_bases(methods):
            table = build_ablation_table(per_case, base, dataset, settings, published, methods)
            written += write_table(table, tables_dir).values()
        for item in sweeps:
            base, key = item.split(":", 1)
            points = sweep_rows(per_case, settings, base, key, dataset)
            title = f"{base}: {key} sweep ({dataset})"
            figure = Path(figures_dir) / f"sweep_{base}_{key}_{dataset}.png"
            written += plot_sweep(points, published_sweep(published, base, key, dataset), title, key, figure)
    logger.info("wrote %d ablation files", len(written))
    return written
