"""Training inputs: the targets and their class weights, the shards as a ``tf.data`` pipeline
with online augmentation (flips, rotations, zoom, colour, acquisition shifts), and the
splits the stage reads (:class:`TrainingData`). Research use only, not a diagnostic device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from melanoma import clinical
from melanoma.config import TrainConfig, parse_class_weight
from melanoma.ham10000 import DX_INDEX
from melanoma.run import Run
from melanoma.shifts import random_acquisition_shifts
from training.data import run_metadata, shard_dataset, split_arrays, split_rows
from training.device import cpu_threads
from training.model import (
    DX_ORDER,
    positive_classes,
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


def training_target(config: TrainConfig) -> str:
    """What the loss learns from: the task's label, or the diagnosis (multiclass head)."""
    return "dx" if config.head == "multiclass" else "label"


def one_hot_dx(images, dx):
    return images, tf.one_hot(dx, len(DX_ORDER))


def steps_per_epoch(config: TrainConfig, targets: np.ndarray) -> int:
    if config.imbalance == "undersample":
        return math.ceil(2 * int((targets == 1).sum()) / config.batch_size)
    return math.ceil(len(targets) / config.batch_size)


def augment_batch_fn(seed: int, acquisition_views: int = 0):
    """Online augmentation on uint8 batches: flips, rotation, zoom, brightness, contrast,
    saturation; with ``acquisition_views`` V, first a random acquisition shift on a share
    V/(V+1) of the images, the mix that cached phase 1's V copies give."""
    shift_rng = np.random.default_rng(seed)
    share = acquisition_views / (acquisition_views + 1)
    # float32 whatever the training policy: tf.data runs on the CPU, which has no float16
    # kernels for some image ops (AdjustContrastv2), even when the model trains on a GPU.
    geometric = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed, dtype="float32"),
            keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1, dtype="float32"),
            keras.layers.RandomZoom(
                (-0.2, 0.0), fill_mode="reflect", seed=seed + 2, dtype="float32"
            ),
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
