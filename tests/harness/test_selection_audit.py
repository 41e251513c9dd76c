"""Tests for the test-set selection audit (harness.report.selection_audit).

Fake run folders hold hand-written `test_curve.csv`, `val_curve.csv` (selection `val`), `run_info.json` and
`metrics_per_case.csv` in the formats the training job (`harness.train.monitor.write_curve`,
`harness.train.loop.selection_record`) and the evaluate job (`harness.evaluate.score`) write. Every number of the
audit is recomputed here from the curve files read back with the csv module: per run the mean test Dice over the
cases at each iteration, the best (first of tied maxima) over the iterations, the reported iteration (the last, or
the first best mean validation Dice with selection `val`).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config import sha256_of
from harness.evaluate.score import PER_CASE_COLUMNS
from harness.report import plots
from harness.report import selection_audit as sa
from harness.report.outputs import FIGURES, TABLE_FORMATS, TABLES, selection_audit_figure, selection_audit_table
from harness.report.stats import paired_tests
from harness.report.table_model import format_p
from harness.run.folder import METRICS_CSV, RUN_INFO, TEST_CURVE, VAL_CURVE, RunId, run_folder

CASES = ("case01", "case02", "case03", "case04", "case05")
TRAIN = tuple(f"tr{k:02d}" for k in range(1, 17))
VAL_CASES = ("tr15", "tr16")
ITERATIONS = (100, 200, 300, 400)  # report.selection_audit.every = 100, 400 iterations
VAL_ITERATIONS = (200, 400)  # protocol.val_every = 200 (the test cases are scored there too)
#: The val-selected iteration of each seed (selection `val`): not always the last one.
SELECTED = {1: 200, 2: 400, 3: 200}
#: The grid: dtc and ua_mt (table order ua_mt first, not alphabetical) × 4, 8 labeled × 3 and 2 seeds.
GRID = [("ua_mt", n, s) for n in (4, 8) for s in (1, 2, 3)] + [("dtc", n, s) for n in (4, 8) for s in (1, 2)]
NAMES = ("reported", "last", "val", "best")


@dataclass(frozen=True)
class Spec:
    dataset: str
    method: str
    n: int
    seed: int
    mode: str = "last"


def write_curve(path: Path, curve: dict[int, dict[str, float]]) -> None:
    """As `harness.train.monitor.write_curve`: iteration,case,dice with the float's repr."""
    lines = ["iteration,case,dice", *(f"{it},{c},{d!r}" for it, row in curve.items() for c, d in row.items())]
    path.write_text("\n".join(lines) + "\n")


def write_run(bench: Path, spec: Spec, test: dict[int, dict[str, float]] | None = None) -> Path:
    """One run folder: random test (and validation) curves unless `test` is given; the run's metrics_per_case.csv
    holds the test Dice at the reported iteration, as the evaluation of its model.pt would."""
    run = run_folder(bench, RunId(spec.dataset, spec.method, spec.n, spec.seed))
    run.mkdir(parents=True)
    rng = np.random.default_rng(zlib.crc32(str(run.relative_to(bench)).encode()))
    if test is None:
        test = {it: {c: float(rng.uniform(0.5, 0.95)) for c in CASES} for it in ITERATIONS}
    write_curve(run / TEST_CURVE, test)
    val: tuple[str, ...] = ()
    reported, val_dice = max(test), None
    if spec.mode == "val":
        val, reported, val_dice = VAL_CASES, SELECTED[spec.seed], 0.9
        curve = {it: {c: float(rng.uniform(0.4, 0.8)) for c in val} for it in VAL_ITERATIONS}
        curve[reported] = dict.fromkeys(val, val_dice)  # the best validation mean: the snapshot the run keeps
        write_curve(run / VAL_CURVE, curve)
    rest = [c for c in TRAIN if c not in val]
    split = {"labeled": rest[: spec.n], "unlabeled": rest[spec.n :], "val": list(val)}
    info = {
        "config": {"dataset": spec.dataset, "method": spec.method, "n_labeled": spec.n, "seed": spec.seed},
        "split": split,
        "split_sha256": sha256_of(split),
        "selection": {
            "mode": spec.mode,
            "iteration": reported,
            "val_dice": val_dice,
            "val_every": 200 if val else 0,
            "audit_every": 100,
        },
    }
    (run / RUN_INFO).write_text(json.dumps(info))
    n_train = len(TRAIN) - len(val)
    with (run / METRICS_CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PER_CASE_COLUMNS, restval="")
        writer.writeheader()
        for case, dice in test[reported].items():
            writer.writerow(
                {
                    **{"dataset": spec.dataset, "method": spec.method, "n_labeled": spec.n, "n_train": n_train},
                    **{"seed": spec.seed, "case": case, "dice": dice, "jaccard": dice / (2 - dice), "hd95": 3.0},
                    **{"asd": 1.0, "hd95_mm": 3.0, "asd_mm": 1.0, "empty_pred": 0, "empty_pred_policy": "worst_case"},
                }
            )
    return run


