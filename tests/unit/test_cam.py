import numpy as np
import pandas as pd
import pytest

from melanoma.cam import (
    draw_mask_outline,
    lesion_attention,
    normalize_cam,
    overlay_heatmap,
    upsample_cam,
)
from melanoma.explanations import select_explained, summarize_attention


def square_mask(h=60, w=80, top=20, left=30, side=20):
    mask = np.zeros((h, w), np.uint8)
    mask[top : top + side, left : left + side] = 255
    return mask


def test_attention_inside_outside_and_uniform():
    mask = square_mask()
    area = (mask > 0).mean()
    inside = np.where(mask > 0, 1.0, 0.0)
    on_lesion = lesion_attention(inside, mask)
    assert on_lesion["energy_in_lesion"] == 1.0 and on_lesion["background_to_lesion_ratio"] == 0
    off_lesion = lesion_attention(1.0 - inside, mask)
    assert off_lesion["energy_in_lesion"] == 0.0
    assert np.isnan(off_lesion["background_to_lesion_ratio"])  # nothing in the lesion
    uniform = lesion_attention(np.ones(mask.shape), mask)
    assert uniform["energy_in_lesion"] == pytest.approx(area)
    assert uniform["background_to_lesion_ratio"] == pytest.approx(1.0)
    assert uniform["lesion_area_fraction"] == pytest.approx(area)
    assert np.isnan(lesion_attention(np.zeros(mask.shape), mask)["energy_in_lesion"])
    with pytest.raises(ValueError, match="differ in size"):
        lesion_attention(np.ones((10, 10)), mask)


def test_upsampled_map_has_the_stored_size_and_is_zero_outside_the_models_view():
    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 1.0
    full = upsample_cam(cam, (450, 600))
    assert full.shape == (450, 600)
    peak = np.unravel_index(np.argmax(full), full.shape)
    assert abs(peak[0] - 225) < 40 and abs(peak[1] - 300) < 50
    cropped = upsample_cam(np.ones((7, 7)), (450, 600), box=(100, 200, 150, 150))
    assert cropped[:100].max() == 0 and cropped[:, :200].max() == 0
    assert cropped[100:250, 200:350].min() > 0


def test_overlay_keeps_the_image_size_and_marks_high_activation_red():
    image = np.full((45, 60, 3), 128, np.uint8)
    cam = np.zeros((45, 60), np.float32)
    cam[:, 30:] = 1.0
    out = overlay_heatmap(image, normalize_cam(cam))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out[20, 50, 0] > out[20, 50, 2]  # red where the map is high
    assert out[20, 10, 2] > out[20, 10, 0]  # blue where it is low
    outlined = draw_mask_outline(image, square_mask(45, 60, 10, 10, 20))
    assert (outlined != image).any() and outlined.shape == image.shape
    with pytest.raises(ValueError, match="differ in size"):
        overlay_heatmap(image, np.zeros((10, 10)))


def predictions():
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.3).astype(int)
    return pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:07d}" for i in range(200)],
            "lesion_id": [f"HAM_{i:07d}" for i in range(200)],
            "dx": np.where(labels == 1, "mel", "nv"),
            "label": labels,
            "probability": np.clip(0.3 * labels + rng.random(200) * 0.7, 0, 1),
        }
    )


def test_selection_takes_the_most_confident_of_each_outcome_and_a_seeded_sample():
    frame = predictions()
    chosen = select_explained(frame, 0.5, per_outcome=3, random_count=5, seed=1)
    assert chosen["selected_as"].value_counts().to_dict() == {
        "TP": 3,
        "FP": 3,
        "FN": 3,
        "TN": 3,
        "random": 5,
    }
    assert chosen["image_id"].is_unique
    predicted = frame["probability"] >= 0.5
    tp = frame[predicted & (frame["label"] == 1)]
    tn = frame[~predicted & (frame["label"] == 0)]
    picked_tp = chosen[chosen["selected_as"] == "TP"]["probability"]
    assert picked_tp.min() >= tp["probability"].nlargest(3).min()
    picked_tn = chosen[chosen["selected_as"] == "TN"]["probability"]
    assert picked_tn.max() <= tn["probability"].nsmallest(3).max()
    targeted = chosen[chosen["selected_as"] != "random"]
    assert (targeted["outcome"] == targeted["selected_as"]).all()
    again = select_explained(frame, 0.5, 3, 5, seed=1)
    assert again.equals(chosen)


def test_summary_per_outcome_skips_undefined_values():
    records = pd.DataFrame(
        {
            "outcome": ["TP", "TP", "FP", "TN"],
            "mask_source": ["official", "official", "automatic", "official"],
            "energy_in_lesion": [0.8, 0.6, float("nan"), 0.2],
            "background_to_lesion_ratio": [0.1, 0.3, 2.0, 1.5],
            "lesion_area_fraction": [0.2, 0.2, 0.3, 0.1],
        }
    )
    summary = summarize_attention(records)
    tp = summary["by_outcome"]["TP"]
    assert tp["images"] == 2 and tp["energy_in_lesion"]["mean"] == pytest.approx(0.7)
    assert summary["by_outcome"]["FP"]["energy_in_lesion"] == {"n": 0, "mean": None, "median": None}
    assert summary["by_outcome"]["FN"]["images"] == 0
    assert summary["overall"]["images"] == 4
    assert summary["by_outcome"]["FP"]["maps_without_positive_evidence"] == 1
    assert summary["mask_sources"] == {"official": 3, "automatic": 1}
