"""Validation, manifest and versioning of an ingest, on generated archives and the file store."""

import hashlib
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from melanoma.download import DownloadError
from melanoma.ham10000 import MetadataSchemaError
from melanoma.ingest import build_manifest, ingest
from melanoma.layout import DatasetLayout
from melanoma.sources import fetch, find_layout
from tests.synthetic import write_archive


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rewrite_member(zip_path: Path, member: str, data: bytes) -> None:
    with zipfile.ZipFile(zip_path) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    members[member] = data
    with zipfile.ZipFile(zip_path, "w") as out:
        for name, content in members.items():
            out.writestr(name, content)


def test_ingest_versions_the_dataset_and_second_ingest_is_a_noop(mini_archive, file_store):
    layout = find_layout(mini_archive.root)
    first = ingest(layout, file_store, "test")
    assert first.created
    manifest = first.manifest
    n = len(mini_archive.metadata)
    assert manifest["counts"]["images"] == n and manifest["counts"]["masks"] == n
    assert manifest["counts"]["by_dx"]["mel"] == (mini_archive.metadata["dx"] == "mel").sum()
    dataset = DatasetLayout(first.dataset_version)
    # Every listed object exists with its recorded hash; the manifest is the last thing written.
    for key, entry in manifest["files"].items():
        assert (
            hashlib.sha256(file_store.get_bytes(dataset.file(key))).hexdigest() == entry["sha256"]
        )
    stored = pd.read_csv(file_store.root / dataset.metadata)
    assert len(stored) == n and stored["has_mask"].eq(1).all()

    second = ingest(layout, file_store, "test")
    assert not second.created and second.dataset_version == first.dataset_version


def test_zipped_and_extracted_layouts_give_the_same_version(tmp_path):
    zipped = build_manifest(find_layout(write_archive(tmp_path / "a", seed=5).root), "a")[0]
    folders = build_manifest(
        find_layout(write_archive(tmp_path / "b", seed=5, zipped=False).root), "b"
    )[0]
    other = build_manifest(find_layout(write_archive(tmp_path / "c", seed=6).root), "c")[0]
    assert zipped["dataset_version"] == folders["dataset_version"]
    assert other["dataset_version"] != zipped["dataset_version"]


