"""Training end to end on generated images: the model learns the visible signal, for each strategy."""

import re
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.config import IMBALANCE_STRATEGIES, TrainConfig
from melanoma.store import ArtifactCorruptError
from tests.trained_runs import FAST, copy_run
from training.data import split_arrays, split_rows
from training.inputs import class_weights
from training.run_model import load_model
from training.train import train_run


@pytest.mark.parametrize("strategy", [s for s in IMBALANCE_STRATEGIES if s != "none"])
def test_model_learns_the_pattern_with_each_imbalance_strategy(preprocessed_run, strategy):
    run = copy_run(preprocessed_run, f"t-{strategy}")  # a run of its own per strategy

    key = train_run(run, TrainConfig(**FAST, imbalance=strategy))
    assert key == run.layout.commit("train")
    summary = run.commit_record("train")["data"]["summary"]
    assert summary["val_auroc_final"] > 0.9, summary
    config = run.read_json("train", "training_config")
    assert config["config"]["imbalance"] == strategy
    if strategy == "oversample":
        assert config["train_positives"] > 0 and config["train_images"] > len(
            run.read_json("preprocess", "stats")["splits"]["train"]
        )


# With multiscale features the top takes several inputs: the CPU profile's model.
@pytest.mark.parametrize("multiscale", [False, True])
def test_phase2_on_a_cached_trunk_learns_and_records_what_the_cache_cost(
    preprocessed_run, multiscale
):
    run = copy_run(preprocessed_run, f"t-cached-phase2-{multiscale}")
    config = TrainConfig(
        **{**FAST, "phase2_epochs": 3}, phase2_cached_views=4, multiscale_features=multiscale
    )
    train_run(run, config)
    summary = run.commit_record("train")["data"]["summary"]
    assert summary["val_auroc_final"] > 0.9, summary
    phase2 = summary["timing"]["phase2"]
    assert phase2["cached_views"] == 4 and phase2["epochs"] == 3
    assert phase2["cached_images"] > 0 and phase2["cache_megabytes"] > 0
    history = run.read_json("train", "history")["phase2"]
    assert len(history["loss"]) == 3 and len(history["val_auroc"]) == 3
    # The stored model is the whole model, fine-tuned: it scores images as recorded.
    from training.model import predict_scores

    images, _ = split_arrays(run, "test")
    np.testing.assert_allclose(
        predict_scores(load_model(run), images), run.predictions("test")["probability"], atol=1e-5
    )


