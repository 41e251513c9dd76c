"""harness.report.plots: the figure files exist, are valid PNGs, scale with the panels, and figures get closed."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report.aggregate import PER_CASE_COLUMNS, per_run
from harness.report.plots import (
    _draw_published,
    _key_order,
    axial_slices,
    figure_names,
    load_train_logs,
    plot_dice_vs_labeled,
    plot_per_case,
    plot_training_curves,
    write_figures,
    write_qualitative,
)

sys.path.insert(0, str(Path(__file__).parent))

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


def published_rows() -> pd.DataFrame:
    from harness.report.published import load_published

    table = load_published()
    return table[table["source_id"] == "simcvd"]


def write_logs(tmp_path: Path, specs: list[tuple[str, str, int, int]], seeds=(0, 1)) -> list[Path]:
    """run_info.json + train_log.jsonl per (dataset, method, n_labeled, n_train) and seed; loss = 1/(it+1) + seed."""
    paths = []
    for dataset, method, n_labeled, n_train in specs:
        for seed in seeds:
            run = tmp_path / "runs" / dataset / method / f"labeled~{n_labeled}" / f"seed~{seed}"
            run.mkdir(parents=True)
            config = {
                "dataset": dataset,
                "method": method,
                "n_labeled": n_labeled,
                "seed": seed,
                "data": {"n_train": n_train},
            }
            (run / "run_info.json").write_text(json.dumps({"config": config}))
            lines = []
            for it in (9, 19, 29):
                entry = {"it": it, "lr": 0.01, "loss": 1 / (it + 1) + seed, "loss/sup": 0.5, "note": "text"}
                if method != "supervised":
                    entry |= {"loss/cons": 0.1 * seed, "w/cons": it / 30, "loss/nan": float("nan")}
                lines.append(json.dumps(entry))
            (run / "train_log.jsonl").write_text("\n".join(lines) + "\n")
            paths.append(run / "run_info.json")
    return paths


def check_files(paths: list[Path]) -> None:
    """Every path exists and is a non-empty PNG or PDF."""
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 5_000, path
        assert data[:4] == b"%PDF" if path.suffix == ".pdf" else data[:8] == PNG_SIGNATURE, path


def test_write_figures_two_datasets(tmp_path):
    import matplotlib.pyplot as plt

    specs = grid("LA", 80, (8, 16)) + grid("Pancreas", 62, (6, 12))
    per_case = per_case_frame(specs)
    logs = load_train_logs(write_logs(tmp_path, specs))
    out = tmp_path / "figures"
    paths = write_figures(
        per_run(per_case), per_case, out, published=published_rows(), published_label="SimCVD", train_logs=logs
    )
    names = figure_names(["LA", "Pancreas"])
    per_dataset = ("dice_per_case_{}.png", "hd95_per_case_{}.png", "training_curves_{}.png")
    assert names == ["dice_vs_labeled.png", *(n.format(d) for d in ("LA", "Pancreas") for n in per_dataset)]
    assert paths == [out / f"{Path(n).stem}.{ext}" for n in names for ext in ("png", "pdf")]
    check_files(paths)
    for path in paths[::2]:
        width, height = png_size(path)
        assert width > 400 and height > 200
    width, height = png_size(out / "dice_per_case_LA.png")
    assert width > 1.5 * height  # three panels (8, 16, upper bound 80) side by side
    width, height = png_size(out / "training_curves_LA.png")
    assert width > 3 * 3.0 * 150 and height > 5 * 1.7 * 150  # columns 8, 16, 80; rows: five logged keys
    assert plt.get_fignums() == []  # every figure closed
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temporary files left


def test_figures_are_byte_identical_on_rerun(tmp_path):
    per_case = per_case_frame(grid("LA", 80, (8,)), seeds=(0, 1))
    first = plot_per_case(per_case, "LA", tmp_path / "a" / "f.png", metric="hd95")
    second = plot_per_case(per_case, "LA", tmp_path / "b" / "f.png", metric="hd95")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="metric"):
        plot_per_case(per_case, "LA", tmp_path / "c.png", metric="asd")


def test_dice_vs_labeled_grows_with_datasets(tmp_path):
    one = per_run(per_case_frame(grid("LA", 80, (8, 16))))
    two = per_run(per_case_frame(grid("LA", 80, (8, 16)) + grid("Pancreas", 62, (6, 12))))
    width_one, _ = png_size(plot_dice_vs_labeled(one, tmp_path / "one.png")[0])
    width_two, _ = png_size(plot_dice_vs_labeled(two, tmp_path / "two.png")[0])
    assert width_two > 1.5 * width_one  # one panel per dataset


def test_published_markers_at_the_method_positions():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        x_of = {("supervised", 8): -0.15, ("ua_mt", 8): 0.15, ("ua_mt", 16): 1.15}
        drawn = _draw_published(ax, published_rows()[lambda d: d["dataset_key"] == "la"], x_of, {"ua_mt": "red"})
        assert drawn
        points = sorted(tuple(map(float, c.get_offsets()[0])) for c in ax.collections)
        # SimCVD Table I: V-Net 8 labels 79.99, UA-MT 84.25 (8) and 88.88 (16); dtc/simcvd are not plotted here
        assert points == [(-0.15, 79.99), (0.15, 84.25), (1.15, 88.88)]
        assert [line.get_ydata()[0] for line in ax.lines] == [91.14]  # the published upper bound, dotted
        assert not _draw_published(ax, published_rows()[lambda d: d["dataset_key"] == "synthetic"], x_of, {})
    finally:
        plt.close(fig)


def test_write_figures_single_seed_and_upper_bound_only(tmp_path):
    per_case = per_case_frame([("LA", "supervised", 80, 80)], seeds=(0,))
    paths = write_figures(per_run(per_case), per_case, tmp_path)
    stems = ["dice_vs_labeled", "dice_per_case_LA", "hd95_per_case_LA"]
    assert [p.name for p in paths] == [f"{s}.{e}" for s in stems for e in ("png", "pdf")]
    check_files(paths)


# ------------------------------------------------------------------------------------------- training curves
def test_load_train_logs_keeps_numeric_finite_keys(tmp_path):
    paths = write_logs(tmp_path, [("LA", "ua_mt", 8, 80)], seeds=(0, 1))
    (tmp_path / "no_log").mkdir()
    (tmp_path / "no_log" / "run_info.json").write_text(paths[0].read_text())  # no train_log.jsonl: skipped
    logs = load_train_logs([*paths, tmp_path / "no_log" / "run_info.json"])
    assert sorted(logs["key"].unique()) == ["loss", "loss/cons", "loss/sup", "lr", "w/cons"]  # no text, no NaN key
    assert len(logs) == 2 * 3 * 5
    loss = logs[(logs["key"] == "loss") & (logs["it"] == 9)]
    assert sorted(loss["value"]) == pytest.approx([0.1, 1.1])  # 1/(9+1) + seed
    assert _key_order(logs["key"]) == ["loss", "loss/cons", "loss/sup", "w/cons", "lr"]
    (tmp_path / "runs" / "LA" / "ua_mt" / "labeled~8" / "seed~0" / "train_log.jsonl").write_text("{oops\n")
    with pytest.raises(ValueError, match="train_log.jsonl:1"):
        load_train_logs(paths)


def test_training_curves_without_logs_still_written(tmp_path):
    empty = load_train_logs([])
    check_files(plot_training_curves(empty, "LA", tmp_path / "curves.png"))


# ------------------------------------------------------------------------------------------------ qualitative
def test_axial_slices_hand_values():
    gt = np.zeros((4, 4, 16), dtype=bool)
    gt[1:3, 1:3, 4:13] = True  # z extent 4..12
    assert axial_slices(gt, 3) == [6, 8, 10]
    assert axial_slices(gt, 1) == [8]
    with pytest.raises(ValueError, match="n_slices"):
        axial_slices(gt, 0)
    with pytest.raises(ValueError, match="empty"):
        axial_slices(np.zeros((4, 4, 4)), 2)


def test_write_qualitative(tmp_path, tiny_dataset):
    from test_sensitivity import eroded_or_empty, island, write_run

    runs = [
        write_run(tmp_path, tiny_dataset, "supervised", 2, 1, lambda i, gt: gt),
        write_run(tmp_path, tiny_dataset, "supervised", 2, 2, island),  # a second seed: not shown
        write_run(tmp_path, tiny_dataset, "ua_mt", 2, 1, eroded_or_empty),
        write_run(tmp_path, tiny_dataset, "supervised", 4, 1, island),
    ]
    paths = write_qualitative(runs, tmp_path / "q.png", n_slices=2)
    check_files(paths)
    width, height = png_size(paths[0])
    assert height > width  # 4 rows (ground truth + 3 cells) of 2 slices
    test_ids = (tiny_dataset / "test.list").read_text().split()
    small = write_qualitative(runs[:1], tmp_path / "one.png", case=test_ids[1], n_slices=2)
    assert png_size(small[0])[1] < height
    with pytest.raises(ValueError, match="case"):
        write_qualitative(runs, tmp_path / "x.png", case="NOT_A_CASE")


def test_write_figures_validates_columns(tmp_path):
    per_case = per_case_frame(grid("LA", 80, (8,)))
    with pytest.raises(ValueError, match="runs_df.*'n_empty_pred'"):
        write_figures(per_run(per_case).drop(columns=["n_empty_pred"]), per_case, tmp_path)
    with pytest.raises(ValueError, match="per_case_df.*'dice'"):
        write_figures(per_run(per_case), per_case.drop(columns=["dice"]), tmp_path)


def test_import_has_no_pyplot_side_effect():
    import subprocess

    code = "import sys, harness.report.plots; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_write_qualitative_reads_only_the_prepared_test_list(tmp_path, tiny_dataset):
    import shutil

    from test_sensitivity import write_run

    from harness.data.download import DataError

    root = Path(shutil.copytree(tiny_dataset, tmp_path / "data"))
    runs = [write_run(tmp_path, root, "supervised", 2, 1, lambda i, gt: gt)]
    train_id = (root / "train.list").read_text().split()[0]
    with pytest.raises(ValueError, match=rf"case: '{train_id}' is not in .*test\.list"):
        write_qualitative(runs, tmp_path / "train.png", case=train_id, n_slices=1)  # a training case is no test case
    with (root / "test.list").open("a") as f:
        f.write(f"{train_id}\n")  # a training case copied into the test list after preparation
    with pytest.raises(DataError, match=r"test\.list changed after the data was prepared"):
        write_qualitative(runs, tmp_path / "q.png", n_slices=1)
    assert not (tmp_path / "q.png").exists()
