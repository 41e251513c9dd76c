"""Contract test, parametrised over every registered method (DESIGN.md §5): tiny V-Net, 16³ patches, CPU."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from harness.config import from_dict
from harness.method import Batch, Progress
from harness.method.registry import get_method, list_methods
from harness.nets import build_net
from harness.train.optim import backward_and_step

CPU = torch.device("cpu")


def make_method(name: str, seed: int = 0):
    torch.manual_seed(seed)
    cls = get_method(name)
    return cls(from_dict(cls.Config, {}, name), partial(build_net, n_filters=2), CPU)


def make_batch(method, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n_l = 2 if method.needs_unlabeled else 4
    x = torch.randn(4, 1, 16, 16, 16, generator=g)
    y = (torch.rand(n_l, 16, 16, 16, generator=g) > 0.6).long()
    return Batch(x=x, y=y, n_labeled=n_l, extras=label_extras(method, y))


def label_extras(method, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the loader adds for a method with `label_transforms` (e.g. DTC's SDF), computed per labeled sample."""
    transforms = method.label_transforms() or {}
    return {
        name: torch.stack([torch.from_numpy(fn(label.numpy().astype("uint8"))) for label in y])
        for name, fn in transforms.items()
    }


def optimizers(method):
    return {k: torch.optim.SGD(v, lr=0.01, momentum=0.9) for k, v in method.optim_groups().items()}


def two_steps(name: str, seed: int = 0) -> tuple[list[float], object]:
    method = make_method(name, seed)
    opts = optimizers(method)
    out_losses = []
    for it in range(2):
        method.train()
        out = method.training_step(make_batch(method, it), Progress(it, 10, 0.01))
        out_losses.append(float(sum(v for v in out.loss.values())) if isinstance(out.loss, dict) else out.loss.item())
        backward_and_step(out.loss, opts)
        method.after_optimizer_step(Progress(it, 10, 0.01))
    return out_losses, method


@pytest.mark.parametrize("name", list_methods())
def test_finite_loss_float_logs_and_gradients_in_every_group(name):
    method = make_method(name)
    method.train()
    out = method.training_step(make_batch(method), Progress(0, 10, 0.01))
    losses = out.loss if isinstance(out.loss, dict) else {"main": out.loss}
    assert set(losses) == set(method.optim_groups())
    for group, loss in losses.items():
        assert loss.dim() == 0 and torch.isfinite(loss), group
        params = method.optim_groups()[group]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient in group {group}"
    assert out.logs and all(type(v) is float for v in out.logs.values())


@pytest.mark.parametrize("name", list_methods())
def test_eval_network_shape_and_state_dict_round_trip(name):
    _, method = two_steps(name)
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(5))
    net = method.eval_network().eval()
    with torch.no_grad():
        out = net(x)
    channels = 1 if method.output_kind == "sigmoid" else 2
    assert out.shape == (1, channels, 16, 16, 16)
    fresh = make_method(name, seed=123)
    fresh.load_state_dict(method.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval_network().eval()(x), out)


@pytest.mark.parametrize("name", list_methods())
def test_same_seed_same_losses(name):
    assert two_steps(name, seed=3)[0] == two_steps(name, seed=3)[0]
    assert two_steps(name, seed=3)[0] != two_steps(name, seed=4)[0]


@pytest.mark.parametrize("name", list_methods())
def test_method_file_documents_itself(name):
    import importlib

    module = importlib.import_module(f"methods.{name}")
    doc = module.__doc__ or ""
    assert doc.startswith(f"{name}:"), "the docstring opens with the method name"
    assert "Reference code" in doc and "Implementation details" in doc and "deviations" in doc
    assert isinstance(get_method(name).VERSION, int)
