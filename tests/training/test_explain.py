"""The explain stage end to end: overlays, lesion attention, and what it reads checked."""

import re

import cv2
import numpy as np
import pytest

from melanoma.config import ExplainConfig
from melanoma.store import ArtifactCorruptError
from training.explain import explain_run
from training.scoring import score_stored_images


@pytest.fixture(scope="module")
def explained_run(evaluated_run):
    config = ExplainConfig(per_outcome=2, random_count=100)  # every test image
    assert explain_run(evaluated_run, config) == evaluated_run.layout.commit("explain")
    return evaluated_run


def test_explain_writes_overlays_at_the_stored_size_with_attention_per_outcome(explained_run):
    run = explained_run
    summary, index = run.read_json("explain", "summary"), run.read_csv("explain", "index")
    assert sorted(index["image_id"]) == sorted(run.predictions("test")["image_id"])
    for row in index.itertuples():
        png = run.read_bytes("explain", f"image/{row.selected_as}/{row.image_id}")
        overlay = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        # the stored 64x48 image beside its overlay, not the 32x32 model input
        assert overlay.shape[:2] == (48, 2 * 64) == (row.height, 2 * row.width)
        assert 0 <= row.energy_in_lesion <= 1
    assert summary["overall"]["images"] == len(index)
    by_outcome = summary["by_outcome"]
    assert sum(g["images"] for g in by_outcome.values()) == len(index)
    assert summary["layer"] == "tiny_block3_relu" and "Research use only" in summary["notice"]


def test_a_missing_mask_falls_back_to_the_automatic_one_and_says_so(explained_run):
    run = explained_run
    summary, index = run.read_json("explain", "summary"), run.read_csv("explain", "index")
    manifest = run.store.get_json(run.config().manifest_key)
    masked = {
        k.split("/")[1].removesuffix("_segmentation.png")
        for k in manifest["files"]
        if k.startswith("masks/")
    }
    expected = np.where(index["image_id"].isin(masked), "official", "automatic")
    assert "automatic" in expected, "the fixture must hold test images without a mask"
    assert (index["mask_source"] == expected).all()
    assert summary["mask_sources"]["automatic"] == int((expected == "automatic").sum())


def test_stored_images_score_as_the_run_scored_its_test_split(explained_run):
    # What scoring champion and candidate on the promotion benchmark relies on: a model
    # scores the stored images, through its recorded preprocessing, as it scored its split.
    run = explained_run
    stored = run.predictions("test")
    scored = score_stored_images(run, run, stored)
    assert np.allclose(scored, stored["probability"], atol=1e-5)


def test_a_rerun_with_fewer_images_leaves_no_stale_overlays(explained_run):
    run = explained_run
    explain_run(run, ExplainConfig(per_outcome=1, random_count=1))
    index = run.read_csv("explain", "index")
    pngs = sorted(o.key for o in run.store.list(run.layout.gradcam + "/") if o.key.endswith(".png"))
    assert pngs == sorted(index["png"]) == [e["key"] for e in run.entries("explain", "image/")]
    assert len(pngs) <= 5


def test_a_changed_stored_image_is_named_and_nothing_is_committed(preprocessed_run):
    from melanoma.evaluation import EvaluationConfig, calibrate_run
    from melanoma.preprocess import plan_images
    from tests.trained_runs import FAST, copy_run
    from training.train import TrainConfig, train_run

    run = copy_run(preprocessed_run, "t-explain-changed")
    train_run(run, TrainConfig(**{**FAST, "phase1_epochs": 1, "phase2_epochs": 0}))
    calibrate_run(run, EvaluationConfig(bootstrap_replicates=100))
    dataset = run.store.get_json(run.config().manifest_key)
    tasks = plan_images(run.predictions("test").assign(split="test"), dataset, 0)
    key = tasks[0].image["key"]
    original = run.store.get_bytes(key)
    run.store.put_bytes(key, run.store.get_bytes(tasks[1].image["key"]))
    try:
        with pytest.raises(ArtifactCorruptError, match=re.escape(key)):
            explain_run(run, ExplainConfig(per_outcome=100, random_count=100))
    finally:
        run.store.put_bytes(key, original)  # the dataset is shared with the other tests
    assert not run.committed("explain")
