"""Evaluate any weight file with the benchmark's protocol: `python -m harness evaluate-checkpoint`.

The weights are a run's model.pt (its network `state["net"]`, the evaluation network of every method) or a plain
`state_dict` saved by the reference code (UA-MT, DTC, SSL4MIS: `torch.save(net.state_dict(), path)`), read with
`torch.load(weights_only=True)` and mapped as `harness.nets.load_reference_state_dict` does (the same key names; a
DataParallel `module.` prefix and missing BatchNorm `num_batches_tracked` buffers allowed). Window, stride, windows per
pass, voxel size, empty-prediction policy and V-Net width come from a benchmark config (`data.<dataset>`, `eval`,
`protocol.n_filters`, validated and defaulted as the Snakefile does; an evaluation needs only `data.<dataset>`, so a
config without a training grid will do), the test cases from the prepared data (`resources/<dataset>/`, or
`--data-root`; `PreparedData`), all of them or those `--cases` names. `eval.empty_pred: reference_zero` scores an
empty prediction 0 as the reference scripts do (for a like-for-like comparison with their numbers; protocol §4.6).
Prediction (`harness.evaluate.predict.write_predictions`) and metrics (`harness.evaluate.score`) are those of a run,
so the outputs have a run's format:

    <out>/predictions/<case>.nii.gz, predictions.json
    <out>/metrics_per_case.csv, metrics.json

`<out>` defaults to `results/<name>/external/<dataset>/<file stem>-<sha256[:12]>/`: keyed by the weight file's hash,
so two files of one name never share a folder; an `--out` that holds another weight file's results is refused.

marked as external: the `method` column holds the label (default `external`), `code_sha256` and `method_version` read
`external`, the `model_sha256` column is the weight file's sha256, and the provenance (`run_info` in metrics.json)
records `external: true`, the file, its sha256, its layout and the network. `n_labeled` and `seed` stay empty unless
given (the report's tables need both).

The parser is built for every `python -m harness` command, so torch is imported only when this one runs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.data.download import DataError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from harness.config import DataConfig

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config") / "config.yaml"
EXTERNAL = "external"
#: The reference networks a weight file can hold: the UA-MT/SSL4MIS VNet (2 classes), the DTC VNet_sdf (1 class, its
#: segmentation head evaluated) and MC-Net's mcnet3d_v2 (2 classes, decoder 1 evaluated as MC-Net's test script does).
NETS = ("vnet", "vnet_sdf", "mcnet3d_v2")
#: How many keys of each kind (missing, unexpected, wrong shape) an error names.
SHOWN_KEYS = 5


class WeightsError(DataError):
    """A weight file that cannot be read, is not a state dict, or whose keys or shapes do not fit the network; the
    message names the file, the keys and the fix."""


@dataclass(frozen=True)
class Weights:
    """A weight file's tensors for one network and where they come from."""

    path: Path
    sha256: str
    layout: str
    state_dict: Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class EvalSettings:
    """What a benchmark config says about evaluating one dataset (the params of its predict and evaluate rules)."""

    name: str
    data: DataConfig
    stride: tuple[int, int, int]
    spacing_mm: tuple[float, float, float] | None
    windows_per_batch: int
    empty_pred: str
    n_filters: int


def read_weights(path: Path) -> Weights:
    """The network tensors of `path`: `state["net"]` of a harness model.pt, or the file itself (a state dict)."""
    from harness.method.build import UnreadableWeights, load_weights
    from harness.provenance import file_sha256

    try:
        obj = load_weights(path)
    except UnreadableWeights as err:
        raise WeightsError(
            f"{path} cannot be read with torch.load(weights_only=True) ({err.reason}): give the file of "
            "`torch.save(net.state_dict(), path)` or a run's model.pt"
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict) and isinstance(obj["state"].get("net"), dict):
        state, layout = obj["state"]["net"], f"harness model.pt of {obj.get('method', 'a method')} (state['net'])"
    else:
        state, layout = obj, "reference state_dict"
    why = _not_a_state_dict(state)
    if why:
        raise WeightsError(
            f"{path} is not a state dict ({why}): give the file of `torch.save(net.state_dict(), path)` or a run's "
            "model.pt; from a training checkpoint such as {'epoch': ..., 'model': state_dict}, save its state_dict "
            "alone first"
        )
    return Weights(Path(path), file_sha256(path), layout, state)