def write_grid(bench: Path, mode: str, dataset: str = "LA", grid=GRID) -> list[Path]:
    return [write_run(bench, Spec(dataset, m, n, s, mode)) for m, n, s in grid]


def files(run: Path) -> tuple[Path, Path, Path]:
    return run / TEST_CURVE, run / RUN_INFO, run / METRICS_CSV


# ------------------------------------------------------------------------------------- the independent recomputation
def read_curve(path: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(int(row["iteration"]), {})[row["case"]] = float(row["dice"])
    return out


def first_best(means: dict[int, float]) -> int:
    """The earliest iteration of the highest mean."""
    top = max(means.values())
    return min(it for it, m in means.items() if m == top)


def expected_run(run: Path) -> dict:
    rid = RunId.from_folder(run)
    test = read_curve(run / TEST_CURVE)
    means = {it: statistics.fmean(row.values()) for it, row in test.items()}
    mode = json.loads((run / RUN_INFO).read_text())["selection"]["mode"]
    val = None
    if mode == "val":
        val = first_best({it: statistics.fmean(row.values()) for it, row in read_curve(run / VAL_CURVE).items()})
    last = max(test)
    iterations = {"reported": val if val is not None else last, "last": last, "val": val, "best": first_best(means)}
    return {"id": rid, "test": test, "means": means, "iterations": iterations, "mode": mode}


def _stdev(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def expected_cells(runs: list[Path]) -> dict[tuple[str, str, int], dict]:
    """(dataset, method, n_labeled) → every column of `audit_cells`, recomputed."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for run in runs:
        e = expected_run(run)
        groups.setdefault((e["id"].dataset, e["id"].method, e["id"].n_labeled), []).append(e)
    cells = {}
    for key, group in groups.items():
        group.sort(key=lambda e: e["id"].seed)
        cell: dict = {"n_seeds": len(group), "mode": group[0]["mode"]}
        for name in NAMES:
            values = [100 * e["means"][e["iterations"][name]] for e in group if e["iterations"][name] is not None]
            cell[f"{name}_mean"] = statistics.fmean(values) if values else math.nan
            cell[f"{name}_std"] = _stdev(values)
        gains = [100 * (e["means"][e["iterations"]["best"]] - e["means"][e["iterations"]["reported"]]) for e in group]
        cell["gain_mean"], cell["gain_std"] = statistics.fmean(gains), _stdev(gains)
        per_case = {
            name: [100 * statistics.fmean(e["test"][e["iterations"][name]][c] for e in group) for c in CASES]
            for name in ("best", "reported")
        }
        test = paired_tests(per_case["best"], per_case["reported"])
        cell |= {"n_cases": test.n, "wilcoxon_p": test.wilcoxon_p, "t_p": test.t_p}
        cell["best_iterations"] = ";".join(str(e["iterations"]["best"]) for e in group)
        cells[key] = cell
    return cells


def same(actual, expected) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return bool(pd.isna(actual))
    if isinstance(expected, float):
        return actual == pytest.approx(expected, rel=1e-9, abs=1e-9)
    return actual == expected


def assert_cells(frame: pd.DataFrame, expected: dict[tuple[str, str, int], dict]) -> None:
    assert len(frame) == len(expected)
    for _, row in frame.iterrows():
        want = expected[(row["dataset"], row["method"], int(row["n_labeled"]))]
        wrong = {k: (row[k], v) for k, v in want.items() if not same(row[k], v)}
        assert not wrong, f"{row['dataset']}/{row['method']}/{row['n_labeled']}: (module, recomputed) {wrong}"


def assert_exercised(runs: list[Path], mode: str) -> None:
    """The fixture tells the checkpoints apart: best ≠ reported somewhere (and val-selected ≠ last with val)."""
    its = [expected_run(r)["iterations"] for r in runs]
    assert any(i["best"] != i["reported"] for i in its)
    if mode == "val":
        assert any(i["val"] != i["last"] for i in its) and any(i["best"] != i["val"] for i in its)


# ------------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("mode", ["last", "val"])
def test_read_run_checkpoints(tmp_path, mode):
    """Per run: the reported, last, val-selected and best iterations, and each one's per-case test Dice."""
    for run in write_grid(tmp_path, mode):
        got = sa.read_run(*files(run))
        want = expected_run(run)
        for name in NAMES:
            it = want["iterations"][name]
            assert got[f"{name}_iteration"] == it, (run, name)
            if it is None:
                assert got[name] is None
            else:
                assert got[name].to_dict() == pytest.approx(want["test"][it], rel=1e-12), (run, name)
        assert got["curve"].to_dict() == pytest.approx(want["means"], rel=1e-12)
        assert RunId(got["dataset"], got["method"], got["n_labeled"], got["seed"]) == RunId.from_folder(run)
        assert got["mode"] == mode and got["n_train"] == (14 if mode == "val" else 16)


@pytest.mark.parametrize("mode", ["last", "val"])
def test_audit_cells_match_recomputation(tmp_path, mode):
    """Every column of every cell: mean ± std over seeds per checkpoint, best − reported, the paired tests on the
    seed-averaged per-case Dice of both checkpoints, the best iterations by seed; rows in table order."""
    runs = write_grid(tmp_path, mode)
    assert_exercised(runs, mode)
    cells = sa.audit_cells([sa.read_run(*files(r)) for r in runs])
    assert_cells(cells, expected_cells(runs))
    order = list(zip(cells["method"], cells["n_labeled"], strict=True))
    assert order == [("ua_mt", 4), ("dtc", 4), ("ua_mt", 8), ("dtc", 8)]  # paper order, not alphabetical
    assert cells["n_seeds"].tolist() == [3, 2, 3, 2] and (cells["n_cases"] == len(CASES)).all()
    if mode == "last":
        assert cells["val_mean"].isna().all() and (cells["reported_mean"] == cells["last_mean"]).all()
    else:
        assert (cells["reported_mean"] == cells["val_mean"]).all()
        assert (cells["reported_mean"] != cells["last_mean"]).any()


@pytest.mark.parametrize("mode", ["last", "val"])
def test_build_table_entries(tmp_path, mode):
    """The displayed table: header (the Val-selected column only with selection val) and each entry's text."""
    runs = write_grid(tmp_path, mode) + write_grid(tmp_path, "last", "Pancreas", [("ua_mt", 6, 1)])
    cells = sa.audit_cells([sa.read_run(*files(r)) for r in runs])
    table = sa.build_table(cells, "LA")
    names = ["reported", "last", *(["val"] if mode == "val" else []), "best"]
    assert table.header == (
        "Method",
        "Labeled",
        "Seeds",
        *(f"{sa.CHECKPOINTS[n]} Dice (%)" for n in names),
        "Test selection adds (pp)",
        "Wilcoxon p",
        "t-test p",
    )
    assert table.name == "LA_selection_audit" and set(table.data["dataset"]) == {"LA"}
    expected = expected_cells(runs)
    n_train = 14 if mode == "val" else 16
    texts = [[e.text for e in row] for row in table.rows]
    assert [t[:3] for t in texts] == [
        [m, f"{n} ({round(100 * n / n_train)}%)", str(s)]
        for m, n, s in [("ua_mt", 4, 3), ("dtc", 4, 2), ("ua_mt", 8, 3), ("dtc", 8, 2)]
    ]
    for row, (_, r) in zip(texts, table.data.iterrows(), strict=True):
        want = expected[("LA", r["method"], r["n_labeled"])]
        mean_std = [f"{want[f'{n}_mean']:.2f} ± {want[f'{n}_std']:.2f}" for n in [*names, "gain"]]
        assert row[3:] == [*mean_std, format_p(want["wilcoxon_p"]), format_p(want["t_p"])]
    single = sa.build_table(cells, "Pancreas")  # one seed: no std
    want = expected[("Pancreas", "ua_mt", 6)]
    assert single.rows[0][3].text == f"{want['reported_mean']:.2f} ± –"
    assert "Val-selected Dice (%)" not in single.header


def test_best_is_the_first_of_tied_maxima(tmp_path):
    """Two iterations share the highest mean test Dice with different per-case values: the earlier one is best."""
    test = {
        100: {"a": 0.5, "b": 0.5},
        200: {"a": 0.75, "b": 0.5},  # mean 0.625
        300: {"a": 0.5, "b": 0.75},  # mean 0.625, the same float
        400: {"a": 0.5, "b": 0.25},
    }
    runs = [write_run(tmp_path, Spec("LA", "ua_mt", 4, s), test) for s in (1, 2)]
    run = sa.read_run(*files(runs[0]))
    assert run["best_iteration"] == 200 and run["best"].to_dict() == {"a": 0.75, "b": 0.5}
    cell = sa.audit_cells([run, sa.read_run(*files(runs[1]))]).iloc[0]
    assert cell["best_iterations"] == "200;200" and cell["best_mean"] == 62.5 and cell["gain_mean"] == 25.0
    assert expected_run(runs[0])["iterations"]["best"] == 200


def test_run_info_without_selection_reports_the_last_iteration(tmp_path):
    """A run_info.json written before `selection` existed: the last iteration is the reported one."""
    run = write_run(tmp_path, Spec("LA", "ua_mt", 4, 1))
    info = json.loads((run / RUN_INFO).read_text())
    del info["selection"]
    (run / RUN_INFO).write_text(json.dumps(info))
    got = sa.read_run(*files(run))
    assert got["mode"] == "last" and got["reported_iteration"] == got["last_iteration"] == 400
    assert got["val_iteration"] is None


def _shift_one(rows: list[dict], run: Path) -> list[dict]:
    rows[2]["dice"] = str(float(rows[2]["dice"]) + 1e-6)
    return rows


def _drop_one(rows: list[dict], run: Path) -> list[dict]:
    return rows[:-1]


def _extra_case(rows: list[dict], run: Path) -> list[dict]:
    return [*rows, {**rows[0], "case": "case99"}]


def _last_instead_of_val(rows: list[dict], run: Path) -> list[dict]:
    last = read_curve(run / TEST_CURVE)[max(ITERATIONS)]
    return [{**r, "dice": repr(last[r["case"]])} for r in rows]


@pytest.mark.parametrize(
    ("mode", "corrupt"),
    [("last", _shift_one), ("last", _drop_one), ("last", _extra_case), ("val", _last_instead_of_val)],
    ids=["dice-off-by-1e-6", "curve-case-missing-in-metrics", "metrics-case-missing-in-curve", "val-run-scored-last"],
)
def test_curve_disagreeing_with_metrics_is_refused(tmp_path, mode, corrupt):
    """The reported iteration's test Dice must be metrics_per_case.csv's, case by case (TOLERANCE); a mismatch is
    refused with an error naming the run, by read_run and by write_audit."""
    runs = write_grid(tmp_path, mode)
    bad = runs[3]
    path = bad / METRICS_CSV
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PER_CASE_COLUMNS)
        writer.writeheader()
        writer.writerows(corrupt(rows, bad))
    with pytest.raises(ValueError, match="differs from") as err:
        sa.read_run(*files(bad))
    assert str(bad / TEST_CURVE) in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ValueError, match="differs from") as err:
        sa.write_audit(*zip(*map(files, runs), strict=True), tmp_path / "out")
    assert str(bad) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_curve_lacking_a_case_at_the_reported_iteration_is_refused(tmp_path):
    """A case missing from the curve at the reported iteration (a NaN in the pivot) is a mismatch, not skipped."""
    run = write_run(tmp_path, Spec("LA", "ua_mt", 4, 1))
    lines = (run / TEST_CURVE).read_text().splitlines()
    assert lines[-1].startswith("400,case05,")
    (run / TEST_CURVE).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="differs from") as err:
        sa.read_run(*files(run))
    assert str(run) in str(err.value)


