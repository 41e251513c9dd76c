"""A run's stages: its method's pre-training stages, in order, then the main training (`MAIN_STAGE`). Which stage
hands its model.pt to which, and in which run folder a stage lives: a stage that reads no labels (`shared`) is
trained once per dataset, method and seed, in the run folder of the dataset's smallest labeled count, and the runs of
every labeled count start from it. No torch import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from harness.run.folder import RunId
from harness.run.method_table import MethodEntry

#: The name of the main training, the last stage of every run (`<run>/model.pt`; pre-training stages: `<run>/<s>/`).
MAIN_STAGE = "train"


def previous_stage(stages: Sequence[str], stage: str | None) -> str | None:
    """The stage whose model.pt initialises `stage` (None for the main training): None for a first stage."""
    if stage is not None and stage not in stages:
        raise ValueError(f"no pre-training stage {stage!r}; the method's stages: {list(stages)}")
    index = len(stages) if stage is None else list(stages).index(stage)
    return stages[index - 1] if index > 0 else None


def stage_home(run: RunId, stage: str, method: MethodEntry, labeled_counts: Sequence[int]) -> RunId:
    """The run whose folder holds `stage` of `run`: its own, or for a shared stage the run of the smallest of the
    dataset's `labeled_counts` (the same method, seed and dataset)."""
    if method.stage(stage).shared:
        return replace(run, n_labeled=min(labeled_counts))
    return run


def own_stages(run: RunId, method: MethodEntry, labeled_counts: Sequence[int]) -> tuple[str, ...]:
    """The pre-training stages whose outputs are in `run`'s own folder (not shared from another labeled count)."""
    return tuple(s for s in method.stages if stage_home(run, s, method, labeled_counts) == run)


def job_name(stage: str | None) -> str:
    """The DAG job (rule) that trains `stage`: `pretrain_<stage>`, or `train` for the main training."""
    return MAIN_STAGE if stage is None or stage == MAIN_STAGE else f"pretrain_{stage}"
