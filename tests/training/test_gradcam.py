"""Grad-CAM: it finds a decisive pattern placed at a known spot, and the explain stage end to end."""

import io

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.cam import lesion_attention, normalize_cam, upsample_cam
from training.gradcam import ExplainConfig, explain_run, grad_cam
from training.model import build_model, unfreeze_last_blocks
from training.predict import score_split

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
    model = build_model("tiny_cnn", SIZE, None, 0)
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


@pytest.fixture(scope="module")
def explained_run(evaluated_run):
    store, prefix = evaluated_run
    config = ExplainConfig(per_outcome=2, random_count=100)  # every test image
    return store, prefix, store.get_json(explain_run(store, prefix, config))


def test_explain_writes_overlays_at_the_stored_size_with_attention_per_outcome(explained_run):
    store, prefix, summary = explained_run
    index = pd.read_csv(io.BytesIO(store.get_bytes(summary["index"])))
    test = pd.read_csv(io.BytesIO(store.get_bytes(f"{prefix}/predictions/test.csv")))
    assert sorted(index["image_id"]) == sorted(test["image_id"])
    for row in index.itertuples():
        overlay = cv2.imdecode(np.frombuffer(store.get_bytes(row.png), np.uint8), cv2.IMREAD_COLOR)
        # the stored 64x48 image beside its overlay, not the 32x32 model input
        assert overlay.shape[:2] == (48, 2 * 64) == (row.height, 2 * row.width)
        assert 0 <= row.energy_in_lesion <= 1
    assert summary["overall"]["images"] == len(index)
    by_outcome = summary["by_outcome"]
    assert sum(g["images"] for g in by_outcome.values()) == len(index)
    assert summary["layer"] == "tiny_block3_relu" and "Research use only" in summary["notice"]


def test_a_missing_mask_falls_back_to_the_automatic_one_and_says_so(explained_run):
    store, prefix, summary = explained_run
    index = pd.read_csv(io.BytesIO(store.get_bytes(summary["index"])))
    manifest = store.get_json(store.get_json(f"{prefix}/config.json")["manifest_key"])
    masked = {
        k.split("/")[1].removesuffix("_segmentation.png")
        for k in manifest["files"]
        if k.startswith("masks/")
    }
    expected = np.where(index["image_id"].isin(masked), "official", "automatic")
    assert "automatic" in expected, "the fixture must hold test images without a mask"
    assert (index["mask_source"] == expected).all()
    assert summary["mask_sources"]["automatic"] == int((expected == "automatic").sum())


def test_score_split_reproduces_the_stored_test_predictions(explained_run):
    # What re-scoring a champion on another run's test split relies on.
    store, prefix, _ = explained_run
    model_key = store.get_json(f"{prefix}/model/MANIFEST.json")["outputs"]["model"]
    scored = score_split(store, model_key, prefix, "test")
    stored = pd.read_csv(io.BytesIO(store.get_bytes(f"{prefix}/predictions/test.csv")))
    both = stored.merge(scored, on="image_id", suffixes=("_stored", "_scored"))
    assert len(both) == len(stored) == len(scored)
    assert np.allclose(both["probability_stored"], both["probability_scored"], atol=1e-5)
    assert (both["label_stored"] == both["label_scored"]).all()


def test_a_rerun_with_fewer_images_leaves_no_stale_overlays(explained_run):
    store, prefix, _ = explained_run
    summary = store.get_json(
        explain_run(store, prefix, ExplainConfig(per_outcome=1, random_count=1))
    )
    index = pd.read_csv(io.BytesIO(store.get_bytes(summary["index"])))
    pngs = sorted(o.key for o in store.list(f"{prefix}/gradcam/") if o.key.endswith(".png"))
    assert pngs == sorted(index["png"]) and len(pngs) <= 5
