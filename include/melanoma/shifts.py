"""Acquisition shifts: how dermoscopy devices and their settings differ, as image transforms
at graded strengths, for a robustness yardstick in the spirit of ImageNet-C (Hendrycks and
Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019).

Each shift is ``shift(image, strength, rng) -> image`` on an RGB uint8 image. Strength 0 is
the identity; 1 is the strongest graded here, still a picture a clinic could take. The
raw transforms live here; rendering and summarising belong to ``melanoma.robustness``, and
scoring to ``training.robustness`` (the report's section) and
``benchmarks/acquisition_shift.py`` (the whole test split). Research use only, not a
diagnostic device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import cv2
import numpy as np

Shift = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

# ImageNet-C grades five severities; a quick yardstick can take fewer (every other one).
SEVERITIES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)


def _scaled(image: np.ndarray, factor: float, interpolation: int) -> np.ndarray:
    height, width = image.shape[:2]
    shape = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, shape, interpolation=interpolation)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def downscale(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A lower-resolution sensor: the same field of view with up to 4x fewer pixels a side."""
    if strength == 0:
        return image
    return _scaled(image, 1 / (1 + 3 * strength), cv2.INTER_AREA)


def upscale(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A device that stores its field of view at up to 3x the pixels a side, interpolated."""
    if strength == 0:
        return image
    return _scaled(image, 1 + 2 * strength, cv2.INTER_CUBIC)


def jpeg_quality(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Stored as JPEG at quality 95 down to 10."""
    if strength == 0:
        return image
    quality = round(95 - 85 * strength)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if decoded is None:  # OpenCV's own JPEG: it decodes, or the encoder is broken
        raise RuntimeError("OpenCV could not decode the JPEG it just encoded")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def blur(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Out of focus: a Gaussian blur of up to 2.5 pixels' sigma at the image's resolution."""
    if strength == 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=2.5 * strength)


def sensor_noise(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: Gaussian, up to 25 grey levels' standard deviation, per pixel and channel."""
    if strength == 0:
        return image
    return _to_uint8(image + rng.normal(0.0, 25.0 * strength, image.shape))


def colour_cast(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A white balance off towards warm light: red up to +30%, blue down to -30%."""
    if strength == 0:
        return image
    gains = np.array([1 + 0.3 * strength, 1.0, 1 - 0.3 * strength])
    return _to_uint8(image * gains)


def brightness(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Under-exposed: every value scaled down, to half at strength 1."""
    if strength == 0:
        return image
    return _to_uint8(image * (1 - 0.5 * strength))


def contrast(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Flat contrast: values pulled towards the image's mean, by up to 60%."""
    if strength == 0:
        return image
    mean = image.mean(axis=(0, 1), keepdims=True)
    return _to_uint8(mean + (image - mean) * (1 - 0.6 * strength))


def gamma(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Another tone curve: gamma 1 up to 2 (darker mid-tones, the same black and white)."""
    if strength == 0:
        return image
    table = 255 * (np.arange(256) / 255) ** (1 + strength)
    return _to_uint8(table)[image]


def vignetting(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A darker rim, as dermoscope optics give: down to 30% at the corners at strength 1."""
    if strength == 0:
        return image
    height, width = image.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    radius = np.hypot((x - (width - 1) / 2) / (width / 2), (y - (height - 1) / 2) / (height / 2))
    falloff = 1 - 0.7 * strength * (radius / np.sqrt(2)) ** 2
    return _to_uint8(image * falloff[..., None])


# The yardstick's shifts, by name, in the order tables show them.
ACQUISITION_SHIFTS: dict[str, Shift] = {
    "downscale": downscale,
    "upscale": upscale,
    "jpeg_quality": jpeg_quality,
    "blur": blur,
    "sensor_noise": sensor_noise,
    "colour_cast": colour_cast,
    "brightness": brightness,
    "contrast": contrast,
    "gamma": gamma,
    "vignetting": vignetting,
}


def random_acquisition_shift(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` under one acquisition shift drawn uniformly, at a strength drawn uniformly
    in [0, 1), brought back to the image's own size: training augmentation that matches
    the yardstick's shifts (``TrainConfig.acquisition_views``). A downscaled image comes
    back up as a low-resolution sensor's picture would be shown; an upscaled one, back
    down as resolution parity brings it."""
    names = tuple(ACQUISITION_SHIFTS)
    name = names[int(rng.integers(len(names)))]
    shifted = ACQUISITION_SHIFTS[name](image, float(rng.uniform(0.0, 1.0)), rng)
    if shifted.shape != image.shape:
        height, width = image.shape[:2]
        shrinking = shifted.shape[0] > height
        shifted = cv2.resize(
            shifted,
            (width, height),
            interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
        )
    return shifted


def random_acquisition_shifts(
    images: np.ndarray, rng: np.random.Generator, share: float = 1.0
) -> np.ndarray:
    """A batch (N, H, W, 3) of uint8 images, each under ``random_acquisition_shift`` with
    probability ``share`` and left as it is otherwise."""
    shifted = images.copy()
    for i in np.flatnonzero(rng.uniform(size=len(images)) < share):
        shifted[i] = random_acquisition_shift(images[i], rng)
    return shifted


def shift_seed(seed: int, image_id: str, shift: str, strength: float) -> np.random.Generator:
    """The random stream of one shifted image: the same whatever order images are scored in."""
    digest = hashlib.sha256(f"{seed}:{image_id}:{shift}:{strength}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