def test_difference_within_tolerance_is_accepted(tmp_path):
    run = write_run(tmp_path, Spec("LA", "ua_mt", 4, 1))
    text = (run / METRICS_CSV).read_text()
    dice = read_curve(run / TEST_CURVE)[400]["case01"]
    (run / METRICS_CSV).write_text(text.replace(str(dice), str(dice + sa.TOLERANCE / 10)))
    assert (run / METRICS_CSV).read_text() != text
    assert sa.read_run(*files(run))["reported_iteration"] == 400


def test_unusable_curves_are_refused(tmp_path):
    """An empty curve (a run trained without the audit), or no test evaluation at the reported iteration."""
    run = write_run(tmp_path, Spec("LA", "ua_mt", 4, 1))
    info = json.loads((run / RUN_INFO).read_text())
    info["selection"]["iteration"] = 350
    (run / RUN_INFO).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="no test evaluation at the reported iteration 350"):
        sa.read_run(*files(run))
    (run / TEST_CURVE).write_text("iteration,case,dice\n")
    with pytest.raises(ValueError, match="without report.selection_audit") as err:
        sa.read_run(*files(run))
    assert str(run) in str(err.value)


def _panels(fig) -> dict[tuple[str, int], list[dict]]:
    """Per panel (method, labeled count): per run, in plotting order, its curve and its marked checkpoints."""
    panels = {}
    for ax in fig.axes:
        if not ax.get_title():
            continue
        method, n = ax.get_title().removesuffix(" labeled").split(", ")
        runs: list[dict] = []
        for line in ax.get_lines():
            x, y = list(line.get_xdata()), list(line.get_ydata())
            if len(x) > 1:
                runs.append({"x": x, "y": y, "color": line.get_color(), "markers": {}})
            else:
                assert line.get_color() == runs[-1]["color"]
                runs[-1]["markers"][line.get_marker()] = (x[0], y[0])
        panels[(method, int(n))] = runs
    return panels


