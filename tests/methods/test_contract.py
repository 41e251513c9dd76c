"""Contract test, parametrised over every registered method: tiny V-Net, 16³ patches, CPU; and the contract itself
(nothing undeclared, the DAG reads what the method declares, semi-supervised methods use their unlabeled samples)."""

from __future__ import annotations

import dataclasses
import typing
from functools import partial
from pathlib import Path

import pytest
import torch

from harness.config import from_dict
from harness.method import Batch, Method, Progress
from harness.method.registry import get_method, list_methods
from harness.nets import build_net
from harness.run.method_table import read_methods
from harness.train.optim import backward_and_step

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]


def make_method(name: str, seed: int = 0, normalization: str = "batchnorm", overrides: dict | None = None):
    torch.manual_seed(seed)
    cls = get_method(name)
    config = from_dict(cls.Config, overrides or {}, name)
    return cls(config, partial(build_net, n_filters=2, normalization=normalization), CPU)


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


# -- the contract itself ----------------------------------------------------------------------------------------------
BASE_NAMES = {n for n in dir(Method) if not n.startswith("_")}


def added_public_names(cls: type) -> set[str]:
    """Public names a method class (and its bases below `Method`) defines that neither the contract nor its own stage
    declarations (`Stage.step`, `trains`, `starts_from`, `TRAIN_STARTS_FROM`) declare."""
    own = {n for c in cls.__mro__ if c not in (Method, object) for n in vars(c) if not n.startswith("_")}
    declared = {name for s in cls.STAGES for name in (s.step, s.trains, s.starts_from)} | {cls.TRAIN_STARTS_FROM}
    return own - BASE_NAMES - declared


@pytest.mark.parametrize("name", list_methods())
def test_methods_use_only_what_the_contract_declares(name):
    assert added_public_names(get_method(name)) == set(), "declare the hook in harness/method/contract.py"


def test_an_undeclared_hook_is_caught():
    class WithHook(get_method("supervised")):
        def before_epoch(self) -> None:  # a hook the harness would never call
            pass

    assert added_public_names(WithHook) == {"before_epoch"}
    staged = get_method("sup_local_contrast")
    assert added_public_names(type("Renamed", (staged,), {"global_step_v2": staged.global_step})) == {"global_step_v2"}


def dataclass_keys(cls: type) -> dict:
    """{field: None or the nested dataclass's keys}, as `harness.run.method_table` reads them from source."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: dataclass_keys(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else None
        for f in dataclasses.fields(cls)
    }


def literal_defaults(config: object) -> dict:
    """The Config's defaults as the method table reads them: literals (tuples as lists) and nested dataclasses."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = literal_defaults(value)
        elif f.default is not dataclasses.MISSING:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@pytest.mark.parametrize("name", list_methods())
def test_the_dag_reads_what_the_method_declares(name):
    """The torch-free table the Snakefile uses equals the imported method: name, STAGES, Config keys and the literal
    defaults a sweep compares its values with."""
    entry = read_methods(REPO)[name]
    cls = get_method(name)
    assert entry.stages == cls.stage_names() and entry.config_keys == dataclass_keys(cls.Config)
    assert entry.shared_stages == tuple(s.name for s in cls.STAGES if s.shared)
    for stage in cls.STAGES:  # what the DAG reads of a stage is what the loop runs
        assert entry.stage(stage.name).settings == stage.settings and stage.spec(cls.Config()).data == stage.data
    assert entry.defaults == literal_defaults(cls.Config()), name
    assert set(read_methods(REPO)) == set(list_methods())


# -- semi-supervised methods learn from the unlabeled half of the batch -----------------------------------------------
def unlabeled_gradient(method: Method) -> float:
    """Σ|∂ loss / ∂ x| over the unlabeled samples of a batch, at the end of training (every ramp at its maximum).

    The networks have no normalisation layers (`make_method(..., normalization="none")`), so batch statistics cannot
    carry a gradient from the unlabeled samples into a loss that ignores them.
    """
    batch = make_batch(method)
    x = batch.x.clone().requires_grad_(True)
    batch = Batch(x=x, y=batch.y, n_labeled=batch.n_labeled, extras=batch.extras)
    method.train()
    out = method.training_step(batch, Progress(5999, 6000, 1e-4))
    total = sum(out.loss.values()) if isinstance(out.loss, dict) else out.loss
    (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    return 0.0 if grad is None else float(grad[batch.n_labeled :].abs().sum())


#: Settings under which a method's unlabeled term is non-zero on an untrained 2-filter net: AD-MT keeps only pseudo
#: labels with a confidence of at least 0.8, which a fresh two-class net (p ≈ 0.5) never reaches.
UNLABELED_CHECK_OVERRIDES = {"ad_mt": {"conf_threshold": 0.5}}


@pytest.mark.parametrize("name", [m for m in list_methods() if get_method(m).needs_unlabeled])
def test_semi_supervised_methods_learn_from_unlabeled_samples(name):
    method = make_method(name, normalization="none", overrides=UNLABELED_CHECK_OVERRIDES.get(name))
    assert unlabeled_gradient(method) > 0


def test_a_method_that_ignores_unlabeled_data_is_caught():
    class LabeledOnly(get_method("supervised")):
        needs_unlabeled = True  # says it is semi-supervised, trains on the labeled half only

    method = LabeledOnly(
        from_dict(LabeledOnly.Config, {}, "x"), partial(build_net, n_filters=2, normalization="none"), CPU
    )
    assert unlabeled_gradient(method) == 0.0
