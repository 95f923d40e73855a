from dataclasses import replace

import keras
import numpy as np
import pytest

from melanoma.backbones import BACKBONES
from melanoma.config import TrainConfig
from training.model import (
    build_model,
    feature_extractor,
    head_model,
    pooled_layer,
    predict_scores,
    predict_scores_and_features,
    unfreeze_last_blocks,
    with_features,
)

TINY = TrainConfig(backbone="tiny_cnn")  # the test backbone, every other field a default


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_resnet50_default_structure_and_parameter_counts():
    model = build_model(TrainConfig(backbone="resnet50"), 224)
    assert model.count_params() == 24_112_513
    assert trainable_count(model) == 524_801, "only the head trains while the backbone is frozen"
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), (
        "one flat graph, no nested Model"
    )
    assert model.input.dtype == "uint8" and model.output.dtype == "float32"
    assert [layer.name for layer in model.layers[-5:]] == [
        "head_gap",
        "head_dropout_1",
        "head_dense",
        "head_dropout_2",
        "head_output",
    ]
    assert all(model.get_layer(n).trainable for n in ("head_dense", "head_output"))
    assert not model.get_layer("conv5_block3_3_conv").trainable


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_registered_backbone_builds_with_its_declared_layers_and_blocks(name):
    # The one registry (melanoma.backbones) is all the builder, Grad-CAM and unfreezing use.
    model = build_model(
        TrainConfig(backbone=name, multiscale_features=True), 32 if name == "tiny_cnn" else 96
    )
    spec = BACKBONES[name]
    for layer_name in spec.all_pooled_layers():
        assert len(model.get_layer(layer_name).output.shape) == 4
    assert unfreeze_last_blocks(model, name, 1), "its block pattern matches the built layers"
    # Cut at its mid-level layer, each backbone builds, pools there and still unfreezes.
    cut = build_model(
        TrainConfig(backbone=name, multiscale_features=True, feature_depth="mid"),
        32 if name == "tiny_cnn" else 96,
    )
    assert pooled_layer(cut) == spec.mid_layer
    assert spec.last_conv_layer not in {layer.name for layer in cut.layers}
    assert unfreeze_last_blocks(cut, name, 1), "the blocks before the cut unfreeze"


def test_feature_depth_mid_cuts_the_backbone_there_and_explains_at_that_layer(tmp_path):
    from training.gradcam import grad_cam

    spec = BACKBONES["mobilenet_v2"]
    model = build_model(
        TrainConfig(backbone="mobilenet_v2", multiscale_features=True, feature_depth="mid"),
        (48, 64),
    )
    names = [layer.name for layer in model.layers]
    assert pooled_layer(model) == spec.mid_layer == "block_13_expand_relu"
    # Nothing after block 13's expansion is built, so nothing later is computed or saved.
    assert not any(n.startswith(("block_14", "block_15", "block_16", "Conv_1")) for n in names)
    assert "out_relu" not in names and "block_13_project" not in names
    # Block 6's expansion (192 channels) joins block 13's (576); the later multiscale
    # layer (block 16) is not there to join.
    assert feature_extractor(model).output.shape[-1] == 192 + 576
    assert unfreeze_last_blocks(model, "mobilenet_v2", 2) == ["block_12", "block_13"]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    images = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    # Grad-CAM at block 13's expansion: stride 16, finer than the last layer's stride 32.
    maps = grad_cam(loaded, images, pooled_layer(loaded), 2)
    assert maps.shape == (4, 3, 4) and np.isfinite(maps).all() and (maps >= 0).all()
    last = build_model(TrainConfig(backbone="mobilenet_v2"), (48, 64))
    assert pooled_layer(last) == "out_relu"


def test_unfreezing_keeps_batch_norm_frozen():
    model = build_model(TrainConfig(backbone="mobilenet_v2"), 96)
    before = trainable_count(model)
    blocks = unfreeze_last_blocks(model, "mobilenet_v2", 2)
    assert blocks == ["block_16", "Conv_1"]
    assert trainable_count(model) > before
    assert model.get_layer("block_16_project").trainable and model.get_layer("Conv_1").trainable
    assert (
        not model.get_layer("block_16_project_BN").trainable
        and not model.get_layer("Conv_1_bn").trainable
    )
    assert not model.get_layer("block_15_project").trainable


