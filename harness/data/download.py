"""Verified downloads, safe archive extraction and atomic writes for the data preparation rules.

Download semantics (docs/protocol.md §1.2 [H]):

* HTTP(S) goes through pooch (retries with back-off, progress bar, download into a temporary file that is moved
  into place only when complete). A base URL may also be a local folder or a `file://` URL (a mirror on disk).
* A file with a known size/sha256 is written to `<name>.part` first and renamed to its final name only after both
  match. On a mismatch the bytes are deleted and `ChecksumError` names the file, the expected and the actual values
  and the URL, so a wrong file is never kept.
* An existing file that already matches is not fetched again, so a rerun only fetches what is missing.
* Client errors (HTTP 4xx except 408/429) are not retried: a missing file stays missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlparse

from harness.io import write_text_atomic

logger = logging.getLogger(__name__)

#: Seconds to wait for the server's answer (connect and between bytes), per attempt.
TIMEOUT_S = 60.0


class DataError(ValueError):
    """A data file is missing, corrupt or inconsistent; the message names the case, the file and the fix."""


class DownloadError(DataError):
    """A URL could not be fetched (after the retries)."""


class ChecksumError(DataError):
    """Downloaded bytes differ from the pinned size or sha256; they were deleted."""


class ManualStepRequired(DataError):
    """The data owner serves a file only by hand; the message says what to download, from where, and where to put it."""


class _NoRetry(Exception):
    """An HTTP client error that retrying cannot fix (pooch retries only network errors and hash mismatches)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_local(url: str) -> bool:
    """True for a local folder or a `file://` URL, False for http(s)/ftp URLs."""
    return urlparse(url).scheme in ("", "file")


def local_path(url: str) -> Path:
    """The path of a local folder or `file://` URL."""
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)


def join_url(base: str, *parts: str) -> str:
    """`base` + path parts; for remote URLs each part is percent-encoded (a space becomes %20)."""
    base = base.rstrip("/")
    if is_local(base):
        return str(local_path(base).joinpath(*parts))
    return "/".join([base, *(quote(p) for p in parts)])


def verify_file(path: Path, *, what: str, url: str, sha256: str | None = None, size: int | None = None) -> None:
    """Raise `ChecksumError` if the file's byte count or sha256 differs from the expected values (None = unchecked)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(
            f"{what}: expected {size} bytes, got {actual_size} (truncated or wrong file) from {url}; "
            f"expected sha256 {sha256}, got {sha256_file(path)}; the file was not kept"
        )
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            raise ChecksumError(
                f"{what}: sha256 mismatch for {url}: expected {sha256}, got {actual}; the file was not kept"
            )


class _Downloader:
    """pooch's HTTP downloader (progress bar, timeout) that turns permanent client errors into `_NoRetry`."""

    def __init__(self, progress: bool, timeout: float) -> None:
        import pooch

        self.inner = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)

    def __call__(self, url: str, output_file: Any, pooch_obj: Any) -> None:
        import requests

        try:
            self.inner(url, output_file, pooch_obj)
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            if 400 <= status < 500 and status not in (408, 429):
                raise _NoRetry(status, err.response.reason or "") from err
            raise


def _download(url: str, part: Path, *, what: str, retries: int, progress: bool, timeout: float) -> None:
    """Fetch `url` into `part` (complete or absent afterwards)."""
    if is_local(url):
        src = local_path(url)
        if not src.is_file():
            raise DownloadError(f"{what}: {src} does not exist (local mirror {url})")
        shutil.copyfile(src, part)
        return
    import pooch
    import requests

    store = pooch.create(
        path=part.parent, base_url="", registry={part.name: None}, urls={part.name: url}, retry_if_failed=retries
    )
    try:
        store.fetch(part.name, downloader=_Downloader(progress, timeout))
    except _NoRetry as err:
        raise DownloadError(f"{what}: the server answered {err} for {url}") from err
    except requests.RequestException as err:
        raise DownloadError(f"{what}: download failed from {url} after {retries + 1} attempt(s): {err}") from err


