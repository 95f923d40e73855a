"""Per-image operations for preprocessing (pure functions on bytes and uint8 arrays).

Everything returns RGB ``uint8`` arrays (OpenCV decodes BGR; we convert once, at
decode time). Spark's executors call :func:`preprocess_image`; tests call each step.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from melanoma.limits import ImageLimits

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}
# IMREAD_REDUCED_* asks libjpeg for a 1/2, 1/4 or 1/8 scale decode: the IDCT skips the
# high frequencies, which is several times cheaper than decoding at full size.
_REDUCED = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
}


class ImageDecodeError(ValueError):
    """The bytes are not an image we accept; the message says why, for a failures list."""


class ImageRefusedError(ImageDecodeError):
    """An image outside the resource limits (``melanoma.limits.ImageLimits``), refused
    from its header: recorded by size and sha256, never kept."""


JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's or PNG's header, nothing decoded; None for other formats."""
    if data[:3] == JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as error:
            raise ImageDecodeError(f"corrupt JPEG header ({error})") from None
        return int(width), int(height)
    if data[:8] == PNG_MAGIC:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageDecodeError("corrupt PNG (no IHDR header)")
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None


def check_image(
    data: bytes, grayscale: bool = False, limits: ImageLimits | None = None
) -> tuple[int, int]:
    """(width, height) of a JPEG or PNG that decodes cleanly; else ImageDecodeError saying why.

    Stricter than :func:`decode_image`, which, like every lenient decoder, patches over
    damage: libjpeg fills a cut-short JPEG with grey and decodes a corrupt entropy segment
    into garbage, with only a warning on stderr. Here a JPEG is decoded in full by
    libjpeg-turbo (``simplejpeg``) with every decoder warning an error. Bytes after the
    end-of-image marker are allowed (cameras and editors append them; decoders stop at
    the marker). A PNG must end with IEND, and, unless ``grayscale`` (a mask), have no
    transparent pixel: the model would score the colours under the alpha. The header's
    size is checked against ``limits`` (default: from the environment) before decoding,
    and an image (not a mask) whose every pixel is the same is refused: nothing to score.
    """
    if not data:
        raise ImageDecodeError("empty file")
    size = header_size(data)
    if size and (reason := (limits or ImageLimits.from_environment()).refusal(*size)):
        raise ImageRefusedError(reason)
    if data[:3] == JPEG_MAGIC:
        try:
            image = simplejpeg.decode_jpeg(
                data, colorspace="GRAY" if grayscale else "RGB", strict=True
            )
        except ValueError as error:
            if "Premature end" in str(error):
                raise ImageDecodeError("truncated JPEG (the data ends early)") from None
            raise ImageDecodeError(f"corrupt JPEG ({error})") from None
        return _checked_size(image, grayscale)
    if data[:8] != PNG_MAGIC:
        raise ImageDecodeError("not a JPEG or PNG file")
    if b"IEND" not in data[-16:]:
        raise ImageDecodeError("truncated PNG (no IEND chunk)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageDecodeError("undecodable PNG")
    if not grayscale and image.ndim == 3 and image.shape[2] in (2, 4):
        alpha = image[:, :, -1]
        opaque = 255 if image.dtype == np.uint8 else 65535  # 8- or 16-bit PNG
        if alpha.min() < opaque:
            share = float(np.mean(alpha < opaque))
            raise ImageDecodeError(
                f"PNG with transparent pixels ({share:.0%} of the image): flatten it first"
            )
    return _checked_size(image, grayscale)


def _checked_size(image: np.ndarray, grayscale: bool) -> tuple[int, int]:
    """(width, height) of a decoded image; a picture of one colour is refused (a mask may be)."""
    if not grayscale and image.min() == image.max():
        raise ImageDecodeError(
            f"uniform image (every pixel has the value {image.flat[0]}): no lesion to score"
        )
    return int(image.shape[1]), int(image.shape[0])


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 224  # the model input's height, and its width unless ``width`` is set
    # The model input's width; 0: ``size`` (square). HAM10000's images are 4:3, so
    # size 150 and width 200 train at the archive's own aspect and resolution.
    width: int = 0
    interpolation: str = "area"
    reduced_decode: bool = True
    hair_removal: bool = False
    lesion_crop: bool = False
    crop_margin: float = 0.25  # fraction of the lesion's box added on each side
    # Shades of Gray colour constancy (Minkowski p = 6): one white balance for every
    # clinic's camera and light.
    color_constancy: bool = False

    def __post_init__(self) -> None:
        from melanoma.config import check_settings  # config imports this module

        check_settings(self)
        if 0 < self.width < 32:
            raise ValueError(
                f"image_width (preprocess.config.width) must be 0 (square) or at least 32, "
                f"got {self.width}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """The model input's (height, width)."""
        return self.size, self.width or self.size


def reduction_factor(source_wh: tuple[int, int] | None, target: int) -> int:
    """Largest of 8, 4, 2 by which the source still stays at least ``target`` on its short side."""
    if not source_wh:
        return 1
    short = min(source_wh)
    for factor in (8, 4, 2):
        if short // factor >= target:
            return factor
    return 1


def decode_image(
    data: bytes, target: int | None = None, source_wh: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode JPEG/PNG bytes to RGB uint8; with ``target`` and a known source size, decode reduced.

    The reduced decode is used only when the source's short side is at least twice
    ``target``, so the image is never decoded smaller than the model input.
    """
    buffer = np.frombuffer(data, np.uint8)
    factor = reduction_factor(source_wh, target) if target else 1
    image = cv2.imdecode(buffer, _REDUCED[factor] if factor > 1 else cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageDecodeError("undecodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def shades_of_gray(image: np.ndarray, p: float = 6.0) -> np.ndarray:
    """White-balance an RGB uint8 image by the Shades of Gray estimate of its illuminant.

    The illuminant is the Minkowski p-norm mean of each channel (Finlayson & Trezzi,
    "Shades of Gray and Colour Constancy", CIC 2004; p = 1 is Gray World, p = inf
    max-RGB). Each channel is scaled so that the illuminant becomes neutral grey of the
    same intensity. p = 6 is what Barata et al., "Improving dermoscopy image
    classification using color constancy" (IEEE JBHI 2015), found best for dermoscopy.
    """
    x = image.astype(np.float32)
    illuminant = np.power(np.mean(np.power(x, p), axis=(0, 1)), 1.0 / p)
    norm = float(np.linalg.norm(illuminant))
    if norm == 0:  # an all-black image has no colour to correct
        return image
    gains = norm / (np.sqrt(3.0) * np.maximum(illuminant, 1e-6))
    return np.clip(x * gains + 0.5, 0, 255).astype(np.uint8)


def remove_hair(image: np.ndarray, kernel_size: int = 17, threshold: int = 10) -> np.ndarray:
    """Remove dark hairs: morphological black-hat finds thin dark strands, inpainting fills them.

    After Lee et al., "DullRazor: a software approach to hair removal from images",
    Comput. Biol. Med. 27(6), 1997, in its common black-hat + Telea-inpainting form.
    The kernel scales with the image (``kernel_size`` is for a 224-pixel image).
    """
    k = max(3, round(kernel_size * min(image.shape[:2]) / 224) | 1)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    blackhat = cv2.morphologyEx(
        gray, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_CROSS, (k, k))
    )
    # Smoothing the response first keeps single noisy pixels from being taken for hair.
    _, hair = cv2.threshold(
        cv2.GaussianBlur(blackhat, (3, 3), 0), threshold, 255, cv2.THRESH_BINARY
    )
    if not hair.any():
        return image
    return cv2.inpaint(image, hair, 1, cv2.INPAINT_TELEA)


def segment_lesion(image: np.ndarray) -> np.ndarray:
    """Automatic lesion mask (uint8, 255 inside): Otsu on a blurred grey image, the largest dark blob.

    Lesions are darker than the surrounding skin; morphology closes gaps and the
    component touching the centre most is preferred to dark image corners.
    """
    gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (5, 5), 0)
    _, mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask)
    if count <= 1:
        return np.full(mask.shape, 255, np.uint8)
    h, w = mask.shape
    distance = np.hypot(centroids[1:, 0] - w / 2, centroids[1:, 1] - h / 2) / np.hypot(w / 2, h / 2)
    score = stats[1:, cv2.CC_STAT_AREA] * (1.0 - 0.7 * distance)
    return np.where(labels == 1 + int(np.argmax(score)), 255, 0).astype(np.uint8)


def lesion_crop_box(
    shape: tuple[int, ...], mask: np.ndarray, margin: float = 0.25
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the square crop centred on the mask's bounding box,
    ``margin`` of the box added per side; the whole image when the mask is empty."""
    h, w = shape[:2]
    if mask.shape[:2] != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0, 0, h, w
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = int(max(x1 - x0, y1 - y0) * (1 + 2 * margin))
    side = min(max(side, 16), w, h)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    left = int(np.clip(cx - side // 2, 0, w - side))
    top = int(np.clip(cy - side // 2, 0, h - side))
    return top, left, side, side


def crop_to_lesion(image: np.ndarray, mask: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """Square crop centred on the mask's bounding box (see ``lesion_crop_box``)."""
    top, left, height, width = lesion_crop_box(image.shape, mask, margin)
    return image[top : top + height, left : left + width]


def resize(image: np.ndarray, shape: tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """Resize to ``shape`` (height, width); the aspect is not kept: the dermoscopy field of
    view is the signal."""
    if image.shape[:2] == shape:
        return image
    height, width = shape
    return cv2.resize(image, (width, height), interpolation=INTERPOLATIONS[interpolation])


# libjpeg's (IJG's) luminance quantisation table at quality 50, row by row; quality q
# scales it by 5000/q percent (q < 50) or 200 - 2q percent (q >= 50).
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
)  # fmt: skip
# A DQT segment lists a table in zigzag order: entry k is the natural (row-major) index _ZIGZAG[k].
_ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48,
     41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23,
     30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63],
)  # fmt: skip


def _ijg_luma_table(quality: int) -> np.ndarray:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((_IJG_LUMA * scale + 50) / 100), 1, 255)


def _luma_quantisation(data: bytes) -> np.ndarray | None:
    """The JPEG's luminance quantisation table (table 0), row-major, from its DQT
    segments before the first scan; None when it has none or the markers are damaged."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte before a marker
            i += 1
            continue
        if marker == 0xDA:  # start of scan: every table comes before it
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segment = data[i + 4 : i + 2 + length]
        j = 0
        while marker == 0xDB and j < len(segment):
            precision, table_id = segment[j] >> 4, segment[j] & 0x0F
            width = 2 if precision else 1
            values = segment[j + 1 : j + 1 + 64 * width]
            if len(values) < 64 * width:
                return None
            if table_id == 0:
                table = np.zeros(64)
                table[_ZIGZAG] = np.frombuffer(values, ">u2" if width == 2 else np.uint8)
                return table
            j += 1 + 64 * width
        i += 2 + length
    return None


def jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1-100) whose luminance quantisation table is nearest the JPEG's
    (libjpeg, libjpeg-turbo, Pillow and OpenCV all scale that table); None for an image
    that is not a JPEG or has no readable table. Read from the header: nothing is decoded."""
    if data[:3] != JPEG_MAGIC or (luma := _luma_quantisation(data)) is None:
        return None
    return min(range(1, 101), key=lambda q: float(np.abs(_ijg_luma_table(q) - luma).sum()))


def typical_jpeg_quality(images: list[bytes]) -> int | None:
    """The median JPEG quality of ``images`` when most of them are JPEGs; None otherwise
    (a model that learnt mostly from lossless images has no compression to match)."""
    qualities = [q for q in map(jpeg_quality, images) if q is not None]
    return int(np.median(qualities)) if 2 * len(qualities) > len(images) else None


@dataclass(frozen=True)
class ResolutionParity:
    """The resolution and compression of the images a run trained on, which a larger new
    image is brought to before preprocessing (``match_resolution``).

    An image sharper than the training images reaches the model unlike any it learnt from:
    the train/test resolution discrepancy (Touvron et al., "Fixing the train-test
    resolution discrepancy", NeurIPS 2019). Shrinking it to their long side matches their
    sampling, and saving it as JPEG at their quality matches the detail their compression
    left (``benchmarks/parity_fidelity.py`` measures both). None: not recorded (a run from
    before it), not applied.
    """

    long_side: int | None = None  # the training images' median long side, in pixels
    jpeg_quality: int | None = None  # their median JPEG quality (None: mostly lossless)

    @classmethod
    def from_record(cls, record: dict | None) -> ResolutionParity:
        """From a run's preprocess stage data, or a ``resolution_parity`` metrics entry."""
        record = record or {}
        return cls(record.get("train_long_side"), record.get("train_jpeg_quality"))

    def shrinks(self, size: tuple[int, ...] | None) -> bool:
        """Whether an image of ``size`` (either order of width and height) is larger than
        the training images, so that ``match_resolution`` shrinks it."""
        return self.long_side is not None and size is not None and max(size) > self.long_side

    def record(self) -> dict[str, int | None]:
        return {"train_long_side": self.long_side, "train_jpeg_quality": self.jpeg_quality}

    def describe(self) -> str:
        """What was done to images sharper than the run's training images, in one line."""
        if self.long_side is None:
            return (
                "Resolution parity: not applied (the run records no resolution for its "
                "training images); larger images were resized straight to the model's input."
            )
        saved = (
            f", then saved as JPEG at quality {self.jpeg_quality} (the training images' "
            "estimated quality)"
            if self.jpeg_quality is not None
            else ""
        )
        return (
            f"Resolution parity: images with a long side over {self.long_side} px (the run's "
            f"training images) were first shrunk to it{saved}."
        )


NO_PARITY = ResolutionParity()  # nothing recorded: images reach the model's resize as they are


def shrink_to_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """``image`` shrunk (aspect kept, area interpolation) so that its long side is at most
    ``long_side``; never enlarged."""
    height, width = image.shape[:2]
    if max(height, width) <= long_side:
        return image
    scale = long_side / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, shape, interpolation=cv2.INTER_AREA)


def match_resolution(image: np.ndarray, parity: ResolutionParity) -> np.ndarray:
    """Shrink ``image`` to ``parity.long_side`` (``shrink_to_long_side``), then, with a
    recorded quality, save and decode it as JPEG at that quality (as OpenCV writes JPEGs:
    4:2:0 chroma). An image at or under the long side, or with no long side recorded, is
    returned unchanged."""
    if parity.long_side is None or not parity.shrinks(image.shape[:2]):
        return image
    image = shrink_to_long_side(image, parity.long_side)
    if parity.jpeg_quality is None:
        return image
    encoded = cv2.imencode(
        ".jpg",
        cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, parity.jpeg_quality],
    )[1]
    return decode_image(encoded.tobytes())


def at_training_resolution(
    data: bytes,
    config: PreprocessConfig,
    source_wh: tuple[int, int] | None = None,
    parity: ResolutionParity = NO_PARITY,
) -> np.ndarray:
    """Bytes → RGB uint8, decoded (reduced when possible) and brought to the training
    images' resolution and compression (``match_resolution``): the first step of
    ``preprocess_image``. With ``lesion_crop`` the reduced decode is skipped, so the crop
    has full detail to keep; so it is for an image that parity shrinks, whose area shrink
    from the full decode comes nearer the training images (``parity_fidelity.py``)."""
    reduced = config.reduced_decode and not config.lesion_crop and not parity.shrinks(source_wh)
    decoded = decode_image(data, max(config.shape) if reduced else None, source_wh)
    return match_resolution(decoded, parity)


def preprocess_image(
    data: bytes,
    config: PreprocessConfig,
    source_wh: tuple[int, int] | None = None,
    mask: np.ndarray | None = None,
    parity: ResolutionParity = NO_PARITY,
) -> np.ndarray:
    """Bytes → RGB uint8 of ``config.shape``: decode (reduced when possible), resolution
    parity, colour constancy, hair removal, crop, resize.

    ``parity``: the long side and JPEG quality of the images the run trains on; a larger
    image, in the dataset or new, is first brought to them (``match_resolution``), so that
    preprocessing, predict and external validation treat every image alike
    (``at_training_resolution``).
    """
    image = at_training_resolution(data, config, source_wh, parity)
    if config.color_constancy:
        image = shades_of_gray(image)
    if config.hair_removal:
        image = remove_hair(image)
    if config.lesion_crop:
        image = crop_to_lesion(
            image, mask if mask is not None else segment_lesion(image), config.crop_margin
        )
    return resize(image, config.shape, config.interpolation)


def augment_seed(seed: int, image_id: str, copy: int) -> int:
    """A per-copy seed that does not depend on which executor or partition processes the image."""
    digest = hashlib.sha256(f"{seed}:{image_id}:{copy}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def augment(image: np.ndarray, seed: int) -> np.ndarray:
    """A random flip, rotation (any angle, reflected borders), zoom (1.0-1.2) and brightness (±15 %)."""
    rng = np.random.default_rng(seed)
    out = image
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1, :]
    h, w = out.shape[:2]
    matrix = cv2.getRotationMatrix2D(
        (w / 2, h / 2), float(rng.uniform(0, 360)), float(rng.uniform(1.0, 1.2))
    )
    out = cv2.warpAffine(
        np.ascontiguousarray(out),
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    factor = float(rng.uniform(0.85, 1.15))
    return np.clip(out.astype(np.float32) * factor, 0, 255).astype(np.uint8)


TTA_VIEWS = (1, 2, 4, 8)


def dihedral_views(images: np.ndarray, views: int) -> list[np.ndarray]:
    """The first ``views`` of the 8 flips and 90° rotations of a (N, H, W, C) batch.

    1: the images; 2: + horizontal flip; 4: + vertical flip and 180°; 8: + 90°, 270°
    and both transposes. Dermoscopy has no up or down, so each view is as valid an image
    of the lesion as the original; test-time augmentation averages the model's scores.
    Rotations by 90° need square images: a model with a non-square input takes 1, 2 or 4.
    """
    if views not in TTA_VIEWS:
        raise ValueError(f"test-time augmentation views must be one of {TTA_VIEWS}, got {views}")
    if views > 4 and images.shape[1] != images.shape[2]:
        raise ValueError(
            f"{views} views rotate by 90°, which needs a square image, "
            f"not {images.shape[1]}x{images.shape[2]}: use 1, 2 or 4"
        )
    flip_h, flip_v = images[:, :, ::-1], images[:, ::-1, :]
    transposed = images.transpose(0, 2, 1, 3)
    candidates = (
        images,
        flip_h,
        flip_v,
        flip_v[:, :, ::-1],  # 180°
        transposed[:, ::-1, :],  # 90° anticlockwise
        transposed[:, :, ::-1],  # 90° clockwise
        transposed,
        transposed[:, ::-1, ::-1],  # anti-transpose
    )
    return [np.ascontiguousarray(v) for v in candidates[:views]]