@pytest.mark.parametrize("tta_views", [1, 4])
def test_one_pass_gives_the_scores_and_the_features_that_two_passes_give(tta_views):
    """Scoring with the out-of-distribution detector runs the backbone once, not twice."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    model = build_model(TrainConfig(backbone="tiny_cnn", seed=1, multiscale_features=True), 32)
    scores, features = predict_scores_and_features(
        with_features(model), images, 8, tta_views=tta_views
    )
    np.testing.assert_allclose(scores, predict_scores(model, images, 8, tta_views), atol=1e-6)
    np.testing.assert_allclose(
        features, feature_extractor(model).predict(images, verbose=0), atol=1e-5
    )
    assert scores.shape == (20,) and features.shape == (20, 16 + 32 + 64)


@pytest.mark.parametrize("multiscale", [False, True])
def test_cached_feature_phase1_equals_plain_phase1(multiscale):
    """Training the head on precomputed features gives the model that training it end to end
    gives, also when earlier layers' pooled maps join the features (batch-normalised in the head)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    labels = (images[:, :16].mean(axis=(1, 2, 3)) > 127).astype("float32")
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        models.append(build_model(replace(TINY, seed=3, multiscale_features=multiscale), 32))
    plain, cached = models
    assert all(
        np.array_equal(a, b) for a, b in zip(plain.get_weights(), cached.get_weights(), strict=True)
    )

    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    plain.fit(images, labels, batch_size=16, epochs=3, shuffle=False, verbose=0)
    features = feature_extractor(cached).predict(images, verbose=0)
    head = head_model(cached)
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    head.fit(features, labels, batch_size=16, epochs=3, shuffle=False, verbose=0)

    for a, b in zip(plain.get_weights(), cached.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(plain.get_layer("head_output").get_weights()[0], 0)


@pytest.mark.parametrize(
    ("backbone", "size", "blocks", "multiscale", "depth"),
    [
        ("tiny_cnn", 32, 1, True, "last"),
        ("tiny_cnn", 32, 2, False, "last"),
        ("mobilenet_v2", 64, 4, True, "last"),  # the cut lies before a residual block
        ("mobilenet_v2", 64, 3, False, "last"),
        ("mobilenet_v2", 64, 4, True, "mid"),  # blocks 10 to 13, the model ends in 13
    ],
)
def test_cached_trunk_fine_tuning_has_the_gradients_of_uncached(
    backbone, size, blocks, multiscale, depth
):
    """Phase 2 on the frozen trunk's outputs: the loss and every trainable weight's gradient
    on a batch equal those of the whole model on the images (dropout off, so that both
    passes see one network)."""
    import tensorflow as tf

    from training.model import split_at_trainable

    model = build_model(
        TrainConfig(backbone=backbone, seed=1, multiscale_features=multiscale, feature_depth=depth),
        size,
    )
    unfreeze_last_blocks(model, backbone, blocks)
    split = split_at_trainable(model)
    assert split is not None
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    labels = np.array([[0.0], [1.0]] * 3, dtype="float32")
    loss = keras.losses.BinaryCrossentropy()
    with tf.GradientTape() as tape:
        whole = loss(labels, model(images, training=False))
    expected = tape.gradient(whole, model.trainable_weights)
    cached = split.trunk(images, training=False)
    with tf.GradientTape() as tape:
        on_cache = loss(labels, split.top(cached, training=False))
    got = tape.gradient(on_cache, model.trainable_weights)
    np.testing.assert_allclose(float(on_cache), float(whole), rtol=1e-5)
    assert len(got) == len(expected) > 2 and all(g is not None for g in got)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    # The trunk holds no trainable weight: it runs once per image and view.
    assert split.trunk.trainable_weights == []


def test_fine_tuning_that_never_beats_its_baseline_keeps_the_starting_weights():
    from training.checkpoints import ValidationAUROC

    model = build_model(replace(TINY, seed=1), 32)
    start = [w.copy() for w in model.get_weights()]
    labels = np.array([0, 1] * 8)
    monitor = ValidationAUROC(lambda: np.full(16, 0.5), labels, patience=5, baseline=0.9)
    monitor.set_model(model)
    monitor.on_train_begin()
    model.set_weights([w + 1 for w in start])  # what an epoch of training would do
    monitor.on_epoch_end(0, {})
    monitor.on_train_end()
    assert monitor.best_epoch == -1
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), start, strict=True))


