import keras
import numpy as np
import pytest

from melanoma.backbones import BACKBONES
from training.model import (
    build_model,
    feature_extractor,
    head_model,
    unfreeze_last_blocks,
)


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_resnet50_default_structure_and_parameter_counts():
    model = build_model("resnet50", 224)
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
    model = build_model(name, 32 if name == "tiny_cnn" else 96)
    layer = model.get_layer(BACKBONES[name].last_conv_layer)
    assert len(layer.output.shape) == 4
    assert unfreeze_last_blocks(model, name, 1), "its block pattern matches the built layers"


def test_unfreezing_keeps_batch_norm_frozen():
    model = build_model("mobilenet_v2", 96)
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


def test_cached_feature_phase1_equals_plain_phase1():
    """Training the head on precomputed features gives the model that training it end to end gives."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    labels = (images[:, :16].mean(axis=(1, 2, 3)) > 127).astype("float32")
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        models.append(build_model("tiny_cnn", 32, seed=3))
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


def test_fine_tuning_that_never_beats_its_baseline_keeps_the_starting_weights():
    from training.train import ValidationAUROC

    model = build_model("tiny_cnn", 32, seed=1)
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
