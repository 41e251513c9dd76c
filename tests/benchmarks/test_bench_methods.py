"""Benchmarks: one full training step (forward, backward, SGD, EMA hook) of every method vs `supervised`.

Same tiny V-Net (n_filters 2), same 4 × 1 × 16³ batch, CPU. simcvd runs with its default head (pool 128, 4.3 M
parameters), so the number includes the projection head's real cost. sup_local_contrast is measured per job: stage 1
(8 = 4 volumes × 2 views, encoder + global head), stage 2 (2 labeled volumes × 2 intensity views, local SupCon at
stride 4, since stride 8 leaves 8 positions in a 16³ patch) and its fine-tuning step (= supervised). Run with
``pytest tests/benchmarks/test_bench_methods.py --benchmark-only --benchmark-group-by=group``.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from harness.config import from_dict
from harness.method import Batch, Progress
from harness.method.registry import get_method, list_methods
from harness.nets import build_net
from harness.numerics.sdf import signed_distance_map

CPU = torch.device("cpu")


#: (method, stage) pairs; a stage's batch shape follows its StageSpec.
STEPS = [(m, s) for m in list_methods() for s in (*get_method(m).stage_names(), None)]
OVERRIDES = {"sup_local_contrast": {"stage1": {"batch_volumes": 4}, "stage2": {"stride": 4}}}


def make_batch(method, stage: str | None) -> Batch:
    """The 16³ batch of a step: 4 samples (2 labeled + 2 unlabeled, or 4 labeled), or a stage's volumes × views."""
    g = torch.Generator().manual_seed(0)
    n, n_l = 4, 2 if method.needs_unlabeled else 4
    if stage is not None:
        spec = type(method).stage_spec(method.cfg, stage)
        n = spec.batch_volumes * spec.views
        n_l = 0 if spec.data == "images" else n
    x = torch.randn(n, 1, 16, 16, 16, generator=g)
    y = torch.zeros(n_l, 16, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12, 4:12] = 1
    if method.needs_case_id:
        return Batch(x=x, y=y, n_labeled=n_l, extras={"case_id": torch.arange(n)})
    if method.label_transforms() is None:
        return Batch(x=x, y=y, n_labeled=n_l)
    sdf = torch.stack([torch.from_numpy(signed_distance_map(v.numpy().astype("uint8"))) for v in y])
    return Batch(x=x, y=y, n_labeled=n_l, extras={"sdf": sdf})


def make_step(name: str, stage: str | None = None):
    """A closure running one training step of `name` (or of its pre-training `stage`); returns the loss."""
    torch.manual_seed(0)
    cls = get_method(name)
    method = cls(from_dict(cls.Config, OVERRIDES.get(name, {}), name), partial(build_net, n_filters=2), CPU)
    method.set_stage(stage)
    batch = make_batch(method, stage)
    opts = [torch.optim.SGD(p, lr=0.01, momentum=0.9) for p in method.optim_groups().values()]
    progress = Progress(it=100, max_it=6000, lr=0.01)

    def step() -> float:
        method.train()
        for o in opts:
            o.zero_grad()
        out = method.training_step(batch, progress)
        out.loss.backward()
        for o in opts:
            o.step()
        method.after_optimizer_step(progress)
        return out.loss.item()

    return step


@pytest.mark.benchmark(group="method-step")
@pytest.mark.parametrize(("name", "stage"), STEPS, ids=[f"{m}-{s}" if s else m for m, s in STEPS])
def test_bench_training_step(benchmark, name, stage):
    step = make_step(name, stage)
    loss = benchmark.pedantic(step, rounds=10, warmup_rounds=1)
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
