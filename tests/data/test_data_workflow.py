"""The paper config's data rules, with the two local servers standing in for raw.githubusercontent.com and TCIA:
they run to completion for the cases the servers hold, the full preparation needs every case, and the label
archive's manual step stops with a message and continues once the file is in place."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from data_fakes import API, LA_PREFIX, LABELS_PATH
from workflow_tools import REPO, planned_jobs, snakemake

from harness.data import la
from harness.data.dataset import la_case_path, load_case, pancreas_case_path
from harness.data.download import sha256_file


def planned(res: subprocess.CompletedProcess) -> dict[str, int]:
    return planned_jobs(res.stdout + res.stderr)


def paper_config(path: Path, la_url: str, tcia_url: str, labels_path: str = LABELS_PATH) -> Path:
    """config/config.yaml with only the server addresses changed (and methods that exist: data rules ignore them)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["methods"] = ["supervised"]
    cfg["data"]["la"]["released_h5"].update(base_url=la_url + LA_PREFIX, retries=0)
    cfg["data"]["pancreas"]["tcia"].update(api_url=tcia_url + API, labels_url=tcia_url + labels_path, retries=0)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_paper_data_stages_run_for_the_served_cases(tmp_path, la_server, tcia_server, la_mini_ids):
    cfg = [f"--configfile={paper_config(tmp_path / 'paper.yaml', la_server.url, tcia_server.url)}"]
    la_targets = [f"resources/la/{la.TRAINING_DIR}/{i}/mri_norm2.h5" for i in la_mini_ids]
    pancreas_targets = ["resources/pancreas/h5/image0001_norm.h5", "resources/pancreas/h5/image0002_norm.h5"]
    targets = [*la_targets, "resources/la/train.list", "resources/la/test.list", *pancreas_targets]
    snakemake("--cores", "2", *cfg, *targets, cwd=tmp_path)

    cases = la.read_manifest()
    for case_id in la_mini_ids:
        assert sha256_file(la_case_path(tmp_path / "resources" / "la", case_id)) == cases[case_id].sha256
    assert sha256_file(tmp_path / "resources" / "la" / "train.list") == la.LIST_SHA256["train.list"]
    for case_id, shape in (("image0001", (145, 142, 8)), ("image0002", (30, 28, 10))):
        image, label = load_case(pancreas_case_path(tmp_path / "resources" / "pancreas", case_id), with_label=True)
        assert image.shape == shape and label.any()
        assert json.loads((tmp_path / "resources" / "pancreas" / "qa" / f"{case_id}.json").read_text())[
            "shape"
        ] == list(shape)
    assert not list((tmp_path / "resources").rglob("*.part")) and not list((tmp_path / "resources").rglob("*.tmp"))
    assert not list((tmp_path / "resources" / "pancreas" / "raw").rglob("*.dcm"))  # temporary series removed

    assert planned(snakemake("-n", *cfg, *targets, cwd=tmp_path)) == {}  # nothing left to do for these cases
    full = planned(
        snakemake("-n", *cfg, "resources/la/manifest.json", "resources/pancreas/manifest.json", cwd=tmp_path)
    )
    # the manifests need every case: LA 100 (12 here), Pancreas 80 of the MC-Net 82 (duplicates: auto → dropped)
    assert full["fetch_la_case"] == 100 - len(la_mini_ids) and full["la_manifest"] == 1
    assert full["fetch_pancreas_series"] == 78 and full["preprocess_pancreas_case"] == 78
    assert "fetch_la_lists" not in full and "pancreas_labels" not in full


@pytest.mark.slow
def test_label_archive_manual_step_stops_and_continues(tmp_path, la_server, tcia_server, tcia_data):
    moved = "/moved/TCIA_pancreas_labels-02-05-2017.zip"
    cfg = [f"--configfile={paper_config(tmp_path / 'paper.yaml', la_server.url, tcia_server.url, moved)}"]
    res = snakemake("--cores", "1", *cfg, "resources/pancreas/raw/labels", cwd=tmp_path, check=False)
    assert res.returncode != 0
    log = (tmp_path / "logs" / "pancreas" / "pancreas_labels.log").read_text()
    archive = "resources/pancreas/raw/TCIA_pancreas_labels-02-05-2017.zip"
    assert f"put it at {archive}, and rerun snakemake" in log and "HTTP 404" in log
    (tmp_path / archive).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / archive).write_bytes(tcia_data["labels_zip"])  # the manual download
    snakemake("--cores", "1", *cfg, "resources/pancreas/raw/labels", cwd=tmp_path)
    assert (tmp_path / "resources" / "pancreas" / "raw" / "labels" / "label0001.nii.gz").is_file()
    assert tcia_server.hits[moved] == 1


def test_lint_and_dry_run_of_the_paper_data_rules(tmp_path):
    cfg = [f"--configfile={paper_config(tmp_path / 'paper.yaml', 'http://127.0.0.1:9', 'http://127.0.0.1:9')}"]
    res = snakemake("--lint", *cfg, cwd=tmp_path)
    assert "Congratulations" in res.stdout + res.stderr
    jobs = planned(
        snakemake("-n", *cfg, "resources/la/manifest.json", "resources/pancreas/manifest.json", cwd=tmp_path)
    )
    assert jobs == {
        "fetch_la_case": 100,
        "fetch_la_lists": 1,
        "la_manifest": 1,
        "pancreas_series": 1,
        "pancreas_labels": 1,
        "fetch_pancreas_series": 80,
        "preprocess_pancreas_case": 80,
        "pancreas_manifest": 1,
    }
