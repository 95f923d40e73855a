"""Reduced precision and XLA on the CPU: the GPU's code paths, exercised where no GPU is.

Every reduced policy that TensorFlow's CPU kernels run is tested here (both of Keras':
mixed_float16 and mixed_bfloat16), so none is skipped on a CPU-only machine.
"""

from dataclasses import replace

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.config import TrainConfig
from tests.trained_runs import FAST, copy_run
from training.checkpoints import StoreCheckpoints
from training.device import configure_device, dtype_policy, resolve_precision
from training.gradcam import grad_cam
from training.model import (
    build_model,
    feature_extractor,
    head_model,
    predict_scores,
    split_at_trainable,
    unfreeze_last_blocks,
)
from training.run_model import load_model
from training.train import train_run

REDUCED = ["mixed_float16", "mixed_bfloat16"]
TINY = TrainConfig(backbone="tiny_cnn", seed=3)


def bright_and_dark(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose label is a dark square in the middle: a signal the tiny CNN learns."""
    rng = np.random.default_rng(seed)
    images = rng.integers(120, 200, (n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype("float32")
    images[labels == 1, 8:24, 8:24] //= 4
    return images, labels


def trained_head(policy: str, jit: bool = False) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """The tiny model under ``policy``, its head trained on cached features."""
    images, labels = bright_and_dark(96, 0)
    with dtype_policy(policy):
        keras.utils.set_random_seed(3)
        model = build_model(TINY, 32)
        head = head_model(model)
        head.compile(
            optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", jit_compile=jit
        )
        features = feature_extractor(model).predict(images, verbose=0)
        head.fit(features, labels, batch_size=16, epochs=15, verbose=0)
    return model, images, labels


def test_auto_precision_is_float32_on_a_cpu_and_mixed_float16_on_a_gpu():
    assert resolve_precision("auto", gpu=False) == "float32"
    assert resolve_precision("auto", gpu=True) == "mixed_float16"
    assert resolve_precision("mixed_bfloat16", gpu=False) == "mixed_bfloat16"
    device = configure_device("auto")
    assert device["precision"] == ("mixed_float16" if device["gpu"] else "float32")


def test_the_policy_holds_inside_the_block_only():
    before = keras.mixed_precision.global_policy().name
    with dtype_policy("mixed_bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == before == "float32"


@pytest.mark.parametrize("policy", REDUCED)
def test_a_reduced_precision_model_learns_the_signal_with_a_float32_output(policy):
    model, images, labels = trained_head(policy)
    assert model.get_layer("head_dense").compute_dtype == policy.removeprefix("mixed_")
    assert model.output.dtype == "float32", "the score leaves the model in float32"
    scores = predict_scores(model, images, 32)
    assert scores.dtype == np.float64 and np.isfinite(scores).all()
    assert roc_auc_score(labels, scores) > 0.9


@pytest.mark.parametrize("policy", REDUCED)
def test_float16_gets_a_loss_scale_optimizer_and_bfloat16_needs_none(policy):
    with dtype_policy(policy):
        model = build_model(TINY, 32)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # bfloat16 has float32's exponent range: gradients do not underflow, no scaling needed.
    assert scaled == (policy == "mixed_float16")


@pytest.mark.parametrize("policy", REDUCED)
def test_grad_cam_under_reduced_precision_matches_float32(policy):
    """The same weights, explained in float32 and under the policy: the maps, each scaled
    to its maximum, agree within 0.05 everywhere (a float16 map's rounding is ~1e-3;
    bfloat16 keeps 8 bits of mantissa, ~0.4%, compounded through the layers)."""
    reduced, images, _ = trained_head(policy)
    with dtype_policy("float32"):
        full = build_model(TINY, 32)
    full.set_weights([np.asarray(w, np.float32) for w in reduced.get_weights()])
    layer = "tiny_block3_relu"
    maps = [grad_cam(m, images[:8], layer) for m in (full, reduced)]
    assert maps[0].shape == maps[1].shape and maps[1].dtype == np.float32
    peak = [m.max(axis=(1, 2), keepdims=True) + 1e-12 for m in maps]
    np.testing.assert_allclose(maps[1] / peak[1], maps[0] / peak[0], atol=0.05)


@pytest.mark.parametrize("policy", REDUCED)
def test_cached_phase1_predicts_as_uncached_phase1_under_reduced_precision(policy):
    """Under a reduced policy the two paths round differently, so their weights drift
    apart a little: their scores agree within 0.02 and rank the images alike."""
    images, labels = bright_and_dark(48, 1)
    scores = []
    with dtype_policy(policy):
        for cached in (False, True):
            keras.utils.set_random_seed(3)
            model = build_model(TINY, 32)
            target = head_model(model) if cached else model
            target.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
            x = feature_extractor(model).predict(images, verbose=0) if cached else images
            target.fit(x, labels, batch_size=16, epochs=3, shuffle=False, verbose=0)
            scores.append(predict_scores(model, images, 16))
    np.testing.assert_allclose(scores[1], scores[0], atol=0.02)
    assert np.corrcoef(scores[0], scores[1])[0, 1] > 0.99


@pytest.mark.parametrize("policy", ["float32", *REDUCED])
def test_xla_compiles_the_head_and_a_phase2_step(policy):
    """``jit_compile=True``, as training compiles on a GPU: the head learns, and a
    fine-tuning step on the unfrozen model and on the cached trunk's top runs and moves
    the weights, giving the loss the uncompiled step gives."""
    model, images, labels = trained_head(policy, jit=True)
    assert roc_auc_score(labels, predict_scores(model, images, 32)) > 0.9
    with dtype_policy(policy):
        unfreeze_last_blocks(model, "tiny_cnn", 1)
        split = split_at_trainable(model)
        assert split is not None
        losses = []
        for jit in (False, True):
            model.compile(
                optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy", jit_compile=jit
            )
            losses.append(float(model.test_on_batch(images[:16], labels[:16])))
        split.top.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", jit_compile=True
        )
        before = [np.array(w) for w in split.top.trainable_weights]
        trunk = split.trunk.predict(images[:16], verbose=0)
        loss = split.top.train_on_batch(trunk, labels[:16])
    assert np.isfinite(loss)
    assert losses[1] == pytest.approx(losses[0], rel=0.02)
    assert any(
        not np.array_equal(a, np.array(b))
        for a, b in zip(before, split.top.trainable_weights, strict=True)
    )


@pytest.mark.parametrize("policy", REDUCED)
def test_a_checkpoint_written_under_reduced_precision_resumes(preprocessed_run, policy):
    run = copy_run(preprocessed_run, f"t-resume-{policy}")
    with dtype_policy(policy):
        keras.utils.set_random_seed(1)
        saved = build_model(TINY, 32)
        StoreCheckpoints(run, saved).mark_complete("phase1", {"loss": [0.5]}, 0)
        keras.utils.set_random_seed(2)
        fresh = build_model(TINY, 32)
        resumed = StoreCheckpoints(run, fresh).resume("phase1")
    assert resumed is not None and resumed[0]["complete"]
    for a, b in zip(saved.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("policy", REDUCED)
def test_training_under_reduced_precision_learns_checkpoints_and_saves(preprocessed_run, policy):
    """The train stage end to end under the policy: cached phase 1, phase 2 on the whole
    model, the per-epoch checkpoints in the store, and the saved model, which loads with
    its policy and scores the test images as recorded."""
    run = copy_run(preprocessed_run, f"t-{policy}")
    train_run(run, replace(TrainConfig(**FAST), precision=policy))
    assert keras.mixed_precision.global_policy().name == "float32", "the policy was restored"
    summary = run.commit_record("train")["data"]["summary"]
    assert summary["device"]["precision"] == policy
    assert summary["val_auroc_final"] > 0.9, summary
    for phase in ("phase1", "phase2"):
        assert run.store.exists(run.layout.checkpoint(phase)[2]), f"{phase} checkpointed"
    model = load_model(run)
    assert model.get_layer("head_dense").dtype_policy.name == policy
    from training.data import split_arrays

    images, _ = split_arrays(run, "test")
    np.testing.assert_allclose(
        predict_scores(model, images), run.predictions("test")["probability"], atol=1e-5
    )