def _three_class_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """mel, nv and bkl as red, green and blue tinted noise: a signal only colour separates."""
    from training.model import DX_ORDER

    rng = np.random.default_rng(seed)
    classes = np.array([DX_ORDER.index(dx) for dx in ("mel", "nv", "bkl")])
    dx = rng.choice(classes, n)
    images = rng.integers(40, 120, (n, 32, 32, 3))
    for channel, c in enumerate(classes):
        images[dx == c, :, :, channel] += 100
    return images.astype(np.uint8), dx


@pytest.mark.parametrize("task", ["mel_vs_rest", "malignant_vs_benign"])
def test_multiclass_head_learns_three_classes_and_scores_the_task_as_their_sum(task):
    from training.model import DX_ORDER, positive_classes, training_view

    keras.utils.set_random_seed(0)
    model = build_model(replace(TINY, head="multiclass"), 32, task=task)
    for layer in model.layers:  # the tiny backbone has no pretrained weights to keep
        layer.trainable = True
    fit = training_view(model)
    images, dx = _three_class_images(600, 0)
    fit.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    fit.fit(images, np.eye(len(DX_ORDER))[dx], batch_size=32, epochs=8, verbose=0)

    test_images, test_dx = _three_class_images(200, 1)
    probabilities = fit.predict(test_images, verbose=0)
    assert (probabilities.argmax(axis=1) == test_dx).mean() > 0.9
    score = model.predict(test_images, verbose=0).reshape(-1)
    expected = probabilities[:, positive_classes(task)].sum(axis=1)
    np.testing.assert_allclose(score, expected, atol=1e-6)
    assert positive_classes("mel_vs_rest") == [DX_ORDER.index("mel")]
    assert len(positive_classes("malignant_vs_benign")) == 3