def fetch_url(
    url: str,
    dest: str | Path,
    *,
    what: str,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 3,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download `url` to `dest` unless `dest` is already there and matches; verify before the final rename.

    Args:
        url: http(s) URL, local path or `file://` URL.
        dest: final path; its folder is created (and removed again if the download fails and it was created here).
        what: names the file in messages, e.g. "LA case 06SR5RBREL16DQ6M8LWS".
        sha256: expected hex digest (None: not checked; an existing file then counts as present).
        size: expected byte count (None: not checked).
        retries: extra attempts after a network error (not after a 4xx answer or a checksum mismatch).
        progress: show pooch's progress bar (stderr).
        timeout: seconds per attempt to wait for the server.

    Returns:
        `dest`.

    Raises:
        DownloadError: the URL could not be fetched. ChecksumError: wrong bytes (deleted).
    """
    dest = Path(dest)
    if dest.is_file():
        if sha256 is None and size is None:
            return dest
        try:
            verify_file(dest, what=what, url=str(dest), sha256=sha256, size=size)
            logger.info("%s: already present and verified (%s)", what, dest)
            return dest
        except ChecksumError as err:
            logger.warning("%s; downloading it again", err)
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    try:
        _download(url, part, what=what, retries=retries, progress=progress, timeout=timeout)
        verify_file(part, what=what, url=url, sha256=sha256, size=size)
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        for folder in created:  # deepest first; only folders this call created and left empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    logger.info("%s: fetched %s (%d bytes)", what, url, dest.stat().st_size)
    return dest


def missing_case_files(root: str | Path, ids: list[str], path_of: Callable[[str | Path, str], Path]) -> None:
    """Raise DataError naming every listed ID whose case file does not exist (`path_of(root, id)` gives the path)."""
    missing = [(i, path_of(root, i)) for i in ids if not path_of(root, i).is_file()]
    if missing:
        shown = "; ".join(f"{i}: {p}" for i, p in missing[:5])
        raise DataError(f"{len(missing)} case(s) listed in {root} have no file ({shown}); run the data rules again")


# -- archives ----------------------------------------------------------------------------------------------------
def _check_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    """The member's relative path; refuses absolute paths, `..`, drive letters and symbolic links."""
    name = info.filename.replace("\\", "/")
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
        raise DataError(
            f"{archive}: entry {info.filename!r} points outside the extraction folder; refusing the archive"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"{archive}: entry {info.filename!r} is a symbolic link; refusing the archive")
    return rel


def safe_extract_zip(
    archive: str | Path, dest: str | Path, *, select: Callable[[str], bool] | None = None, flatten: bool = False
) -> list[Path]:
    """Extract a zip archive into `dest` (replaced as a whole), refusing entries that escape it.

    Every entry is checked before anything is written; extraction goes to a temporary sibling folder that is
    renamed to `dest` at the end, so a refused or broken archive leaves nothing behind.

    Args:
        archive: the zip file.
        dest: the folder to create (an existing one is replaced).
        select: keep only the entries whose path (posix, inside the archive) satisfies it; None keeps all files.
        flatten: write entries as `dest/<file name>` (folders dropped; two entries with one name are an error).

    Returns:
        The extracted files.
    """
    archive, dest = Path(archive), Path(dest)
    if not zipfile.is_zipfile(archive):
        raise DataError(f"{archive} is not a zip archive (an HTML error page instead of the file?)")
    with zipfile.ZipFile(archive) as zf:
        members = [(info, _check_member(info, archive)) for info in zf.infolist()]
        members = [(i, r) for i, r in members if not i.is_dir() and (select is None or select(str(r)))]
        targets = [PurePosixPath(r.name) if flatten else r for _, r in members]
        if len(set(targets)) != len(targets):
            raise DataError(f"{archive}: two entries would be written to the same file; refusing the archive")
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            for (info, _), target in zip(members, targets, strict=True):
                out = tmp.joinpath(*target.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            if not members:
                tmp.mkdir(parents=True)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [dest.joinpath(*t.parts) for t in targets]


# -- case lists ---------------------------------------------------------------------------------------------------
def write_list(path: str | Path, ids: list[str]) -> Path:
    """A case list: one ID per line, each followed by a newline (the released lists' byte format)."""
    return write_text_atomic(path, "".join(f"{i}\n" for i in ids))