def test_write_audit_files_and_figure(tmp_path, monkeypatch):
    """Per dataset: the table in every format (its CSV the recomputed cells) and the figure as PNG and PDF, whose
    panels draw each seed's mean test Dice and mark its last (o), val-selected (^) and best-on-test (*) iterations."""
    la = write_grid(tmp_path / "bench", "val")
    pancreas = write_grid(tmp_path / "bench", "last", "Pancreas", [("ua_mt", 6, 1), ("dtc", 6, 1)])
    runs = la[::-1] + pancreas  # any order
    figures, save = {}, plots.save_figure

    def keep(fig, path):
        figures[Path(path).stem] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    out = tmp_path / "out"
    written = sa.write_audit(*zip(*map(files, runs), strict=True), out)

    assert list(written) == ["LA", "Pancreas"]
    for ds in written:
        table, figure = selection_audit_table(ds).stem, selection_audit_figure(ds).stem
        want = {out / TABLES / f"{table}.{ext}" for ext in TABLE_FORMATS}
        want |= {out / FIGURES / f"{figure}.{ext}" for ext in ("png", "pdf")}
        assert set(written[ds]) == want and all(p.is_file() for p in want)
        png, pdf = (out / FIGURES / f"{figure}.{ext}" for ext in ("png", "pdf"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
        assert f"Test-set selection audit ({ds})" in (out / TABLES / f"{table}.html").read_text(encoding="utf-8")
    expected = expected_cells(runs)
    csv_cells = pd.concat(pd.read_csv(out / TABLES / f"{ds}_selection_audit.csv") for ds in written)
    assert_cells(csv_cells.astype({"best_iterations": str}), expected)

    order = {"LA": [("ua_mt", 4), ("dtc", 4), ("ua_mt", 8), ("dtc", 8)], "Pancreas": [("ua_mt", 6), ("dtc", 6)]}
    for ds, dataset_runs in (("LA", la), ("Pancreas", pancreas)):
        panels = _panels(figures[selection_audit_figure(ds).stem])
        assert list(panels) == order[ds]
        for (method, n), drawn in panels.items():
            group = [expected_run(r) for r in dataset_runs]
            group = sorted(
                (e for e in group if (e["id"].method, e["id"].n_labeled) == (method, n)), key=lambda e: e["id"].seed
            )
            assert len(drawn) == len(group)
            for line, e in zip(drawn, group, strict=True):
                means = e["means"]
                assert line["x"] == sorted(means) and line["y"] == pytest.approx(
                    [100 * means[i] for i in sorted(means)]
                )
                its = e["iterations"]
                marks = {"o": its["last"], "*": its["best"], **({"^": its["val"]} if its["val"] is not None else {})}
                assert line["markers"] == {m: (it, pytest.approx(100 * means[it])) for m, it in marks.items()}
                assert ("^" in line["markers"]) == (ds == "LA")  # LA selects on val, Pancreas reports the last


def test_command_line(tmp_path):
    """The selection_audit rule's command line reaches write_audit with the runs aligned."""
    from harness.cli import build_parser

    runs = write_grid(tmp_path / "bench", "last", grid=[("ua_mt", 4, 1), ("ua_mt", 4, 2)])
    curves, infos, metrics = (list(map(str, f)) for f in zip(*map(files, runs), strict=True))
    args = build_parser().parse_args(
        ["report-selection-audit", "--curves", *curves, "--run-info", *infos, "--metrics", *metrics]
        + ["--out", str(tmp_path / "out")]
    )
    args.func(args)
    frame = pd.read_csv(tmp_path / "out" / TABLES / "LA_selection_audit.csv")
    assert_cells(frame.astype({"best_iterations": str}), expected_cells(runs))
    assert (tmp_path / "out" / FIGURES / "selection_audit_LA.png").is_file()
