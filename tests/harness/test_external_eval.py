"""evaluate-checkpoint: weights in the reference layout (or a run's model.pt) evaluated with the benchmark protocol give
the per-case metrics of the same weights evaluated as a run, with the weight file's sha256; bad files are refused."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from test_nets import _reference_state_dict

from harness.cli import main
from harness.config import ConfigError
from harness.evaluate.predict import predict_cases
from harness.evaluate.score import evaluate_cases
from harness.external import WeightsError, evaluate_checkpoint
from harness.method.build import resolve_run
from harness.nets.mcnet import MCNet3dV2
from harness.provenance import file_sha256
from harness.run.folder import RunId
from harness.run.method_table import read_methods
from harness.train.loop import Bookkeeping, train
from harness.workflow.grid import cell_params
from harness.workflow.validate import validate_config

BOOK = Bookkeeping(log_every=1, checkpoint_every=1000)  # bookkeeping: never part of a run's identity

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]
STRIDE, SPACING, WINDOWS, N_FILTERS = (8, 8, 8), (1.0, 1.0, 2.0), 3, 2
METRICS = ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")


#: The method whose network each --net is: the UA-MT VNet (softmax), the DTC VNet_sdf (sigmoid head) and MC-Net+'s
#: three-decoder VNet (decoder 1 evaluated).
METHOD_OF = {"vnet": "supervised", "vnet_sdf": "dtc", "mcnet3d_v2": "mcnet_plus"}


@pytest.fixture(scope="module")
def evaluated_runs(tiny_dataset, tmp_path_factory):
    """net → a trained tiny run predicted and evaluated the harness's way: (data root, run folder, per-case rows)."""
    work = tmp_path_factory.mktemp("external")
    root = Path(shutil.copytree(tiny_dataset, work / "data"))
    runs = {}
    for net, method in METHOD_OF.items():
        params = cell_params(read_config(write_config(work / "c.yaml")), RunId("tiny", method, 2, 1))
        cfg = resolve_run({**params, "data": {**params["data"], "root": str(root)}})
        run = work / method
        info = train(cfg, run, device=CPU, bookkeeping=BOOK)
        predict_cases(
            cfg,
            run / "model.pt",
            run / "predictions",
            stride=STRIDE,
            windows_per_batch=WINDOWS,
            spacing_mm=SPACING,
            device=CPU,
        )
        rows = evaluate_cases(cfg, run / "predictions", spacing_mm=SPACING, empty_pred="worst_case", run_info=info)
        runs[net] = root, run, rows
    return runs


@pytest.fixture
def evaluated_run(evaluated_runs):
    return evaluated_runs["vnet"]


def write_config(path: Path) -> Path:
    """A benchmark config whose dataset `tiny` has the evaluation settings the run above was evaluated with."""
    config = {
        "name": "ext",
        "seeds": [1],
        "methods": ["supervised"],
        "datasets": {"tiny": {"labeled": [2]}},
        "data": {
            "tiny": {
                "source": "synthetic",
                "n_train": 4,
                "patch_size": [16, 16, 16],
                "stride": list(STRIDE),
                "spacing_mm": list(SPACING),
            }
        },
        "protocol": {
            "n_filters": N_FILTERS,
            "iterations": 2,
        },
        "eval": {"windows_per_batch": WINDOWS, "empty_pred": "worst_case"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def read_config(path: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    validate_config(config, read_methods(REPO))
    return config


def save_reference_layout(run: Path, path: Path, net: str = "vnet") -> Path:
    """The run's network as the reference code saves it under nn.DataParallel: `module.`-prefixed keys, and (as
    PyTorch < 0.4.1 wrote them) no BatchNorm `num_batches_tracked` buffers."""
    state = torch.load(run / "model.pt", weights_only=True)["state"]["net"]
    reference = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    layouts = {
        "vnet": lambda: _reference_state_dict(N_FILTERS, 2, False, 0),
        "vnet_sdf": lambda: _reference_state_dict(N_FILTERS, 1, True, 0),
        "mcnet3d_v2": lambda: MCNet3dV2(n_filters=N_FILTERS).state_dict(),  # the reference's module names
    }
    layout = layouts[net]()
    names = {k for k in layout if not k.endswith("num_batches_tracked")}
    assert {k.removeprefix("module.") for k in reference} == names  # the reference layout (tests/harness/test_nets.py)
    torch.save(reference, path)
    return path


def read_rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "metrics_per_case.csv").open()))


