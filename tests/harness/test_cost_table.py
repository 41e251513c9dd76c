"""Cost table (harness.report.cost_table): benchmark files + run_info.json → wall time, peak RSS, device, GPU-hours,
core-hours."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.report.cost_table import (
    attach_run_info,
    build_cost_table,
    device_label,
    load_benchmarks,
    load_run_info,
    write_cost_tables,
)
from harness.report.table_model import render_latex

HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
A100 = "NVIDIA A100-SXM4-40GB"
V100 = "Tesla V100-SXM2-32GB"
#: (dataset, method, n, seed) → (device, gpu_model, torch_threads, loader_workers, {rule: (wall s, max_rss MB)})
RUNS = {
    ("LA", "supervised", 8, 1): (
        "cpu",
        None,
        3,
        1,
        {"train": (100.0, 900.0), "predict": (10.0, 400.0), "evaluate": (5.0, 300.0)},
    ),
    ("LA", "supervised", 8, 2): (
        "cpu",
        None,
        3,
        1,
        {"train": (120.0, 950.0), "predict": (14.0, 420.0), "evaluate": (5.0, 310.0)},
    ),
    ("LA", "simcvd", 8, 1): (
        "cuda",
        A100,
        1,
        3,
        {"train": (7200.0, 2000.0), "predict": (60.0, 1500.0), "evaluate": (6.0, 320.0)},
    ),
    ("LA", "simcvd", 16, 1): (
        "cuda:1",
        A100,
        1,
        3,
        {"train": (3600.0, 2100.0), "predict": (40.0, 1400.0), "evaluate": (4.0, 330.0)},
    ),
    ("Pancreas", "simcvd", 12, 1): ("cpu", None, 2, 0, {"train": (1800.0, 3000.0)}),
    ("Pancreas", "simcvd", 12, 2): ("cuda", V100, 1, 1, {"train": (7200.0, 3100.0)}),
}


def run_dir(root: Path, dataset: str, method: str, n: int, seed: int) -> Path:
    return root / "runs" / dataset / method / f"labeled~{n}" / f"seed~{seed}"


def patterns(root: Path) -> dict[str, str]:
    run = str(root / "runs" / "{dataset}" / "{method}" / "labeled~{n}" / "seed~{seed}")
    return {rule: f"{run}/benchmarks/{rule}.tsv" for rule in ("train", "predict", "evaluate")}


def write_run_info(path: Path, key: tuple, device: str, gpu_model: str | None, threads: int, workers: int) -> None:
    dataset, method, n, seed = key
    info = {
        "config": {"dataset": dataset, "method": method, "n_labeled": n, "seed": seed},
        "device": device,
        "host": "h",
        "torch_threads": threads,
        "loader_workers": workers,
        "wall_time_s": 1.0,
    }
    if gpu_model:
        info |= {"gpu_model": gpu_model, "cuda": "12.4", "peak_gpu_memory_mb": 1000.0 * seed + n}
    path.write_text(json.dumps(info))


def write_runs(root: Path) -> tuple[list[Path], list[Path]]:
    """Benchmark TSVs and run_info.json of RUNS under `root`, laid out as the workflow writes them."""
    bench, infos = [], []
    for key, (device, gpu_model, threads, workers, rules) in RUNS.items():
        folder = run_dir(root, *key)
        (folder / "benchmarks").mkdir(parents=True)
        for rule, (seconds, rss) in rules.items():
            path = folder / "benchmarks" / f"{rule}.tsv"
            path.write_text(HEAD + f"{seconds}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t99\t{seconds / 2}\n")
            bench.append(path)
        write_run_info(folder / "run_info.json", key, device, gpu_model, threads, workers)
        infos.append(folder / "run_info.json")
    return bench, infos


@pytest.fixture
def runs(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    return write_runs(tmp_path)


def test_rows_devices_and_hours(tmp_path, runs):
    written = write_cost_tables(patterns(tmp_path), *runs, tmp_path / "tables")
    assert sorted(written) == ["csv", "html", "md", "tex"]
    data = pd.read_csv(written["csv"]).set_index(["dataset", "method"])
    assert data.index.tolist() == [("LA", "supervised"), ("LA", "simcvd"), ("Pancreas", "simcvd"), ("all", "total")]
    assert data["device"].tolist() == [
        "cpu",
        f"cuda ({A100})",
        f"cpu; cuda ({V100})",
        f"cpu; cuda ({A100}); cuda ({V100})",
    ]
    assert data["n_runs"].tolist() == [2, 2, 2, 6] and data.loc[("LA", "simcvd"), "labeled"] == "8;16"
    # GPU-hours: train wall s of GPU runs / 3600 (7200 + 3600 on the A100s; 7200 on the V100, the CPU run not counted)
    assert data["gpu_hours"].tolist() == pytest.approx([0.0, 3.0, 2.0, 5.0])
    # CPU-core-hours: train s × (threads + workers) / 3600: (100 + 120)·4, (7200 + 3600)·4, 1800·2 + 7200·2
    assert data["cpu_core_hours"].tolist() == pytest.approx([880 / 3600, 12.0, 5.0, 880 / 3600 + 17.0])
    assert data["wall_hours"].tolist() == pytest.approx([254 / 3600, 10910 / 3600, 2.5, 20164 / 3600])
    assert data.loc[("LA", "supervised"), "train_s_mean"] == pytest.approx(110.0)
    assert data.loc[("LA", "supervised"), "train_s_std"] == pytest.approx(14.1421356)
    assert data.loc[("all", "total"), "train_max_rss_mb"] == 3100.0 and data.loc[("all", "total"), "predict_n"] == 4
    md = written["md"].read_text(encoding="utf-8")
    assert (
        "| Dataset/method | Labeled | Device | Runs | GPU peak (MB) | train time (s) | train max RSS (MB) | "
        "predict time (s) | predict max RSS (MB) | evaluate time (s) | evaluate max RSS (MB) | Wall-hours | "
        "GPU-hours | CPU-core-hours |"
    ) in md
    assert (
        "| LA/supervised | 8 | cpu | 2 | – | 110.0 ± 14.1 | 950 | 12.0 ± 2.8 | 420 | 5.0 ± 0.0 | 310 | 0.07 | 0.00 "
        "| 0.24 |" in md
    )
    assert (
        f"| LA/simcvd | 8, 16 | cuda ({A100}) | 2 | 1016 | 5400.0 ± 2545.6 | 2100 |" in md
        and "| 3.03 | 3.00 | 12.00 |" in md
    )
    assert (
        f"| Pancreas/simcvd | 12 | cpu; cuda ({V100}) | 2 | 2012 | 4500.0 ± 3818.4 | 3100 | – | – | – | – | 2.50 "
        "| 2.00 |" in md
    )
    # GPU peak: max over the row's GPU runs of peak_gpu_memory_mb (1000·seed + n here); CPU runs have none
    assert data["peak_gpu_memory_mb"].tolist()[1:] == [1016.0, 2012.0, 2012.0] and pd.isna(
        data["peak_gpu_memory_mb"].iloc[0]
    )
    assert "| Total | 8, 12, 16 |" in md and md.rstrip().endswith("| 5.60 | 5.00 | 17.24 |")


def test_total_row_is_its_own_latex_group(tmp_path, runs):
    records = attach_run_info(load_benchmarks(patterns(tmp_path), runs[0]), load_run_info(runs[1]))
    table = build_cost_table(records)
    assert table.groups == (0, 0, 1, 2) and table.text_columns == 3
    latex = render_latex(table)
    assert latex.count(r"\midrule") == 3 and r"Total & 8, 12, 16 & cpu; cuda (NVIDIA A100-SXM4-40GB)" in latex


def test_device_label():
    assert device_label("cpu") == "cpu"
    assert device_label("cuda:1", A100) == f"cuda ({A100})" and device_label("cuda", A100) == f"cuda ({A100})"
    with pytest.raises(ValueError, match="device"):
        device_label("")


def test_unknown_cores_and_no_train_records(tmp_path, runs):
    bench, infos = runs
    info = json.loads(infos[0].read_text())
    del info["loader_workers"]  # an older run_info
    infos[0].write_text(json.dumps(info))
    records = attach_run_info(load_benchmarks(patterns(tmp_path), bench), load_run_info(infos))
    data = build_cost_table(records).data.set_index("method")
    assert pd.isna(data.loc["supervised", "cpu_core_hours"]) and pd.isna(data.loc["total", "cpu_core_hours"])
    assert data.loc["supervised", "gpu_hours"] == 0.0  # the device is still known
    no_train = build_cost_table(records[records["rule"] != "train"])
    assert no_train.data["gpu_hours"].isna().all() and no_train.data["wall_hours"].notna().all()
    assert "train time (s)" not in no_train.header and no_train.rows[0][-2].value == "–"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "cannot read"),
        (HEAD, "not a Snakemake benchmark file"),
        ("a\tb\n1\t2\n", "not a Snakemake benchmark"),
        (HEAD + "oops\t0:00:00\t1\t1\t1\t1\t0\t0\t9\t1\n", "'s' must be finite"),
    ],
)
def test_malformed_benchmark_file_is_named(tmp_path, runs, content, match):
    bad = runs[0][0]
    bad.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        load_benchmarks(patterns(tmp_path), runs[0])
    assert str(bad) in str(err.value)


def test_missing_or_malformed_run_info_is_named(tmp_path, runs):
    bench, infos = runs
    pats = patterns(tmp_path)
    with pytest.raises(ValueError, match="matches none"):
        load_benchmarks(pats, [tmp_path / "other.tsv"])
    with pytest.raises(ValueError, match="no run_info.json for the run of benchmark") as err:
        attach_run_info(load_benchmarks(pats, bench), load_run_info(infos[1:]))
    assert str(bench[0]) in str(err.value) and str(bench[3]) not in str(err.value)
    infos[0].unlink()
    with pytest.raises(ValueError, match="does not exist") as err:
        load_run_info(infos)
    assert str(infos[0]) in str(err.value)
    infos[1].write_text('{"config": {"dataset": "LA"}, "device": "cpu"}')
    with pytest.raises(ValueError, match="is not a run_info.json") as err:
        load_run_info(infos[1:])
    assert str(infos[1]) in str(err.value)
    with pytest.raises(ValueError, match="several files describe the same run"):
        load_run_info([infos[2], infos[2]])


def test_cli_cost_table(tmp_path, runs):
    bench, infos = runs
    args = ["cost-table", "--pattern", *(f"{r}={p}" for r, p in patterns(tmp_path).items())]
    args += ["--inputs", *map(str, bench), "--run-info", *map(str, infos), "--out", str(tmp_path / "t")]
    assert main(args) == 0
    data = pd.read_csv(tmp_path / "t" / "cost.csv")
    assert data["gpu_hours"].iloc[-1] == pytest.approx(5.0) and (tmp_path / "t" / "cost.html").stat().st_size > 0


def test_pretraining_stage_rules_come_first_and_count_as_training(tmp_path):
    """sup_local_contrast: pretrain_stage1 and pretrain_stage2 jobs on the GPU add to GPU- and CPU-core-hours."""
    key = ("LA", "sup_local_contrast", 8, 1)
    folder = run_dir(tmp_path, *key)
    (folder / "benchmarks").mkdir(parents=True)
    bench = []
    for rule, seconds in (
        ("evaluate", 36.0),
        ("train", 3600.0),
        ("pretrain_stage2", 1800.0),
        ("pretrain_stage1", 1800.0),
    ):
        path = folder / "benchmarks" / f"{rule}.tsv"
        path.write_text(HEAD + f"{seconds}\t0:00:00\t100\t1\t1\t1\t0\t0\t99\t1\n")
        bench.append(path)
    write_run_info(folder / "run_info.json", key, "cuda", A100, 1, 3)
    train_pattern = patterns(tmp_path)["train"]
    stage_patterns = {
        f"pretrain_stage{i}": train_pattern.replace("train.tsv", f"pretrain_stage{i}.tsv") for i in (1, 2)
    }
    pats = {**patterns(tmp_path), **stage_patterns}
    table = build_cost_table(attach_run_info(load_benchmarks(pats, bench), load_run_info([folder / "run_info.json"])))
    assert [h for h in table.header if h.endswith("time (s)")] == [
        "pretrain_stage1 time (s)",
        "pretrain_stage2 time (s)",
        "train time (s)",
        "evaluate time (s)",
    ]
    row = table.data.set_index("method").loc["sup_local_contrast"]
    assert row["gpu_hours"] == pytest.approx(2.0)  # (1800 + 1800 + 3600) s of training on the GPU
    assert row["cpu_core_hours"] == pytest.approx(8.0)  # 7200 s x (1 thread + 3 workers)
    assert row["wall_hours"] == pytest.approx(7236 / 3600)
