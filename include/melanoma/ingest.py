"""Validate a local HAM10000 layout and version it in the object store.

Two passes over the source, never modifying it: the first hashes and checks
every file (metadata schema and rows, image decodability and truncation, mask
matching) and builds the MANIFEST; the second uploads what the manifest lists.
``dataset_version`` is a hash of the manifest's file list, so the same data
gives the same version and ingesting it again is a no-op. The MANIFEST is
written last: it is the commit marker (see :mod:`melanoma.store`).

Layout under the store:
``datasets/ham10000/<version>/{metadata.csv, images/, masks/, quarantine/, MANIFEST.json}``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import re
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from melanoma import RESEARCH_NOTICE
from melanoma.dataset_version import DatasetVersion
from melanoma.ham10000 import DX_CODES, MetadataSchemaError, RowProblem, validate_metadata
from melanoma.images import ImageDecodeError, ImageRefusedError, check_image
from melanoma.layout import DatasetLayout
from melanoma.limits import ArchiveLimits, compressed_sha256
from melanoma.sources import LocalLayout
from melanoma.store import ObjectStore, read_manifest

log = logging.getLogger(__name__)

IMAGE_NAME = re.compile(r"^(ISIC_[0-9]{7})\.(jpe?g|png)$", re.IGNORECASE)
MASK_NAME = re.compile(r"^(ISIC_[0-9]{7})_segmentation\.png$", re.IGNORECASE)


@dataclass(frozen=True)
class SourceFile:
    """One file inside the source: a zip member or a file in a folder."""

    container: Path  # the zip or folder it lives in
    member: str  # its path inside the container

    @property
    def name(self) -> str:
        return Path(self.member).name

    def origin(self) -> str:
        return (
            f"{self.container}::{self.member}"
            if self.container.suffix == ".zip"
            else str(self.container / self.member)
        )


@dataclass(frozen=True)
class FileCheck:
    source: SourceFile
    sha256: str
    size: int
    problem: str | None  # None when the file is a valid image/mask
    width: int = 0
    height: int = 0
    # A file refused by a resource limit is recorded (sha256, size), not copied to quarantine.
    keep_copy: bool = True


@dataclass(frozen=True)
class Refusal:
    """A source file not read: why, and what identifies it (for a zip member, the sha256
    of its compressed bytes; its size, as declared)."""

    reason: str
    sha256: str = ""
    size: int = 0


class TooFewImagesError(ValueError):
    """Too few metadata rows have a readable image: the source is incomplete."""


@dataclass(frozen=True)
class IngestResult:
    dataset_version: str
    manifest_key: str
    created: bool  # False when this version already existed in the store
    manifest: dict[str, Any]


def iter_source_files(
    container: Path, limits: ArchiveLimits | None = None
) -> Iterator[tuple[SourceFile, bytes | Refusal]]:
    """Yield each file of a zip or folder with its bytes, or with why it was not read: an
    unreadable member, or one over ``limits`` (default: from the environment)."""
    limits = limits or ArchiveLimits.from_environment()
    if container.is_dir():
        for path in sorted(p for p in container.rglob("*") if p.is_file()):
            source = SourceFile(container, path.relative_to(container).as_posix())
            size = path.stat().st_size
            if size > limits.max_member_bytes:
                yield (
                    source,
                    Refusal(
                        f"{size:,} bytes, over the limit of {limits.max_member_bytes:,} "
                        f"({limits.ENVIRONMENT['max_member_bytes']}): not read",
                        "",
                        size,
                    ),
                )
            else:
                yield source, path.read_bytes()
        return
    try:
        archive = zipfile.ZipFile(container)
    except zipfile.BadZipFile as e:
        raise ValueError(
            f"{container}: not a readable zip archive ({e}); is the download truncated?"
        ) from e
    with archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir() or "__MACOSX" in info.filename:
                continue
            source = SourceFile(container, info.filename)
            try:
                yield source, limits.read(archive, info)
            except ValueError as refused:  # over a limit, or encrypted: nothing unpacked
                yield (
                    source,
                    Refusal(str(refused), compressed_sha256(container, info), info.file_size),
                )
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error, RuntimeError) as e:
                yield source, Refusal(f"unreadable zip member: {e}")


def _check(item: tuple[SourceFile, bytes | Refusal], grayscale: bool) -> FileCheck:
    source, data = item
    if isinstance(data, Refusal):
        return FileCheck(source, data.sha256, data.size, data.reason, keep_copy=False)
    digest = hashlib.sha256(data).hexdigest()
    try:
        width, height = check_image(data, grayscale)
    except ImageRefusedError as error:
        return FileCheck(source, digest, len(data), str(error), keep_copy=False)
    except ImageDecodeError as error:
        return FileCheck(source, digest, len(data), str(error))
    return FileCheck(source, digest, len(data), None, width, height)


def _scan(
    containers: tuple[Path, ...], pattern: re.Pattern[str], grayscale: bool, workers: int
) -> tuple[list[FileCheck], list[tuple[SourceFile, str]]]:
    """Check every file matching ``pattern``; other files are returned as ignored, with why."""

    def matching() -> Iterator[tuple[SourceFile, bytes | Refusal]]:
        for container in containers:
            for source, data in iter_source_files(container):
                if pattern.match(source.name):
                    yield source, data
                else:
                    ignored.append((source, "file name does not match " + pattern.pattern))

    ignored: list[tuple[SourceFile, str]] = []
    checks: list[FileCheck] = []
    items = matching()
    # OpenCV releases the GIL while decoding, so threads use every core. A few files per
    # thread at a time: Executor.map would read every file of the source into memory first.
    with ThreadPoolExecutor(workers) as pool:
        while chunk := list(itertools.islice(items, 8 * workers)):
            checks += pool.map(lambda item: _check(item, grayscale), chunk)
    return checks, ignored


def most_common_problems(problems: list[RowProblem], shown: int = 3) -> str:
    """The commonest reasons rows were rejected, with a count and a first row each."""
    by_reason: dict[str, list[RowProblem]] = {}
    for problem in problems:
        by_reason.setdefault(problem.reason.split(":")[0], []).append(problem)
    ranked = sorted(by_reason.items(), key=lambda item: -len(item[1]))[:shown]
    return "; ".join(
        f"{reason} ({len(rows)} row(s), first row {rows[0].row}: {rows[0].reason})"
        for reason, rows in ranked
    )


def read_metadata(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[RowProblem]]:
    """(every row as read, the valid rows, the rejected rows' problems); one error naming
    the file when it is not a CSV or when every row is rejected."""
    try:
        raw = pd.read_csv(io.BytesIO(path.read_bytes()), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise MetadataSchemaError(f"{path}: empty file (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise MetadataSchemaError(f"{path}: cannot be parsed as CSV ({e})") from e
    metadata, row_problems = validate_metadata(raw, str(path))
    if metadata.empty and row_problems:
        raise MetadataSchemaError(
            f"{path}: every one of its {len(raw)} rows was rejected; "
            + most_common_problems(row_problems)
        )
    return raw, metadata, row_problems


class ManifestDraft:
    """What a dataset version will hold, gathered while the source is checked: ``plan``
    (store key, relative to the version -> the file or bytes to store), ``files`` (key ->
    its record in the manifest) and ``quarantined`` (each reject with its reason)."""

    def __init__(self) -> None:
        self.plan: dict[str, SourceFile | bytes] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.quarantined: list[dict[str, Any]] = []

    def add_bytes(self, key: str, data: bytes) -> None:
        self.plan[key] = data
        self.files[key] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    def add_file(self, key: str, check: FileCheck) -> None:
        self.plan[key] = check.source
        self.files[key] = {
            "sha256": check.sha256,
            "bytes": check.size,
            "width": check.width,
            "height": check.height,
        }

    def quarantine(self, check: FileCheck, reason: str) -> None:
        """Record a reject; keep a copy of it unless it was refused unread (a bomb)."""
        key = DatasetLayout.quarantine_relative(check.source.container.name, check.source.name)
        kept = bool(check.size) and check.keep_copy  # unreadable or refused: nothing to keep
        record: dict[str, Any] = {
            "file": check.source.origin(),
            "reason": reason,
            "key": key if kept else "",
        }
        if not check.keep_copy:
            record.update(sha256=check.sha256, bytes=check.size)
        self.quarantined.append(record)
        if kept:
            self.plan[key] = check.source
            self.files[key] = {"sha256": check.sha256, "bytes": check.size}

    def accept(
        self,
        checks: list[FileCheck],
        pattern: re.Pattern[str],
        kind: str,
        wanted: Iterable[str],
        why: str,
    ) -> dict[str, FileCheck]:
        """The first readable file for each wanted image id; every other file quarantined."""
        wanted, accepted = set(wanted), dict[str, FileCheck]()
        for check in checks:
            image_id = pattern.match(check.source.name).group(1)  # type: ignore[union-attr]
            if check.problem:
                self.quarantine(check, check.problem)
            elif image_id in accepted:
                first = accepted[image_id].source.origin()
                self.quarantine(check, f"duplicate {kind} of {image_id} (first in {first})")
            elif image_id not in wanted:
                self.quarantine(check, why)
            else:
                accepted[image_id] = check
        return accepted

    def add_dataset(
        self,
        kept: pd.DataFrame,
        row_problems: list[RowProblem],
        images: dict[str, FileCheck],
        masks: dict[str, FileCheck],
    ) -> None:
        """The version's metadata (its kept rows), rejected rows, images and masks."""
        self.add_bytes("metadata.csv", kept.to_csv(index=False, lineterminator="\n").encode())
        if row_problems:
            rejected = pd.DataFrame([vars(p) for p in row_problems])
            self.add_bytes(
                "quarantine/metadata_rejected_rows.csv",
                rejected.to_csv(index=False, lineterminator="\n").encode(),
            )
        for image_id, check in sorted(images.items()):
            self.add_file(_image_key(image_id, check), check)
        for image_id, check in sorted(masks.items()):
            self.add_file(DatasetLayout.mask_relative(image_id), check)


def check_enough_images(
    layout: LocalLayout, images: int, rows: int, min_image_share: float, draft: ManifestDraft
) -> None:
    """TooFewImagesError when no image, or fewer than ``min_image_share`` of the ``rows``
    valid metadata rows, has a readable image: an archive cut short is no dataset."""
    if images and images >= min_image_share * rows:
        return
    parts = ", ".join(str(p) for p in layout.image_parts)
    raise TooFewImagesError(
        f"{parts}: {images} readable image(s) for {rows} metadata rows of "
        f"{layout.metadata} (at least {min_image_share:.0%} needed, min_image_share); "
        f"{len(draft.quarantined)} file(s) rejected: are the image archives empty or cut short?"
    )


def _image_key(image_id: str, check: FileCheck) -> str:
    ext = Path(check.source.name).suffix.lower()
    return DatasetLayout.image_relative(image_id, ".jpg" if ext == ".jpeg" else ext)


def build_manifest(
    layout: LocalLayout, source: str, workers: int = 4, min_image_share: float = 0.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate the source; return (manifest, plan) where plan maps each store key to its origin.

    TooFewImagesError when no image, or fewer than ``min_image_share`` of the valid
    metadata rows, has a readable image.
    """
    started = time.monotonic()
    raw, metadata, row_problems = read_metadata(layout.metadata)
    image_checks, ignored = _scan(layout.image_parts, IMAGE_NAME, False, workers)
    mask_checks, ignored_masks = _scan(
        (layout.masks,) if layout.masks else (), MASK_NAME, True, workers
    )
    draft = ManifestDraft()
    known_ids = set(metadata["image_id"])
    images = draft.accept(
        image_checks, IMAGE_NAME, "image", known_ids,
        "image has no metadata row (or its row was rejected)",
    )  # fmt: skip
    masks = draft.accept(mask_checks, MASK_NAME, "mask", images, "mask has no matching image")
    check_enough_images(layout, len(images), len(known_ids), min_image_share, draft)
    kept = metadata[metadata["image_id"].isin(images)].reset_index(drop=True)
    kept.insert(len(kept.columns), "has_mask", kept["image_id"].isin(masks).astype(int))
    draft.add_dataset(kept, row_problems, images, masks)
    files = dict(sorted(draft.files.items()))
    by_dx = kept["dx"].value_counts()
    manifest: dict[str, Any] = {
        "dataset": "ham10000",
        "dataset_version": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[
            :16
        ],
        "source": source,
        "notice": RESEARCH_NOTICE,
        "counts": {
            "metadata_rows": len(raw),
            "images": len(images),
            "lesions": int(kept["lesion_id"].nunique()),
            "masks": len(masks),
            "by_dx": {dx: int(by_dx.get(dx, 0)) for dx in DX_CODES},
            "quarantined": len(draft.quarantined),
            "rejected_rows": len(row_problems),
        },
        "validation": {
            "rejected_rows": [vars(p) for p in row_problems],
            "metadata_rows_without_image": sorted(known_ids - set(images)),
            "images_without_mask": sorted(set(images) - set(masks))
            if layout.masks
            else "no mask source",
            "quarantined": sorted(draft.quarantined, key=lambda q: q["file"]),
            "ignored_files": sorted(f"{s.origin()}: {why}" for s, why in ignored + ignored_masks),
        },
        "validation_seconds": round(time.monotonic() - started, 2),
        "files": files,
    }
    return manifest, draft.plan


def ingest(
    layout: LocalLayout,
    store: ObjectStore,
    source: str,
    workers: int = 8,
    min_image_share: float = 0.9,
) -> IngestResult:
    """Validate ``layout`` and upload it as a dataset version, unless that version already exists."""
    manifest, plan = build_manifest(layout, source, min_image_share=min_image_share)
    version = manifest["dataset_version"]
    dataset = DatasetLayout(version)
    key = dataset.manifest
    log_validation(manifest)
    if store.exists(key):
        stored = {o.key: o.size for o in store.list(dataset.prefix + "/")}
        # The version's content is the same (its id is a hash of it); what a user deleted
        # or cut short in the store since is put back from the source.
        recorded = DatasetVersion(manifest)
        missing = {
            rel: origin
            for rel, origin in plan.items()
            if stored.get(dataset.file(rel)) != recorded.size_of(rel)
        }
        if missing:
            upload(store, dataset, missing, workers)
            log.warning(
                "dataset version %s at %s/%s: %d object(s) were missing or cut short in the "
                "store and were put back from the source: %s",
                version,
                store.url,
                dataset.prefix,
                len(missing),
                ", ".join(sorted(missing)[:5]) + (" …" if len(missing) > 5 else ""),
            )
        else:
            log.info(
                "dataset version %s already exists at %s/%s: nothing to upload",
                version,
                store.url,
                key,
            )
        return IngestResult(version, key, False, read_manifest(store, key))

    started = time.monotonic()
    upload(store, dataset, plan, workers)
    manifest["upload_seconds"] = round(time.monotonic() - started, 2)
    store.put_json(key, manifest)  # last: the commit marker
    log.info(
        "dataset version %s: %d objects uploaded to %s/%s in %.1fs",
        version,
        len(plan),
        store.url,
        dataset.prefix,
        manifest["upload_seconds"],
    )
    return IngestResult(version, key, True, manifest)


def upload(
    store: ObjectStore,
    dataset: DatasetLayout,
    plan: dict[str, SourceFile | bytes],
    workers: int,
) -> None:
    """Each planned file to the dataset version's key, from its zip or folder."""
    # Group uploads by container so each zip is opened once per worker batch.
    by_container: dict[Path | None, list[tuple[str, SourceFile | bytes]]] = {}
    for rel, origin in plan.items():
        by_container.setdefault(
            origin.container if isinstance(origin, SourceFile) else None, []
        ).append((rel, origin))

    def upload_batch(batch: list[tuple[str, SourceFile | bytes]]) -> None:
        reader = _ContainerReader()
        for rel, origin in batch:
            data = origin if isinstance(origin, bytes) else reader.read(origin)
            store.put_bytes(dataset.file(rel), data)
        reader.close()

    batches = [
        items[i : i + 256] for items in by_container.values() for i in range(0, len(items), 256)
    ]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(upload_batch, batches))


class _ContainerReader:
    """Reads files back from zips or folders, keeping each zip open once."""

    def __init__(self) -> None:
        self._zips: dict[Path, zipfile.ZipFile] = {}

    def read(self, source: SourceFile) -> bytes:
        if source.container.is_dir():
            return (source.container / source.member).read_bytes()
        archive = self._zips.get(source.container)
        if archive is None:
            archive = self._zips[source.container] = zipfile.ZipFile(source.container)
        return archive.read(source.member)

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()


def log_validation(manifest: dict[str, Any]) -> None:
    counts, report = manifest["counts"], manifest["validation"]
    log.info(
        "HAM10000 %s: %d metadata rows, %d images, %d lesions, %d masks; by dx %s",
        manifest["dataset_version"],
        counts["metadata_rows"],
        counts["images"],
        counts["lesions"],
        counts["masks"],
        counts["by_dx"],
    )
    for problem in report["rejected_rows"]:
        log.warning("metadata row %(row)d (%(image_id)s) rejected: %(reason)s", problem)
    if report["metadata_rows_without_image"]:
        log.warning(
            "%d metadata rows have no image: %s",
            len(report["metadata_rows_without_image"]),
            ", ".join(report["metadata_rows_without_image"][:20]),
        )
    if isinstance(report["images_without_mask"], list) and report["images_without_mask"]:
        log.warning(
            "%d images have no lesion mask: %s",
            len(report["images_without_mask"]),
            ", ".join(report["images_without_mask"][:20]),
        )
    for entry in report["quarantined"]:
        log.warning("quarantined %s: %s", entry["file"], entry["reason"])