def test_a_cached_phase2_with_acquisition_views_caches_shifted_views_the_same_on_a_rerun(
    preprocessed_run,
):
    from training.model import build_model, split_at_trainable, unfreeze_last_blocks
    from training.phases import training_trunk_cache

    flips_only = TrainConfig(**FAST, phase2_cached_views=2)
    model = build_model(flips_only, preprocessed_run.preprocess_config().shape)
    unfreeze_last_blocks(model, flips_only.backbone, flips_only.unfreeze_blocks)
    split = split_at_trainable(model)
    plain, targets = training_trunk_cache(split, preprocessed_run, flips_only)
    shifted_config = replace(flips_only, acquisition_views=2)
    shifted, shifted_targets = training_trunk_cache(split, preprocessed_run, shifted_config)
    again, _ = training_trunk_cache(split, preprocessed_run, shifted_config)
    np.testing.assert_array_equal(shifted_targets, targets)
    # A share 2/3 of each view's images shifted, the rest as they were, in both views.
    for view in range(2):
        per_image = shifted[0][view] != plain[0][view]
        changed = per_image.reshape(len(per_image), -1).any(axis=1)
        assert 0.4 < changed.mean() < 0.95, changed.mean()
    for a, b in zip(shifted, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_outputs_predictions_and_saved_model_agree(preprocessed_run):
    # A run of its own: the shared one stays untrained, as test_predict expects of it.
    run = copy_run(preprocessed_run, "t-outputs")
    train_run(run, TrainConfig(**FAST))
    history = run.read_json("train", "history")
    assert len(history["phase1"]["loss"]) >= 1 and len(history["phase2"]["val_auroc"]) >= 1
    images, rows = split_arrays(run, "test")
    predictions = run.predictions("test")
    assert list(predictions.columns) == ["image_id", "lesion_id", "dx", "label", "probability"]
    assert list(predictions["image_id"]) == list(rows["image_id"])
    assert predictions["probability"].between(0, 1).all()
    assert roc_auc_score(predictions["label"], predictions["probability"]) > 0.9

    model = load_model(run)
    np.testing.assert_allclose(
        model.predict(images, verbose=0).reshape(-1), predictions["probability"], atol=1e-5
    )

    # A retried task resumes from the store's checkpoints instead of training again.
    train_run(run, TrainConfig(**FAST))
    assert run.read_json("train", "history")["summary"]["timing"] == {"phase1": {"resumed": True}}


def test_a_changed_shard_or_model_is_named_when_read(preprocessed_run):
    run = copy_run(preprocessed_run, "t-changed")
    shard = run.shards("train")[0]["key"]
    store = run.store
    original = store.get_bytes(shard)
    store.put_bytes(shard, original[:-8] + bytes(8))
    with pytest.raises(ArtifactCorruptError, match=re.escape(shard)):
        split_rows(run, "train")
    with pytest.raises(ArtifactCorruptError, match=re.escape(shard)):
        train_run(run, TrainConfig(**FAST))
    assert not run.committed("train")
    store.put_bytes(shard, original)

    train_run(run, TrainConfig(**FAST))
    model = run.layout.model
    store.put_bytes(model, store.get_bytes(model)[:-1])
    with pytest.raises(ArtifactCorruptError, match=re.escape(model)):
        load_model(run)


def test_class_weights():
    labels = np.array([0] * 90 + [1] * 10)
    assert class_weights(TrainConfig(), labels) == pytest.approx({0: 100 / 180, 1: 5.0})
    assert class_weights(TrainConfig(class_weight="0.5,28.5"), labels) == {0: 0.5, 1: 28.5}
    assert class_weights(TrainConfig(imbalance="focal"), labels) is None
    with pytest.raises(ValueError, match="w0,w1"):
        TrainConfig(class_weight="heavy")


def test_every_model_lever_together_multiscale_multiclass_metadata_tta_cosine_smoothing(
    preprocessed_run,
):
    """And acquisition-shift copies: cached phase 1 extracts them, phase 2's online
    augmentation shifts its batches."""
    from training.data import metadata_for
    from training.model import DX_ORDER, is_multiclass, predict_scores, takes_metadata
    from training.scoring import score_stored_images

    run = copy_run(preprocessed_run, "t-levers")
    config = TrainConfig(
        **FAST,
        head="multiclass",
        tta_views=4,
        phase2_schedule="cosine",
        label_smoothing=0.1,
        metadata_fusion=True,
        multiscale_features=True,
        acquisition_views=2,
    )
    train_run(run, config)
    summary = run.commit_record("train")["data"]["summary"]
    assert summary["val_auroc_final"] > 0.9, summary
    phase1 = summary["timing"]["phase1"]
    assert phase1["cached_features"] and phase1["acquisition_views"] == 2
    # The image signal alone still scores images that come without metadata.
    assert summary["val_auroc_without_metadata"] > 0.9, summary
    model = load_model(run)
    assert is_multiclass(model) and takes_metadata(model)
    assert model.get_layer("head_multiscale")
    training_config = run.read_json("train", "training_config")
    # One weight per diagnosis, balancing the label task's two sides.
    weights = training_config["class_weight"]
    assert len(weights) == len(DX_ORDER)
    images, rows = split_arrays(run, "test")
    stored = run.predictions("test")
    assert set(stored["metadata"]) == {"used"}
    metadata = metadata_for(run, rows["image_id"])
    assert metadata[:, 0].all()
    np.testing.assert_allclose(
        predict_scores(model, images, tta_views=4, metadata=metadata),
        stored["probability"],
        atol=1e-5,
    )
    # The promotion benchmark's path (stored images, metadata from the rows) scores alike.
    splits = run.splits()
    test_rows = splits[splits["split"] == "test"].set_index("image_id").loc[rows["image_id"]]
    np.testing.assert_allclose(
        score_stored_images(run, run, test_rows.reset_index()),
        stored.set_index("image_id").loc[rows["image_id"], "probability"],
        atol=1e-5,
    )


def test_multiclass_head_class_weights_balance_the_label_task():
    from training.model import DX_ORDER

    mel, nv, bkl, bcc = (DX_ORDER.index(dx) for dx in ("mel", "nv", "bkl", "bcc"))
    targets = np.array([nv] * 60 + [bkl] * 30 + [mel] * 8 + [bcc] * 2)
    for task, positives in (("mel_vs_rest", [mel]), ("malignant_vs_benign", [mel, bcc])):
        weights = class_weights(TrainConfig(head="multiclass"), targets, task)
        total = {k: weights[k] * int((targets == k).sum()) for k in set(targets)}
        positive_weight = sum(total[k] for k in positives)
        # The task's two sides weigh the same; within a side, one weight for every diagnosis.
        assert positive_weight == pytest.approx(sum(total.values()) / 2)
        assert weights[nv] == weights[bkl] and weights[mel] == weights[positives[-1]]
    with pytest.raises(ValueError, match="class_weight or none"):
        TrainConfig(head="multiclass", imbalance="undersample")


def test_a_model_at_the_archives_own_aspect_learns_and_scores_files_as_the_pipeline(
    preprocessed_run, tmp_path
):
    """image_size 48, image_width 64: the generated archive's own 4:3 aspect and resolution,
    as 150 x 200 is HAM10000's. Phase 2 runs on a cached trunk with 4 views (flips and
    180°: no 90° rotation of a non-square image) and test-time augmentation too."""
    from melanoma.evaluation import (
        EvaluationConfig,
        calibrate_run,
        candidate_summary,
        evaluate_run,
    )
    from melanoma.images import PreprocessConfig
    from melanoma.layout import DatasetLayout
    from melanoma.preprocess import run_preprocessing
    from melanoma.promotion import PromotionPolicy
    from training.run_model import load_run_scorer
    from training.scoring import score_images

    run = copy_run(preprocessed_run, "t-own-aspect")
    run_preprocessing(
        run,
        PreprocessConfig(size=48, width=64),
        augment_copies=2,
        seed=0,
        parallelism=1,
        map_shards=lambda f, shards: list(map(f, shards)),
    )
    images, _ = split_arrays(run, "test")
    assert images.shape[1:] == (48, 64, 3)
    config = TrainConfig(
        **{**FAST, "phase2_epochs": 2}, phase2_cached_views=4, tta_views=4, multiscale_features=True
    )
    train_run(run, config)
    assert run.commit_record("train")["data"]["summary"]["val_auroc_final"] > 0.9
    model = load_model(run)
    assert tuple(model.input.shape[1:]) == (48, 64, 3)
    calibrate_run(run, EvaluationConfig(bootstrap_replicates=100))
    evaluate_run(run, EvaluationConfig(bootstrap_replicates=100))
    assert candidate_summary(run, PromotionPolicy())["image_shape"] == [48, 64]
    # The stored files, scored as melanoma-predict scores them, give the run's test scores.
    scorer = load_run_scorer(run)
    store, test = run.store, run.predictions("test")
    folder = tmp_path / "files"
    folder.mkdir()
    prefix = DatasetLayout(run.config().dataset_version).file("images/")
    stored = {o.key.rsplit("/", 1)[1].split(".")[0]: o.key for o in store.list(prefix)}
    for image_id in test["image_id"]:
        (folder / stored[image_id].rsplit("/", 1)[1]).write_bytes(store.get_bytes(stored[image_id]))
    scores, failures, _ = score_images(scorer, sorted(folder.iterdir()), folder)
    assert failures.empty and len(scores) == len(test)
    both = scores.assign(image_id=scores["image"].str.split(".").str[0]).merge(test, on="image_id")
    np.testing.assert_allclose(both["probability_x"], both["probability_y"], atol=1e-5)
