"""A method for one run: its validated configuration, its stages, its networks, and trained weights loaded back.

Training (`harness.train`) and evaluation (`harness.evaluate`) both start here, so neither imports the other.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from harness.config import (
    ConfigError,
    DataConfig,
    ProtocolConfig,
    RunConfig,
    SelectionConfig,
    base_of,
    from_dict,
    to_dict,
)
from harness.io import write_yaml_atomic
from harness.method.contract import Method, StageSpec, main_stage
from harness.method.registry import get_method
from harness.nets import build_net
from harness.run.lineage import LineageError, new_journal
from harness.run.stages import MAIN_STAGE


def resolve_run(params: dict[str, Any], where: str | None = None) -> RunConfig:
    """Merge dataclass defaults ← protocol ← overrides (`harness.workflow.grid.cell_params`) and validate them,
    the method's own hyperparameters against its `Config`. `where` names where the run's method overrides are
    written in the config (`harness.workflow.variants.written_at`), for the messages."""
    method_cls = get_method(base_of(params["method"]))
    protocol = dict(params.get("protocol", {}))
    if not method_cls.needs_unlabeled:
        protocol["labeled_bs"] = protocol.get("batch_size", ProtocolConfig.batch_size)
    where = where or f"method_overrides.{params['method']}"
    method_cfg = from_dict(method_cls.Config, params.get("method_overrides", {}), where)
    cfg = RunConfig(
        dataset=params["dataset"],
        method=params["method"],
        n_labeled=params["n_labeled"],
        seed=params["seed"],
        data=from_dict(DataConfig, params["data"], f"data.{params['dataset']}"),
        protocol=from_dict(ProtocolConfig, protocol, "protocol"),
        method_config=to_dict(method_cfg),
        variant_overrides=dict(params.get("variant_overrides", {})),
        threads=params.get("threads", RunConfig.threads),
        selection=from_dict(SelectionConfig, params.get("selection", {}), "protocol.selection"),
    )
    if cfg.is_upper_bound and method_cls.needs_unlabeled:
        raise ConfigError(f"{cfg.method} needs unlabeled data but n_labeled is every training case ({cfg.n_labeled})")
    p = cfg.protocol
    if method_cls.needs_unlabeled and p.labeled_bs >= p.batch_size:
        raise ConfigError(
            f"protocol.labeled_bs ({p.labeled_bs}) equals protocol.batch_size ({p.batch_size}), so {cfg.method}'s "
            f"batches hold no unlabeled sample: set labeled_bs below batch_size (the reference: 2 of 4)"
        )
    return cfg


def write_run_config(params: dict[str, Any], path: Path, where: str | None = None) -> RunConfig:
    """Resolve one grid cell's parameters into `path` (run_config.yaml) and start the run's journal beside it (the
    `run_config` rule, run inside the Snakemake process; `python -m harness resolve-run` does the same)."""
    cfg = resolve_run(params, where)
    write_yaml_atomic(Path(path), cfg.to_dict())
    new_journal(Path(path).parent)
    return cfg


def method_config(cfg: RunConfig) -> Any:
    """The method's `Config` dataclass instance for this run."""
    return from_dict(get_method(cfg.base_method).Config, cfg.method_config, f"method_overrides.{cfg.method}")


def stage_spec(cfg: RunConfig, stage: str | None) -> StageSpec:
    """The run's stage `stage`: a pre-training stage of its method, or (None) the main training."""
    method_cls = get_method(cfg.base_method)
    if stage is None or stage == MAIN_STAGE:
        return main_stage(cfg.protocol, method_cls.needs_unlabeled)
    return method_cls.stage_named(stage).spec(method_config(cfg))


def build_method(cfg: RunConfig, device: torch.device, stage: str | None = None) -> Method:
    """The run's method with its networks (built with the protocol's V-Net width) on `device`, set to `stage`."""
    method = get_method(cfg.base_method)(
        method_config(cfg), partial(build_net, n_filters=cfg.protocol.n_filters), device
    )
    method.set_stage(stage)
    return method


class UnreadableWeights(RuntimeError):
    """A weights file that `torch.load(weights_only=True)` cannot read; `reason` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} cannot be loaded ({reason}): it is damaged or was not written by this harness (it is never "
            f"unpickled beyond plain weights). Rerun the job that writes it: `snakemake --forcerun {path}` plus "
            "your usual options."
        )
        self.path, self.reason = path, reason


def load_weights(path: Path) -> dict[str, Any]:
    """`torch.load(path, weights_only=True)`, raising `UnreadableWeights` (names the file and the way out)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated archive, not a torch file, or objects weights_only refuses to unpickle
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UnreadableWeights(path, f"{type(err).__name__}: {first_line}") from err


def load_trained(cfg: RunConfig, model_path: Path, device: torch.device, data_sha256: str | None = None) -> Method:
    """The method of a finished run with its trained weights (for evaluation).

    Refuses weights trained with another configuration, or (given `data_sha256`) on another version of the data.
    """
    state = load_weights(model_path)
    if state["config_sha256"] != cfg.sha256():
        raise LineageError(f"{model_path} was trained with another configuration than {cfg.dataset}/{cfg.method}")
    if data_sha256 is not None and state.get("data_sha256") != data_sha256:
        raise LineageError(
            f"{model_path} was trained on another version of {cfg.data.root} (its manifest.json changed since): "
            f"retrain it (`snakemake --forcerun {model_path}` plus your usual options)"
        )
    method = build_method(cfg, device)
    method.load_state_dict(state["state"])
    return method
