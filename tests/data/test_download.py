"""Verified downloads over a real local HTTP server, local mirrors, safe zip extraction, atomic list writing."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from data_fakes import FakeServer, static_app, zip_bytes

from harness.data.download import (
    ChecksumError,
    DataError,
    DownloadError,
    fetch_url,
    join_url,
    safe_extract_zip,
    sha256_file,
    write_list,
)


@pytest.fixture
def served(tmp_path: Path):
    """A 4096-byte random file served as `/a b/f.bin` (a space in the folder, as in the LA layout)."""
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (tmp_path / "srv" / "a b").mkdir(parents=True)
    (tmp_path / "srv" / "a b" / "f.bin").write_bytes(data)
    with FakeServer(static_app(tmp_path / "srv")) as server:
        yield server, data, hashlib.sha256(data).hexdigest()


def _fetch(url: str, dest: Path, digest: str, size: int = 4096, retries: int = 0) -> Path:
    return fetch_url(url, dest, what="file f", sha256=digest, size=size, retries=retries, progress=False)


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_join_url_percent_encodes_remote_parts_only():
    assert join_url("https://h/x/", "2018LA_Seg_Training Set", "ID", "mri_norm2.h5") == (
        "https://h/x/2018LA_Seg_Training%20Set/ID/mri_norm2.h5"
    )
    assert join_url("/data/mirror", "a b", "c") == "/data/mirror/a b/c"


def test_fetch_verifies_then_a_rerun_downloads_nothing(served, tmp_path):
    server, data, digest = served
    url = join_url(server.url, "a b", "f.bin")
    dest = _fetch(url, tmp_path / "out" / "sub" / "f.bin", digest)
    assert dest.read_bytes() == data and server.hits["/a b/f.bin"] == 1
    assert _fetch(url, dest, digest) == dest and server.hits["/a b/f.bin"] == 1  # verified copy kept
    assert [p.name for p in _leftovers(tmp_path / "out")] == ["sub", "f.bin"]


def test_a_corrupt_existing_file_is_replaced(served, tmp_path):
    server, data, digest = served
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"x" * 4096)
    _fetch(join_url(server.url, "a b", "f.bin"), dest, digest)
    assert dest.read_bytes() == data


def test_404_names_the_file_and_url_is_not_retried_and_leaves_nothing(served, tmp_path):
    server, _, digest = served
    url = join_url(server.url, "a b", "missing.bin")
    with pytest.raises(
        DownloadError, match=r"file f: the server answered HTTP 404 .* for http://127\.0\.0\.1:\d+/a%20b/"
    ):
        _fetch(url, tmp_path / "out" / "deep" / "f.bin", digest, retries=3)
    assert server.hits["/a b/missing.bin"] == 1  # a 4xx answer is final: no retry (and no back-off sleep)
    assert not (tmp_path / "out").exists()  # folders created for the download are removed again


def test_truncated_file_is_not_kept(served, tmp_path):
    server, data, digest = served
    server.faults["/a b/f.bin"] = "truncate"
    url = join_url(server.url, "a b", "f.bin")
    with pytest.raises(ChecksumError) as err:
        _fetch(url, tmp_path / "out" / "f.bin", digest)
    msg = str(err.value)
    assert "file f: expected 4096 bytes, got 2048" in msg and url in msg and "not kept" in msg
    assert digest in msg and hashlib.sha256(data[:2048]).hexdigest() in msg
    assert not (tmp_path / "out").exists()


def test_flipped_byte_is_not_kept_and_the_message_has_both_hashes(served, tmp_path):
    server, data, digest = served
    server.faults["/a b/f.bin"] = "flip"
    flipped = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    url = join_url(server.url, "a b", "f.bin")
    with pytest.raises(ChecksumError, match="sha256 mismatch") as err:
        _fetch(url, tmp_path / "out" / "f.bin", digest)
    assert f"expected {digest}, got {hashlib.sha256(flipped).hexdigest()}" in str(err.value)
    assert url in str(err.value)
    assert _leftovers(tmp_path / "out") == []


def test_a_connection_dropped_mid_transfer_leaves_nothing(served, tmp_path):
    server, _, digest = served
    server.faults["/a b/f.bin"] = "drop"
    with pytest.raises(DownloadError, match="file f: download failed from .* after 1 attempt"):
        _fetch(join_url(server.url, "a b", "f.bin"), tmp_path / "out" / "f.bin", digest)
    assert not (tmp_path / "out").exists()


def test_server_errors_are_retried(served, tmp_path, monkeypatch):
    server, _, digest = served
    monkeypatch.setattr("time.sleep", lambda s: None)  # pooch's back-off
    server.faults["/a b/f.bin"] = 503
    with pytest.raises(DownloadError, match="after 3 attempt"):
        _fetch(join_url(server.url, "a b", "f.bin"), tmp_path / "f.bin", digest, retries=2)
    assert server.hits["/a b/f.bin"] == 3


@pytest.mark.parametrize("as_file_url", [False, True])
def test_a_local_folder_or_file_url_is_a_mirror(tmp_path, as_file_url):
    data = b"mirror bytes" * 50
    (tmp_path / "m" / "a b").mkdir(parents=True)
    (tmp_path / "m" / "a b" / "f.bin").write_bytes(data)
    base = (tmp_path / "m").as_uri() if as_file_url else str(tmp_path / "m")
    url = join_url(base, "a b", "f.bin") if not as_file_url else base + "/a%20b/f.bin"
    dest = fetch_url(url, tmp_path / "o" / "f.bin", what="m", sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert dest.read_bytes() == data
    with pytest.raises(DownloadError, match="does not exist"):
        fetch_url(join_url(str(tmp_path / "m"), "nope"), tmp_path / "o" / "g.bin", what="m", sha256="0" * 64)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        fetch_url(url, tmp_path / "o" / "h.bin", what="m", sha256="0" * 64)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["f.bin"]


# -- zip extraction ----------------------------------------------------------------------------------------------
def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.write_bytes(zip_bytes(members))
    return path


@pytest.mark.parametrize(
    "bad",
    ["../evil.txt", "labels/../../evil.txt", "/etc/evil.txt", "C:/evil.txt", "..\\evil.txt"],
)
def test_zip_entries_outside_the_target_are_refused_and_nothing_is_written(tmp_path, bad):
    archive = _zip(tmp_path / "a.zip", {"labels/label0001.nii.gz": b"ok", bad: b"evil"})
    with pytest.raises(DataError, match="points outside the extraction folder; refusing the archive"):
        safe_extract_zip(archive, tmp_path / "out" / "labels")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_zip_symlink_entries_are_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        safe_extract_zip(tmp_path / "a.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_select_and_flatten(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"d/label0001.nii.gz": b"1", "d/label0002.nii.gz": b"2", "d/README": b"r"})
    out = tmp_path / "labels"
    out.mkdir()
    (out / "stale").write_text("old")  # the folder is replaced as a whole
    files = safe_extract_zip(archive, out, select=lambda n: n.endswith(".nii.gz"), flatten=True)
    assert files == [out / "label0001.nii.gz", out / "label0002.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == ["label0001.nii.gz", "label0002.nii.gz"]
    assert (out / "label0002.nii.gz").read_bytes() == b"2"
    clash = _zip(tmp_path / "b.zip", {"x/f": b"1", "y/f": b"2"})
    with pytest.raises(DataError, match="same file"):
        safe_extract_zip(clash, tmp_path / "c", flatten=True)


def test_not_a_zip_is_a_clear_error(tmp_path):
    (tmp_path / "page.zip").write_text("<html>login</html>")
    with pytest.raises(DataError, match="not a zip archive"):
        safe_extract_zip(tmp_path / "page.zip", tmp_path / "out")


def test_write_list_is_atomic_and_has_a_newline_per_id(tmp_path):
    path = write_list(tmp_path / "l" / "train.list", ["A", "B"])
    assert path.read_bytes() == b"A\nB\n" and sha256_file(path) == hashlib.sha256(b"A\nB\n").hexdigest()
    assert os.listdir(tmp_path / "l") == ["train.list"]
