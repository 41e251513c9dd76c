"""The identity of a job's weights: exactly what can change their numbers, and nothing else.

* the run's configuration (`RunConfig`, which holds the thread count and no bookkeeping such as the logging or
  checkpoint period), per stage (`stage_config_sha256`);
* the code the job imports (`harness.run.code`);
* the prepared data (the sha256 of its manifest.json);
* the torch intra-op thread count (CPU reductions are summed in another order with another count).

Checkpoints and model.pt files carry it; a job resumes only from a checkpoint of the same identity and starts a
stage only from a previous stage's model of the same configuration and data. No torch import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.config import RunConfig, sha256_of


@dataclass(frozen=True)
class Identity:
    """What a job's weights depend on: its configuration, the code of its numerics, its data and its threads."""

    config_sha256: str
    code_sha256: str
    data_sha256: str
    threads: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def differs(self, saved: dict[str, Any]) -> list[str]:
        """Names of the fields (without `_sha256`) whose value in `saved` differs from this identity."""
        return [k.removesuffix("_sha256") for k, v in self.as_dict().items() if saved.get(k) != v]


def stage_config_sha256(cfg: RunConfig, stage: str | None, shared: bool = False) -> str:
    """The configuration hash a stage's checkpoints and model carry: the run config's, combined with the stage name
    for a pre-training stage. A shared stage (it reads no labels, `harness.run.stages`) hashes the config without
    `n_labeled`, so the runs of every labeled count accept the one model the DAG trains for them."""
    if stage is None:
        return cfg.sha256()
    run = sha256_of({**cfg.to_dict(), "n_labeled": None}) if shared else cfg.sha256()
    return sha256_of({"run": run, "stage": stage})
