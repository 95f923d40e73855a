"""Grad-CAM: it finds a decisive pattern placed at a known spot."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.cam import lesion_attention, normalize_cam, upsample_cam
from melanoma.config import TrainConfig
from training.gradcam import grad_cam
from training.model import build_model, unfreeze_last_blocks

SIZE, SIDE = 32, 8


def pattern_images(n: int, seed: int):
    """Noise; every second image carries a checkerboard patch (the class signal) at a random spot."""
    rng = np.random.default_rng(seed)
    images = rng.normal(150, 20, (n, SIZE, SIZE, 3)).clip(0, 255)
    labels = np.arange(n) % 2
    corners = rng.integers(0, SIZE - SIDE, (n, 2))
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    checker = np.where(((yy // 2 + xx // 2) % 2)[..., None] == 1, 250.0, 20.0)
    for i in np.flatnonzero(labels):
        top, left = corners[i]
        images[i, top : top + SIDE, left : left + SIDE] = checker
    return images.astype(np.uint8), labels, corners


def box_mask(top: int, left: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[top : top + SIDE, left : left + SIDE] = 255
    return mask


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_heatmap_peaks_on_the_decisive_pattern(method):
    keras.utils.set_random_seed(0)
    x, y, _ = pattern_images(600, seed=0)
    model = build_model(TrainConfig(backbone="tiny_cnn", seed=0), SIZE)
    unfreeze_last_blocks(model, "tiny_cnn", 3)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    model.fit(x, y, batch_size=32, epochs=5, verbose=0)
    x_test, y_test, corners = pattern_images(100, seed=1)
    assert roc_auc_score(y_test, model.predict(x_test, verbose=0).ravel()) > 0.95

    positives = np.flatnonzero(y_test)
    maps = grad_cam(model, x_test[positives], "tiny_block3_relu", method=method)
    inside, elsewhere, peaks_inside = [], [], []
    for raw, (top, left) in zip(maps, corners[positives], strict=True):
        heat = normalize_cam(upsample_cam(raw, (SIZE, SIZE)))
        inside.append(lesion_attention(heat, box_mask(top, left))["energy_in_lesion"])
        # the same mask moved half the image away: the pattern is outside it
        away = box_mask((top + 16) % (SIZE - SIDE), (left + 16) % (SIZE - SIDE))
        elsewhere.append(lesion_attention(heat, away)["energy_in_lesion"])
        py, px = np.unravel_index(np.argmax(heat), heat.shape)
        peaks_inside.append(top - 2 <= py < top + SIDE + 2 and left - 2 <= px < left + SIDE + 2)
    area = SIDE * SIDE / SIZE**2  # 0.0625: what an evenly spread map would put in the mask
    assert np.mean(peaks_inside) >= 0.9
    assert np.mean(inside) > 3 * area
    assert np.mean(elsewhere) < area
