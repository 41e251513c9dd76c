"""LA released h5 files: the project manifest, downloads from a local server holding ../shared/data/la-mini (real
cases under the public URL paths), the clear errors, and a tiny train + evaluate run on the downloaded cases."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch
from data_fakes import LA_PREFIX, SHARED, need

from harness.data import la
from harness.data.dataset import la_case_path
from harness.data.download import ChecksumError, DataError, DownloadError, sha256_file, write_list
from harness.data.splits import read_list
from harness.method.build import resolve_run
from harness.run.folder import RunId
from harness.train.loop import Bookkeeping
from harness.workflow.grid import cell_params

BOOK = Bookkeeping(log_every=1, checkpoint_every=3)  # bookkeeping: never part of a run's identity

# -- the project's manifest --------------------------------------------------------------------------------------


def test_project_manifest_is_the_spec_manifest():
    # harness/data/manifests/la_manifest.csv equals the manifest kept beside the checkout
    spec = need(SHARED / "spec" / "la_manifest.csv")
    assert la.MANIFEST_CSV.read_bytes() == spec.read_bytes()
    cases = la.read_manifest()
    assert len(cases) == 100 and sum(c.bytes for c in cases.values()) == 233_092_988  # protocol §1.2
    assert {c.shape[2] for c in cases.values()} == {88}
    assert sum(c.split == "train" for c in cases.values()) == 80


def test_lists_rebuilt_from_the_manifest_have_the_pinned_sha256(tmp_path):
    lists = la.manifest_lists(la.read_manifest())
    assert lists["train.list"][:2] == ["06SR5RBREL16DQ6M8LWS", "0RZDK210BSMWAA6467LU"]
    assert [i[:4] for i in lists["test.list"][:3]] == ["UPT6", "UTBU", "ULHW"]  # file order, not sorted (§1.6)
    for path in la.write_lists_from_manifest(tmp_path):
        assert sha256_file(path) == la.LIST_SHA256[path.name]


def test_the_download_layout_is_the_loader_layout():
    assert la.la_case_path("/r", "X") == la_case_path("/r", "X") == Path("/r/2018LA_Seg_Training Set/X/mri_norm2.h5")


def test_unknown_case_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match="case_id 'NOT_A_CASE' is not one of the 100 LA cases"):
        la.fetch_case(tmp_path, "NOT_A_CASE", "http://127.0.0.1:9")


# -- downloads from the local server -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fetched(tmp_path_factory, la_server_session) -> tuple[Path, list[str]]:
    """Every case la-mini serves, plus the two lists, fetched once into a fresh root."""
    root = tmp_path_factory.mktemp("la")
    base = la_server_session.url + LA_PREFIX
    ids = sorted(
        p.name for p in (need(SHARED / "data" / "la-mini") / LA_PREFIX.lstrip("/") / la.TRAINING_DIR).iterdir()
    )
    for case_id in ids:
        la.fetch_case(root, case_id, base, retries=0, progress=False)
    la.fetch_lists(root, base, retries=0)
    return root, ids


def test_fetched_cases_and_lists_match_the_manifest(fetched):
    root, ids = fetched
    cases = la.read_manifest()
    assert len(ids) == 12
    for case_id in ids:
        path = la_case_path(root, case_id)
        assert path.stat().st_size == cases[case_id].bytes and sha256_file(path) == cases[case_id].sha256
    assert read_list(root / "train.list") == la.manifest_lists(cases)["train.list"]
    assert sha256_file(root / "test.list") == la.LIST_SHA256["test.list"]
    assert not list(root.rglob("*.part")) and not list(root.rglob("tmp*"))


def test_a_rerun_fetches_only_what_is_missing(fetched, la_server, la_base_url):
    root, ids = fetched
    la_case_path(root, ids[0]).unlink()
    la_server.hits.clear()
    for case_id in ids:
        la.fetch_case(root, case_id, la_base_url, retries=0, progress=False)
    fetched_paths = [p for p in la_server.hits if p.endswith("mri_norm2.h5")]
    assert fetched_paths == [f"{LA_PREFIX}/{la.TRAINING_DIR}/{ids[0]}/mri_norm2.h5"]


def test_a_case_the_server_lacks_is_a_clear_404(la_base_url, tmp_path):
    absent = "2XL5HSFSE93RMOJDRGR4"  # in train.list, not in la-mini
    with pytest.raises(DownloadError) as err:
        la.fetch_case(tmp_path, absent, la_base_url, retries=2, progress=False)
    msg = str(err.value)
    assert f"LA case {absent}: the server answered HTTP 404" in msg
    assert f"2018LA_Seg_Training%20Set/{absent}/mri_norm2.h5" in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fault", ["truncate", "flip"])
def test_a_truncated_or_corrupted_real_case_is_never_kept(la_server, la_base_url, tmp_path, la_mini_ids, fault):
    case_id = la_mini_ids[0]
    row = la.read_manifest()[case_id]
    la_server.faults[f"{LA_PREFIX}/{la.TRAINING_DIR}/{case_id}/mri_norm2.h5"] = fault
    with pytest.raises(ChecksumError) as err:
        la.fetch_case(tmp_path, case_id, la_base_url, retries=0, progress=False)
    msg = str(err.value)
    assert f"LA case {case_id}" in msg and row.sha256 in msg and la.case_url(la_base_url, case_id) in msg
    if fault == "truncate":
        assert f"expected {row.bytes} bytes, got {row.bytes // 2}" in msg
    else:
        assert "sha256 mismatch" in msg
    assert list(tmp_path.iterdir()) == []


def test_the_manifest_needs_every_case(fetched, tmp_path):
    root, _ = fetched
    with pytest.raises(DataError, match=r"88 case\(s\) listed in .* have no file \(1MHBF3G6DCPWHSKG7XCP: "):
        la.write_manifest(root, source="released_h5")
    assert not (root / "manifest.json").exists()


def test_a_complete_root_gets_a_manifest_and_a_flipped_file_is_caught(fetched, tmp_path):
    root, ids = fetched
    sub = tmp_path / "sub"
    shutil.copytree(root / la.TRAINING_DIR, sub / la.TRAINING_DIR)
    cases = la.read_manifest()
    train = [i for i in la.manifest_lists(cases)["train.list"] if i in ids]
    test = [i for i in la.manifest_lists(cases)["test.list"] if i in ids]
    write_list(sub / "train.list", train)
    write_list(sub / "test.list", test)
    with pytest.raises(ChecksumError, match="LA train.list: sha256 mismatch"):  # the lists must be the public ones
        la.write_manifest(sub, source="released_h5")
    # the same check on these lists (as pinned hashes) passes, and then catches a flipped byte
    hashes = {n: sha256_file(sub / n) for n in la.LIST_SHA256}
    manifest = la.write_manifest(sub, source="released_h5", list_sha256=hashes)
    assert manifest["n_train"] == 8 and manifest["n_test"] == 4 and manifest["la_source"] == "released_h5"
    assert manifest["cases"][ids[0]]["sha256"] == cases[ids[0]].sha256
    path = la_case_path(sub, ids[0])
    data = bytearray(path.read_bytes())
    data[5000] ^= 0x01
    path.write_bytes(bytes(data))
    (sub / "manifest.json").unlink()
    with pytest.raises(ChecksumError, match=f"LA case {ids[0]}: sha256 mismatch"):
        la.write_manifest(sub, source="released_h5", list_sha256=hashes)
    assert not (sub / "manifest.json").exists()


# -- the downloaded cases train and evaluate -------------------------------------------------------------------
def test_downloaded_cases_train_and_evaluate_end_to_end(fetched, tmp_path):
    from harness.evaluate.predict import predict_cases
    from harness.evaluate.score import evaluate_cases
    from harness.train.loop import train

    root, ids = fetched
    run_root = tmp_path / "data"
    run_root.mkdir()
    (run_root / la.TRAINING_DIR).symlink_to(root / la.TRAINING_DIR)
    lists = la.manifest_lists(la.read_manifest())
    train_ids = [i for i in lists["train.list"] if i in ids]  # 4 labeled (first of train.list) + 4 unlabeled
    write_list(run_root / "train.list", train_ids)
    write_list(run_root / "test.list", [i for i in lists["test.list"] if i in ids][:1])  # 105 windows of 32³
    hashes = {name: sha256_file(run_root / name) for name in la.LIST_SHA256}
    la.write_manifest(run_root, source="released_h5", list_sha256=hashes)  # the real manifest the loop checks
    config = {
        "datasets": {"la": {"labeled": [4]}},
        "data": {"la": {"source": "released_h5", "n_train": 8, "patch_size": [32, 32, 32], "augment": "rotflip_crop"}},
        "protocol": {
            "iterations": 3,
            "n_filters": 2,
        },
    }
    params = cell_params(config, RunId("la", "supervised", 4, 1))
    params["data"]["root"] = str(run_root)
    cfg = resolve_run(params)
    cpu = torch.device("cpu")
    info = train(cfg, tmp_path / "run", device=cpu, bookkeeping=BOOK)
    predict_cases(
        cfg,
        tmp_path / "run" / "model.pt",
        tmp_path / "run" / "pred",
        stride=(32, 32, 32),
        windows_per_batch=16,
        spacing_mm=(0.625, 0.625, 0.625),
        device=cpu,
    )
    rows = evaluate_cases(
        cfg, tmp_path / "run" / "pred", spacing_mm=(0.625,) * 3, empty_pred="worst_case", run_info=info
    )
    assert [r["case"] for r in rows] == read_list(run_root / "test.list")
    for r in rows:
        assert 0.0 <= r["dice"] <= 1.0 and math.isfinite(r["hd95"]) and math.isfinite(r["asd_mm"])
    with open(la.MANIFEST_CSV, newline="") as f:
        shapes = {r["id"]: (int(r["shape_x"]), int(r["shape_y"]), 88) for r in csv.DictReader(f)}
    import nibabel as nib

    for case in read_list(run_root / "test.list"):
        assert nib.load(tmp_path / "run" / "pred" / f"{case}.nii.gz").shape == shapes[case]