def _not_a_state_dict(obj: Any) -> str:
    """Why `obj` is not a non-empty mapping of names to tensors ('' when it is one)."""
    import torch

    if not isinstance(obj, dict) or not obj:
        return f"it holds {'an empty dict' if isinstance(obj, dict) else type(obj).__name__}"
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            return f"entry {key!r} holds {type(value).__name__}, not a tensor"
    return ""


def key_problems(net: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """One line each for the missing keys, unexpected keys and shape mismatches of `state_dict` for `net` (the first
    `SHOWN_KEYS` of each and how many), after the mapping of `load_reference_state_dict`; empty when it fits."""
    given = {k.removeprefix("module."): v for k, v in state_dict.items()}
    expected = net.state_dict()
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    problems = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if keys:
            more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{len(keys)} {what}: {', '.join(keys[:SHOWN_KEYS])}{more}")
    return problems


def build_network(weights: Weights, net_name: str, n_filters: int) -> tuple[nn.Module, int]:
    """The evaluation network (eval mode) holding the weights, and its class count (2: softmax, 1: sigmoid)."""
    from harness.nets import build_net, load_reference_state_dict
    from harness.nets.heads import SegmentationHead
    from harness.nets.mcnet import Decoder1

    if net_name not in NETS:
        raise WeightsError(f"--net {net_name!r}: use one of {', '.join(NETS)}")
    num_classes = 1 if net_name == "vnet_sdf" else 2
    net = build_net(net_name, n_classes=num_classes, n_filters=n_filters)
    problems = key_problems(net, weights.state_dict)
    if problems:
        raise WeightsError(
            f"{weights.path} ({weights.layout}) does not fit --net {net_name} with n_filters={n_filters}:\n  "
            + "\n  ".join(problems)
            + "\n  check --net (vnet: the UA-MT/SSL4MIS VNet, 2 classes; vnet_sdf: the DTC VNet_sdf, 1 class; "
            "mcnet3d_v2: MC-Net+'s three-decoder VNet) and "
            "protocol.n_filters of the config (16 in the published code); keys are the reference names, optionally "
            "prefixed with `module.`"
        )
    load_reference_state_dict(net, weights.state_dict)
    evaluated = {"vnet": net, "vnet_sdf": SegmentationHead(net), "mcnet3d_v2": Decoder1(net)}[net_name]
    return evaluated.eval(), num_classes


def eval_settings(config_path: Path, dataset: str, data_root: Path | None) -> EvalSettings:
    """The evaluation settings of `dataset` in a benchmark config (prepared data in `data_root`, by default
    `resources/<dataset>`, where the data rules write it). Only `data.<dataset>`, `eval` and `protocol` are read and
    checked: a config holding just those (no training grid) will do."""
    from harness.config import ConfigError, DataConfig, ProtocolConfig, from_dict
    from harness.workflow.grid import data_block
    from harness.workflow.validate import load_config_file, validate_eval_config

    config = load_config_file(config_path)
    if dataset not in config.get("data", {}):
        known = ", ".join(sorted(config.get("data", {}))) or "none"
        raise ConfigError(f"{config_path} has no data.{dataset}; its datasets: {known}")
    try:
        validate_eval_config(config, dataset)
    except ConfigError as err:
        raise ConfigError(f"{config_path}: {err}") from None
    block = data_block(config, dataset)
    keys = DataConfig.__dataclass_fields__
    data = {**{k: v for k, v in block.items() if k in keys}, "root": str(data_root or Path("resources") / dataset)}
    return EvalSettings(
        name=config.get("name", EXTERNAL),
        data=from_dict(DataConfig, data, f"data.{dataset}"),
        stride=tuple(block["stride"]),
        spacing_mm=None if block.get("source") == "nifti" else tuple(block["spacing_mm"]),  # nifti: the data's
        windows_per_batch=config["eval"]["windows_per_batch"],
        empty_pred=config["eval"]["empty_pred"],
        n_filters=config.get("protocol", {}).get("n_filters", ProtocolConfig.n_filters),
    )


def evaluate_checkpoint(
    weights_path: Path,
    net_name: str,
    dataset: str,
    *,
    config_path: Path = DEFAULT_CONFIG,
    out_dir: Path | None = None,
    data_root: Path | None = None,
    label: str = EXTERNAL,
    n_labeled: int | None = None,
    seed: int | None = None,
    device: torch.device | None = None,
    cases: list[str] | None = None,
) -> dict[str, Any]:
    """Predict the test cases of `dataset` (all, or `cases`) with the weights and write a run's prediction and metric
    files, marked as external (module doc); `out_dir` defaults to
    `results/<name>/external/<dataset>/<file stem>-<sha256[:12]>/`.

    Returns:
        The provenance written as metrics.json's `run_info`.
    """
    import torch

    from harness import provenance
    from harness.config import SAFE_NAME, ConfigError, ProtocolConfig, RunConfig, sha256_of, to_dict
    from harness.evaluate.predict import write_predictions
    from harness.evaluate.predictions import voxel_size
    from harness.evaluate.score import evaluate_cases, write_results

    if not SAFE_NAME.match(label):
        raise ConfigError(f"--label {label!r}: use lowercase letters, digits and _ (it becomes the method column)")
    device = device or torch.device("cpu")
    settings = eval_settings(Path(config_path), dataset, data_root)
    data = open_data(settings, data_root)
    if cases is not None:
        data = data.with_test_cases(cases)
    weights = read_weights(Path(weights_path))
    net, num_classes = build_network(weights, net_name, settings.n_filters)
    net.to(device)
    spacing = voxel_size(settings.spacing_mm, data)
    default_out = Path("results") / settings.name / EXTERNAL / dataset / f"{weights.path.stem}-{weights.sha256[:12]}"
    out_dir = Path(out_dir or default_out)
    check_out_dir(out_dir, weights)
    network = {"net": net_name, "n_classes": num_classes, "n_filters": settings.n_filters, "layout": weights.layout}
    run_info = provenance.collect(
        external=True,
        weights=str(weights.path),
        weights_sha256=weights.sha256,
        network=network,
        config_file=str(config_path),
        dataset=dataset,
        method=label,
        method_version=EXTERNAL,
        config_sha256=sha256_of({"weights_sha256": weights.sha256, **network, "data": to_dict(settings.data)}),
        code_sha256=EXTERNAL,
        model_sha256=weights.sha256,
        data_manifest_sha256=data.manifest_sha256,
        **provenance.device_info(device),
    )

    def predict(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device)).float().cpu()

    out_dir.mkdir(parents=True, exist_ok=True)
    pred_dir = out_dir / "predictions"
    record = write_predictions(
        predict,
        data,
        pred_dir,
        window=settings.data.patch_size,
        stride=settings.stride,
        windows_per_batch=settings.windows_per_batch,
        spacing_mm=spacing,
        num_classes=num_classes,
        model_sha256=weights.sha256,
        config_sha256=run_info["config_sha256"],
    )
    cfg = RunConfig(dataset, label, n_labeled or settings.data.n_train, seed or 0, settings.data, ProtocolConfig())
    rows = evaluate_cases(
        cfg, pred_dir, spacing_mm=spacing, empty_pred=settings.empty_pred, run_info=run_info, cases=list(data.test_ids)
    )
    unknown = {"n_labeled": "" if n_labeled is None else n_labeled, "seed": "" if seed is None else seed}
    eval_record = {
        **record["settings"],
        "empty_pred": settings.empty_pred,
        "model_sha256": weights.sha256,
        "data_manifest_sha256": data.manifest_sha256,
    }
    write_results(
        [{**row, **unknown} for row in rows],
        out_dir / "metrics_per_case.csv",
        out_dir / "metrics.json",
        run_info,
        eval_record,
    )
    logger.info("%s: %d test cases of %s evaluated into %s", weights.path, len(rows), dataset, out_dir)
    return run_info


