# Config validation, the grid, paths and per-run parameters. All logic lives in harness.config (no torch import).
import json
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from harness.config import (
    Cell,
    ConfigError,
    cell_params,
    check_grid,
    grid_cells,
)  # noqa: E402

validate(config, "../schemas/config.schema.yaml")

METHODS_AVAILABLE = sorted(
    p.stem
    for p in Path(workflow.basedir, "methods").glob("*.py")
    if not p.stem.startswith("_")
)
try:
    check_grid(config, METHODS_AVAILABLE)
except ConfigError as err:
    raise WorkflowError(f"config refused: {err}") from None

NAME = config["name"]
GPU_SLOT = Path(workflow.basedir, "workflow", "scripts", "gpu_slot.sh")
CELLS = grid_cells(config)
RUN = f"results/{NAME}/runs/{{dataset}}/{{method}}/labeled~{{n}}/seed~{{seed}}"
SYNTHETIC = [
    ds for ds, spec in config["data"].items() if spec.get("source") == "synthetic"
]


wildcard_constraints:
    dataset=r"[a-z][a-z0-9_]*",
    method=r"[a-z][a-z0-9_]*",
    n=r"\d+",
    seed=r"\d+",


TRAIN_THREADS = min(config["compute"]["train_threads"], workflow.cores)


def cell_of(wildcards):
    return Cell(
        wildcards.dataset, wildcards.method, int(wildcards.n), int(wildcards.seed)
    )


def run_params(wildcards):
    """The cell's parameters as JSON: a rerun trigger for this cell only."""
    return json.dumps(cell_params(config, cell_of(wildcards)), sort_keys=True)


def data_manifest(wildcards):
    return f"resources/{wildcards.dataset}/manifest.json"


def data_setting(key):
    def get(wildcards):
        return " ".join(str(v) for v in config["data"][wildcards.dataset][key])

    return get


def data_value(key):
    def get(wildcards):
        return config["data"][wildcards.dataset][key]

    return get


def synthetic_setting(key):
    def get(wildcards):
        return config["data"][wildcards.dataset]["synthetic"][key]

    return get


def code_inputs(wildcards):
    """Source files whose changes alter the numbers of a training run (Snakemake does not track imports)."""
    base = Path(workflow.basedir)
    files = [
        f"methods/{wildcards.method}.py",
        "harness/loop.py",
        "harness/losses.py",
        "harness/method.py",
        "harness/data/dataset.py",
        "harness/config.py",
    ]
    files += [
        str(p.relative_to(base))
        for p in sorted((base / "harness" / "nets").glob("*.py"))
    ]
    return [str(base / f) for f in files]


def output_folder(wildcards, output):
    """The folder of a rule's first output (figures are written into it)."""
    return str(Path(output[0]).parent)


def per_case_csvs():
    return [f"results/{NAME}/runs/{c.run_path}/metrics_per_case.csv" for c in CELLS]


def table_files():
    return [
        f"results/{NAME}/tables/{ds}_{unit}.{ext}"
        for ds in config["datasets"]
        for unit in ("voxel", "mm")
        for ext in ("md", "csv", "tex")
    ]


def figure_files():
    per_dataset = [
        f"results/{NAME}/figures/dice_per_case_{ds}.png" for ds in config["datasets"]
    ]
    return [f"results/{NAME}/figures/dice_vs_labeled.png", *per_dataset]


def report_targets():
    return [*table_files(), *figure_files(), f"results/{NAME}/summary.json"]