def test_multiclass_model_saves_loads_and_explains(tmp_path):
    from melanoma.backbones import BACKBONES
    from training.gradcam import grad_cam

    model = build_model(replace(TINY, head="multiclass"), 32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    images, _ = _three_class_images(8, 2)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    maps = grad_cam(loaded, images, BACKBONES["tiny_cnn"].last_conv_layer, 4)
    assert maps.shape[0] == 8 and np.isfinite(maps).all() and (maps >= 0).all()


def test_multiscale_features_join_earlier_layers_save_load_and_explain(tmp_path):
    from melanoma.backbones import BACKBONES
    from training.gradcam import grad_cam
    from training.model import apply_head, earlier_pooled, image_input, pool_features

    model = build_model(replace(TINY, multiscale_features=True), 32)
    # tiny_block1 (16 channels) and tiny_block2 (32) join tiny_block3 (64).
    assert feature_extractor(model).output.shape[-1] == 16 + 32 + 64
    assert head_model(model).input.shape[-1] == 112
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    images, _ = _three_class_images(8, 2)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    # Grad-CAM's path to the score (last maps + earlier pooled maps → head) is the model's.
    last = BACKBONES["tiny_cnn"].last_conv_layer
    to_maps = keras.Model(
        image_input(loaded), [loaded.get_layer(last).output, *earlier_pooled(loaded)]
    )
    maps, *earlier = to_maps(images)
    assert len(earlier) == 2
    replayed = apply_head(loaded, pool_features(loaded, maps, earlier))
    np.testing.assert_allclose(np.asarray(replayed), expected, atol=1e-5)
    maps = grad_cam(loaded, images, last, 4)
    assert maps.shape == (8, 8, 8) and np.isfinite(maps).all() and (maps >= 0).all()


def test_task_logit_is_the_log_odds_of_the_positive_classes():
    import tensorflow as tf

    from training.gradcam import task_logit

    logits = np.random.default_rng(0).normal(size=(5, 7)).astype("float32")
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    positive = [0, 1, 4]
    odds = p[:, positive].sum(axis=1) / (1 - p[:, positive].sum(axis=1))
    np.testing.assert_allclose(task_logit(tf.constant(logits), positive), np.log(odds), rtol=1e-5)
    np.testing.assert_array_equal(task_logit(tf.constant(logits), None), logits[:, 0])


def test_test_time_augmentation_leaves_a_symmetric_image_unchanged():
    from melanoma.images import dihedral_views
    from training.model import predict_scores

    keras.utils.set_random_seed(0)
    model = build_model(TINY, 32)
    # Rings around the centre: the same under every flip and 90-degree rotation.
    y, x = np.mgrid[:32, :32] - 15.5
    rings = (np.hypot(x, y) * 9 % 256).astype(np.uint8)
    symmetric = np.repeat(rings[None, :, :, None], 3, axis=3)
    rng = np.random.default_rng(0)
    asymmetric = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    plain = predict_scores(model, symmetric, tta_views=1)
    for views in (2, 4, 8):
        np.testing.assert_allclose(
            predict_scores(model, symmetric, tta_views=views), plain, atol=1e-6
        )
    # Otherwise it is the mean over the views.
    each = [predict_scores(model, v)[0] for v in dihedral_views(asymmetric, 8)]
    assert predict_scores(model, asymmetric, tta_views=8)[0] == pytest.approx(np.mean(each))


def _metadata_signal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images whose label is in the metadata only: older patients' lesions are positive."""
    from melanoma import clinical

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    ages = rng.integers(20, 85, n)
    metadata = np.stack([clinical.encode(a, "male", "back") for a in ages])
    return images, metadata, (ages > 55).astype("float32")


def test_metadata_fusion_learns_from_metadata_and_scores_with_and_without_it(tmp_path):
    from sklearn.metrics import roc_auc_score

    from training.gradcam import grad_cam
    from training.model import predict_scores, takes_metadata

    keras.utils.set_random_seed(0)
    model = build_model(replace(TINY, metadata_fusion=True, metadata_dropout=0.3), 32)
    assert takes_metadata(model) and not takes_metadata(build_model(TINY, 32))
    images, metadata, labels = _metadata_signal(800, 0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    model.fit({"image": images, "metadata": metadata}, labels, batch_size=32, epochs=8, verbose=0)

    test_images, test_metadata, test_labels = _metadata_signal(300, 1)
    with_metadata = predict_scores(model, test_images, metadata=test_metadata)
    without = predict_scores(model, test_images)  # e.g. an external set with labels only
    assert roc_auc_score(test_labels, with_metadata) > 0.95
    # Without it there is no signal left, but every image still gets a finite score.
    assert np.isfinite(without).all() and len(without) == len(test_images)
    assert roc_auc_score(test_labels, without) < 0.7
    assert np.ptp(without) < np.ptp(with_metadata)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(
        predict_scores(loaded, test_images, metadata=test_metadata), with_metadata, atol=1e-6
    )
    for given in (test_metadata[:4], None):
        maps = grad_cam(
            loaded, test_images[:4], BACKBONES["tiny_cnn"].last_conv_layer, 2, metadata=given
        )
        assert maps.shape[0] == 4 and np.isfinite(maps).all() and (maps >= 0).all()


def test_metadata_dropout_hides_whole_vectors_in_training_only():
    from training.model import MetadataDropout

    layer = MetadataDropout(0.3, seed=1)
    vectors = np.ones((4000, 5), "float32")
    trained = keras.ops.convert_to_numpy(layer(vectors, training=True))
    kept = trained.any(axis=1)
    assert set(np.unique(trained.sum(axis=1))) == {0.0, 5.0}, "a vector is kept or hidden whole"
    assert kept.mean() == pytest.approx(0.7, abs=0.03)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(vectors)), vectors)
