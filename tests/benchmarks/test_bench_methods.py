"""Benchmarks: one full training step (forward, backward, SGD, EMA hook) of simcvd and cvrl vs `supervised`.

Same tiny V-Net (n_filters 2), same 4 × 1 × 16³ batch, CPU. simcvd runs with its default head (pool 128, 4.3 M
parameters), so the number includes the projection head's real cost. Run with
``pytest tests/benchmarks/test_bench_methods.py --benchmark-only --benchmark-group-by=group``.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from harness.config import from_dict
from harness.method import Batch, Progress
from harness.nets import build_net
from harness.registry import get_method
from harness.sdf import signed_distance_map

CPU = torch.device("cpu")


def make_step(name: str):
    """A closure running one training step of `name`; returns the loss as a float."""
    torch.manual_seed(0)
    cls = get_method(name)
    method = cls(from_dict(cls.Config, {}, name), partial(build_net, n_filters=2), CPU)
    g = torch.Generator().manual_seed(0)
    n_l = 2 if method.needs_unlabeled else 4
    x = torch.randn(4, 1, 16, 16, 16, generator=g)
    y = torch.zeros(n_l, 16, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12, 4:12] = 1
    extras = {"sdf": torch.stack([torch.from_numpy(signed_distance_map(v.numpy().astype("uint8"))) for v in y])}
    batch = Batch(x=x, y=y, n_labeled=n_l, extras=extras if hasattr(method, "label_transforms") else {})
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
@pytest.mark.parametrize("name", ["supervised", "simcvd", "cvrl"])
def test_bench_training_step(benchmark, name):
    step = make_step(name)
    loss = benchmark.pedantic(step, rounds=10, warmup_rounds=1)
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
