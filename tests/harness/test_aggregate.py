"""harness.report.aggregate: hand-computed per-run means, seed mean ± sample std, order, renderers, summary.json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report.aggregate import PER_CASE_COLUMNS, load_per_case, per_cell, per_run
from harness.report.table_model import format_labeled, format_mean_std, render_latex, render_markdown
from harness.report.tables import build_table, write_tables

NAN = float("nan")
SPACING_MM = 0.5  # per-case *_mm values = voxel values * 0.5 in these fixtures


def run_rows(
    dataset, method, n_labeled, n_train, seed, dice, *, jaccard=None, hd95=None, asd=None, empty=None, policy="nan"
):
    """Per-case rows of one run (three cases unless the lists are longer)."""
    n = len(dice)
    jaccard = jaccard if jaccard is not None else [d / (2 - d) for d in dice]
    hd95 = hd95 if hd95 is not None else [3.0] * n
    asd = asd if asd is not None else [1.0] * n
    empty = empty if empty is not None else [0] * n
    return [
        {
            "dataset": dataset,
            "method": method,
            "n_labeled": n_labeled,
            "n_train": n_train,
            "seed": seed,
            "case": f"case{i:04d}",
            "dice": dice[i],
            "jaccard": jaccard[i],
            "hd95": hd95[i],
            "asd": asd[i],
            "hd95_mm": hd95[i] * SPACING_MM,
            "asd_mm": asd[i] * SPACING_MM,
            "empty_pred": empty[i],
            "empty_pred_policy": policy,
            "config_sha256": f"cfg-{method}-{n_labeled}-s{seed}",
            "method_version": "1",
            "git_commit": "0123abc",
        }
        for i in range(n)
    ]


def la_rows() -> list[list[dict]]:
    """LA (n_train 80): supervised/mean_teacher at 8 and 16, three more methods at 16, the upper bound; 2 seeds."""
    runs = [
        run_rows(
            "LA", "supervised", 8, 80, 0, [0.70, 0.80, 0.90], jaccard=[0.5, 0.6, 0.7], hd95=[4, 6, 8], asd=[1, 2, 3]
        ),
        run_rows(
            "LA", "supervised", 8, 80, 1, [0.85, 0.90, 0.95], jaccard=[0.7, 0.8, 0.9], hd95=[2, 4, 6], asd=[1, 1, 1]
        ),
        # seed 0 has an empty prediction on case 2: Dice 0, distances NaN (policy "nan")
        run_rows("LA", "mean_teacher", 8, 80, 0, [0.8, 0.9, 0.0], hd95=[2, 4, NAN], asd=[1, 3, NAN], empty=[0, 0, 1]),
        run_rows("LA", "mean_teacher", 8, 80, 1, [0.9, 0.9, 0.9], hd95=[2, 2, 2], asd=[1, 1, 1]),
    ]
    for method in ("zz_new", "simcvd", "aaa_custom", "mean_teacher", "supervised"):
        runs += [run_rows("LA", method, 16, 80, s, [0.85, 0.86, 0.87]) for s in (0, 1)]
    runs += [run_rows("LA", "supervised", 80, 80, s, [0.90, 0.91, 0.92]) for s in (0, 1)]
    return runs


def pancreas_rows() -> list[list[dict]]:
    """Pancreas (n_train 62): supervised and mean_teacher at 6, the upper bound; 3 seeds."""
    runs = []
    for seed in (0, 1, 2):
        runs.append(run_rows("Pancreas", "supervised", 6, 62, seed, [0.5, 0.6, 0.7]))
        runs.append(run_rows("Pancreas", "mean_teacher", 6, 62, seed, [0.6, 0.6, 0.6 + 0.01 * seed]))
        runs.append(run_rows("Pancreas", "supervised", 62, 62, seed, [0.8, 0.8, 0.8]))
    return runs


def write_runs(tmp_path: Path, runs: list[list[dict]]) -> list[Path]:
    """One metrics_per_case.csv per run, as the evaluate rule writes them."""
    paths = []
    for i, rows in enumerate(runs):
        path = tmp_path / "runs" / f"run{i:03d}" / "metrics_per_case.csv"
        path.parent.mkdir(parents=True)
        pd.DataFrame(rows, columns=list(PER_CASE_COLUMNS)).to_csv(path, index=False)
        paths.append(path)
    return paths


@pytest.fixture
def la_paths(tmp_path):
    return write_runs(tmp_path, la_rows())


@pytest.fixture
def cells(la_paths):
    return per_cell(per_run(load_per_case(la_paths)))


def cell(cells: pd.DataFrame, method: str, n_labeled: int) -> pd.Series:
    match = cells[(cells["method"] == method) & (cells["n_labeled"] == n_labeled)]
    assert len(match) == 1
    return match.iloc[0]


# --------------------------------------------------------------------------------------------------- loading
def test_load_per_case_keeps_ids_and_hashes_as_text(tmp_path):
    rows = run_rows("LA", "supervised", 8, 80, 0, [0.7, 0.8, 0.9])
    for row in rows:
        row["git_commit"] = "0012345"  # all digits: must not become the integer 12345
    df = load_per_case(write_runs(tmp_path, [rows]))
    assert list(df.columns) == list(PER_CASE_COLUMNS)
    assert df["case"].tolist() == ["case0000", "case0001", "case0002"]
    assert df["git_commit"].tolist() == ["0012345"] * 3
    assert df["n_labeled"].dtype == np.int64 and df["empty_pred"].dtype == np.int64


def test_load_per_case_missing_column_names_file_and_column(tmp_path):
    paths = write_runs(tmp_path, la_rows()[:2])
    pd.read_csv(paths[1]).drop(columns=["hd95_mm"]).to_csv(paths[1], index=False)
    with pytest.raises(ValueError, match=r"run001.*metrics_per_case\.csv.*'hd95_mm'"):
        load_per_case(paths)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("dice", 85.0, "fraction"),  # percent instead of fraction
        ("hd95", -1.0, "hd95"),
        ("empty_pred", 2, "empty_pred"),
        ("n_labeled", 81, "n_labeled <= n_train"),
        ("seed", "x", "non-numeric"),
    ],
)
def test_load_per_case_rejects_bad_values(tmp_path, column, value, message):
    rows = run_rows("LA", "supervised", 8, 80, 0, [0.7, 0.8, 0.9])
    rows[1][column] = value
    with pytest.raises(ValueError, match=message):
        load_per_case(write_runs(tmp_path, [rows]))


def test_load_per_case_rejects_duplicates_and_no_paths(tmp_path):
    paths = write_runs(tmp_path, la_rows()[:1])
    with pytest.raises(ValueError, match="case0000.*LA/supervised/labeled~8/seed~0"):
        load_per_case([paths[0], paths[0]])
    with pytest.raises(ValueError, match="paths"):
        load_per_case([])


# ------------------------------------------------------------------------------------------------------ per run
def test_per_run_means_skip_nan_distances_and_count_empty(la_paths):
    runs = per_run(load_per_case(la_paths))
    assert len(runs) == 16
    mt = runs[(runs["method"] == "mean_teacher") & (runs["n_labeled"] == 8)].set_index("seed")
    assert mt.loc[0, "dice"] == pytest.approx((0.8 + 0.9 + 0.0) / 3)
    assert mt.loc[0, "hd95"] == pytest.approx(3.0)  # mean of 2 and 4; the NaN is skipped, not counted as 0
    assert mt.loc[0, "asd_mm"] == pytest.approx(1.0)  # (0.5 + 1.5) / 2
    assert mt.loc[0, "n_empty_pred"] == 1 and mt.loc[1, "n_empty_pred"] == 0
    assert mt.loc[0, "n_cases"] == 3
    sup = runs[(runs["method"] == "supervised") & (runs["n_labeled"] == 8)].set_index("seed")
    assert sup["dice"].tolist() == pytest.approx([0.80, 0.90])
    assert sup.loc[0, "config_sha256"] == "cfg-supervised-8-s0"


def test_per_run_provenance_must_be_unique_within_run(tmp_path):
    rows = run_rows("LA", "supervised", 8, 80, 0, [0.7, 0.8, 0.9])
    rows[2]["empty_pred_policy"] = "worst_case"
    with pytest.raises(ValueError, match="empty_pred_policy.*LA/supervised/labeled~8/seed~0"):
        per_run(load_per_case(write_runs(tmp_path, [rows])))


# ----------------------------------------------------------------------------------------------------- per cell
def test_per_cell_mean_and_sample_std_over_seeds(cells):
    sup = cell(cells, "supervised", 8)
    assert sup["dice_mean"] == pytest.approx(0.85)
    assert sup["dice_std"] == pytest.approx(math.sqrt(2 * 0.05**2 / 1))  # ddof=1: 0.0707..., not 0.05
    assert sup["jaccard_std"] == pytest.approx(math.sqrt(2 * 0.1**2))
    assert (sup["hd95_mean"], sup["asd_mean"]) == pytest.approx((5.0, 1.5))
    assert sup["hd95_mm_mean"] == pytest.approx(2.5)
    assert (sup["n_seeds"], sup["seeds"], sup["n_cases"]) == (2, "0;1", 6)
    assert sup["config_sha256"] == "cfg-supervised-8-s0;cfg-supervised-8-s1"
    mt = cell(cells, "mean_teacher", 8)
    assert mt["hd95_mean"] == pytest.approx((3.0 + 2.0) / 2)
    assert mt["n_empty_pred"] == 1
    assert cell(cells, "supervised", 80)["labeled_pct"] == pytest.approx(100.0)


def test_per_cell_settings_and_paper_row_order(cells):
    got = list(zip(cells["n_labeled"], cells["method"], cells["setting"], strict=True))
    assert got == [
        (8, "supervised", "lower bound"),
        (8, "mean_teacher", ""),
        (16, "supervised", "lower bound"),
        (16, "mean_teacher", ""),
        (16, "simcvd", ""),
        (16, "aaa_custom", ""),  # unknown methods after known ones, alphabetically
        (16, "zz_new", ""),
        (80, "supervised", "upper bound"),
    ]


def test_per_cell_rejects_inconsistent_n_train(tmp_path):
    runs = [run_rows("LA", "supervised", 8, 80, 0, [0.8] * 3), run_rows("LA", "mean_teacher", 8, 70, 0, [0.8] * 3)]
    with pytest.raises(ValueError, match="n_train"):
        per_cell(per_run(load_per_case(write_runs(tmp_path, runs))))


# --------------------------------------------------------------------------------------------------- formatting
def test_format_helpers():
    assert format_mean_std(0.85, 0.0707106781, scale=100) == "85.00 ± 7.07"
    assert format_mean_std(5.0, NAN) == "5.00 ± –"
    assert format_mean_std(NAN, NAN) == "–"
    assert format_labeled(8, 80) == "8 (10%)"
    assert format_labeled(12, 62) == "12 (19%)"
    assert format_labeled(1, 8) == "1 (13%)"  # 12.5 rounds half up


def test_markdown_table(cells):
    text = render_markdown(build_table(cells, "LA", "voxel"))
    lines = text.splitlines()
    caption = lines[0]
    for phrase in ("voxel", "mean ± std over seeds (ddof=1)", "2 seeds per cell", "policy: nan"):
        assert phrase in caption
    header = "| Method | Labeled | Dice (%) | Jaccard (%) | 95HD (voxel) | ASD (voxel) | Seeds | Empty preds |"
    assert lines[2] == header
    rows = [line for line in lines[4:] if line.startswith("|")]
    # best mean per column within a labeled count in bold (ties: both); the lone upper-bound row is never bold
    assert rows[0] == (
        "| supervised (lower bound) | 8 (10%) | **85.00** ± 7.07 | **70.00** ± 14.14 | 5.00 ± 1.41 | **1.50** ± 0.71 "
        "| 2 | 0 |"
    )
    assert rows[1].startswith("| mean_teacher | 8 (10%) | 73.33 ± ") and rows[1].endswith(
        " | **2.50** ± 0.71 | **1.50** ± 0.71 | 2 | 1 |"
    )
    assert rows[-1].startswith("| supervised (upper bound) | 80 (100%) | 91.00 ± 0.00 |")
    assert "**" not in rows[-1]
    assert len(rows) == 8


def test_mm_table_uses_mm_columns(cells):
    table = build_table(cells, "LA", "mm")
    assert table.header[4:6] == ("95HD (mm)", "ASD (mm)")
    assert tuple(e.text for e in table.rows[0][4:6]) == ("2.50 ± 0.71", "0.75 ± 0.35")
    assert "in mm" in table.caption


def test_latex_table(cells):
    tex = render_latex(build_table(cells, "LA", "voxel"))
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\begin{tabular}{llrrrrrr}"):
        assert rule in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"mean\_teacher & 8 (10\%)" in tex
    assert r"\textbf{85.00} {\scriptsize $\pm$ 7.07}" in tex  # best value bold, the spread in small type
    assert r"73.33 {\scriptsize $\pm$ 23.57}" in tex
    assert "±" not in tex and "–" not in tex
    assert re.search(r"(?<!\\)_", tex) is None  # every underscore escaped
    assert r"Method & Labeled & Dice (\%) & Jaccard (\%) & 95HD (voxel) & ASD (voxel) & Seeds & Empty preds \\" in tex
    assert tex.count(r"\midrule") == 3  # after the header, between 8/16 and between 16/80


def test_single_seed_std_is_dash(tmp_path):
    runs = [run_rows("LA", "supervised", 8, 80, 0, [0.7, 0.8, 0.9]), run_rows("LA", "supervised", 80, 80, 0, [0.9] * 3)]
    written = write_tables(write_runs(tmp_path, runs), tmp_path / "out")
    md = written["tables/LA_voxel.md"].read_text(encoding="utf-8")
    assert "| supervised (lower bound) | 8 (10%) | 80.00 ± – |" in md
    assert "1 seed per cell" in md
    assert r"80.00 {\scriptsize $\pm$ --}" in written["tables/LA_voxel.tex"].read_text(encoding="utf-8")
    summary = json.loads(written["summary.json"].read_text(encoding="utf-8"))
    record = summary["cells"]["LA"]["supervised@labeled~8"]
    assert record["dice_std"] is None and record["dice_mean"] == pytest.approx(80.0)
    table = pd.read_csv(written["tables/LA_voxel.csv"])
    assert np.isnan(table.loc[0, "dice_std"])


# -------------------------------------------------------------------------------------------- files + summary
def _reject_constant(token):
    raise AssertionError(f"non-standard JSON token {token}")


def test_write_tables_files_csv_and_summary(tmp_path):
    paths = write_runs(tmp_path, la_rows() + pancreas_rows())
    out = tmp_path / "results"
    written = write_tables(paths, out, provenance={"torch": "2.5.1", "la_source": "h5"})
    kinds = ("voxel", "mm", "published", "stats")
    expected = {f"tables/{d}_{k}.{e}" for d in ("LA", "Pancreas") for k in kinds for e in ("md", "csv", "tex", "html")}
    assert set(written) == expected | {"runs.csv", "summary.json"}
    assert all(path == out / rel and path.stat().st_size > 0 for rel, path in written.items())
    assert not list(out.rglob("*.tmp"))

    table = pd.read_csv(written["tables/LA_voxel.csv"], dtype={"git_commit": str})
    sup = table[(table["method"] == "supervised") & (table["n_labeled"] == 8)].iloc[0]
    assert (sup["dice_mean"], sup["dice_std"]) == pytest.approx((85.0, 7.0710678))
    assert (sup["hd95_mean"], sup["distance_unit"], sup["setting"]) == (pytest.approx(5.0), "voxel", "lower bound")
    assert sup["config_sha256"] == "cfg-supervised-8-s0;cfg-supervised-8-s1" and sup["git_commit"] == "0123abc"
    assert table["method"].tolist()[-1] == "supervised" and table["setting"].tolist()[-1] == "upper bound"
    assert pd.read_csv(written["tables/LA_mm.csv"])["hd95_mean"].iloc[0] == pytest.approx(2.5)
    assert len(pd.read_csv(written["runs.csv"])) == 16 + 9

    summary = json.loads(written["summary.json"].read_text(encoding="utf-8"), parse_constant=_reject_constant)
    assert summary["provenance"] == {"torch": "2.5.1", "la_source": "h5"}
    assert set(summary["cells"]) == {"LA", "Pancreas"}
    mt = summary["cells"]["LA"]["mean_teacher@labeled~8"]
    assert mt["n_empty_pred"] == 1 and mt["n_seeds"] == 2 and isinstance(mt["n_seeds"], int)
    assert mt["hd95_mean"] == pytest.approx(2.5) and isinstance(mt["dice_mean"], float)
    pan = summary["cells"]["Pancreas"]["mean_teacher@labeled~6"]
    assert pan["dice_std"] == pytest.approx(100 * np.std([0.6, 0.6 + 0.01 / 3, 0.6 + 0.02 / 3], ddof=1))
    assert summary["cells"]["Pancreas"]["supervised@labeled~62"]["setting"] == "upper bound"
    for record in (r for ds in summary["cells"].values() for r in ds.values()):
        assert all(v is None or isinstance(v, int | float | str) for v in record.values())  # flat leaves
        assert isinstance(record["dice_mean"], float) and isinstance(record["n_labeled"], int)
    assert len(summary["runs"]) == 25
    run = summary["runs"][0]
    assert {"config_sha256", "method_version", "git_commit", "seed", "dice"} <= set(run)
    assert isinstance(run["seed"], int) and 0 <= run["dice"] <= 100


def test_write_tables_rejects_bad_provenance(la_paths, tmp_path):
    with pytest.raises(ValueError, match="provenance"):
        write_tables(la_paths, tmp_path / "out", provenance={"x": NAN})
    with pytest.raises(ValueError, match="provenance"):
        write_tables(la_paths, tmp_path / "out", provenance=["not", "a", "mapping"])
