"""The second matrix's resource rows (issue 28): zip bombs, encrypted members and
oversized files are refused from the zip's directory or the file's header, before
anything is unpacked or decoded, and recorded, not kept. The rest of the input goes on.

Real files: a deflated member of zeros (1 GiB unpacked from 1 MB), a zip encrypted by
Info-ZIP's ``zip -P``, a folder file over a limit set in the environment.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from melanoma.dataset_version import DatasetVersion
from melanoma.external import extract_images
from melanoma.ingest import ingest
from melanoma.limits import ArchiveLimits, ImageLimits, compressed_sha256
from melanoma.sources import find_layout
from tests.faults.cases import replace_members, tree_digest


def zip_of_zeros(path: Path, member: str, gib: float, mode: str = "w") -> None:
    """A real zip bomb, made small: ``gib`` GiB of zeros deflated to about a thousandth."""
    with (
        zipfile.ZipFile(path, mode, zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open(member, "w", force_zip64=True) as out,
    ):
        for _ in range(round(gib * 64)):
            out.write(bytes(2**24))


def bomb_in_first_image_part(root: Path, gib: float) -> tuple[str, str]:
    """The first image of part 1 replaced by a bomb of ``gib`` GiB; (member, image id)."""
    part = root / "HAM10000_images_part_1.zip"
    with zipfile.ZipFile(part) as archive:
        member = sorted(archive.namelist())[0]
    replace_members(part, {member}, {})
    zip_of_zeros(part, member, gib, mode="a")
    return member, member.removesuffix(".jpg")


@pytest.mark.parametrize(
    ("case", "gib", "reason"),
    [
        ("a member declaring 1 GiB", 1.0, "declares 1,073,741,824 bytes unpacked, over the limit"),
        ("a member of 64 MiB compressed 1,000 to 1", 1 / 16, "over the limit of 100 to 1"),
    ],
)
def test_ingest_records_a_zip_bomb_member_without_unpacking_it(
    case, gib, reason, mini_archive, file_store
):
    member, image_id = bomb_in_first_image_part(mini_archive.root, gib)
    before = tree_digest(mini_archive.root)
    part = mini_archive.root / "HAM10000_images_part_1.zip"
    with zipfile.ZipFile(part) as archive:
        info = archive.getinfo(member)

    result = ingest(find_layout(mini_archive.root), file_store, "test")

    records = {q["file"]: q for q in result.manifest["validation"]["quarantined"]}
    record = records[f"{part}::{member}"]
    assert reason in record["reason"] and record["reason"].endswith("not unpacked")
    # Recorded by what identifies it; the bomb itself is not copied into the store.
    assert record["key"] == "" and record["bytes"] == info.file_size
    assert record["sha256"] == compressed_sha256(part, info)
    assert not list(file_store.list(f"datasets/{result.dataset_version}/quarantine/"))
    # Every other image is ingested.
    metadata = pd.read_csv(
        io.BytesIO(DatasetVersion(result.manifest).read(file_store, "metadata.csv"))
    )
    assert set(metadata["image_id"]) == set(mini_archive.metadata["image_id"]) - {image_id}
    assert tree_digest(mini_archive.root) == before


def test_a_member_whose_header_understates_its_size_is_not_unpacked_past_the_limit(tmp_path):
    archive_path = tmp_path / "liar.zip"
    zip_of_zeros(archive_path, "ISIC_0000001.jpg", 1 / 64)  # 16 MiB
    limits = ArchiveLimits(max_member_bytes=2**20, max_compression_ratio=10**6)
    with zipfile.ZipFile(archive_path) as archive:
        info = archive.getinfo("ISIC_0000001.jpg")
        info.file_size = 1000  # as a forged directory would say
        # zipfile stops at the declared size, and the checksum then fails: 1,000 bytes at most.
        with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
            limits.read(archive, info)


def test_an_encrypted_member_is_quarantined_at_ingest_and_named_by_an_external_set(
    mini_archive, file_store, tmp_path
):
    if not shutil.which("zip"):
        pytest.skip("Info-ZIP's zip is not installed (apt-get install zip)")
    part = mini_archive.root / "HAM10000_images_part_1.zip"
    with zipfile.ZipFile(part) as archive:
        member = sorted(archive.namelist())[0]
        staged = tmp_path / "staged" / member
        staged.parent.mkdir()
        staged.write_bytes(archive.read(member))

    def encrypt_into(archive: Path) -> None:
        subprocess.run(["zip", "-q", "-j", "-P", "secret", str(archive), str(staged)], check=True)

    external = tmp_path / "encrypted.zip"
    encrypt_into(external)
    with pytest.raises(ValueError, match=rf"encrypted\.zip: member '{member}': encrypted"):
        extract_images(external, tmp_path / "cache" / "set")
    assert not (tmp_path / "cache" / "set.partial").exists()
    assert not (tmp_path / "cache" / "set").exists()

    replace_members(part, {member}, {})
    encrypt_into(part)  # the same image, now encrypted, among the plain ones
    result = ingest(find_layout(mini_archive.root), file_store, "test")
    record = {q["file"]: q for q in result.manifest["validation"]["quarantined"]}[
        f"{part}::{member}"
    ]
    assert record["reason"].startswith("encrypted zip member") and record["key"] == ""
    assert result.manifest["counts"]["images"] == len(mini_archive.metadata) - 1


def test_a_folder_file_over_the_size_limit_is_recorded_not_read(
    mini_archive, file_store, tmp_path, monkeypatch
):
    folder = tmp_path / "HAM10000_images_part_1"
    folder.mkdir()
    with zipfile.ZipFile(mini_archive.root / "HAM10000_images_part_1.zip") as archive:
        for name in archive.namelist():
            (folder / name).write_bytes(archive.read(name))
    (mini_archive.root / "HAM10000_images_part_1.zip").unlink()
    shutil.move(folder, mini_archive.root / folder.name)
    big = sorted((mini_archive.root / folder.name).iterdir())[0]
    big.write_bytes(big.read_bytes() + bytes(300_000))  # a JPEG with trailing bytes
    monkeypatch.setenv("MELANOMA_MAX_MEMBER_BYTES", "200000")

    result = ingest(find_layout(mini_archive.root), file_store, "test")

    record = {q["file"]: q for q in result.manifest["validation"]["quarantined"]}[str(big)]
    assert "over the limit of 200,000 (MELANOMA_MAX_MEMBER_BYTES): not read" in record["reason"]
    assert record["bytes"] == big.stat().st_size and record["key"] == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5", "must be a whole number"),
        ("lots", "must be a whole number"),
        ("٣٢", "must be a whole number"),
    ],
)
def test_a_limit_set_wrong_in_the_environment_is_named(value, message):
    with pytest.raises(ValueError, match=rf"MELANOMA_MAX_IMAGE_PIXELS={value!r}: {message}"):
        ImageLimits.from_environment({"MELANOMA_MAX_IMAGE_PIXELS": value})


def test_limits_default_and_read_the_environment():
    assert ImageLimits.from_environment({}) == ImageLimits()
    limits = ArchiveLimits.from_environment({"MELANOMA_MAX_COMPRESSION_RATIO": "20"})
    assert limits.max_compression_ratio == 20 and limits.max_member_bytes == 512 * 2**20