@pytest.mark.parametrize("net", list(METHOD_OF))
def test_reference_checkpoint_gives_the_runs_per_case_metrics(evaluated_runs, net, tmp_path):
    root, run, expected = evaluated_runs[net]
    weights = save_reference_layout(run, tmp_path / "best_model.pth", net)
    args = [
        "evaluate-checkpoint",
        "--weights",
        str(weights),
        "--net",
        net,
        "--dataset",
        "tiny",
        "--config",
        str(write_config(tmp_path / "c.yaml")),
        "--out",
        str(tmp_path / "out"),
        "--data-root",
        str(root),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    rows = read_rows(tmp_path / "out")
    assert [r["case"] for r in rows] == [r["case"] for r in expected]
    for row, ref in zip(rows, expected, strict=True):
        assert {k: float(row[k]) for k in METRICS} == {k: ref[k] for k in METRICS}, row["case"]
        mine = nib.load(tmp_path / "out" / "predictions" / f"{row['case']}.nii.gz").get_fdata()
        assert np.array_equal(mine, nib.load(run / "predictions" / f"{row['case']}.nii.gz").get_fdata())
    sha = file_sha256(weights)
    assert {(r["method"], r["model_sha256"], r["code_sha256"], r["n_labeled"]) for r in rows} == {
        ("external", sha, "external", "")
    }
    assert {(r["stride"], r["windows_per_batch"]) for r in rows} == {("8x8x8", str(WINDOWS))}
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["run_info"]["external"] is True and record["run_info"]["weights_sha256"] == sha
    assert record["run_info"]["network"]["layout"] == "reference state_dict"
    assert record["metrics"]["dice"] == pytest.approx(np.mean([r["dice"] for r in expected]), abs=0)


def test_a_runs_model_file_is_read_as_well(evaluated_run, tmp_path):
    root, run, expected = evaluated_run
    info = evaluate_checkpoint(
        run / "model.pt",
        "vnet",
        "tiny",
        config_path=write_config(tmp_path / "c.yaml"),
        out_dir=tmp_path / "out",
        data_root=root,
        n_labeled=2,
        seed=1,
    )
    assert info["weights_sha256"] == file_sha256(run / "model.pt") and "harness model.pt" in info["network"]["layout"]
    rows = read_rows(tmp_path / "out")
    assert [float(r["dice"]) for r in rows] == [r["dice"] for r in expected]
    assert {(r["n_labeled"], r["seed"]) for r in rows} == {("2", "1")}


def test_bad_weight_files_are_refused_with_the_file_keys_and_fix(evaluated_run, tmp_path, caplog):
    root, run, _ = evaluated_run
    config = write_config(tmp_path / "c.yaml")

    def evaluate(path: Path, net: str = "vnet") -> None:
        evaluate_checkpoint(path, net, "tiny", config_path=config, out_dir=tmp_path / "out", data_root=root)

    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(WeightsError, match=r"notes\.pth cannot be read with torch.load\(weights_only=True\)"):
        evaluate(tmp_path / "notes.pth")
    state = torch.load(run / "model.pt", weights_only=True)["state"]["net"]
    torch.save({"epoch": 3, "model": state}, tmp_path / "wrapped.pth")
    with pytest.raises(WeightsError, match=r"wrapped\.pth is not a state dict \(entry 'epoch' holds int"):
        evaluate(tmp_path / "wrapped.pth")
    torch.save({k.replace("block_", "stage_"): v for k, v in state.items()}, tmp_path / "renamed.pth")
    with pytest.raises(WeightsError, match=r"renamed\.pth .* does not fit --net vnet") as err:
        evaluate(tmp_path / "renamed.pth")
    assert "missing keys: block_one.conv.0.weight, " in str(err.value) and " more)" in str(err.value)
    assert "unexpected keys: stage_one.conv.0.weight, " in str(err.value) and "check --net" in str(err.value)
    save_reference_layout(run, tmp_path / "vnet.pth")
    with pytest.raises(WeightsError, match="2 missing keys: out_conv2.weight, out_conv2.bias"):
        evaluate(tmp_path / "vnet.pth", net="vnet_sdf")  # a UA-MT VNet is not a DTC VNet_sdf
    assert not (tmp_path / "out" / "metrics_per_case.csv").exists()
    with caplog.at_level(logging.ERROR):
        args = [
            "evaluate-checkpoint",
            "--weights",
            str(tmp_path / "notes.pth"),
            "--net",
            "vnet",
            "--dataset",
            "tiny",
            "--config",
            str(config),
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "out"),
        ]
        assert main(args) == 2
    assert "notes.pth cannot be read" in caplog.text


