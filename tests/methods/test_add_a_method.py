"""Adding a method is writing one file: a method with two pre-training stages, dropped into `methods/` of a project
copy, is registered, planned by the DAG (one `pretrain_<stage>` job per stage), trained stage by stage, evaluated and
tabled, with no other edit anywhere."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml
from workflow_tools import REPO, copy_project, run_snakemake

TOY = textwrap.dedent(
    '''
    """toy_staged: a test method with two pre-training stages (an image-only warm-up, then a labeled stage).

    Reference code: none (a fixture of tests/methods/test_add_a_method.py).
    Implementation details: 1. warm-up: mean squared logits on images only; 2. labeled: the supervised loss;
    3. main training: the supervised loss. Known deviations: none.
    """

    from __future__ import annotations

    from dataclasses import dataclass, field
    from typing import Any

    import torch

    from harness.method import Batch, BuildNet, Method, Progress, Stage, StepOutput, register_method
    from harness.numerics.losses import supervised_loss


    @dataclass(frozen=True)
    class Warmup:
        """The warm-up stage (`method_overrides.toy_staged.warmup.*`)."""

        iterations: int = 3
        """Optimiser steps."""
        batch_volumes: int = 2
        """Volumes per batch."""
        lr: float = 0.01
        """SGD learning rate."""
        weight_decay: float = 0.0
        """SGD weight decay."""


    @dataclass(frozen=True)
    class Labeled:
        """The labeled stage (`method_overrides.toy_staged.labeled.*`)."""

        iterations: int = 2
        """Optimiser steps."""
        batch_volumes: int = 2
        """Volumes per batch."""
        lr: float = 0.01
        """SGD learning rate."""
        weight_decay: float = 0.0
        """SGD weight decay."""


    @dataclass(frozen=True)
    class Config:
        """Hyperparameters of the toy method."""

        warmup: Warmup = field(default_factory=Warmup)
        """The warm-up stage."""
        labeled: Labeled = field(default_factory=Labeled)
        """The labeled stage."""


    @register_method("toy_staged")
    class ToyStaged(Method):
        VERSION = 1
        Config = Config
        needs_unlabeled = False
        STAGES = (
            Stage(name="warmup", data="images", settings="warmup", step="warmup_step", modules=("net",),
                  optimizer="sgd"),
            Stage(name="labeled", data="labeled", settings="labeled", step="training_step", modules=("net",),
                  optimizer="sgd", starts_from="take_net"),
        )
        TRAIN_STARTS_FROM = "take_net"

        def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
            super().__init__(cfg, build_net, device)
            self.net = build_net("vnet", n_classes=2).to(device)

        def take_net(self, state: dict[str, Any]) -> None:
            self.net.load_state_dict(state["net"])

        def warmup_step(self, batch: Batch, progress: Progress) -> StepOutput:
            loss = self.net(batch.x).pow(2).mean()
            return StepOutput(loss=loss, logs={"loss/warmup": loss.item()})

        def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
            loss, logs = supervised_loss(self.net(batch.x_l), batch.y)
            return StepOutput(loss=loss, logs=logs)
    '''
)


@pytest.mark.slow
def test_a_method_with_two_pretraining_stages_is_one_file(tmp_path):
    project = copy_project(tmp_path / "project")
    (project / "methods" / "toy_staged.py").write_text(TOY)
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["methods"] = ["toy_staged"]
    cfg["method_overrides"] = {"toy_staged": {"warmup": {"iterations": 2}}}
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"

    dry = run_snakemake(work, config, "-n", project=project)
    text = dry.stdout + dry.stderr
    for rule in ("pretrain_warmup", "pretrain_labeled", "train", "predict", "evaluate"):
        assert f"\n{rule} " in text.split("Job stats:")[1], rule

    run_snakemake(work, config, project=project)
    run = work / "results" / "ci" / "runs" / "synthetic" / "toy_staged" / "labeled~2" / "seed~1"
    info = [json.loads((d / "run_info.json").read_text()) for d in (run / "warmup", run / "labeled", run)]
    warmup, labeled, final = info
    assert warmup["iterations"] == 2 and labeled["iterations"] == 2 and final["iterations"] == 4
    assert labeled["previous_stage_model_sha256"] == warmup["model_sha256"]  # each stage starts from the one before
    assert final["previous_stage_model_sha256"] == labeled["model_sha256"]
    assert "toy_staged" in (work / "results" / "ci" / "tables" / "synthetic_voxel.md").read_text()

    cfg["method_overrides"] = {"toy_staged": {"warmup": {"iteratons": 2}}}  # a typo is refused when the DAG is built
    config.write_text(yaml.safe_dump(cfg))
    refused = run_snakemake(work, config, "-n", project=project, check=False)
    assert refused.returncode != 0
    assert "method_overrides.toy_staged.warmup: unknown key 'iteratons' (did you mean 'iterations'?)" in (
        refused.stdout + refused.stderr
    )
