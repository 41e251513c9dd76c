"""Tests for the table model and its four renderers, bold-best (harness.report.table_model), the statistics table
(harness.report.comparison_tables) and the provenance page (harness.report.provenance_page); the results table
(harness.report.tables) is tested in test_aggregate.py, the published comparison in test_published.py, the cost table
in test_cost_table.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.report.aggregate import load_per_case, per_cell, per_run
from harness.report.comparison_tables import TableOptions, build_stats_table
from harness.report.provenance_page import build_provenance_table, provenance_frame, write_provenance
from harness.report.table_model import (
    Entry,
    Table,
    format_p,
    mark_best,
    mean_std_entry,
    render_csv,
    render_html,
    render_latex,
    render_markdown,
    write_table,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_aggregate import run_rows, write_runs  # noqa: E402


def small_table() -> Table:
    rows = [
        [Entry("a_1"), Entry("8"), mean_std_entry(0.85, 0.01, scale=100), mean_std_entry(4.0, 0.5)],
        [Entry("b|2"), Entry("8"), mean_std_entry(0.80, float("nan"), scale=100), mean_std_entry(3.0, 0.25)],
        [Entry("c"), Entry("16"), mean_std_entry(0.90, 0.02, scale=100), mean_std_entry(float("nan"), 0.1)],
    ]
    mark_best(rows, [8, 8, 16], 2, True)
    mark_best(rows, [8, 8, 16], 3, False)
    data = pd.DataFrame({"method": ["a_1", "b|2", "c"], "dice_mean": [85.0, 80.0, 90.0]})
    return Table(
        "T_x",
        "Table (T)",
        "Caption with 50% & ±.",
        ("Method", "Labeled", "Dice (%)", "95HD"),
        tuple(tuple(r) for r in rows),
        (8, 8, 16),
        data,
        footer="Footer_1",
    )


def test_entries_and_bold_best_per_group():
    table = small_table()
    assert [e.text for e in table.rows[0][2:]] == ["85.00 ± 1.00", "4.00 ± 0.50"]
    assert table.rows[1][2].text == "80.00 ± –" and table.rows[2][3].text == "–"
    assert [r[2].bold for r in table.rows] == [True, False, False]  # group 16 has one row: not bold
    assert [r[3].bold for r in table.rows] == [False, True, False]  # lower is better; NaN ignored
    rows = [[Entry("1.00")], [Entry("1.00")], [Entry("0.50")]]
    mark_best(rows, [1, 1, 1], 0, True)
    assert [r[0].bold for r in rows] == [True, True, False]  # ties are all bold


def test_render_markdown_latex_html_csv():
    table = small_table()
    md = render_markdown(table).splitlines()
    assert md[0] == "**Table (T).** Caption with 50% & ±."
    assert md[3] == "| :--- | :--- | ---: | ---: |"
    assert md[4] == "| a_1 | 8 | **85.00** ± 1.00 | 4.00 ± 0.50 |"
    assert md[5] == "| b\\|2 | 8 | 80.00 ± – | **3.00** ± 0.25 |"
    assert md[-1] == "Footer_1"
    tex = render_latex(table)
    assert r"\caption{Caption with 50\% \& $\pm$.}" in tex and r"\label{tab:T-x}" in tex
    assert r"a\_1 & 8 & \textbf{85.00} {\scriptsize $\pm$ 1.00} & 4.00 {\scriptsize $\pm$ 0.50} \\" in tex
    assert r"80.00 {\scriptsize $\pm$ --} & \textbf{3.00} {\scriptsize $\pm$ 0.25}" in tex
    assert tex.count(r"\midrule") == 2  # after the header and between the groups 8 and 16
    assert r"\begin{tabular}{llrr}" in tex and r"\bottomrule" in tex
    page = render_html(table)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "http" not in page.split("<body>")[1]
    assert "<td>b|2</td>" in page and "<b>85.00</b> <small>± 1.00</small>" in page
    assert '<tr class="group">' in page and "Caption with 50% &amp; ±." in page
    assert render_csv(table).splitlines() == ["method,dice_mean", "a_1,85.0", "b|2,80.0", "c,90.0"]


def test_write_table_formats(tmp_path):
    written = write_table(small_table(), tmp_path, formats=("md", "html"))
    assert set(written) == {"md", "html"} and written["md"] == tmp_path / "T_x.md"
    assert oct(written["md"].stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
    with pytest.raises(ValueError, match="formats"):
        write_table(small_table(), tmp_path, formats=("docx",))


def test_format_p_and_options():
    assert (format_p(0.04567), format_p(0.0001234), format_p(float("nan"))) == ("0.046", "1.2e-04", "–")
    with pytest.raises(ValueError, match="published_source"):
        TableOptions(published_source="table9")
    with pytest.raises(ValueError, match="alternative"):
        TableOptions(alternative="two_sided")
    with pytest.raises(ValueError, match="n_resamples"):
        TableOptions(n_resamples=10)


# ------------------------------------------------------------------------------------------------ statistics
def stats_frames(tmp_path: Path, methods: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    dice = {"simcvd": [0.9, 0.85, 0.88, 0.92, 0.8], "ua_mt": [0.8, 0.82, 0.85, 0.9, 0.7], "dtc": [0.85] * 5}
    runs = [run_rows("LA", m, 8, 80, s, [d + 0.01 * s for d in dice[m]]) for m in methods for s in (0, 1)]
    per_case = load_per_case(write_runs(tmp_path, runs))
    return per_cell(per_run(per_case)), per_case


def test_stats_table_with_reference(tmp_path):
    cells, per_case = stats_frames(tmp_path, ("ua_mt", "dtc", "simcvd"))
    table = build_stats_table(cells, per_case, "LA", TableOptions(n_resamples=300, alternative="less"))
    data = table.data.set_index("method")
    assert data.loc["simcvd", "is_reference"] and data["n_pairs"].tolist() == [5, 5, 0]
    assert data.loc["ua_mt", "mean_diff"] == pytest.approx(100 * (0.814 - 0.87))  # percentage points
    assert data.loc["ua_mt", "alternative"] == "less" and data.loc["ua_mt", "reference_method"] == "simcvd"
    rows = {r[0].value: [e.value for e in r] for r in table.rows}
    assert rows["simcvd"][5] == "reference" and rows["simcvd"][6:] == ["–"] * 4
    assert rows["ua_mt"][2] == "5" and rows["ua_mt"][5] == "-5.60"
    assert rows["ua_mt"][3] == "81.90" and rows["ua_mt"][4].startswith("[")
    assert "Reference method: simcvd" in table.caption and "(less)" in table.caption
    assert table.header[5] == "Δ vs simcvd"


def test_stats_table_reference_absent_says_so(tmp_path):
    cells, per_case = stats_frames(tmp_path, ("ua_mt", "dtc"))
    table = build_stats_table(cells, per_case, "LA", TableOptions(n_resamples=300))
    assert "The reference method 'simcvd' is not in the results, so no tests were run" in table.caption
    assert "dtc, ua_mt" in table.caption
    assert table.data[["wilcoxon_p", "t_p", "wilcoxon_p_holm", "t_p_holm"]].isna().all().all()
    assert table.data["dice_ci_low"].notna().all()  # the intervals do not need a reference


# ------------------------------------------------------------------------------------------------ provenance
def fake_run(root: Path, method: str, n: int, seed: int, **recorded) -> Path:
    """A run folder; `recorded`: further run_info.json keys (a config's `data`, `split`, `selection`, ...)."""
    run = root / method / f"labeled~{n}" / f"seed~{seed}"
    run.mkdir(parents=True)
    (run / "run_config.yaml").write_text(f"dataset: LA\nmethod: {method}\nn_labeled: {n}\nseed: {seed}\n")
    info = {
        "config": {"dataset": "LA", "method": method, "n_labeled": n, "seed": seed},
        "git_commit": "abcdef1234567",
        "git_dirty": seed == 2,
        "config_sha256": f"{seed:064d}",
        "method_version": 3,
        "device": "cpu",
        "packages": {"torch": "2.13.0+cpu"},
        "wall_time_s": 12.345,
        "data_manifest_sha256": "f" * 64,
    }
    info["config"] |= recorded.pop("config", {})
    (run / "run_info.json").write_text(json.dumps(info | recorded))
    return run / "run_info.json"


def test_write_provenance(tmp_path):
    paths = [
        fake_run(tmp_path, "simcvd", 8, 2),
        fake_run(tmp_path, "supervised", 8, 1),
        fake_run(tmp_path, "dtc", 8, 1),
    ]
    written = write_provenance(paths, tmp_path / "report" / "provenance.html")
    frame = pd.read_csv(written["csv"], dtype={"config_sha256": str})
    assert frame["method"].tolist() == ["supervised", "dtc", "simcvd"]  # paper order
    assert frame["config_sha256"].tolist()[0] == f"{1:064d}"  # the CSV keeps full hashes
    page = written["html"].read_text(encoding="utf-8")
    assert "abcdef1234 (dirty)" in page and ">12.3</td>" in page
    assert page.count("<details>") == 6 and "method: dtc" in page and "&quot;wall_time_s&quot;: 12.345" in page


def test_provenance_split_and_selection_columns(tmp_path):
    """Per run: labeled subset, validation cases, selection (with val: iteration and validation Dice) and the split
    hash, as run_info.json records them (harness.train.loop); '–' for a run_info.json from before they existed."""
    val_split = {"labeled": ["a", "b"], "unlabeled": ["c", "d", "e"], "val": ["f", "g", "h"]}
    paths = [
        fake_run(  # selection on a validation split, seeded labeled subset
            tmp_path,
            "dtc",
            8,
            1,
            config={"data": {"labeled_subset": "seeded", "val": {"count": 3, "seed": 0, "ids": [], "after": 16}}},
            split=val_split,
            split_sha256="a" * 12 + "b" * 52,
            selection={"mode": "val", "iteration": 400, "val_dice": 0.851234, "val_every": 200, "audit_every": 0},
        ),
        fake_run(  # the published protocol, recorded: first N labeled, no validation case, the last checkpoint
            tmp_path,
            "ua_mt",
            8,
            1,
            config={"data": {"labeled_subset": "first", "val": {"count": 0, "seed": 0, "ids": [], "after": 0}}},
            split={"labeled": ["a", "b"], "unlabeled": ["c", "d"], "val": []},
            split_sha256="c" * 64,
            selection={"mode": "last", "iteration": 600, "val_dice": None, "val_every": 0, "audit_every": 100},
        ),
        fake_run(tmp_path, "supervised", 8, 1),  # written before the split and the selection were recorded
    ]
    frame = provenance_frame(paths)
    table = build_provenance_table(frame)
    assert table.header[-4:] == ("Labeled subset", "Val cases", "Selection", "Split sha256")
    shown = {r[0].text: [e.text for e in r[-4:]] for r in table.rows}
    assert shown == {
        "LA/dtc": ["seeded", "3", "val (iteration 400, Dice 85.12%)", "aaaaaaaaaaaa"],
        "LA/ua_mt": ["first", "none", "last", "cccccccccccc"],
        "LA/supervised": ["–", "–", "–", "–"],
    }
    written = write_provenance(paths, tmp_path / "report" / "provenance.html")
    saved = pd.read_csv(written["csv"], dtype={"split_sha256": str}, keep_default_na=False).set_index("method")
    columns = ["labeled_subset", "val_cases", "selection", "selection_iteration", "selection_val_dice", "split_sha256"]
    assert saved.loc["dtc", columns].astype(str).tolist() == [
        "seeded",
        "3",
        "val",
        "400",
        "0.851234",
        "a" * 12 + "b" * 52,
    ]
    assert saved.loc["ua_mt", columns].astype(str).tolist() == ["first", "0", "last", "600", "", "c" * 64]
    assert saved.loc["supervised", columns].astype(str).tolist() == [""] * 6
    assert "val (iteration 400, Dice 85.12%)" in written["html"].read_text(encoding="utf-8")