def test_bad_files_are_quarantined_with_reasons_and_raw_inputs_untouched(mini_archive, file_store):
    root = mini_archive.root
    part1 = root / "HAM10000_images_part_1.zip"
    ids = list(mini_archive.metadata["image_id"])
    with zipfile.ZipFile(part1) as z:
        good = z.read(f"{ids[0]}.jpg")
    rewrite_member(
        part1, f"{ids[0]}.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg at all \xff\xd9"
    )  # corrupt
    rewrite_member(part1, f"{ids[1]}.jpg", good[: len(good) // 2])  # truncated
    rewrite_member(part1, "ISIC_9999999.jpg", good)  # no metadata row
    rewrite_member(part1, "notes.txt", b"hello")  # not an image: ignored, but reported
    with zipfile.ZipFile(root / "HAM10000_images_part_2.zip") as z:
        missing = sorted(n for n in z.namelist())[0].removesuffix(".jpg")
    rewrite_member(root / "HAM10000_images_part_2.zip", f"{missing}.jpg", b"")  # empty file
    before = tree_digest(root)

    result = ingest(find_layout(root), file_store, "test")
    report = result.manifest["validation"]
    reasons = {Path(q["file"].split("::")[-1]).stem: q["reason"] for q in report["quarantined"]}
    assert reasons[ids[0]].startswith("corrupt JPEG")
    assert "truncated JPEG" in reasons[ids[1]]
    assert reasons["ISIC_9999999"].startswith("image has no metadata row")
    assert reasons[missing] == "empty file"
    assert any("notes.txt" in f for f in report["ignored_files"])
    # Rejected images are kept in the version's quarantine, and their rows leave metadata.csv.
    dataset = DatasetLayout(result.dataset_version)
    assert (
        file_store.get_bytes(
            dataset.file(
                DatasetLayout.quarantine_relative("HAM10000_images_part_1.zip", f"{ids[1]}.jpg")
            )
        )
        == good[: len(good) // 2]
    )
    assert set(report["metadata_rows_without_image"]) == {ids[0], ids[1], missing}
    stored_ids = set(pd.read_csv(file_store.root / dataset.metadata)["image_id"])
    assert not stored_ids & {ids[0], ids[1], missing}
    assert (
        result.manifest["counts"]["quarantined"] == len(report["quarantined"]) >= 4 + 3
    )  # + 3 orphaned masks
    assert tree_digest(root) == before, "raw inputs must never be modified"


def test_missing_mask_is_reported_not_fatal(mini_archive, file_store):
    masks = mini_archive.root / "HAM10000_segmentations_lesion_tschandl.zip"
    with zipfile.ZipFile(masks) as z:
        members = {n: z.read(n) for n in z.namelist()}
    dropped = sorted(members)[3]
    with zipfile.ZipFile(masks, "w") as z:
        for name, data in members.items():
            if name != dropped:
                z.writestr(name, data)
    result = ingest(find_layout(mini_archive.root), file_store, "test")
    assert result.manifest["validation"]["images_without_mask"] == [
        dropped.removesuffix("_segmentation.png")
    ]


def test_unknown_dx_row_is_rejected_and_counted(mini_archive, file_store):
    meta_path = mini_archive.root / "HAM10000_metadata.csv"
    meta = pd.read_csv(meta_path, dtype=str)
    meta.loc[4, "dx"] = "melanoma"
    meta.to_csv(meta_path, index=False)
    result = ingest(find_layout(mini_archive.root), file_store, "test")
    rejected = result.manifest["validation"]["rejected_rows"]
    assert rejected == [
        {
            "row": 6,
            "image_id": meta.loc[4, "image_id"],
            "reason": "unknown dx (not one of akiec,bcc,bkl,df,mel,nv,vasc, in lower case): "
            "'melanoma'",
        }
    ]
    assert result.manifest["counts"]["rejected_rows"] == 1
    # Its image has no valid row any more, so it is quarantined rather than silently dropped.
    assert any(
        meta.loc[4, "image_id"] in q["file"] for q in result.manifest["validation"]["quarantined"]
    )
    assert file_store.exists(
        DatasetLayout(result.dataset_version).file("quarantine/metadata_rejected_rows.csv")
    )


def test_metadata_missing_a_column_is_a_clear_error(mini_archive, file_store):
    meta_path = mini_archive.root / "HAM10000_metadata.csv"
    pd.read_csv(meta_path).drop(columns="lesion_id").to_csv(meta_path, index=False)
    with pytest.raises(
        MetadataSchemaError,
        match=r"HAM10000_metadata\.csv: missing required column\(s\) \['lesion_id'\]",
    ):
        ingest(find_layout(mini_archive.root), file_store, "test")
    assert list(file_store.list("")) == []


def test_truncated_zip_is_a_clear_error(mini_archive, file_store):
    part = mini_archive.root / "HAM10000_images_part_2.zip"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(
        ValueError, match=r"HAM10000_images_part_2\.zip: not a readable zip archive"
    ):
        ingest(find_layout(mini_archive.root), file_store, "test")
    assert list(file_store.list("")) == []


def test_local_checksum_mismatch_is_a_clear_error(mini_archive, tmp_path):
    part = mini_archive.root / "HAM10000_images_part_1.zip"
    (mini_archive.root / "SHA256SUMS").write_text(f"{'0' * 64}  {part.name}\n")
    with pytest.raises(
        DownloadError, match=r"HAM10000_images_part_1\.zip: sha256 .* does not match SHA256SUMS"
    ):
        fetch(str(mini_archive.root), tmp_path / "cache")


def test_local_source_missing_metadata(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"HAM10000_metadata\.csv"):
        fetch(str(tmp_path / "empty"), tmp_path / "cache")
    shutil.rmtree(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fetch(str(tmp_path / "empty"), tmp_path / "cache")
