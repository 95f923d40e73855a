"""External test sets: their labels, their images, and how they differ from HAM10000.

Three label formats are read, told apart by their columns:

* ``isic2018``: the ISIC 2018 Task 3 ground truth, one-hot ``image, MEL, NV, BCC, AKIEC,
  BKL, DF, VASC``;
* ``ham10000``: the HAM10000 metadata format, ``image_id, dx`` (``lesion_id`` when present);
* ``binary``: ``image_id, melanoma`` (0/1), for sets that carry only that label.

Images are matched to labels by file stem (``ISIC_0034524.jpg`` -> ``ISIC_0034524``).
The default source is the ISIC 2018 Task 3 test set (1,512 images) on the same Harvard
Dataverse record as HAM10000. Thresholds are never chosen here: the run's validation
thresholds are applied (see ``training.external``).
"""

from __future__ import annotations

import os
import shutil
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import requests

from melanoma.download import download
from melanoma.ham10000 import DX_CODES, apply_label_task
from melanoma.layout import set_name
from melanoma.limits import ArchiveLimits
from melanoma.sources import DATAVERSE_URL, HAM10000_DOI, dataverse_files

ISIC2018_IMAGES = "ISIC2018_Task3_Test_Images.zip"
ISIC2018_LABELS = "ISIC2018_Task3_Test_GroundTruth.csv"
ONE_HOT = {
    "MEL": "mel",
    "NV": "nv",
    "BCC": "bcc",
    "AKIEC": "akiec",
    "BKL": "bkl",
    "DF": "df",
    "VASC": "vasc",
}


class ExternalLabelsError(ValueError):
    """The labels file is unusable; the message names the file, row and field."""


@dataclass(frozen=True)
class ExternalSet:
    name: str
    images: Path  # a folder of images
    labels: Path


def read_external_labels(path: Path) -> tuple[pd.DataFrame, str]:
    """(image_id, dx or None, melanoma, lesion_id) per row, and the format detected."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ExternalLabelsError(f"{path}: empty file (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ExternalLabelsError(f"{path}: cannot be parsed as CSV ({e})") from None
    if raw.empty:
        raise ExternalLabelsError(f"{path}: a header but no label rows")
    columns = set(raw.columns)
    if {"image", *ONE_HOT} <= columns:
        fmt = "isic2018"
        one_hot = raw[list(ONE_HOT)].apply(pd.to_numeric, errors="coerce")
        bad = one_hot.isna().any(axis=1) | ~np.isclose(one_hot.sum(axis=1), 1.0)
        _reject(path, raw, bad, "the one-hot diagnosis columns must hold one 1 and the rest 0")
        dx = one_hot.idxmax(axis=1).map(ONE_HOT)
        frame = pd.DataFrame({"image_id": raw["image"], "dx": dx})
    elif {"image_id", "dx"} <= columns:
        fmt = "ham10000"
        _reject(path, raw, ~raw["dx"].isin(list(DX_CODES)), f"dx not one of {','.join(DX_CODES)}")
        frame = raw[["image_id", "dx"]].copy()
        if "lesion_id" in columns:
            frame["lesion_id"] = raw["lesion_id"].where(raw["lesion_id"] != "", None)
    elif {"image_id", "melanoma"} <= columns:
        fmt = "binary"
        _reject(path, raw, ~raw["melanoma"].isin(["0", "1"]), "melanoma must be 0 or 1")
        frame = pd.DataFrame({"image_id": raw["image_id"], "dx": None})
        frame["melanoma"] = raw["melanoma"].astype(int)
    else:
        raise ExternalLabelsError(
            f"{path}: columns {list(raw.columns)} match no known format: "
            "image + MEL,NV,BCC,AKIEC,BKL,DF,VASC (ISIC 2018), image_id + dx (HAM10000), "
            "or image_id + melanoma (0/1)"
        )
    if fmt != "binary" and "melanoma" in columns:
        # Two columns that say whether an image is a melanoma must agree: neither is trusted.
        said = raw["melanoma"].where(raw["melanoma"].isin(["0", "1"]))
        disagree = said.isna() | (said != frame["dx"].eq("mel").astype(int).astype(str))
        _reject(
            path, raw, disagree, "the dx and melanoma columns disagree (or melanoma is not 0/1)"
        )
    _reject(path, raw, frame["image_id"].eq(""), "empty image id")
    duplicated = frame["image_id"].duplicated(keep="first")
    _reject(path, raw, duplicated, "duplicate image id")
    if "melanoma" not in frame:
        frame["melanoma"] = frame["dx"].eq("mel").astype(int)
    if "lesion_id" not in frame:
        frame["lesion_id"] = None
    # Without lesion ids each image is its own bootstrap unit.
    frame["lesion_id"] = frame["lesion_id"].fillna(frame["image_id"])
    return frame[["image_id", "dx", "melanoma", "lesion_id"]].reset_index(drop=True), fmt


def _reject(path: Path, raw: pd.DataFrame, bad: pd.Series, reason: str) -> None:
    if bad.any():
        rows = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())]  # header is line 1
        shown = ", ".join(str(r) for r in rows[:10]) + (" …" if len(rows) > 10 else "")
        raise ExternalLabelsError(f"{path}: {reason} (line(s) {shown}; {len(rows)} in all)")


def labels_for_task(frame: pd.DataFrame, label_task: str, fmt: str) -> pd.DataFrame:
    """The rows the run's label task keeps, with its 0/1 ``label``."""
    if fmt == "binary":
        if label_task != "mel_vs_rest":
            raise ExternalLabelsError(
                f"binary melanoma labels cannot evaluate label task {label_task!r}: "
                "it needs each image's dx"
            )
        return frame.assign(label=frame["melanoma"])
    return apply_label_task(frame, label_task).reset_index(drop=True)


