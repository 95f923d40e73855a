"""Resource limits on what users hand in: checked from headers, before anything is unpacked
or decoded, so that a small hostile file cannot exhaust memory, disk or time.

A 3 MB zip can unpack to 3 GiB, and a 4 KB JPEG can claim 30000x30000 pixels (gigabytes
to decode). Each limit is a default here, overridable by an environment variable; what
exceeds one is refused with a reason naming the limit and its variable, and recorded
(size and sha256 of what was handed in), never kept.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

Limits = TypeVar("Limits", bound="_FromEnvironment")


class _FromEnvironment:
    """Limits whose every field can be set by the environment variable ``ENVIRONMENT`` names."""

    ENVIRONMENT: ClassVar[dict[str, str]]

    @classmethod
    def from_environment(cls: type[Limits], environ: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):  # type: ignore[arg-type]
            name = cls.ENVIRONMENT[field.name]
            text = env.get(name, "").strip()
            if not text:
                continue
            if not text.isascii() or not text.isdigit() or int(text) < 1:
                raise ValueError(f"{name}={text!r}: must be a whole number, at least 1")
            values[field.name] = int(text)
        return cls(**values)


@dataclass(frozen=True)
class ImageLimits(_FromEnvironment):
    """The sizes an image may have, read from its header before any pixel is decoded."""

    max_pixels: int = 50_000_000  # 8,000 x 6,250: above any dermatoscope's sensor
    min_side: int = 32  # below it there is no lesion to see (a 1x1 image would get a score)

    ENVIRONMENT: ClassVar[dict[str, str]] = {
        "max_pixels": "MELANOMA_MAX_IMAGE_PIXELS",
        "min_side": "MELANOMA_MIN_IMAGE_SIDE",
    }

    def refusal(self, width: int, height: int) -> str | None:
        """Why an image of ``width`` x ``height`` is refused, or None."""
        if width * height > self.max_pixels:
            return (
                f"{width}x{height} pixels, over the limit of {self.max_pixels:,} "
                f"({self.ENVIRONMENT['max_pixels']}): refused before decoding"
            )
        if min(width, height) < self.min_side:
            return (
                f"{width}x{height} pixels: too small to show a lesion (at least "
                f"{self.min_side} a side, {self.ENVIRONMENT['min_side']})"
            )
        return None


# Below this, a high compression ratio is harmless (a small CSV compresses 10 to 50 times).
RATIO_FLOOR_BYTES = 8 * 2**20


@dataclass(frozen=True)
class ArchiveLimits(_FromEnvironment):
    """What one zip member may unpack to: images and CSVs barely compress; bombs do."""

    max_member_bytes: int = 512 * 2**20
    max_compression_ratio: int = 100

    ENVIRONMENT: ClassVar[dict[str, str]] = {
        "max_member_bytes": "MELANOMA_MAX_MEMBER_BYTES",
        "max_compression_ratio": "MELANOMA_MAX_COMPRESSION_RATIO",
    }

    def refusal(self, info: zipfile.ZipInfo) -> str | None:
        """Why ``info``'s member is not unpacked, from the zip's directory alone, or None."""
        if info.flag_bits & 0x1:
            return "encrypted zip member (it needs a password): not unpacked"
        if info.file_size > self.max_member_bytes:
            return (
                f"declares {info.file_size:,} bytes unpacked, over the limit of "
                f"{self.max_member_bytes:,} ({self.ENVIRONMENT['max_member_bytes']}): "
                "not unpacked"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR_BYTES and ratio > self.max_compression_ratio:
            return (
                f"compressed {ratio:,.0f} to 1 ({info.compress_size:,} bytes to "
                f"{info.file_size:,}), over the limit of {self.max_compression_ratio} to 1 "
                f"({self.ENVIRONMENT['max_compression_ratio']}): not unpacked"
            )
        return None

    def read(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        """The member's bytes; never more than ``max_member_bytes`` are unpacked, even when
        its header understates its size. ValueError when it is refused."""
        if reason := self.refusal(info):
            raise ValueError(reason)
        with archive.open(info) as member:
            data = member.read(self.max_member_bytes + 1)
        if len(data) > self.max_member_bytes:
            raise ValueError(
                f"unpacks to more than {self.max_member_bytes:,} bytes "
                f"({self.ENVIRONMENT['max_member_bytes']}): not unpacked"
            )
        return data


def compressed_sha256(archive: Path, info: zipfile.ZipInfo) -> str:
    """The sha256 of a member's bytes as stored in the zip (compressed): what identifies a
    refused member without unpacking it."""
    digest = hashlib.sha256()
    with archive.open("rb") as raw:
        raw.seek(info.header_offset)
        header = raw.read(30)  # the local file header's fixed part
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        raw.seek(info.header_offset + 30 + name_length + extra_length)
        left = info.compress_size
        while left > 0:
            chunk = raw.read(min(left, 2**20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()
