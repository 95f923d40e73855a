"""Where HAM10000 comes from: Harvard Dataverse, an HTTP(S) mirror, or a local directory.

Every source ends as a local directory in the official layout, which
:mod:`melanoma.ingest` reads:

* ``dataverse`` (default) — doi:10.7910/DVN/DBW86T on https://dataverse.harvard.edu;
  ``dataverse:https://other.host`` for another Dataverse installation holding the
  same record. File names, sizes and MD5 checksums come from the Dataverse API.
* ``https://host/path/`` — a mirror serving the official file names; a
  ``SHA256SUMS`` file beside them, if present, is used to verify them.
* ``/path/to/dir`` or ``file:///path/to/dir`` — the official zips, or the extracted
  folders (Kaggle layout ``HAM10000_images_part_1/``, ``HAM10000_images_part_2/``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from melanoma.download import DownloadError, RemoteFile, download, file_digest

log = logging.getLogger(__name__)

DATAVERSE_URL = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
METADATA_FILE = "HAM10000_metadata.csv"
IMAGE_PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
MASKS = "HAM10000_segmentations_lesion_tschandl"
# Official file names (the metadata on Dataverse is an ingested table, fetched in its original CSV form).
ARCHIVE_FILES = (METADATA_FILE, *(f"{p}.zip" for p in IMAGE_PARTS), f"{MASKS}.zip")


@dataclass(frozen=True)
class LocalLayout:
    """The pieces of HAM10000 found in a local directory: each a zip or a folder."""

    root: Path
    metadata: Path
    image_parts: tuple[Path, ...]
    masks: Path | None
    checksums: dict[str, str]  # file name -> sha256, from a SHA256SUMS file if present


def describe(source: str) -> str:
    kind = (
        "dataverse"
        if source.startswith("dataverse")
        else "http"
        if source.startswith(("http://", "https://"))
        else "local"
    )
    return f"{kind}:{source}"


def fetch(source: str, cache_dir: Path, session: requests.Session | None = None) -> LocalLayout:
    """Make ``source`` available as a local directory (downloading into ``cache_dir``) and find its layout."""
    if source == "dataverse" or source.startswith("dataverse:"):
        base = source.partition(":")[2] or DATAVERSE_URL
        try:
            remotes = dataverse_files(base, HAM10000_DOI, session)
        except (requests.RequestException, DownloadError) as e:
            # Dataverse is also where a run goes when no source was set: say what to set.
            raise DownloadError(
                f"HAM10000 from Dataverse ({base}): {e}. To use another copy, set the DAG's "
                "`source` param (or HAM10000_SOURCE on the workers) to a mirror URL or a "
                "local HAM10000 folder"
            ) from e
        target = cache_dir / "dataverse"
    elif source.startswith(("http://", "https://")):
        remotes = mirror_files(source, session)
        target = cache_dir / "mirror" / _slug(source)
    else:
        path = (
            Path(urlparse(source).path if source.startswith("file://") else source)
            .expanduser()
            .resolve()
        )
        layout = find_layout(path)
        verify_local_checksums(layout)
        return layout
    for remote in remotes:
        try:
            download(remote, target / remote.name, session=session)
        except DownloadError as e:
            if remote.required or "HTTP 404" not in str(e):
                raise
            log.warning("%s not available from %s; continuing without it", remote.name, source)
    return find_layout(target)


def dataverse_files(
    base_url: str,
    doi: str,
    session: requests.Session | None = None,
    wanted: tuple[str, ...] = ARCHIVE_FILES,
    optional: tuple[str, ...] = (f"{MASKS}.zip",),
) -> list[RemoteFile]:
    """The record's ``wanted`` files from the Dataverse native API, with sizes and MD5 checksums.

    The default is HAM10000 itself; the same record also holds the ISIC 2018 test set.
    """
    http = session or requests.Session()
    url = f"{base_url.rstrip('/')}/api/datasets/:persistentId/"
    response = http.get(url, params={"persistentId": doi}, timeout=60)
    if response.status_code != 200:
        raise DownloadError(f"Dataverse {url}?persistentId={doi}: HTTP {response.status_code}")
    files = response.json()["data"]["latestVersion"]["files"]
    remotes: dict[str, RemoteFile] = {}
    for entry in files:
        data = entry["dataFile"]
        label = entry.get("label") or data["filename"]
        tabular = "originalFileName" in data  # Dataverse converted it; ask for the original bytes
        name = data.get("originalFileName", label) if tabular else label
        if name not in wanted:
            continue
        checksum = data.get("checksum") or {}
        remotes[name] = RemoteFile(
            name=name,
            url=f"{base_url.rstrip('/')}/api/access/datafile/{data['id']}"
            + ("?format=original" if tabular else ""),
            size=data.get("originalFileSize") if tabular else data.get("filesize"),
            # The stored checksum is of the converted table, not the original CSV.
            md5=None
            if tabular
            else (checksum.get("value") if checksum.get("type") == "MD5" else data.get("md5")),
            required=name not in optional,
        )
    missing = [n for n in wanted if n not in remotes and n not in optional]
    if missing:
        raise DownloadError(f"Dataverse record {doi} at {base_url} lacks {missing}")
    return [remotes[n] for n in wanted if n in remotes]


def mirror_files(base_url: str, session: requests.Session | None = None) -> list[RemoteFile]:
    base = base_url.rstrip("/") + "/"
    http = session or requests.Session()
    sums: dict[str, str] = {}
    response = http.get(base + "SHA256SUMS", timeout=60)
    if response.status_code == 200:
        sums = parse_sha256sums(response.text)
    else:
        log.warning(
            "%sSHA256SUMS not found (HTTP %d): the downloads cannot be verified (a mirror "
            "gives no sizes or checksums); only a connection cut short is detected",
            base,
            response.status_code,
        )
    return [
        RemoteFile(name, base + name, sha256=sums.get(name), required=name != f"{MASKS}.zip")
        for name in ARCHIVE_FILES
    ]


def parse_sha256sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 2:
            sums[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return sums


def find_layout(root: Path) -> LocalLayout:
    """Locate metadata, image parts and masks in ``root``; a folder wins over a zip of the same name."""
    if not root.is_dir():
        raise FileNotFoundError(f"HAM10000 source directory {root} does not exist")

    def piece(stem: str) -> Path | None:
        for candidate in (root / stem, root / f"{stem}.zip"):
            if candidate.exists():
                return candidate
        return None

    metadata = root / METADATA_FILE
    if not metadata.is_file():
        raise FileNotFoundError(f"{metadata} not found: a HAM10000 source needs {METADATA_FILE}")
    parts = tuple(p for p in (piece(stem) for stem in IMAGE_PARTS) if p is not None)
    if not parts:
        raise FileNotFoundError(
            f"{root}: no image parts ({', '.join(IMAGE_PARTS)}, as .zip or folder)"
        )
    sums_file = root / "SHA256SUMS"
    checksums = parse_sha256sums(sums_file.read_text()) if sums_file.is_file() else {}
    return LocalLayout(root, metadata, parts, piece(MASKS), checksums)


def verify_local_checksums(layout: LocalLayout) -> None:
    """Check every file that the layout uses and its SHA256SUMS lists."""
    used = [layout.metadata, *layout.image_parts, *([layout.masks] if layout.masks else [])]
    for path in used:
        expected = layout.checksums.get(path.name)
        if expected and path.is_file():
            actual = file_digest(path)
            if actual != expected:
                raise DownloadError(
                    f"{path}: sha256 {actual} does not match SHA256SUMS ({expected})"
                )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:100]
