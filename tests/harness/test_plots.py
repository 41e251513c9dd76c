"""Tests for harness.plots: the figure files exist, are valid PNGs, scale with the panels, and figures get closed."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.aggregate import PER_CASE_COLUMNS, per_run
from harness.plots import write_figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def per_case_frame(specs: list[tuple[str, str, int, int]], seeds=(0, 1, 2), n_cases: int = 3) -> pd.DataFrame:
    """Per-case rows for (dataset, method, n_labeled, n_train) specs; Dice depends on method, count, seed and case."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset, method, n_labeled, n_train in specs:
        for seed in seeds:
            for case in range(n_cases):
                dice = float(np.clip(0.5 + 0.4 * n_labeled / n_train + 0.05 * rng.standard_normal(), 0, 1))
                empty = int(case == 0 and seed == 0 and method == "mean_teacher")
                dice = 0.0 if empty else dice
                hd95 = np.nan if empty else 3.0 + case
                rows.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "n_labeled": n_labeled,
                        "n_train": n_train,
                        "seed": seed,
                        "case": f"c{case}",
                        "dice": dice,
                        "jaccard": dice / (2 - dice),
                        "hd95": hd95,
                        "asd": hd95 / 3,
                        "hd95_mm": hd95 * 0.625,
                        "asd_mm": hd95 * 0.625 / 3,
                        "empty_pred": empty,
                        "empty_pred_policy": "nan",
                        "config_sha256": f"cfg{seed}",
                        "method_version": "1",
                        "git_commit": "abc",
                    }
                )
    return pd.DataFrame(rows, columns=list(PER_CASE_COLUMNS))


def grid(dataset: str, n_train: int, counts: tuple[int, ...]) -> list[tuple[str, str, int, int]]:
    """Supervised and mean_teacher at each count, plus the supervised upper bound."""
    specs = [(dataset, m, n, n_train) for n in counts for m in ("supervised", "mean_teacher")]
    return specs + [(dataset, "supervised", n_train, n_train)]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_write_figures_two_datasets(tmp_path):
    import matplotlib.pyplot as plt

    per_case = per_case_frame(grid("LA", 80, (8, 16)) + grid("Pancreas", 62, (6, 12)))
    paths = write_figures(per_run(per_case), per_case, tmp_path / "figures")
    names = ["dice_vs_labeled.png", "dice_per_case_LA.png", "dice_per_case_Pancreas.png"]
    assert paths == [tmp_path / "figures" / n for n in names]
    for path in paths:
        width, height = png_size(path)
        assert width > 400 and height > 200
        assert path.stat().st_size > 10_000
    # three panels (8, 16, upper bound 80) side by side: wider than tall
    width, height = png_size(paths[1])
    assert width > 1.5 * height
    assert plt.get_fignums() == []  # every figure closed
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(names)  # no temporary files left


def test_dice_vs_labeled_grows_with_datasets(tmp_path):
    one = per_case_frame(grid("LA", 80, (8, 16)))
    two = per_case_frame(grid("LA", 80, (8, 16)) + grid("Pancreas", 62, (6, 12)))
    width_one, _ = png_size(write_figures(per_run(one), one, tmp_path / "one")[0])
    width_two, _ = png_size(write_figures(per_run(two), two, tmp_path / "two")[0])
    assert width_two > 1.5 * width_one  # one panel per dataset


def test_write_figures_single_seed_and_upper_bound_only(tmp_path):
    per_case = per_case_frame([("LA", "supervised", 80, 80)], seeds=(0,))
    paths = write_figures(per_run(per_case), per_case, tmp_path)
    assert [p.name for p in paths] == ["dice_vs_labeled.png", "dice_per_case_LA.png"]
    for path in paths:
        png_size(path)


def test_write_figures_validates_columns(tmp_path):
    per_case = per_case_frame(grid("LA", 80, (8,)))
    with pytest.raises(ValueError, match="runs_df.*'n_empty_pred'"):
        write_figures(per_run(per_case).drop(columns=["n_empty_pred"]), per_case, tmp_path)
    with pytest.raises(ValueError, match="per_case_df.*'dice'"):
        write_figures(per_run(per_case), per_case.drop(columns=["dice"]), tmp_path)


def test_import_has_no_pyplot_side_effect():
    import subprocess

    code = "import sys, harness.plots; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
