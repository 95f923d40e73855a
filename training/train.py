"""Stage train: transfer learning, phase 1 (frozen backbone), phase 2 (last blocks fine-tuned).

Reads the shards the preprocess stage committed; writes ``model/model.keras``,
``model/history.json``, ``model/training_config.json`` and ``predictions/{val,test}.csv``,
then the stage's commit record. Checkpoints (``model/checkpoints/``) let a retried task
resume; they are state, not committed artifacts.

On a CPU, phase 1 computes the frozen backbone's pooled features once and trains
the head on them (online augmentation is off for that phase: augmenting would need
the backbone again); on a GPU it trains the full model with augmentation. Both give
the same model for the same data. On a GPU, training uses mixed precision (float32
output) and XLA.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from melanoma import RESEARCH_NOTICE, clinical
from melanoma.config import TrainConfig, parse_class_weight
from melanoma.download import file_digest
from melanoma.ham10000 import DX_INDEX
from melanoma.images import dihedral_views
from melanoma.layout import record_of
from melanoma.ood import VALIDATION_PASS_SHARE, MahalanobisDetector, fit_mahalanobis
from melanoma.run import Run
from melanoma.shifts import random_acquisition_shifts
from melanoma.store import ArtifactCorruptError, ObjectStore, open_store, sha256_hex
from training.data import run_metadata, shard_dataset, split_arrays, split_rows
from training.model import (
    DX_ORDER,
    METADATA_INPUT,
    TrunkSplit,
    build_model,
    feature_extractor,
    head_model,
    positive_classes,
    predict_scores,
    predict_scores_and_features,
    split_at_trainable,
    training_view,
    unfreeze_last_blocks,
    with_features,
)

log = logging.getLogger(__name__)


def class_weights(
    config: TrainConfig, targets: np.ndarray, task: str = "mel_vs_rest"
) -> dict[int, float] | None:
    """Per-class loss weights for the training targets (0/1 labels, or dx indices for the
    multiclass head). ``balanced`` balances the label task: the positives together weigh
    as much as the negatives together, n / (2 x count). For the multiclass head each
    diagnosis gets its side's weight, n / (2 x the count of its side), so the task is
    balanced while the diagnoses within a side keep their proportions."""
    if config.imbalance != "class_weight":
        return None
    if config.head == "multiclass":
        if config.class_weight != "balanced":
            raise ValueError("the multiclass head takes class_weight 'balanced' only")
        positive = np.isin(np.arange(len(DX_ORDER)), positive_classes(task))
        sides = positive[targets.astype(int)]
        n_positive = max(1, int(sides.sum()))
        n_negative = max(1, len(targets) - int(sides.sum()))
        return {
            k: float(len(targets) / (2 * (n_positive if positive[k] else n_negative)))
            for k in range(len(DX_ORDER))
        }
    if config.class_weight == "balanced":
        counts = np.bincount(targets.astype(int), minlength=2)
        return {k: float(len(targets) / (2 * max(1, counts[k]))) for k in range(2)}
    w0, w1 = parse_class_weight(config.class_weight)
    return {0: w0, 1: w1}


def cpu_threads(environ: dict[str, str] | None = None) -> int:
    """The CPU threads TensorFlow may use: ``MELANOMA_TF_THREADS`` or every core this
    process may run on (its affinity, which a container's cpuset narrows)."""
    env = os.environ if environ is None else environ
    if env.get("MELANOMA_TF_THREADS"):
        return max(1, int(env["MELANOMA_TF_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_device() -> dict[str, Any]:
    """Every core for TensorFlow's ops; mixed precision and XLA on a GPU, float32 on a CPU.

    The thread pools are set before TensorFlow starts its runtime: after, they are fixed.
    """
    threads = cpu_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime already started (a second call in one process)
        threads = tf.config.threading.get_intra_op_parallelism_threads() or threads
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    return {
        "gpu": bool(gpus),
        "devices": [d.name for d in gpus] or ["CPU"],
        "precision": keras.mixed_precision.global_policy().name,
        "xla": bool(gpus),
        "cpu_threads": threads,
    }


def loss_for(config: TrainConfig) -> keras.losses.Loss:
    smoothing = config.label_smoothing
    if config.head == "multiclass":
        return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    if config.imbalance == "focal":
        return keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True,
            alpha=config.focal_alpha,
            gamma=config.focal_gamma,
            label_smoothing=smoothing,
        )
    return keras.losses.BinaryCrossentropy(label_smoothing=smoothing)


def training_target(config: TrainConfig) -> str:
    """What the loss learns from: the task's label, or the diagnosis (multiclass head)."""
    return "dx" if config.head == "multiclass" else "label"


def one_hot_dx(images, dx):
    return images, tf.one_hot(dx, len(DX_ORDER))


def steps_per_epoch(config: TrainConfig, targets: np.ndarray) -> int:
    if config.imbalance == "undersample":
        return math.ceil(2 * int((targets == 1).sum()) / config.batch_size)
    return math.ceil(len(targets) / config.batch_size)


def phase2_optimizer(config: TrainConfig, steps: int) -> keras.optimizers.Optimizer:
    """Adam at the phase-2 rate, constant or decaying to 0 on a cosine over the phase's
    steps (Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts)."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = config.phase2_learning_rate
    if config.phase2_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            config.phase2_learning_rate, decay_steps=max(1, config.phase2_epochs * steps)
        )
    return keras.optimizers.Adam(rate)


def augment_batch_fn(seed: int, acquisition_views: int = 0):
    """Online augmentation on uint8 batches: flips, rotation, zoom, brightness, contrast,
    saturation; with ``acquisition_views`` V, first a random acquisition shift on a share
    V/(V+1) of the images, the mix that cached phase 1's V copies give."""
    shift_rng = np.random.default_rng(seed)
    share = acquisition_views / (acquisition_views + 1)
    geometric = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom((-0.2, 0.0), fill_mode="reflect", seed=seed + 2),
        ]
    )

    def apply(inputs, labels):
        # The images alone, or the "image" of the model's named inputs (metadata fusion).
        images = inputs["image"] if isinstance(inputs, dict) else inputs
        if acquisition_views:
            shifted = tf.numpy_function(
                lambda batch: random_acquisition_shifts(batch, shift_rng, share),
                [images],
                tf.uint8,
                stateful=True,
            )
            images = tf.ensure_shape(shifted, images.shape)
        x = geometric(tf.cast(images, tf.float32), training=True) / 255.0
        x = tf.image.random_brightness(x, 0.1, seed=seed + 3)
        x = tf.image.random_contrast(x, 0.85, 1.15, seed=seed + 4)
        x = tf.image.random_saturation(x, 0.85, 1.15, seed=seed + 5)
        augmented = tf.cast(tf.clip_by_value(x, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)
        return ({**inputs, "image": augmented} if isinstance(inputs, dict) else augmented), labels

    return apply


def train_dataset(
    run: Run,
    config: TrainConfig,
    augment: bool,
    data: TrainingData,
) -> tuple[tf.data.Dataset, int]:
    """Batched training data for the configured imbalance strategy, and its steps per epoch."""
    steps = steps_per_epoch(config, data.train_labels)
    examples = shard_dataset(
        run,
        "train",
        include_augmented=config.imbalance == "oversample",
        shuffle_seed=config.seed,
        target=training_target(config),
        metadata=data.metadata,
    )
    if config.imbalance == "undersample":
        positives = examples.filter(lambda x, y: y == 1).repeat().shuffle(512, seed=config.seed)
        negatives = (
            examples.filter(lambda x, y: y == 0).repeat().shuffle(2048, seed=config.seed + 1)
        )
        examples = tf.data.Dataset.sample_from_datasets(
            [positives, negatives], [0.5, 0.5], seed=config.seed
        )
        batches = examples.batch(config.batch_size).take(steps)
    else:
        batches = examples.shuffle(2048, seed=config.seed, reshuffle_each_iteration=True).batch(
            config.batch_size
        )
    if augment:
        batches = batches.map(
            augment_batch_fn(config.seed, config.acquisition_views),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if config.head == "multiclass":
        batches = batches.map(one_hot_dx)
    options = tf.data.Options()
    options.threading.private_threadpool_size = cpu_threads()
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options), steps


@dataclass
class MonitorState:
    """Where early stopping stands: the best AUROC so far, its epoch and weights, and how
    many epochs since. A phase resumed after a crash carries it on from its checkpoint."""

    best: float = -np.inf
    best_epoch: int = -1
    wait: int = 0
    best_weights: list[np.ndarray] | None = None


class ValidationAUROC(keras.callbacks.Callback):
    """Validation AUROC each epoch, early stopping on it, best weights restored at the end.

    Also checkpoints to the store after every epoch, so a retried task resumes. With
    ``baseline`` (the AUROC of the weights the phase starts from), the phase must beat
    it: fine-tuning that never does leaves the starting weights in place (best_epoch -1).
    ``resumed`` carries a crashed attempt's state on.
    """

    def __init__(
        self,
        predict,
        labels: np.ndarray,
        patience: int,
        checkpoint=None,
        baseline: float | None = None,
        resumed: MonitorState | None = None,
    ):
        super().__init__()
        self.predict, self.labels, self.patience, self.checkpoint = (
            predict,
            labels,
            patience,
            checkpoint,
        )
        self.state = resumed or MonitorState(-np.inf if baseline is None else baseline)

    @property
    def best_epoch(self) -> int:
        return self.state.best_epoch

    def on_train_begin(self, logs=None):
        if np.isfinite(self.state.best) and self.state.best_weights is None:
            self.state.best_weights = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        auroc = float(roc_auc_score(self.labels, self.predict()))
        if logs is not None:
            logs["val_auroc"] = auroc
        state = self.state
        if auroc > state.best:
            state.best, state.best_epoch, state.best_weights, state.wait = (
                auroc,
                epoch,
                self.model.get_weights(),
                0,
            )
        else:
            state.wait += 1
            if state.wait >= self.patience:
                self.model.stop_training = True
        if self.checkpoint:
            self.checkpoint(epoch, logs or {}, state)

    def on_train_end(self, logs=None):
        if self.state.best_weights is not None:
            self.model.set_weights(self.state.best_weights)


class StoreCheckpoints:
    """Per-phase checkpoints in the store, written after each epoch: the last weights (to
    go on from), the best weights (to restore at the end) and a JSON state, written last,
    with the weights' sha256. A crash between the writes leaves weights that the state
    does not describe; the phase then starts over rather than mix two epochs."""

    def __init__(self, run: Run, model: keras.Model):
        self.store, self.layout, self.model = run.store, run.layout, model

    def _put_weights(self, key: str) -> str:
        """Store the model's weights at ``key``; return their sha256."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.weights.h5"
            self.model.save_weights(path)
            self.store.put_file(key, path)
            return sha256_hex(path.read_bytes())

    def _get_weights(self, key: str, sha256: str | None) -> bool:
        """Load the weights at ``key`` into the model if they are the ones recorded."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.weights.h5"
            self.store.get_file(key, path)
            if sha256 and sha256_hex(path.read_bytes()) != sha256:
                return False
            optimizer = getattr(self.model, "optimizer", None)
            if optimizer is not None and not optimizer.built:
                # Built, its Adam moments are restored too: the phase goes on, not restarts.
                optimizer.build(self.model.trainable_variables)
            self.model.load_weights(path)
            return True

    def _put_arrays(self, key: str, arrays: list[np.ndarray]) -> str:
        """The monitor's best weights, as arrays: they may be a head model's, not the model's."""
        buffer = io.BytesIO()
        np.savez(buffer, *arrays)
        self.store.put_bytes(key, buffer.getvalue())
        return sha256_hex(buffer.getvalue())

    def _get_arrays(self, key: str, sha256: str) -> list[np.ndarray] | None:
        data = self.store.get_bytes(key)
        if sha256_hex(data) != sha256:
            return None
        with np.load(io.BytesIO(data)) as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    def saver(self, phase: str, history: dict[str, list[float]]):
        weights_key, best_key, state_key = self.layout.checkpoint(phase)
        best_sha256: str | None = None

        def save(epoch: int, logs: dict[str, float], monitor: MonitorState) -> None:
            nonlocal best_sha256
            for name, value in logs.items():
                history.setdefault(name, []).append(float(value))
            weights_sha256 = self._put_weights(weights_key)
            if monitor.best_weights is not None and (
                monitor.best_epoch == epoch or best_sha256 is None
            ):
                best_sha256 = self._put_arrays(best_key, monitor.best_weights)
            self.store.put_json(
                state_key,
                {
                    "phase": phase,
                    "epoch": epoch,
                    "complete": False,
                    "history": history,
                    "weights_sha256": weights_sha256,
                    "best": monitor.best if np.isfinite(monitor.best) else None,
                    "best_epoch": monitor.best_epoch,
                    "wait": monitor.wait,
                    "best_sha256": best_sha256,
                },
            )

        return save

    def mark_complete(self, phase: str, history: dict[str, list[float]], best_epoch: int) -> None:
        weights_key, _, state_key = self.layout.checkpoint(phase)
        weights_sha256 = self._put_weights(weights_key)
        self.store.put_json(
            state_key,
            {
                "phase": phase,
                "complete": True,
                "best_epoch": best_epoch,
                "history": history,
                "weights_sha256": weights_sha256,
            },
        )

    def resume(self, phase: str) -> tuple[dict[str, Any], MonitorState | None] | None:
        """Load a phase's checkpoint into the model; return its state and, for a phase
        cut short, its early-stopping state. None if there is no usable checkpoint."""
        weights_key, best_key, state_key = self.layout.checkpoint(phase)
        if not self.store.exists(state_key):
            return None
        state = self.store.get_json(state_key)
        monitor = None
        # A checkpoint from before best weights were kept carries no early-stopping
        # state: the phase goes on from its last epoch with a fresh one.
        if not state["complete"] and state.get("best_sha256"):
            best_weights = self._get_arrays(best_key, state["best_sha256"])
            if best_weights is None:
                log.warning("%s: best weights differ from the state's; starting over", phase)
                return None
            monitor = MonitorState(
                state["best"] if state.get("best") is not None else -np.inf,
                state.get("best_epoch", -1),
                state.get("wait", 0),
                best_weights,
            )
        before = self.model.get_weights()
        if not self._get_weights(weights_key, state.get("weights_sha256")):
            log.warning("%s: checkpoint weights differ from its state; starting over", phase)
            self.model.set_weights(before)
            return None
        log.info(
            "resuming %s from its checkpoint (epoch %s, complete=%s)",
            phase,
            state.get("epoch"),
            state["complete"],
        )
        return state, monitor


def fetch_pretrained(store: ObjectStore, weights_key: str, directory: Path) -> Path:
    """The stored ImageNet weights file, checked against its record's sha256."""
    path = directory / Path(weights_key).name
    store.get_file(weights_key, path)
    expected = store.get_json(record_of(weights_key))["sha256"]
    actual = file_digest(path)
    if actual != expected:
        raise ArtifactCorruptError(
            f"{store.url}/{weights_key}: sha256 {actual}, its record says {expected}"
        )
    return path


@dataclass(frozen=True)
class TrainingData:
    """What both phases fit and monitor on, read once from the run's shards."""

    train_labels: np.ndarray  # original images' labels (with the copies when oversampling)
    train_targets: np.ndarray  # what the loss learns: the labels, or the dx indices (multiclass)
    val_images: np.ndarray
    val_rows: Any  # pandas DataFrame: image_id, lesion_id, dx, label, ...
    class_weight: dict[int, float] | None
    # Metadata fusion: image id -> metadata vector (melanoma.clinical); None without it.
    metadata: dict[str, np.ndarray] | None = None

    @property
    def val_labels(self) -> np.ndarray:
        return self.val_rows["label"].to_numpy()

    @property
    def val_metadata(self) -> np.ndarray | None:
        return self.metadata_of(self.val_rows)

    def metadata_of(self, rows: Any) -> np.ndarray | None:
        """The rows' metadata vectors, in order (None without metadata fusion)."""
        if self.metadata is None:
            return None
        return clinical.matrix(rows["image_id"], self.metadata)

    @classmethod
    def read(cls, run: Run, config: TrainConfig) -> TrainingData:
        rows = split_rows(run, "train")
        if config.imbalance != "oversample":
            rows = rows[rows["augmented"] == 0]
        train_labels = rows["label"].to_numpy()
        targets = train_labels if config.head == "binary" else rows["dx"].map(DX_INDEX).to_numpy()
        val_images, val_rows = split_arrays(run, "val")
        metadata = run_metadata(run) if config.metadata_fusion else None
        weights = class_weights(config, targets, run.config().label_task)
        return cls(train_labels, targets, val_images, val_rows, weights, metadata)


def train_run(run: Run, config: TrainConfig, weights_key: str | None = None) -> str:
    """Stage train: both phases, then predictions, model and history; return the commit key."""
    device = configure_device()
    keras.utils.set_random_seed(config.seed)
    use_cache = config.feature_cache == "on" or (
        config.feature_cache == "auto" and not device["gpu"]
    )
    image_size = int(run.preprocess_data()["image_size"])
    with tempfile.TemporaryDirectory() as tmp:
        weights_path = (
            str(fetch_pretrained(run.store, weights_key, Path(tmp))) if weights_key else None
        )
        model = build_model(
            config.backbone,
            image_size,
            weights_path,
            config.seed,
            config.head,
            run.config().label_task,
            config.metadata_dropout if config.metadata_fusion else None,
            config.multiscale_features,
        )
    data = TrainingData.read(run, config)
    fitted = fit_phases(model, run, config, data, device, use_cache)
    return write_training_outputs(run, model, config, data, fitted, weights_key)


class PhaseFitter:
    """The two phases of one model: phase 1 (frozen backbone), then phase 2 (the last
    blocks fine-tuned), each resumed from its checkpoint when a retried task finds one.
    ``history`` and ``timing`` gather what each phase did."""

    def __init__(
        self,
        model: keras.Model,
        run: Run,
        config: TrainConfig,
        data: TrainingData,
        device: dict[str, Any],
    ):
        self.model, self.run, self.config, self.data = model, run, config, data
        # What the loss sees (the model, or its 7-class softmax); it shares the model's weights.
        self.fit_model = training_view(model)
        self.checkpoints = StoreCheckpoints(run, self.fit_model)
        self.history: dict[str, Any] = {"phase1": {}, "phase2": {}}
        self.timing: dict[str, Any] = {}
        self.compile_kwargs = {"loss": loss_for(config), "jit_compile": device["xla"]}

    def validation_auroc(self) -> float:
        data = self.data
        scores = predict_scores(self.model, data.val_images, 64, metadata=data.val_metadata)
        return float(roc_auc_score(data.val_labels, scores))

    def fit_online(
        self,
        phase: str,
        epochs: int,
        initial_epoch: int,
        baseline: float | None = None,
        resumed: MonitorState | None = None,
    ) -> int:
        """Fit the full model on the shards with online augmentation; return the steps per epoch."""
        config, data = self.config, self.data
        batches, steps = train_dataset(self.run, config, config.online_augmentation, data)
        # Monitored on the images as they are: test-time augmentation would multiply
        # every epoch's validation cost by its views.
        monitor = ValidationAUROC(
            lambda: predict_scores(self.model, data.val_images, 64, metadata=data.val_metadata),
            data.val_labels,
            config.patience,
            self.checkpoints.saver(phase, self.history[phase]),
            baseline,
            resumed,
        )
        self.fit_model.fit(
            batches,
            epochs=epochs,
            initial_epoch=initial_epoch,
            class_weight=data.class_weight,
            callbacks=[monitor],
            verbose=2,
        )
        self.history[phase]["best_epoch"] = monitor.best_epoch
        return steps

    def phase1(self, use_cache: bool) -> None:
        """The head on the frozen backbone: on cached pooled features, or online."""
        history, config = self.history, self.config
        resumed = self.checkpoints.resume("phase1")
        if resumed and resumed[0]["complete"]:
            history["phase1"] = resumed[0]["history"]
            self.timing["phase1"] = {"resumed": True}
            return
        started = time.monotonic()
        if use_cache:
            self.timing["phase1"] = _phase1_cached(
                self.model,
                self.run,
                config,
                self.data,
                self.checkpoints,
                history["phase1"],
                self.compile_kwargs,
            )
        else:
            self.fit_model.compile(
                optimizer=keras.optimizers.Adam(config.phase1_learning_rate),
                **self.compile_kwargs,
            )
            self.fit_online("phase1", config.phase1_epochs, 0)
            self.timing["phase1"] = {"cached_features": False}
        self.timing["phase1"]["seconds"] = round(time.monotonic() - started, 1)
        self.checkpoints.mark_complete(
            "phase1", history["phase1"], history["phase1"].get("best_epoch", -1)
        )

    def phase2(self, phase1_auroc: float) -> None:
        """The last blocks fine-tuned (batch norm frozen); it must beat phase 1 on
        validation, or phase 1's weights stay."""
        config, history = self.config, self.history
        resumed = self.checkpoints.resume("phase2") if config.phase2_epochs else None
        state, monitor = resumed or ({}, None)
        initial_epoch = 0
        if state:
            history["phase2"] = state["history"]
            initial_epoch = len(state["history"].get("loss", []))
        if not config.phase2_epochs or state.get("complete"):
            return
        started = time.monotonic()
        split = phase2_split(self.model, self.run, config)
        cache: dict[str, Any] = {"cached_views": 0}
        if split is None:
            steps = self.fit_online(
                "phase2", config.phase2_epochs, initial_epoch, phase1_auroc, monitor
            )
        else:
            steps, cache = _phase2_cached(
                split,
                self.run,
                config,
                self.data,
                self.checkpoints,
                history["phase2"],
                self.compile_kwargs,
                initial_epoch,
                phase1_auroc,
                monitor,
            )
        seconds = time.monotonic() - started
        epochs_run = len(history["phase2"].get("loss", [])) - initial_epoch
        fit_seconds = seconds - cache.get("cache_seconds", 0.0)
        self.timing["phase2"] = {
            "seconds": round(seconds, 1),
            "epochs": epochs_run,
            "resumed_at_epoch": initial_epoch,
            # per-epoch validation AUROC included: it is part of what an epoch costs
            "images_per_second": round(epochs_run * steps * config.batch_size / fit_seconds, 1),
            **cache,
        }
        self.checkpoints.mark_complete("phase2", history["phase2"], history["phase2"]["best_epoch"])


def fit_phases(
    model: keras.Model,
    run: Run,
    config: TrainConfig,
    data: TrainingData,
    device: dict[str, Any],
    use_cache: bool,
) -> dict[str, Any]:
    """Phase 1, then phase 2 (:class:`PhaseFitter`). Returns history, timing and summary."""
    fitter = PhaseFitter(model, run, config, data, device)
    fitter.phase1(use_cache)
    phase1_auroc = fitter.validation_auroc()
    unfrozen = unfreeze_last_blocks(model, config.backbone, config.unfreeze_blocks)
    fitter.fit_model.compile(
        optimizer=phase2_optimizer(config, steps_per_epoch(config, data.train_targets)),
        **fitter.compile_kwargs,
    )
    fitter.phase2(phase1_auroc)
    return {
        "history": fitter.history,
        "summary": {
            "val_auroc_after_phase1": round(phase1_auroc, 4),
            "unfrozen_blocks": unfrozen,
            "timing": fitter.timing,
            "device": device,
        },
        "feature_cache": use_cache,
    }


def phase2_split(model: keras.Model, run: Run, config: TrainConfig) -> TrunkSplit | None:
    """The cut for a cached phase 2 (``phase2_cached_views``), or None for the uncached
    one: when it is off, when the model cannot be cut (``split_at_trainable``), with
    undersampling (its balanced batches are drawn anew each epoch), or when the cache
    would pass ``MELANOMA_PHASE2_CACHE_GB`` (default 6). Each fallback is logged."""
    views = config.phase2_cached_views
    if not views:
        return None
    split = split_at_trainable(model) if config.imbalance != "undersample" else None
    if split is None:
        log.warning("phase 2 cannot run on a cached trunk here; it runs on the whole model")
        return None
    images = sum(int(entry["rows"]) for entry in run.shards("train"))
    per_image = sum(int(np.prod(t.shape[1:])) for t in split.trunk.outputs) * 2  # float16
    budget = float(os.environ.get("MELANOMA_PHASE2_CACHE_GB", "6")) * 1e9
    if per_image * images * views > budget:
        log.warning(
            "phase 2's cache would take %.1f GB (%d images x %d views), over "
            "MELANOMA_PHASE2_CACHE_GB; it runs on the whole model",
            per_image * images * views / 1e9,
            images,
            views,
        )
        return None
    return split


class CachedViewBatches(keras.utils.PyDataset):
    """Phase 2's batches from the cached trunk outputs: each image in one of its cached
    views, drawn anew every epoch, in a new order every epoch."""

    def __init__(self, cache: list[np.ndarray], targets: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.cache, self.targets, self.batch_size = cache, targets, batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        inputs = [part[self.views[rows], rows] for part in self.cache]
        return (inputs if len(inputs) > 1 else inputs[0]), self.targets[rows]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.targets))
        self.views = self.rng.integers(0, len(self.cache[0]), len(self.targets))


def trunk_outputs(split: TrunkSplit, images: np.ndarray) -> list[np.ndarray]:
    """The trunk's outputs (the top's inputs) for images, as float16; 64 at a time, since
    an early layer's maps for a whole split would not fit in memory."""
    outputs = split.trunk.predict(images, batch_size=64, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return [np.asarray(o, dtype=np.float16) for o in outputs]


def _phase2_cached(
    split: TrunkSplit,
    run: Run,
    config: TrainConfig,
    data: TrainingData,
    checkpoints: StoreCheckpoints,
    history: dict[str, Any],
    compile_kwargs: dict[str, Any],
    initial_epoch: int,
    baseline: float,
    resumed: MonitorState | None,
) -> tuple[int, dict[str, Any]]:
    """Phase 2 on the frozen trunk's outputs, computed once per image and view (the first
    ``phase2_cached_views`` flips and rotations) and kept as float16; returns the steps
    per epoch and what the cache cost. The top shares the model's weights, so the model
    ends fine-tuned; a resumed attempt keeps its weights and starts a fresh optimizer."""
    started = time.monotonic()
    views = config.phase2_cached_views
    examples = shard_dataset(
        run,
        "train",
        include_augmented=config.imbalance == "oversample",
        target=training_target(config),
    )
    chunks: list[list[list[np.ndarray]]] = []  # per batch, per view, per top input
    targets = []
    for images, y in examples.batch(64).prefetch(2):
        chunks.append([trunk_outputs(split, v) for v in dihedral_views(images.numpy(), views)])
        targets.append(y.numpy())
    cache = [
        np.stack([np.concatenate([batch[v][i] for batch in chunks]) for v in range(views)])
        for i in range(len(chunks[0][0]))
    ]
    del chunks
    val_cache = trunk_outputs(split, data.val_images)
    y = np.concatenate(targets)
    if config.head == "multiclass":
        y = np.eye(len(DX_ORDER), dtype="float32")[y]
    cache_seconds = time.monotonic() - started
    batches = CachedViewBatches(cache, y, config.batch_size, config.seed)
    split.top.compile(optimizer=phase2_optimizer(config, len(batches)), **compile_kwargs)
    monitor = ValidationAUROC(
        lambda: split.scorer.predict(
            val_cache if len(val_cache) > 1 else val_cache[0], batch_size=256, verbose=0
        ).reshape(-1),
        data.val_labels,
        config.patience,
        checkpoints.saver("phase2", history),
        baseline,
        resumed,
    )
    split.top.fit(
        batches,
        epochs=config.phase2_epochs,
        initial_epoch=initial_epoch,
        class_weight=data.class_weight,
        callbacks=[monitor],
        verbose=2,
    )
    history["best_epoch"] = monitor.best_epoch
    return len(batches), {
        "cached_views": views,
        "cache_seconds": round(cache_seconds, 1),
        "cache_megabytes": round(sum(part.nbytes for part in cache) / 1e6, 1),
        "cached_images": len(y),
    }


def write_training_outputs(
    run: Run,
    model: keras.Model,
    config: TrainConfig,
    data: TrainingData,
    fitted: dict[str, Any],
    weights_key: str | None,
) -> str:
    """Predictions on val and test, the model, its history and configuration; commit them."""
    layout, summary = run.layout, fitted["summary"]
    detector = fit_ood_detector(run, feature_extractor(model), data.metadata)
    scoring = with_features(model)
    with run.stage("train") as stage:
        for split in ("val", "test"):
            images, rows = (
                (data.val_images, data.val_rows) if split == "val" else split_arrays(run, "test")
            )
            metadata = data.metadata_of(rows)
            probability, features = predict_scores_and_features(
                scoring, images, 64, config.tta_views, metadata
            )
            distances = detector.distances(features)
            if split == "val":
                detector = detector.with_threshold(distances, VALIDATION_PASS_SHARE)
            summary.setdefault("ood", {"threshold": round(detector.threshold, 4)})[
                f"{split}_flagged_share"
            ] = round(float(np.mean(~detector.in_distribution(distances))), 4)
            frame = rows[["image_id", "lesion_id", "dx", "label"]].assign(probability=probability)
            if metadata is not None:
                frame["metadata"] = np.where(metadata[:, 0] > 0, "used", "absent")
            stage.put_bytes(
                f"predictions_{split}",
                layout.predictions(split),
                frame.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode(),
            )
            if split == "val":
                summary["val_auroc_final"] = round(
                    float(roc_auc_score(frame["label"], frame["probability"])), 4
                )
                if metadata is not None:
                    # What images without metadata (predict, external sets) can expect.
                    alone = predict_scores(model, images, 64, config.tta_views)
                    summary["val_auroc_without_metadata"] = round(
                        float(roc_auc_score(frame["label"], alone)), 4
                    )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            model.save(path)
            stage.put_file("model", layout.model, path)
        stage.put_bytes("ood", layout.ood, detector.to_bytes())
        stage.put_json("history", layout.history, {**fitted["history"], "summary": summary})
        stage.put_json(
            "training_config",
            layout.training_config,
            {
                "config": asdict(config),
                "feature_cache": fitted["feature_cache"],
                "device": summary["device"],
                "weights_key": weights_key,
                "train_images": len(data.train_labels),
                "train_positives": int(data.train_labels.sum()),
                "class_weight": data.class_weight,
                "notice": RESEARCH_NOTICE,
            },
        )
        stage.data = {"summary": summary}
    log.info(
        "training done: val AUROC %.4f after phase 1, %.4f final",
        summary["val_auroc_after_phase1"],
        summary["val_auroc_final"],
    )
    return layout.commit("train")


def fit_ood_detector(
    run: Run, extractor: keras.Model, metadata: dict[str, np.ndarray] | None = None
) -> MahalanobisDetector:
    """Class-conditional Gaussians on the trained model's pooled features of every
    original training image (melanoma.ood; its threshold is set on validation after).
    ``metadata``: the run's vectors when its model fuses them (the shards then carry them)."""
    examples = shard_dataset(run, "train", include_augmented=False, metadata=metadata)
    features, labels = [], []
    for inputs, y in examples.batch(64).prefetch(2):
        images = inputs["image"] if metadata is not None else inputs
        features.append(extractor.predict_on_batch(images))
        labels.append(y.numpy())
    return fit_mahalanobis(np.concatenate(features), np.concatenate(labels))


def _phase1_cached(
    model: keras.Model,
    run: Run,
    config: TrainConfig,
    data: TrainingData,
    checkpoints: StoreCheckpoints,
    history: dict[str, Any],
    compile_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Phase 1 on pooled features computed once: the frozen backbone runs once per image,
    not per epoch, and once more per each of ``acquisition_views`` shifted copies."""
    extractor = feature_extractor(model)
    # One stream read in the shards' fixed order: a rerun shifts every image the same way.
    shift_rng = np.random.default_rng(config.seed)
    started = time.monotonic()
    examples = shard_dataset(
        run,
        "train",
        include_augmented=config.imbalance == "oversample",
        target=training_target(config),
        metadata=data.metadata,
    )
    features, metadata, targets = [], [], []
    for inputs, y in examples.batch(64).prefetch(2):
        images = (inputs["image"] if data.metadata is not None else inputs).numpy()
        for view in range(1 + config.acquisition_views):
            shown = images if view == 0 else random_acquisition_shifts(images, shift_rng)
            features.append(extractor.predict_on_batch(shown))
            if data.metadata is not None:
                metadata.append(inputs[METADATA_INPUT].numpy())
            targets.append(y.numpy())
    train_features, train_targets = np.concatenate(features), np.concatenate(targets)
    val_features = extractor.predict(data.val_images, batch_size=64, verbose=0)
    extract_seconds = time.monotonic() - started
    head, score_head = head_model(model), head_model(model, through="head_output")
    head.compile(optimizer=keras.optimizers.Adam(config.phase1_learning_rate), **compile_kwargs)
    x: Any = train_features
    val_x: Any = val_features
    if data.metadata is not None:
        x = {"features": train_features, METADATA_INPUT: np.concatenate(metadata)}
        val_x = {"features": val_features, METADATA_INPUT: data.val_metadata}
    y = train_targets
    if config.head == "multiclass":
        y = np.eye(len(DX_ORDER), dtype="float32")[y]
    if config.imbalance == "undersample":
        rng = np.random.default_rng(config.seed)
        positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        keep = np.concatenate(
            [
                positives,
                rng.choice(negatives, size=min(len(negatives), len(positives)), replace=False),
            ]
        )
        keep = np.sort(keep)
        x = {k: v[keep] for k, v in x.items()} if isinstance(x, dict) else x[keep]
        y = y[keep]
    monitor = ValidationAUROC(
        lambda: score_head.predict(val_x, batch_size=256, verbose=0).reshape(-1),
        data.val_labels,
        config.patience,
        checkpoints.saver("phase1", history),
    )
    fit_started = time.monotonic()
    head.fit(
        x,
        y,
        batch_size=config.batch_size,
        epochs=config.phase1_epochs,
        shuffle=True,
        class_weight=data.class_weight,
        callbacks=[monitor],
        verbose=2,
    )
    history["best_epoch"] = monitor.best_epoch
    return {
        "cached_features": True,
        "acquisition_views": config.acquisition_views,
        "feature_seconds": round(extract_seconds, 1),
        "feature_images_per_second": round(
            (len(train_targets) + len(data.val_labels)) / extract_seconds, 1
        ),
        "head_seconds": round(time.monotonic() - fit_started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train the classifier for one run (research use only)."
    )
    parser.add_argument("--store-url", default=os.environ.get("MELANOMA_STORE_URL"))
    parser.add_argument("--run", required=True, help="run id, run key or runs/<key>")
    parser.add_argument("--weights-key", default=None)
    parser.add_argument("--config", default="{}", help="TrainConfig fields as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    key = train_run(
        Run.find(open_store(args.store_url), args.run),
        TrainConfig(**json.loads(args.config)),
        args.weights_key,
    )
    print(key)


if __name__ == "__main__":
    main()
