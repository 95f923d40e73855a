"""A committed dataset version, read through its manifest.

``DatasetVersion(manifest)`` resolves an image's or mask's file in the version and its
record, and reads a file checked against the size and sha256 the manifest recorded
(:func:`melanoma.store.verified_bytes`: a file changed after ingest is an error naming its
key). A size has one name here, ``size``, as in the stages' commit records; the manifest
keeps its own key for it, ``bytes``, because the version's id is a hash of its file list.
Research use only, not a diagnostic device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from melanoma.layout import DatasetLayout
from melanoma.store import ObjectStore, verified_bytes

COMMITTED_BY = "the dataset manifest"


@dataclass(frozen=True)
class DatasetVersion:
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["dataset_version"])

    @property
    def layout(self) -> DatasetLayout:
        return DatasetLayout(self.version)

    def has(self, relative: str) -> bool:
        return relative in self.manifest["files"]

    def entry(self, relative: str) -> dict[str, Any]:
        """{key, size, sha256} of a file of the version (KeyError when it has none)."""
        recorded = self.manifest["files"][relative]
        return {
            "key": self.layout.file(relative),
            "size": recorded.get("bytes"),
            "sha256": recorded.get("sha256"),
        }

    def size_of(self, relative: str) -> int | None:
        """The file's size in bytes, as the manifest recorded it."""
        return self.manifest["files"][relative].get("bytes")

    def pixels(self, relative: str) -> tuple[int, int] | None:
        """(width, height) of an image or mask, when the manifest recorded them."""
        recorded = self.manifest["files"].get(relative, {})
        width, height = int(recorded.get("width") or 0), int(recorded.get("height") or 0)
        return (width, height) if width and height else None

    def image_relative(self, image_id: str) -> str:
        """The image's path inside the version (``images/<id>.jpg`` or ``.png``)."""
        for suffix in (".jpg", ".png"):
            relative = DatasetLayout.image_relative(image_id, suffix)
            if self.has(relative):
                return relative
        raise LookupError(f"dataset version {self.version} has no image {image_id!r}")

    def mask_relative(self, image_id: str) -> str | None:
        """The official lesion mask's path, None when the version has none for it."""
        relative = DatasetLayout.mask_relative(image_id)
        return relative if self.has(relative) else None

    def read(self, store: ObjectStore, relative: str) -> bytes:
        """A file of the version, checked against its recorded size and sha256."""
        return verified_bytes(store, self.entry(relative), COMMITTED_BY)