# What melanoma-predict --gradcam writes: an overlay is a picture of a score, not a lesion.
GRADCAM_SUFFIX = ".gradcam.png"


def image_files(path: Path) -> list[Path]:
    """The file itself, or every file in the folder, sorted: recursively, hidden ones too,
    through symlinked sub-folders (each real folder once, so a link loop ends), and links
    whose target is gone (reading them fails, and names them)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files, seen = [], set()
    for folder, subfolders, names in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        files += [Path(folder, name) for name in names]
    return sorted(files)


def display_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as text for tables and messages: a name that is not
    UTF-8 shows its bytes escaped (``\\xff`` as ``\\udcff``) instead of failing every write."""
    relative = str(path.relative_to(root)) if path != root else path.name
    return relative.encode("utf-8", "backslashreplace").decode("utf-8")


def skip_reason(path: Path, root: Path) -> str | None:
    """Why a file found in a folder is not scored, or None: hidden files (a name starting
    with '.' anywhere below ``root``: .DS_Store, ._x.jpg, .git/...) and the Grad-CAM
    overlays melanoma-predict writes. Each is listed with its reason, not dropped."""
    relative = path.relative_to(root).parts if path != root else (path.name,)
    if any(part.startswith(".") for part in relative):
        return "hidden file (its name starts with '.'), skipped"
    if path.name.lower().endswith(GRADCAM_SUFFIX):
        return f"a Grad-CAM overlay (*{GRADCAM_SUFFIX}, written by melanoma-predict), skipped"
    return None


@dataclass(frozen=True)
class ImageIndex:
    """The files under a folder by image id (file stem), and those that cannot be scored."""

    by_id: dict[str, Path]
    ambiguous: dict[str, list[Path]]  # an id several files share: which is meant is unknown
    skipped: dict[Path, str]  # not scored, with why (skip_reason), and listed as such


def index_images(folder: Path) -> ImageIndex:
    """Every visible file under ``folder`` by its stem; an id two files share (``x.jpg``
    beside ``x.png``, or ``a/x.jpg`` beside ``x.jpg``) is ambiguous, and neither is used."""
    by_stem: dict[str, list[Path]] = {}
    skipped = {}
    for path in image_files(folder):
        if reason := skip_reason(path, folder):
            skipped[path] = reason
        else:
            by_stem.setdefault(path.stem, []).append(path)
    return ImageIndex(
        {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1},
        {stem: paths for stem, paths in by_stem.items() if len(paths) > 1},
        skipped,
    )


