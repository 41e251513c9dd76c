"""The report's provenance page: one row per training run (config hash, method version, commit, torch, device, wall
time, data manifest, and how its cases and checkpoint were chosen: labeled subset, validation cases, selection, split
hash), then each run's resolved run_config.yaml and run_info.json in collapsible blocks. A run_info.json written
before the split and the selection were recorded shows '–' for them.

`write_provenance` writes `report/provenance.html` and the table's CSV beside it (rule `provenance`).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.aggregate import MISSING
from harness.report.table_model import (
    Entry,
    Table,
    format_number,
    html_page,
    is_finite,
    render_csv,
    render_html_fragment,
    write_text_atomic,
)


def _run_record(run_info_path: Path) -> dict[str, Any]:
    """Provenance row of one run from its run_info.json (and the run_config.yaml beside it)."""
    info = json.loads(run_info_path.read_text(encoding="utf-8"))
    config = info.get("config", {})
    packages = info.get("packages", {})
    split = info.get("split") or {}
    selection = info.get("selection") or {}
    return {
        "dataset": config.get("dataset", ""),
        "method": config.get("method", info.get("method", "")),
        "n_labeled": config.get("n_labeled"),
        "seed": config.get("seed"),
        "config_sha256": info.get("config_sha256", ""),
        "method_version": info.get("method_version", ""),
        "git_commit": info.get("git_commit", ""),
        "git_dirty": info.get("git_dirty"),
        "torch": packages.get("torch", ""),
        "device": info.get("gpu_model") or info.get("device", ""),
        "wall_time_s": info.get("wall_time_s"),
        "data_manifest_sha256": info.get("data_manifest_sha256") or "",
        "labeled_subset": config.get("data", {}).get("labeled_subset"),
        "val_cases": len(split["val"]) if "val" in split else None,
        "selection": selection.get("mode"),
        "selection_iteration": selection.get("iteration"),
        "selection_val_dice": selection.get("val_dice"),
        "split_sha256": info.get("split_sha256") or "",
        "run_dir": str(run_info_path.parent),
    }


def provenance_frame(run_info_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One provenance row per run (see `_run_record`), sorted by dataset, labeled count, method order and seed."""
    from harness.report.aggregate import method_rank

    paths = [Path(p) for p in run_info_paths]
    if not paths:
        raise ValueError("run_info_paths: expected at least one run_info.json")
    frame = pd.DataFrame([_run_record(p) for p in paths])
    frame = frame.astype({"val_cases": "Int64", "selection_iteration": "Int64"})  # integers, blank where unrecorded
    frame["_rank"] = frame["method"].map(method_rank)
    frame = frame.sort_values(["dataset", "n_labeled", "_rank", "method", "seed"], kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)


def _text(value: Any) -> str:
    return value if isinstance(value, str) and value else MISSING


def _val_cases(count: Any) -> str:
    """The number of validation cases, 'none', or '–' when the run_info.json does not record its split."""
    if not is_finite(count):
        return MISSING
    return str(int(count)) if count else "none"


def _selection(mode: Any, iteration: Any, val_dice: Any) -> str:
    """'last', 'val (iteration 400, Dice 85.12%)', or '–' when the run_info.json does not record the selection."""
    if mode != "val":
        return _text(mode)
    dice = format_number(100.0 * float(val_dice)) if is_finite(val_dice) else MISSING
    return f"val (iteration {int(iteration)}, Dice {dice}%)"


def build_provenance_table(frame: pd.DataFrame) -> Table:
    """The runs' provenance as a table (hashes shortened; the CSV keeps them in full)."""
    rows = []
    for _, r in frame.iterrows():
        dirty = " (dirty)" if r["git_dirty"] else ""
        rows.append(
            [
                Entry(f"{r['dataset']}/{r['method']}"),
                Entry(str(r["n_labeled"])),
                Entry(str(r["seed"])),
                Entry(str(r["config_sha256"])[:12]),
                Entry(str(r["method_version"])),
                Entry(str(r["git_commit"])[:10] + dirty),
                Entry(str(r["torch"])),
                Entry(str(r["device"])),
                Entry(format_number(r["wall_time_s"], decimals=1)),
                Entry(str(r["data_manifest_sha256"])[:12] or MISSING),
                Entry(_text(r["labeled_subset"])),
                Entry(_val_cases(r["val_cases"])),
                Entry(_selection(r["selection"], r["selection_iteration"], r["selection_val_dice"])),
                Entry(str(r["split_sha256"])[:12] or MISSING),
            ]
        )
    header = (
        "Run",
        "Labeled",
        "Seed",
        "Config sha256",
        "Method version",
        "Git commit",
        "torch",
        "Device",
        "Train wall time (s)",
        "Data manifest sha256",
        "Labeled subset",
        "Val cases",
        "Selection",
        "Split sha256",
    )
    return Table(
        name="provenance",
        title="Provenance of every run",
        caption="One row per training run: its resolved configuration's sha256 (the run's identity), the method "
        "VERSION, the harness commit (dirty = uncommitted changes), torch, the device, the training wall time, the "
        "data manifest's sha256, how the labeled cases were chosen (first: the first N of the list; seeded: drawn per "
        "seed), the validation cases, the checkpoint selection (last, or val: the iteration with the best validation "
        "Dice) and the sha256 of the run's split (– : not recorded by its run_info.json). Each run's resolved "
        "configuration and run_info.json follow below.",
        header=header,
        rows=tuple(tuple(r) for r in rows),
        groups=tuple(range(len(rows))),
        data=frame,
        text_columns=1,
    )


def _details(title: str, text: str) -> str:
    """A collapsible <details> block holding preformatted text."""
    return f"<details><summary>{html.escape(title)}</summary><pre>{html.escape(text)}</pre></details>"


def write_provenance(run_info_paths: Iterable[str | os.PathLike], out_html: str | os.PathLike) -> dict[str, Path]:
    """The report's provenance page: the runs table, then each run's run_config.yaml and run_info.json.

    Args:
        run_info_paths: run_info.json of every run (run_config.yaml is read from the same folder).
        out_html: destination HTML page; a CSV of the table is written beside it (same stem).

    Returns:
        {"html": path, "csv": path}.
    """
    frame = provenance_frame(run_info_paths)
    table = build_provenance_table(frame)
    blocks = [render_html_fragment(table), "<h3>Resolved configuration and provenance per run</h3>"]
    for run_dir in frame["run_dir"]:
        config = Path(run_dir) / "run_config.yaml"
        info = Path(run_dir) / "run_info.json"
        blocks.append(_details(f"{run_dir}/run_config.yaml", config.read_text(encoding="utf-8")))
        blocks.append(_details(f"{run_dir}/run_info.json", info.read_text(encoding="utf-8")))
    out = Path(out_html)
    return {
        "html": write_text_atomic(out, html_page(table.title, blocks)),
        "csv": write_text_atomic(out.with_suffix(".csv"), render_csv(table)),
    }
