"""gpu_check.json and its markdown tables (gpu_check.md), written atomically; the tables are also printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.gpucheck.settings import VARIANTS
from harness.io import write_text_atomic

STEP_COLUMNS = [v.name for v in VARIANTS] + ["compile"]


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else str(value)


def step_cell(r: dict[str, Any] | None) -> str:
    """ "median ms / peak MiB" of a measurement, or why there is none."""
    if r is None:
        return "–"
    if r["status"].startswith("skipped: --quick"):
        return "– (--quick)"
    if r["status"].startswith("skipped: time budget"):
        return "– (time budget)"
    if r["status"] != "ok":
        return r["status"]
    memory = r["peak_memory_mb"]
    cell = f"{1000 * r['median_step_s']:.0f} ms / " + (f"{memory:.0f} MiB" if isinstance(memory, float) else memory)
    return cell + (f" (compile {r['compile_s']:.0f} s)" if "compile_s" in r else "")


def step_rows(steps: list[dict[str, Any]], columns: list[str]) -> list[list[Any]]:
    """One row per (dataset, method/stage), one column per variant, then the compiled step."""
    cells: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in steps:
        label = r["method"] if r["stage"] == "train" else f"{r['method']}/{r['stage']}"
        column = "compile" if r["compile"] else r["variant"]
        cells.setdefault((r["dataset"], label), {})[column] = r
    return [[ds, label, *(step_cell(cols.get(c)) for c in columns)] for (ds, label), cols in cells.items()]


def device_section(d: dict[str, Any]) -> list[str]:
    header = ["device", "memory (GiB)", "driver", "torch", "CUDA (build)", "cuDNN", "CPU cores"]
    row = [d["name"], number(d["memory_gib"], ".1f"), d["driver"], d["torch"], d["cuda_build"], d["cudnn"]]
    return table(header, [[*row, d["cpu_cores"]]])


def steps_section(report: dict[str, Any]) -> list[str]:
    intro = (
        "Variants: fp32 = TF32 off (the reference), tf32 = TF32 convolutions and matmuls, bf16 = bf16 autocast; "
        f"+cl = channels_last_3d; compile = torch.compile of the grid's variant ({report['grid_variant']})."
    )
    head = ["## Training steps: median step time after warm-up / peak GPU memory", "", intro, ""]
    columns = [c for c in [report["grid_variant"]] if c not in STEP_COLUMNS] + STEP_COLUMNS  # e.g. an fp16 grid
    return head + table(["dataset", "method/stage", *columns], step_rows(report["steps"], columns))


def loader_section(rows: list[dict[str, Any]]) -> list[str]:
    header = ["dataset", "method", "SDF", "workers", "loader samples/s", "step samples/s", "bottleneck"]
    body = [
        [
            r["dataset"],
            r["method"],
            r["sdf"],
            r["workers"],
            f"{r['samples_per_s']:.1f}",
            number(r["step_samples_per_s"], ".1f"),
            r["bottleneck"],
        ]
        for r in rows
    ]
    return ["## Data loader (samples/s) beside what the step consumes", ""] + table(header, body)


def sliding_section(rows: list[dict[str, Any]]) -> list[str]:
    header = ["dataset", "case size", "windows", "windows per pass", "seconds per case"]
    body = [
        [
            r["dataset"],
            "×".join(map(str, r["volume"])),
            r["windows"],
            r["windows_per_batch"],
            f"{r['seconds_per_case']:.2f}",
        ]
        for r in rows
    ]
    return ["## Sliding window per test case", ""] + table(header, body)


def concurrency_section(k: dict[str, Any]) -> list[str]:
    header = ["k", "status", "steps/s (all runs)", "speed-up vs k=1", "s per step of one run", "process IDs"]
    body = [
        [
            r["k"],
            r["status"],
            number(r.get("aggregate_steps_per_s", "–"), ".2f"),
            number(r.get("speedup_vs_1", "–"), ".2f"),
            number(r.get("per_run_step_s", "–"), ".3f"),
            " ".join(str(p["pid"]) for p in r.get("processes", [])),
        ]
        for r in k["rows"]
    ]
    return [f"## k runs sharing the device ({k['method']}, {k['dataset']}; k processes)", ""] + table(header, body)


def projection_section(proj: dict[str, Any], grid: str) -> list[str]:
    out = [
        f"## Projected wall time of {grid} ({proj['runs']} runs)",
        "",
        f"Training {number(proj['train_hours'], '.1f')} h + prediction {number(proj['predict_hours'], '.1f')} h + "
        f"selection and audit evaluations {number(proj.get('selection_hours', 0.0), '.1f')} h one run at a time; not "
        "included: loader stalls, checkpoints, metrics, job start-up, the idle tail.",
        "",
        "Selection and audit evaluations: the sliding window over the validation cases every `protocol.val_every` "
        "steps (selection `val`) and over the test cases every `report.selection_audit.every` steps and at each "
        "validation, in each run's training job, at the measured seconds per case.",
    ]
    if proj["unmeasured"]:
        out.append(f"Not measured (left out of the hours): {', '.join(proj['unmeasured'])}.")
    body = [[r["gpus"], r["k"], f"{r['speedup']:.2f}", number(r["wall_hours"], ".1f")] for r in proj["rows"]]
    return out + [""] + table(["GPUs", "k per GPU", "speed-up", "wall hours"], body)


def render(report: dict[str, Any]) -> str:
    """The markdown report: device, steps, loader, sliding window, k runs per device, projection."""
    sections = [
        [f"# GPU check ({report['mode']}, {report['seconds']:.0f} s)"],
        device_section(report["device"]),
        steps_section(report),
        loader_section(report["loader"]),
        sliding_section(report["sliding_window"]),
        concurrency_section(report["concurrency"]),
        projection_section(report["projection"], report["grid"]),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write `<out_dir>/gpu_check.json` and `<out_dir>/gpu_check.md` (each to a temporary name, then renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "gpu_check.json", out_dir / "gpu_check.md"
    write_text_atomic(json_path, json.dumps(report, indent=2, default=str))
    write_text_atomic(md_path, render(report))
    return json_path, md_path