def extract_images(archive: Path, target: Path) -> Path:
    """Unpack an images zip once, keeping member paths; return the folder.

    Nothing is dropped or overwritten: a second member of the same name goes to
    ``duplicate-<n>/``, so that its id is seen as ambiguous. Members whose path would
    leave the folder (``..``, absolute) are refused. The folder is built beside
    ``target`` and renamed into place, and a marker beside it names the archive, so an
    interrupted extraction is never taken for a complete one. A member over the archive
    limits (``melanoma.limits.ArchiveLimits``: a zip bomb), encrypted or unreadable
    refuses the archive, naming the member, and leaves nothing behind.
    """
    marker = target.with_name(target.name + ".extracted")
    stamp = f"{archive.name} {archive.stat().st_size}"
    if target.is_dir() and marker.exists() and marker.read_text() == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _unpack(archive, partial, ArchiveLimits.from_environment())
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.mkdir(exist_ok=True)
    marker.unlink(missing_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    marker.write_text(stamp)
    return target


def _unpack(archive: Path, folder: Path, limits: ArchiveLimits) -> None:
    written: Counter[str] = Counter()
    try:
        zipped = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{archive}: not a readable zip archive ({error})") from None
    with zipped:
        for member in zipped.infolist():
            name = PurePosixPath(member.filename.replace("\\", "/"))  # zips made on Windows
            if member.is_dir():
                continue
            if name.is_absolute() or ".." in name.parts:
                raise ValueError(
                    f"{archive}: member {member.filename!r} leaves the archive's folder"
                )
            try:
                data = limits.read(zipped, member)
            except ValueError as refused:
                raise ValueError(f"{archive}: member {member.filename!r}: {refused}") from None
            except (zipfile.BadZipFile, EOFError, RuntimeError, zlib.error) as error:
                raise ValueError(
                    f"{archive}: member {member.filename!r} is unreadable ({error})"
                ) from None
            written[str(name)] += 1
            copies = written[str(name)]
            path = folder / (f"duplicate-{copies}/{name}" if copies > 1 else str(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def fetch_isic2018(
    cache_dir: Path, base_url: str = DATAVERSE_URL, session: requests.Session | None = None
) -> ExternalSet:
    """The ISIC 2018 Task 3 test images and ground truth from the HAM10000 Dataverse record."""
    target = cache_dir / "isic2018"
    for remote in dataverse_files(
        base_url, HAM10000_DOI, session, wanted=(ISIC2018_IMAGES, ISIC2018_LABELS)
    ):
        download(remote, target / remote.name, session=session)
    images = extract_images(target / ISIC2018_IMAGES, target / "images")
    return ExternalSet("isic2018", images, target / ISIC2018_LABELS)


def resolve_external_set(
    source: str, labels: str | None, cache_dir: Path, name: str | None = None
) -> ExternalSet:
    """``isic2018`` (or ``isic2018:<dataverse url>``), or a local folder/zip with ``labels``.

    The set is called ``name``; by default ``isic2018``, or the labels file's stem
    (``ph2.csv`` -> ``ph2``): never the images folder's name, which two sets can share.
    """
    if source == "isic2018" or source.startswith("isic2018:"):
        fetched = fetch_isic2018(cache_dir, source.partition(":")[2] or DATAVERSE_URL)
        return ExternalSet(set_name(name or fetched.name), fetched.images, fetched.labels)
    path = Path(source).expanduser()
    if not labels:
        raise ExternalLabelsError(f"{source}: a local external set needs a labels CSV")
    labels_path = Path(labels).expanduser()
    if not labels_path.is_file():
        raise ExternalLabelsError(f"{labels}: no such labels file")
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such folder or zip")
    chosen = set_name(name or labels_path.stem)
    if path.suffix == ".zip":
        path = extract_images(path, cache_dir / "external" / chosen)
    if not path.is_dir():
        raise FileNotFoundError(f"{source}: no such folder or zip")
    return ExternalSet(chosen, path, labels_path)


def describe_differences(
    external: pd.DataFrame,
    sizes: list[tuple[int, int]],
    formats: Counter[str],
    reference: dict[str, Any],
    reference_sizes: list[tuple[int, int]],
) -> dict[str, Any]:
    """How the external set differs from the run's HAM10000 test split.

    ``external`` holds the scored rows (dx, label); ``sizes`` their (width, height);
    ``reference`` the run's test split entry of ``splits_summary.json`` and
    ``reference_sizes`` its images' (width, height) as stored.
    """
    dx_mix = (
        external["dx"].value_counts(normalize=True).round(4).to_dict()
        if external["dx"].notna().any()
        else None
    )
    reference_total = sum(reference.get("by_dx", {}).values()) or 1
    return {
        "images": len(external),
        "prevalence": float(external["label"].mean()) if len(external) else None,
        "reference_prevalence": reference["positives"] / reference["images"]
        if reference.get("images")
        else None,
        "dx_mix": dx_mix,
        "reference_dx_mix": {
            dx: round(n / reference_total, 4) for dx, n in reference.get("by_dx", {}).items()
        },
        "formats": dict(formats),
        "width": _spread([w for w, _ in sizes]),
        "height": _spread([h for _, h in sizes]),
        "reference_width": _spread([w for w, _ in reference_sizes]),
        "reference_height": _spread([h for _, h in reference_sizes]),
    }


def _spread(numbers: list[int]) -> dict[str, float] | None:
    if not numbers:
        return None
    values = np.asarray(numbers)
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }
