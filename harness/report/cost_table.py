"""The report's cost table: wall time, peak memory, device, GPU-hours and CPU-core-hours per method.

Inputs:

* the Snakemake `benchmark:` files of the per-run rules (train, predict, evaluate), each identified by the rule
  pattern its path matches (`load_benchmarks`). Columns used: `s` (wall seconds of the job) and `max_rss` (peak
  resident memory, MB); repeats are averaged. The plain TSV records no thread count (Snakemake puts `threads` only in
  the extended .jsonl format, as a list) and its `cpu_time` is consumed CPU time sampled by polling, not cores held,
  so neither is used.
* each run's run_info.json (`harness.train.loop.finish`, fields of `harness.provenance.device_info`): `device` ('cpu',
  'cuda', 'cuda:1'), `gpu_model` on CUDA, `torch_threads` (intra-op threads) and `loader_workers` of the training
  process (`load_run_info`). Runs are matched to benchmark records by (dataset, method, n_labeled, seed) of the
  run_info's `config`.

One row per dataset and method, over all its labeled counts and seeds, then a total row over all runs:

* Device: the training device of the row's runs, as the device type without index plus the GPU model, e.g. 'cpu' or
  'cuda (NVIDIA A100-SXM4-40GB)'; distinct values joined by '; '.
* GPU peak (MB): the largest `peak_gpu_memory_mb` of the row's runs (torch.cuda.max_memory_allocated of the main
  training, in run_info.json); '–' for CPU runs. Snakemake's benchmark files measure host memory only.
* per rule: wall time as mean ± std over the runs (s) and peak RSS as the maximum over the runs (MB).
* Wall-hours: Σ `s` of every benchmarked job of the row (all rules) / 3600.
* GPU-hours: Σ over the row's runs trained on a GPU (device type other than 'cpu') of the train (and `pretrain_<stage>`,
  the pre-training stages of methods that have them) jobs' `s` / 3600;
  0.00 for CPU-only rows. Training only: predict runs with `--device auto` (the GPU when one is visible) but records
  no device, and evaluate runs on the CPU, so their time counts in Wall-hours only.
* CPU-core-hours: Σ over the row's train jobs of `s` × cores / 3600, cores = `torch_threads` + `loader_workers` of
  run_info.json (the intra-op threads and data-loader worker processes `harness.train.optim.split_threads` gave the
  job: on the CPU exactly the rule's `threads`, on a GPU 1 + workers, the cores the job kept busy). Predict and
  evaluate record no thread count and are not included. '–' when a run of the row lacks these fields.

GPU- and CPU-core-hours are '–' for a row without train records (train not benchmarked). Hours have two decimals in
the rendered tables and full precision in the CSV.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.aggregate import method_rank
from harness.report.table_model import Entry, Table, format_number, mean_std_entry, write_table

logger = logging.getLogger(__name__)

#: Column order of the per-rule columns (pipeline order; other rules follow alphabetically). The pre-training stage
#: rules (`pretrain_<stage>`, e.g. pretrain_stage1) come first, in name order.
PIPELINE_RULES = ("train", "predict", "evaluate")
PRETRAIN_PREFIX = "pretrain_"
#: Keys identifying one run in both inputs.
RUN_KEYS = ("dataset", "method", "n_labeled", "seed")
#: Hour columns of the table data and their titles.
HOUR_COLUMNS = (("wall_hours", "Wall-hours"), ("gpu_hours", "GPU-hours"), ("cpu_core_hours", "CPU-core-hours"))


# -------------------------------------------------------------------------------------------------- benchmark files
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Regex of a Snakemake path pattern: each {wildcard} matches one path component."""
    parts = re.split(r"\{(\w+)(?:,[^}]*)?\}", pattern)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(f"^{regex}$")


