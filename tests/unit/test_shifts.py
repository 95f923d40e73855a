"""The acquisition shifts: identity at strength 0, graded, deterministic."""

import cv2
import numpy as np
import pytest

from melanoma.shifts import (
    ACQUISITION_SHIFTS,
    SEVERITIES,
    random_acquisition_shifts,
    shift_seed,
)
from tests.synthetic import lesion_image


@pytest.fixture
def image():
    return lesion_image(np.random.default_rng(0), (200, 150))[0]


@pytest.mark.parametrize("name", list(ACQUISITION_SHIFTS))
def test_each_acquisition_shift_at_strength_0_is_the_identity(name, image):
    shifted = ACQUISITION_SHIFTS[name](image, 0.0, shift_seed(1, "ISIC_0000001", name, 0.0))
    assert np.array_equal(shifted, image)


# upscale adds pixels, not a difference: its grading is its size (the test below).
@pytest.mark.parametrize("name", [n for n in ACQUISITION_SHIFTS if n != "upscale"])
def test_each_shift_changes_the_image_more_as_its_strength_grows(name, image):
    def distance(strength: float) -> float:
        rng = shift_seed(1, "ISIC_0000001", name, strength)
        shifted = ACQUISITION_SHIFTS[name](image, strength, rng)
        assert shifted.dtype == np.uint8 and shifted.shape[2] == 3
        # Scaling shifts change the size: compare at the original's.
        if shifted.shape != image.shape:
            shifted = cv2.resize(shifted, image.shape[1::-1], interpolation=cv2.INTER_AREA)
        return float(np.abs(shifted.astype(float) - image).mean())

    distances = [distance(s) for s in SEVERITIES]
    assert distances[0] > 0
    assert distances[-1] > distances[0]


def test_a_shifted_image_is_the_same_whatever_order_it_is_made_in(image):
    first = ACQUISITION_SHIFTS["sensor_noise"](image, 0.6, shift_seed(7, "a", "sensor_noise", 0.6))
    ACQUISITION_SHIFTS["sensor_noise"](image, 0.6, shift_seed(7, "b", "sensor_noise", 0.6))
    again = ACQUISITION_SHIFTS["sensor_noise"](image, 0.6, shift_seed(7, "a", "sensor_noise", 0.6))
    assert np.array_equal(first, again)


def test_the_scaling_shifts_change_the_pixel_count_as_graded(image):
    rng = np.random.default_rng(0)
    assert ACQUISITION_SHIFTS["downscale"](image, 1.0, rng).shape[:2] == (38, 50)
    assert ACQUISITION_SHIFTS["upscale"](image, 1.0, rng).shape[:2] == (450, 600)


def test_training_shifts_keep_the_size_change_the_images_and_repeat_per_seed(image):
    batch = np.stack([image] * 20)
    first = random_acquisition_shifts(batch, np.random.default_rng(3))
    assert first.shape == batch.shape and first.dtype == np.uint8
    changed = [not np.array_equal(shifted, image) for shifted in first]
    assert sum(changed) >= 18  # a strength near 0 may leave one almost as it was
    assert np.array_equal(first, random_acquisition_shifts(batch, np.random.default_rng(3)))
    # share 0 leaves every image as it was; the input batch itself is never changed.
    assert np.array_equal(random_acquisition_shifts(batch, np.random.default_rng(3), 0.0), batch)
    assert all(np.array_equal(b, image) for b in batch)