def test_the_parser_registers_the_command_without_importing_torch():
    """The parser is built for every `python -m harness` command; registering this one must not slow them down."""
    argv = ["evaluate-checkpoint", "--weights", "w.pth", "--net", "vnet_sdf", "--dataset", "la"]
    code = (
        f"import sys; from harness.cli import build_parser; args = build_parser().parse_args({argv}); "
        "assert args.config == 'config/config.yaml' and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_an_unknown_dataset_or_label_is_refused_before_reading_the_weights(tmp_path):
    config = write_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml has no data\.la; its datasets: tiny"):
        evaluate_checkpoint(tmp_path / "absent.pth", "vnet", "la", config_path=config)
    with pytest.raises(ConfigError, match="--label 'UA-MT ref'"):
        evaluate_checkpoint(tmp_path / "absent.pth", "vnet", "tiny", config_path=config, label="UA-MT ref")


def test_the_default_folder_is_keyed_by_the_weight_file_so_no_result_is_overwritten(
    evaluated_run, tmp_path, monkeypatch
):
    """Two different model.pt files: two folders (the first result is kept); an --out holding the other's results
    is refused."""
    root, run, _ = evaluated_run
    first = Path(shutil.copy(run / "model.pt", tmp_path / "a_model.pt")).rename(tmp_path / "model.pt")
    other = tmp_path / "other" / "model.pt"
    other.parent.mkdir()
    saved = torch.load(first, weights_only=True)
    saved["state"]["net"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in saved["state"]["net"].items()}
    torch.save(saved, other)
    config = write_config(tmp_path / "c.yaml")
    monkeypatch.chdir(tmp_path)
    for weights in (first, other):
        evaluate_checkpoint(weights, "vnet", "tiny", config_path=config, data_root=root)
    folders = sorted((tmp_path / "results" / "ext" / "external" / "tiny").iterdir())
    assert [f.name for f in folders] == sorted(f"model-{file_sha256(w)[:12]}" for w in (first, other))
    for folder in folders:
        recorded = json.loads((folder / "metrics.json").read_text())["run_info"]["weights_sha256"]
        assert folder.name.endswith(recorded[:12])
    with pytest.raises(WeightsError, match=r"holds the results of another weight file .*choose another --out"):
        first_folder = next(f for f in folders if f.name.endswith(file_sha256(first)[:12]))
        evaluate_checkpoint(other, "vnet", "tiny", config_path=config, data_root=root, out_dir=first_folder)


def test_an_evaluation_only_config_and_a_subset_of_cases(evaluated_run, tmp_path):
    """No training grid is needed to evaluate; --cases evaluates those test cases only, with the run's numbers."""
    root, run, expected = evaluated_run
    full = yaml.safe_load(write_config(tmp_path / "full.yaml").read_text())
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({k: full[k] for k in ("data", "eval", "protocol")}))
    case = expected[-1]["case"]
    argv = [
        "evaluate-checkpoint",
        "--weights",
        str(run / "model.pt"),
        "--net",
        "vnet",
        "--dataset",
        "tiny",
        "--config",
        str(tmp_path / "eval.yaml"),
        "--data-root",
        str(root),
        "--out",
        str(tmp_path / "out"),
        "--cases",
        case,
    ]
    assert main(argv) == 0
    rows = read_rows(tmp_path / "out")
    assert [(r["case"], float(r["dice"])) for r in rows] == [(case, expected[-1]["dice"])]
    assert sorted(p.name for p in (tmp_path / "out" / "predictions").glob("*.nii.gz")) == [f"{case}.nii.gz"]
    assert main([*argv[:-1], "not_a_case"]) == 2


def test_missing_prepared_data_names_the_ways_to_give_it(tmp_path, caplog):
    config = write_config(tmp_path / "c.yaml")
    argv = [
        "evaluate-checkpoint",
        "--weights",
        str(tmp_path / "w.pth"),
        "--net",
        "vnet",
        "--dataset",
        "tiny",
        "--config",
        str(config),
        "--data-root",
        str(tmp_path / "nowhere"),
    ]
    assert main(argv) == 2
    assert "no prepared dataset in" in caplog.text and "--data-root" in caplog.text
    assert "base_url" in caplog.text and "dicom_root" in caplog.text and "source: nifti" in caplog.text
