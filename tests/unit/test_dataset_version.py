"""DatasetVersion: a dataset version's files resolved and read through its manifest."""

import hashlib

import pytest

from melanoma.dataset_version import DatasetVersion
from melanoma.store import ArtifactCorruptError


def _manifest(files: dict[str, bytes]) -> dict:
    return {
        "dataset_version": "v1",
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "width": 4}
            | ({"height": 3} if name.startswith("images/") else {})
            for name, data in files.items()
        },
    }


def test_images_and_masks_resolve_with_one_name_for_a_size(file_store):
    files = {
        "images/ISIC_0000001.png": b"png",
        "images/ISIC_0000002.jpg": b"jpeg!",
        "masks/ISIC_0000002_segmentation.png": b"m",
    }
    version = DatasetVersion(_manifest(files))
    for name, data in files.items():
        file_store.put_bytes(version.layout.file(name), data)
    assert version.image_relative("ISIC_0000001") == "images/ISIC_0000001.png"
    assert version.image_relative("ISIC_0000002") == "images/ISIC_0000002.jpg"
    assert version.mask_relative("ISIC_0000001") is None
    assert version.mask_relative("ISIC_0000002") == "masks/ISIC_0000002_segmentation.png"
    entry = version.entry("images/ISIC_0000002.jpg")
    assert entry["size"] == 5 and entry["key"] == "datasets/ham10000/v1/images/ISIC_0000002.jpg"
    assert version.pixels("images/ISIC_0000002.jpg") == (4, 3)
    assert version.pixels("masks/ISIC_0000002_segmentation.png") is None  # no height recorded
    assert version.read(file_store, "images/ISIC_0000002.jpg") == b"jpeg!"
    with pytest.raises(LookupError, match="ISIC_0000003"):
        version.image_relative("ISIC_0000003")


def test_a_file_changed_after_ingest_is_an_error_naming_it(file_store):
    version = DatasetVersion(_manifest({"metadata.csv": b"a,b\n"}))
    file_store.put_bytes(version.layout.file("metadata.csv"), b"a,c\n")
    with pytest.raises(ArtifactCorruptError, match=r"metadata\.csv"):
        version.read(file_store, "metadata.csv")