def _read_frame(path: Path) -> pd.DataFrame:
    """Raw rows of a benchmark file; ValueError naming `path` if it is missing or unreadable."""
    try:
        if path.suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        return pd.read_csv(path, sep="\t")
    except (OSError, ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise ValueError(f"paths: cannot read the benchmark file {path}: {err}") from err


def _read_benchmark(path: Path) -> dict[str, float]:
    """Mean of the numeric columns of a Snakemake benchmark file (.tsv, or .jsonl with --benchmark-extended).

    Raises:
        ValueError naming `path` when it has no rows or no numeric, finite wall time column `s`.
    """
    frame = _read_frame(path)
    if frame.empty or "s" not in frame.columns:
        raise ValueError(f"paths: {path} is not a Snakemake benchmark file (expected rows with an 's' column)")
    seconds = pd.to_numeric(frame["s"], errors="coerce")
    if not seconds.map(math.isfinite).all():
        raise ValueError(f"paths: {path}: wall time 's' must be finite numbers, got {frame['s'].tolist()}")
    numeric = frame.select_dtypes("number").assign(s=seconds)
    return {k: float(v) for k, v in numeric.mean().items()}


def load_benchmarks(patterns: Mapping[str, str], paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Benchmark records of train/predict/... jobs, identified by the rule pattern each path matches.

    Args:
        patterns: rule name → benchmark path pattern with {dataset}, {method}, {n} and {seed} wildcards.
        paths: benchmark files written by Snakemake's `benchmark:` directive.

    Returns:
        One row per file: rule, dataset, method, n_labeled, seed, path, and the file's numeric columns (s, max_rss in
        MB, cpu_time, ...; averaged over repeats).
    """
    regexes = {rule: _pattern_regex(p) for rule, p in patterns.items()}
    rows = []
    for path in (Path(p) for p in paths):
        hits = [(rule, m) for rule, rx in regexes.items() if (m := rx.match(str(path)))]
        if not hits:
            raise ValueError(f"paths: {path} matches none of the benchmark patterns {dict(patterns)}")
        rule, match = hits[0]
        wildcards = match.groupdict()
        rows.append(
            {
                "rule": rule,
                "dataset": wildcards.get("dataset", ""),
                "method": wildcards.get("method", ""),
                "n_labeled": int(wildcards.get("n", 0)),
                "seed": int(wildcards.get("seed", 0)),
                "path": str(path),
                **_read_benchmark(path),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- run_info.json
def device_label(device: str, gpu_model: str | None = None) -> str:
    """'cpu', or the device type without its index plus the GPU model, e.g. 'cuda (NVIDIA A100-SXM4-40GB)'."""
    kind = str(device).strip().split(":")[0]
    if not kind:
        raise ValueError(f"device: expected a torch device name such as 'cpu' or 'cuda:0', got {device!r}")
    return f"{kind} ({gpu_model})" if gpu_model else kind


def _cores(info: Mapping[str, Any]) -> float:
    """torch_threads + loader_workers of a run_info, NaN when either is absent or not a non-negative integer."""
    values = [info.get("torch_threads"), info.get("loader_workers")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        return math.nan
    return float(sum(values))


def _run_info_record(path: Path) -> dict[str, Any]:
    """Run keys, device label, GPU flag and cores of one run_info.json; ValueError naming `path` when unusable."""
    if not path.is_file():
        raise ValueError(f"run_info: {path} does not exist (expected the run_info.json of a finished run)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        config = info["config"]
        keys = {k: config[k] for k in RUN_KEYS}
        device = info["device"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"run_info: {path} is not a run_info.json with config {RUN_KEYS} and device ({err!r})"
        ) from err
    label = device_label(device, info.get("gpu_model"))
    keys["n_labeled"], keys["seed"] = int(keys["n_labeled"]), int(keys["seed"])
    gpu_mem = info.get("peak_gpu_memory_mb")
    gpu_mem = float(gpu_mem) if isinstance(gpu_mem, int | float) and not isinstance(gpu_mem, bool) else math.nan
    return {
        **keys,
        "device": label,
        "gpu": label.split(" ")[0] != "cpu",
        "cores": _cores(info),
        "gpu_mem_mb": gpu_mem,
        "run_info": str(path),
    }


def load_run_info(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run: dataset, method, n_labeled, seed, device (label), gpu (bool), cores (float), gpu_mem_mb (peak
    GPU memory of the main training, NaN on the CPU), run_info (path).

    Raises:
        ValueError naming the file when one is missing or malformed, or when two files describe the same run.
    """
    records = [_run_info_record(Path(p)) for p in paths]
    if not records:
        raise ValueError("run_info_paths: expected at least one run_info.json")
    frame = pd.DataFrame(records)
    duplicated = frame[frame.duplicated(list(RUN_KEYS), keep=False)]
    if not duplicated.empty:
        raise ValueError(f"run_info_paths: several files describe the same run: {duplicated['run_info'].tolist()}")
    return frame


def attach_run_info(bench: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`bench` (`load_benchmarks`) with each record's device, gpu and cores from its run (`load_run_info`).

    Raises:
        ValueError naming the benchmark files whose run has no run_info.json.
    """
    merged = bench.merge(runs, on=list(RUN_KEYS), how="left", validate="many_to_one")
    missing = merged[merged["device"].isna()]
    if not missing.empty:
        raise ValueError(
            f"run_info_paths: no run_info.json for the run of benchmark file(s) {missing['path'].tolist()} "
            f"(runs {missing[list(RUN_KEYS)].drop_duplicates().to_dict('records')})"
        )
    unused = runs.merge(bench[list(RUN_KEYS)].drop_duplicates(), how="left", indicator=True)
    for path in unused.loc[unused["_merge"] == "left_only", "run_info"]:
        logger.warning("cost table: %s has no benchmark records; the run is left out", path)
    return merged


# ------------------------------------------------------------------------------------------------------------ table
def _rule_order(rules: Iterable[str]) -> list[str]:
    """Rules in pipeline order (pretrain_*, train, predict, evaluate), any other rule after them alphabetically."""

    def rank(rule: str) -> tuple[int, str]:
        if rule.startswith(PRETRAIN_PREFIX):
            return -1, rule
        return (PIPELINE_RULES.index(rule) if rule in PIPELINE_RULES else len(PIPELINE_RULES)), rule

    return sorted(set(rules), key=rank)


def row_hours(records: pd.DataFrame) -> dict[str, float]:
    """Wall-, GPU- and CPU-core-hours of benchmark records with run info (`attach_run_info`); see the module doc.

    Args:
        records: rows with rule, s (wall seconds), gpu (bool) and cores (float, NaN if unknown).

    Returns:
        {"wall_hours", "gpu_hours", "cpu_core_hours"} in hours; the last two NaN without train records, and
        cpu_core_hours NaN when a train record's cores are unknown.
    """
    wall = float(records["s"].sum()) / 3600.0
    train = records[(records["rule"] == "train") | records["rule"].str.startswith(PRETRAIN_PREFIX)]
    if train.empty:
        return {"wall_hours": wall, "gpu_hours": math.nan, "cpu_core_hours": math.nan}
    gpu = float(train.loc[train["gpu"].astype(bool), "s"].sum()) / 3600.0
    core_seconds = train["s"] * train["cores"].astype(float)
    cpu = float(core_seconds.sum()) / 3600.0 if core_seconds.notna().all() else math.nan
    return {"wall_hours": wall, "gpu_hours": gpu, "cpu_core_hours": cpu}


def _row(label: str, records: pd.DataFrame, rules: list[str]) -> tuple[list[Entry], dict[str, Any]]:
    """Entries and CSV record of one table row summarising `records` (all benchmark records of its runs)."""
    labeled = sorted({int(n) for n in records["n_labeled"]})
    devices = sorted(set(records["device"]))
    n_runs = len(records[list(RUN_KEYS)].drop_duplicates())
    gpu_mem = records.drop_duplicates(list(RUN_KEYS))["gpu_mem_mb"].max() if "gpu_mem_mb" in records else math.nan
    record: dict[str, Any] = {
        "labeled": ";".join(map(str, labeled)),
        "n_runs": n_runs,
        "device": "; ".join(devices),
        "peak_gpu_memory_mb": gpu_mem,
    }
    entries = [
        Entry(label),
        Entry(", ".join(map(str, labeled))),
        Entry("; ".join(devices)),
        Entry(str(n_runs)),
        Entry(format_number(gpu_mem, decimals=0)),
    ]
    for rule in rules:
        r = records[records["rule"] == rule]
        time_s, rss = r["s"], r.get("max_rss", pd.Series(dtype=float))
        record |= {
            f"{rule}_s_mean": time_s.mean(),
            f"{rule}_s_std": time_s.std(ddof=1),
            f"{rule}_max_rss_mb": rss.max(),
            f"{rule}_n": len(r),
        }
        entries += [
            mean_std_entry(time_s.mean(), time_s.std(ddof=1), decimals=1),
            Entry(format_number(rss.max(), decimals=0)),
        ]
    hours = row_hours(records)
    record |= hours
    entries += [Entry(format_number(hours[name], decimals=2)) for name, _ in HOUR_COLUMNS]
    return entries, record


COST_CAPTION = (
    "One row per dataset and method (all labeled counts and seeds; Runs = number of runs), then the total over all "
    "runs. Device: training device of the runs (run_info.json). GPU peak: the largest peak GPU memory of the row's "
    "main training runs (torch.cuda.max_memory_allocated, run_info.json; – on the CPU). Per rule, from Snakemake's "
    "benchmark files: wall time as mean ± std over runs (s) and peak resident memory as the maximum over runs (MB). "
    "Wall-hours = wall time of every benchmarked job summed / 3600. GPU-hours = training (pretrain_<stage> and train)"
    " wall time of the runs trained on a GPU summed / 3600 (predict may also use the GPU but records no device). CPU-"
    "core-hours = train wall time × (torch intra-op threads + data-loader workers, from run_info.json) summed / 3600;"
    " predict and evaluate are not included."
)


def build_cost_table(records: pd.DataFrame) -> Table:
    """The cost table: one row per (dataset, method), then a total row (columns in the module docstring).

    Args:
        records: benchmark records with run info (`attach_run_info(load_benchmarks(...), load_run_info(...))`).

    Returns:
        Table 'cost'; its data has one record per row (the total row has dataset 'all', method 'total') with
        `{rule}_s_mean/_s_std/_max_rss_mb/_n`, wall_hours, gpu_hours and cpu_core_hours in full precision.
    """
    required = {"rule", "s", "device", "gpu", "cores", *RUN_KEYS}
    if records.empty or not required <= set(records.columns):
        raise ValueError(f"records: expected benchmark records with columns {sorted(required)}, got none or fewer")
    rules = _rule_order(records["rule"])
    cells = records[["dataset", "method"]].drop_duplicates()
    cells = cells.assign(_r=cells["method"].map(method_rank)).sort_values(["dataset", "_r", "method"])
    datasets = sorted(set(cells["dataset"]))
    rows, data, groups = [], [], []
    for _, cell in cells.iterrows():
        part = records[(records["dataset"] == cell["dataset"]) & (records["method"] == cell["method"])]
        entries, record = _row(f"{cell['dataset']}/{cell['method']}", part, rules)
        rows.append(entries)
        data.append({"dataset": cell["dataset"], "method": cell["method"], **record})
        groups.append(datasets.index(cell["dataset"]))
    entries, record = _row("Total", records, rules)
    rows.append(entries)
    data.append({"dataset": "all", "method": "total", **record})
    groups.append(len(datasets))
    header = ["Dataset/method", "Labeled", "Device", "Runs", "GPU peak (MB)"]
    for rule in rules:
        header += [f"{rule} time (s)", f"{rule} max RSS (MB)"]
    return Table(
        name="cost",
        title="Cost per method",
        caption=COST_CAPTION,
        header=(*header, *(title for _, title in HOUR_COLUMNS)),
        rows=tuple(tuple(r) for r in rows),
        groups=tuple(groups),
        data=pd.DataFrame(data),
        text_columns=3,
    )


def write_cost_tables(
    patterns: Mapping[str, str],
    paths: Iterable[str | os.PathLike],
    run_info_paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
) -> dict[str, Path]:
    """Write `<out_dir>/cost.{md,csv,tex,html}` from benchmark files and the runs' run_info.json.

    Args:
        patterns: rule name → benchmark path pattern (see `load_benchmarks`).
        paths: the benchmark files.
        run_info_paths: run_info.json of every benchmarked run.
        out_dir: folder of the tables.

    Returns:
        {ext: path written}.
    """
    records = attach_run_info(load_benchmarks(patterns, paths), load_run_info(run_info_paths))
    return write_table(build_cost_table(records), out_dir)
