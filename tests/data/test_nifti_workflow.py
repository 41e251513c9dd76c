"""Your own dataset through config alone: an MSD-layout MR dataset and an nnU-Net-v2-layout CT dataset the
project has never seen run through the whole DAG and appear in every table and figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from nifti_fakes import write_msd, write_nnunet
from workflow_tools import REPO, run_snakemake


def nifti_config(msd: Path, nnunet: Path, test_list: Path | None = None) -> dict:
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    geometry = {"patch_size": [16, 16, 16], "augment": "rotflip_crop", "stride": [16, 16, 8]}
    cfg["datasets"] = {"heart": {"labeled": [2], "upper_bound": True}, "spleen": {"labeled": [2], "upper_bound": False}}
    cfg["data"] = {
        "heart": {
            "source": "nifti",
            "nifti": {"root": str(msd), "foreground": [1], "modality": "mri", "test": {"fraction": 0.25, "seed": 0}},
            **geometry,
        },
        "spleen": {
            "source": "nifti",
            "nifti": {"root": str(nnunet), "foreground": [1], "modality": "ct", "target_spacing": [1.5, 1.5, 2.0]},
            **geometry,
        },
    }
    if test_list is not None:
        cfg["data"]["spleen"]["nifti"]["test"] = {"list": str(test_list)}
    return cfg


@pytest.mark.slow
def test_msd_and_nnunet_datasets_run_through_the_whole_dag(tmp_path):
    # 5 cases each: MSD 4 train + 1 test (test fraction 0.25), nnU-Net 4 + 1 (0.2): small, and enough for 2 labeled
    msd = write_msd(tmp_path / "src_msd", modality="mri", n_cases=5)
    nnunet = write_nnunet(tmp_path / "src_nnunet", modality="ct", n_cases=5)
    cases = sorted(p.name.removesuffix(".nii.gz") for p in nnunet.rglob("labelsTr/*.nii.gz"))
    listed = tmp_path / "spleen_test.txt"  # the spleen's test case, named in a list file
    listed.write_text(f"{cases[0]}\n")
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump(nifti_config(msd, nnunet, listed)))
    work = tmp_path / "work"
    run_snakemake(work, config)

    out = work / "results" / "ci"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["cells"]) == {"heart", "spleen"}
    assert "supervised@labeled~2" in summary["cells"]["heart"] and "supervised@labeled~2" in summary["cells"]["spleen"]
    for table in ("heart_voxel.md", "heart_mm.md", "spleen_voxel.md", "spleen_sensitivity.md"):
        assert "supervised" in (out / "tables" / table).read_text(), table
    for figure in ("dice_vs_labeled.png", "dice_per_case_heart.png", "qualitative_spleen.png"):
        assert (out / "figures" / figure).stat().st_size > 0, figure

    # the voxel size of the mm metrics is the prepared data's, never a config value
    for ds, expected in (("heart", None), ("spleen", [1.5, 1.5, 2.0])):
        manifest = json.loads((work / "resources" / ds / "manifest.json").read_text())
        assert manifest["source"] == "nifti" and manifest["format"] == "case_h5"
        if expected is not None:
            assert manifest["spacing_mm"] == pytest.approx(expected)
        run = out / "runs" / ds / "supervised" / "labeled~2" / "seed~1"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["eval"]["spacing_mm"] == pytest.approx(manifest["spacing_mm"])
        test_ids = (work / "resources" / ds / "test.list").read_text().split()
        train_ids = (work / "resources" / ds / "train.list").read_text().split()
        assert test_ids and len(train_ids) >= 2 and not set(test_ids) & set(train_ids)

    # nothing left to do, and the split is written once: a rerun plans nothing
    dry = run_snakemake(work, config, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # the list of test cases edited in place is an input of the preparation: the split and the tables follow it
    assert (work / "resources" / "spleen" / "test.list").read_text().split() == [cases[0]]
    new = cases[-1]
    listed.write_text(f"{new}\n")
    run_snakemake(work, config)
    assert (work / "resources" / "spleen" / "test.list").read_text().split() == [new]
    cases = [
        r.split(",")[5]
        for r in (out / "runs/spleen/supervised/labeled~2/seed~1/metrics_per_case.csv").read_text().splitlines()[1:]
    ]
    assert cases == [new]


def test_setting_what_the_data_decides_is_refused(tmp_path):
    msd = write_msd(tmp_path / "src_msd", n_cases=6)
    cfg = nifti_config(msd, msd)
    cfg["data"]["heart"]["spacing_mm"] = [1.0, 1.0, 1.0]
    cfg["data"]["spleen"]["nifti"]["root"] = str(tmp_path / "nowhere")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(cfg))
    res = run_snakemake(tmp_path / "work", config, "-n", check=False)
    text = res.stdout + res.stderr
    assert res.returncode != 0
    assert "data.heart.spacing_mm: not set for source nifti" in text
    assert "data.spleen.nifti:" in text and "nowhere" in text
