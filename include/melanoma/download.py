"""Resumable, verified HTTP(S) downloads.

A download streams into ``<dest>.part``. After an interruption the next attempt
asks for the rest with an HTTP ``Range`` request and appends; a server that
ignores ranges (answers 200) restarts the file. Transient failures (connection
errors, time-outs, 429 and 5xx) are retried with exponential backoff. The
finished file is checked against the size and checksums known for it before it
is renamed to ``dest``; a mismatch keeps the bytes as ``<dest>.corrupt`` for
inspection and raises :class:`ChecksumMismatchError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    pass


class ChecksumMismatchError(DownloadError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch, with whatever the source tells us to verify it against."""

    name: str
    url: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    required: bool = True


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, remote: RemoteFile) -> list[str]:
    """What was checked (``size``, ``sha256``, ``md5``); ChecksumMismatchError naming the
    file if any differs. An empty list means nothing was known to check against."""
    checked = []
    actual_size = path.stat().st_size
    if remote.size is not None:
        if actual_size != remote.size:
            raise ChecksumMismatchError(
                f"{remote.name} ({remote.url}): size {actual_size} bytes, expected {remote.size}"
            )
        checked.append("size")
    for algorithm, expected in (("sha256", remote.sha256), ("md5", remote.md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual.lower() != expected.lower():
                raise ChecksumMismatchError(
                    f"{remote.name} ({remote.url}): {algorithm} {actual}, expected {expected}"
                )
            checked.append(algorithm)
    return checked


def verification(checked: list[str]) -> str:
    """How a log line says what ``verify_file`` checked."""
    if not checked:
        return "NOT verified: the source gives no size or checksum for it"
    return "verified: " + ", ".join(checked)


def download(
    remote: RemoteFile,
    dest: Path,
    *,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress_every_s: float = 15.0,
    session: requests.Session | None = None,
) -> Path:
    """Fetch ``remote`` to ``dest`` (resuming, retrying, verifying); return ``dest``.

    An existing ``dest`` that verifies is reused without any request.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if _verified_copy(dest, remote):
        return dest
    part = dest.with_name(dest.name + ".part")
    _fetch_with_retries(
        session or requests.Session(), remote, part, retries, backoff_s, timeout_s, progress_every_s
    )
    try:
        checked = verify_file(part, remote)
    except ChecksumMismatchError:
        os.replace(part, dest.with_name(dest.name + ".corrupt"))
        raise
    os.replace(part, dest)
    log.info(
        "%s: downloaded (%s, %d bytes); %s",
        remote.name,
        dest,
        dest.stat().st_size,
        verification(checked),
    )
    return dest


def _verified_copy(dest: Path, remote: RemoteFile) -> bool:
    """Whether ``dest`` already holds ``remote``; a copy that fails verification is deleted."""
    if not dest.exists():
        return False
    try:
        checked = verify_file(dest, remote)
    except ChecksumMismatchError as e:
        log.warning("%s: cached copy fails verification (%s); downloading again", remote.name, e)
        dest.unlink()
        return False
    log.info("%s: already downloaded (%s); %s", remote.name, dest, verification(checked))
    return True


def _fetch_with_retries(
    http: requests.Session,
    remote: RemoteFile,
    part: Path,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    progress_every_s: float,
) -> None:
    """Fetch into ``part``, resuming after each retryable failure with exponential backoff."""
    attempt = 0
    while True:
        try:
            _fetch_into(http, remote, part, timeout_s, progress_every_s)
            return
        except _Retryable as e:
            attempt += 1
            if attempt > retries:
                raise DownloadError(
                    f"{remote.name} ({remote.url}): giving up after {retries} retries: {e}"
                ) from e
            wait = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "%s: %s; retry %d/%d in %.1fs, resuming at byte %d",
                remote.name,
                e,
                attempt,
                retries,
                wait,
                part.stat().st_size if part.exists() else 0,
            )
            time.sleep(wait)


class _Retryable(Exception):
    pass


def _fetch_into(
    http: requests.Session,
    remote: RemoteFile,
    part: Path,
    timeout_s: float,
    progress_every_s: float,
) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with http.get(remote.url, headers=headers, stream=True, timeout=timeout_s) as response:
            if response.status_code == 416 and offset and remote.size == offset:
                return  # the previous attempt had already received everything
            if response.status_code in RETRYABLE_STATUS:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code not in (200, 206):
                raise DownloadError(f"{remote.name}: HTTP {response.status_code} from {remote.url}")
            mode = "ab" if response.status_code == 206 else "wb"
            if mode == "wb" and offset:
                log.info("%s: server ignored the range request; restarting", remote.name)
                offset = 0
            total = remote.size or _content_length(response, offset)
            received, last_log, start = offset, time.monotonic(), time.monotonic()
            with open(part, mode) as out:
                # read1 hands over whatever has arrived, so bytes received before a
                # connection drops reach the disk and the next attempt resumes after them.
                while chunk := response.raw.read1(1 << 20, decode_content=True):
                    out.write(chunk)
                    received += len(chunk)
                    now = time.monotonic()
                    if now - last_log >= progress_every_s:
                        rate = (received - offset) / max(now - start, 1e-9) / 1e6
                        pct = f"{100 * received / total:.1f}%" if total else "?%"
                        log.info(
                            "%s: %s (%d MB) at %.1f MB/s", remote.name, pct, received >> 20, rate
                        )
                        last_log = now
            if total and received < total:
                raise _Retryable(f"connection closed at byte {received} of {total}")
    except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as e:
        raise _Retryable(f"{type(e).__name__}: {e}") from e


def _content_length(response: requests.Response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None:
        return None
    return int(length) + (offset if response.status_code == 206 else 0)
