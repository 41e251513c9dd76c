"""The run folder: where a run's files are and what they are called.

    results/<name>/runs/<dataset>/<method>/labeled~<n>/seed~<seed>/
        run_config.yaml  journal.log  model.pt  run_info.json  checkpoint_last.pt  train_log.jsonl
        val_curve.csv  test_curve.csv            the evaluations during training (selection `val`, the audit)
        <stage>/model.pt, run_info.json, ...     a pre-training stage's files
        predictions/  metrics_per_case.csv  metrics.json  logs/  benchmarks/  .lock

Every other module asks this one for these names (the Snakemake rules too). No torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUNS = "runs"
RUN_CONFIG = "run_config.yaml"
JOURNAL = "journal.log"
MODEL = "model.pt"
RUN_INFO = "run_info.json"
CHECKPOINT = "checkpoint_last.pt"
TRAIN_LOG = "train_log.jsonl"
VAL_CURVE = "val_curve.csv"
TEST_CURVE = "test_curve.csv"
PREDICTIONS = "predictions"
METRICS_CSV = "metrics_per_case.csv"
METRICS_JSON = "metrics.json"
LOGS = "logs"
BENCHMARKS = "benchmarks"
LOCK = ".lock"
#: The run folder below `results/<name>/runs/`, with Snakemake's wildcard names.
RUN_PATTERN = "{dataset}/{method}/labeled~{n}/seed~{seed}"


@dataclass(frozen=True)
class RunId:
    """One training run of a grid: dataset × method (or variant) × labeled count × seed."""

    dataset: str
    method: str
    n_labeled: int
    seed: int

    @property
    def path(self) -> str:
        """`<dataset>/<method>/labeled~<n>/seed~<seed>` (below `results/<name>/runs/`)."""
        return RUN_PATTERN.format(dataset=self.dataset, method=self.method, n=self.n_labeled, seed=self.seed)

    @classmethod
    def from_folder(cls, run_dir: str | Path) -> RunId | None:
        """The run of a folder `.../<dataset>/<method>/labeled~<n>/seed~<s>`, or None if it is not one."""
        parts = Path(run_dir).parts
        try:
            return cls(parts[-4], parts[-3], int(parts[-2].split("~")[1]), int(parts[-1].split("~")[1]))
        except (IndexError, ValueError):
            return None


def run_folder(bench_dir: str | Path, run: RunId) -> Path:
    """The folder of `run` in the benchmark folder `results/<name>`."""
    return Path(bench_dir) / RUNS / run.path


def stage_folder(run_dir: str | Path, stage: str | None) -> Path:
    """Where a stage writes its model, run info, checkpoint and log: `<run>/<stage>/`, or the run folder itself for
    the main training (stage None)."""
    return Path(run_dir) if stage is None else Path(run_dir) / stage


@dataclass(frozen=True)
class StageFiles:
    """The files one stage of a run writes (the main training's are the run folder's own)."""

    folder: Path

    @classmethod
    def of(cls, run_dir: str | Path, stage: str | None) -> StageFiles:
        return cls(stage_folder(run_dir, stage))

    @property
    def model(self) -> Path:
        return self.folder / MODEL

    @property
    def info(self) -> Path:
        return self.folder / RUN_INFO

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT

    @property
    def log(self) -> Path:
        return self.folder / TRAIN_LOG
