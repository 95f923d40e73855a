"""Bad files made the way they happen: byte edits of real encoded images."""

from __future__ import annotations

import cv2
import numpy as np

from melanoma.synthetic import lesion_image


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


# (case, bytes from a good JPEG, the reason a file is refused with; None: accepted)
IMAGE_CASES = [
    ("JPEG corrupted mid-stream, end marker intact", corrupt_mid_stream, "corrupt JPEG"),
    ("JPEG followed by trailing bytes", lambda d: d + b"\x00trailing bytes" * 20, None),
    ("JPEG cut short", lambda d: d[: len(d) // 2], "truncated JPEG"),
    ("PNG with transparent pixels", lambda d: png_with_alpha(), "PNG with transparent pixels"),
    ("PNG with an opaque alpha channel", lambda d: png_with_alpha(transparent=False), None),
    ("empty file", lambda d: b"", "empty file"),
]