def open_data(settings: EvalSettings, data_root: Path | None):
    """The prepared dataset; a missing one is refused with where it was looked for and how to give it."""
    from harness.data.prepared import MANIFEST, PreparedData

    root = Path(settings.data.root)
    if not (root / MANIFEST).is_file():
        raise DataError(
            f"no prepared dataset in {root} ({root / MANIFEST} is missing): prepare it with the workflow "
            f"(`snakemake --cores all resources/{root.name}/manifest.json --configfile <config>`, whose data.<dataset> "
            "may name a local copy of the source: LA `released_h5.base_url: /path/to/UA-MT/data`, Pancreas "
            "`tcia.dicom_root`, your own `source: nifti`; docs/data.md), or pass --data-root with the folder of a "
            "prepared copy" + ("" if data_root is None else f" (--data-root {data_root} was given)")
        )
    return PreparedData.open(str(root), settings.data.format)


def check_out_dir(out_dir: Path, weights: Weights) -> None:
    """Refuse an output folder that holds the results of another weight file (they would be overwritten)."""
    import json

    metrics = out_dir / "metrics.json"
    if not metrics.is_file():
        return
    previous = json.loads(metrics.read_text()).get("run_info", {}).get("weights_sha256")
    if previous != weights.sha256:
        raise WeightsError(
            f"{out_dir} holds the results of another weight file (sha256 {str(previous)[:12]}, this one "
            f"{weights.sha256[:12]}): choose another --out, or leave it out (the default folder is keyed by the "
            "file's sha256)"
        )


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _cmd(a: argparse.Namespace) -> None:
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    evaluate_checkpoint(
        Path(a.weights),
        a.net,
        a.dataset,
        config_path=Path(a.config),
        out_dir=Path(a.out) if a.out else None,
        data_root=Path(a.data_root) if a.data_root else None,
        label=a.label,
        n_labeled=a.n_labeled,
        seed=a.seed,
        device=_device(a.device),
        cases=a.cases or None,
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `evaluate-checkpoint` (harness/cli.py)."""
    p = sub.add_parser("evaluate-checkpoint", help="predict + evaluate the test cases with any weight file (external)")
    p.add_argument("--weights", required=True, help="a reference state_dict (.pth) or a run's model.pt")
    nets = "vnet (UA-MT, SSL4MIS VNet), vnet_sdf (DTC VNet_sdf) or mcnet3d_v2 (MC-Net+, decoder 1)"
    p.add_argument("--net", required=True, choices=NETS, help=nets)
    p.add_argument("--dataset", required=True, help="a dataset of the config (data.<dataset>)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="benchmark config (default: %(default)s)")
    p.add_argument(
        "--out", default="", help="output folder (default: results/<name>/external/<dataset>/<file stem>-<sha256[:12]>)"
    )
    p.add_argument("--data-root", default="", help="the prepared dataset (default: resources/<dataset>)")
    p.add_argument("--label", default=EXTERNAL, help="the method column of the results (default: %(default)s)")
    p.add_argument("--n-labeled", type=int, default=None, help="labeled cases the weights were trained with")
    p.add_argument("--seed", type=int, default=None, help="the training seed of the weights")
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--cases", nargs="+", default=[], help="evaluate only these test cases (IDs of test.list)")
    p.set_defaults(func=_cmd)
