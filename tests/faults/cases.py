"""Bad files made the way they happen: byte edits of real encoded images."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import cv2
import numpy as np

from tests.synthetic import lesion_image


def jpeg(seed: int = 0, size: tuple[int, int] = (120, 90)) -> bytes:
    image, _ = lesion_image(np.random.default_rng(seed), size)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def corrupt_mid_stream(data: bytes) -> bytes:
    """40 bytes of the entropy-coded data flipped, the end-of-image marker intact: libjpeg
    decodes it with a warning, most pixels wrong (the defect the matrix found)."""
    edited = bytearray(data)
    start = len(data) // 3
    for i in range(start, start + 40):
        edited[i] ^= 0x5A
    return bytes(edited)


def png_with_alpha(seed: int = 0, transparent: bool = True) -> bytes:
    image, mask = lesion_image(np.random.default_rng(seed))
    alpha = np.where(mask > 0, 255, 0 if transparent else 255).astype(np.uint8)
    return cv2.imencode(".png", np.dstack([image, alpha]))[1].tobytes()


def share_of_pixels_off(data: bytes, reference: bytes, levels: int = 30) -> float:
    """How much of ``data`` a lenient decoder gets wrong, against ``reference``."""
    decode = lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)  # noqa: E731
    return float(np.mean(np.abs(decode(data).astype(int) - decode(reference)) > levels))


def jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF) claims another size: a few KB that would take
    gigabytes to decode (an image bomb)."""
    edited = bytearray(data)
    at = 2
    while edited[at] == 0xFF and edited[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + int.from_bytes(edited[at + 2 : at + 4], "big")
    edited[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(edited)


def tiff_claiming(width: int, height: int) -> bytes:
    """A real 64x64 TIFF whose ImageWidth and ImageLength tags claim another size."""
    import io

    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.new("RGB", (64, 64), (180, 120, 90)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    assert data[:2] == b"II"  # little-endian, as Pillow writes it
    ifd = int.from_bytes(data[4:8], "little")
    for entry in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        at = ifd + 2 + 12 * entry
        tag, kind = int.from_bytes(data[at : at + 2], "little"), data[at + 2]
        if tag in (256, 257):  # ImageWidth, ImageLength, SHORT (3) or LONG (4)
            size = 2 if kind == 3 else 4
            value = width if tag == 256 else height
            data[at + 8 : at + 8 + size] = value.to_bytes(size, "little")
    return bytes(data)


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


# (case, bytes from a good JPEG, the reason a file is refused with; None: accepted)
IMAGE_CASES = [
    ("JPEG corrupted mid-stream, end marker intact", corrupt_mid_stream, "corrupt JPEG"),
    ("JPEG followed by trailing bytes", lambda d: d + b"\x00trailing bytes" * 20, None),
    ("JPEG cut short", lambda d: d[: len(d) // 2], "truncated JPEG"),
    ("PNG with transparent pixels", lambda d: png_with_alpha(), "PNG with transparent pixels"),
    ("PNG with an opaque alpha channel", lambda d: png_with_alpha(transparent=False), None),
    ("empty file", lambda d: b"", "empty file"),
    (
        "JPEG whose header claims 30000x30000 pixels",
        lambda d: jpeg_claiming(d, 30000, 30000),
        "30000x30000 pixels, over the limit",
    ),
    ("1x1 PNG", lambda d: png(np.full((1, 1, 3), 128, np.uint8)), "1x1 pixels: too small"),
    ("all-black PNG", lambda d: png(np.zeros((150, 200, 3), np.uint8)), "uniform image"),
]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def replace_members(zip_path: Path, remove: set[str], add: dict[str, bytes]) -> None:
    with zipfile.ZipFile(zip_path) as src:
        members = {i.filename: src.read(i) for i in src.infolist() if i.filename not in remove}
    members.update(add)
    with zipfile.ZipFile(zip_path, "w") as out:
        for name, content in members.items():
            out.writestr(name, content)
