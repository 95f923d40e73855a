"""The two training phases: phase 1 (the head on the frozen backbone, on cached pooled
features on a CPU) and phase 2 (the last blocks fine-tuned, online or on a cached trunk),
each resumable from its checkpoint. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from melanoma.config import TrainConfig
from melanoma.images import dihedral_views
from melanoma.run import Run
from melanoma.shifts import random_acquisition_shifts
from training.checkpoints import MonitorState, StoreCheckpoints, ValidationAUROC
from training.data import shard_dataset
from training.inputs import (
    TrainingData,
    steps_per_epoch,
    train_dataset,
    training_target,
)
from training.model import (
    DX_ORDER,
    METADATA_INPUT,
    TrunkSplit,
    feature_extractor,
    head_model,
    predict_scores,
    split_at_trainable,
    training_view,
    unfreeze_last_blocks,
)

log = logging.getLogger(__name__)


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


def phase2_optimizer(config: TrainConfig, steps: int) -> keras.optimizers.Optimizer:
    """Adam at the phase-2 rate, constant or decaying to 0 on a cosine over the phase's
    steps (Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts)."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = config.phase2_learning_rate
    if config.phase2_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            config.phase2_learning_rate, decay_steps=max(1, config.phase2_epochs * steps)
        )
    return keras.optimizers.Adam(rate)


def fit_monitored(
    model: keras.Model,
    monitor: ValidationAUROC,
    history: dict[str, Any],
    data: TrainingData,
    inputs: Any,
    **fit_kwargs: Any,
) -> None:
    """``model.fit`` under the validation-AUROC monitor (early stopping, checkpoints),
    class-weighted; the phase's ``history`` gets the monitor's best epoch."""
    model.fit(inputs, class_weight=data.class_weight, callbacks=[monitor], verbose=2, **fit_kwargs)
    history["best_epoch"] = monitor.best_epoch


def head_targets(labels: np.ndarray, config: TrainConfig) -> np.ndarray:
    """What the head's loss takes: the labels, one-hot over the diagnoses for ``multiclass``."""
    if config.head == "multiclass":
        return np.eye(len(DX_ORDER), dtype="float32")[labels]
    return labels


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
        fit_monitored(
            self.fit_model,
            monitor,
            self.history[phase],
            data,
            batches,
            epochs=epochs,
            initial_epoch=initial_epoch,
        )
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
            self.timing["phase1"] = self._phase1_cached()
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
            steps, cache = self._phase2_cached(split, initial_epoch, phase1_auroc, monitor)
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

    def _phase1_cached(self) -> dict[str, Any]:
        """Phase 1 on pooled features computed once: the frozen backbone runs once per image,
        not per epoch, and once more per each of ``acquisition_views`` shifted copies."""
        model, config, data, history = self.model, self.config, self.data, self.history["phase1"]
        extractor = feature_extractor(model)
        started = time.monotonic()
        x, train_targets = cached_training_features(extractor, self.run, config, data)
        val_x: Any = extractor.predict(data.val_images, batch_size=64, verbose=0)
        if data.metadata is not None:
            val_x = {"features": val_x, METADATA_INPUT: data.val_metadata}
        extract_seconds = time.monotonic() - started
        head, score_head = head_model(model), head_model(model, through="head_output")
        head.compile(
            optimizer=keras.optimizers.Adam(config.phase1_learning_rate), **self.compile_kwargs
        )
        y = head_targets(train_targets, config)
        if config.imbalance == "undersample":
            x, y = undersampled(x, y, config.seed)
        monitor = ValidationAUROC(
            lambda: score_head.predict(val_x, batch_size=256, verbose=0).reshape(-1),
            data.val_labels,
            config.patience,
            self.checkpoints.saver("phase1", history),
        )
        fit_started = time.monotonic()
        fit_monitored(
            head,
            monitor,
            history,
            data,
            x,
            y=y,
            batch_size=config.batch_size,
            epochs=config.phase1_epochs,
            shuffle=True,
        )
        return {
            "cached_features": True,
            "acquisition_views": config.acquisition_views,
            "feature_seconds": round(extract_seconds, 1),
            "feature_images_per_second": round(
                (len(train_targets) + len(data.val_labels)) / extract_seconds, 1
            ),
            "head_seconds": round(time.monotonic() - fit_started, 1),
        }

    def _phase2_cached(
        self, split: TrunkSplit, initial_epoch: int, baseline: float, resumed: MonitorState | None
    ) -> tuple[int, dict[str, Any]]:
        """Phase 2 on the frozen trunk's outputs, computed once per image and view (the first
        ``phase2_cached_views`` flips and rotations, and acquisition shifts with
        ``acquisition_views``) and kept as float16; returns the steps
        per epoch and what the cache cost. The top shares the model's weights, so the model
        ends fine-tuned; a resumed attempt keeps its weights and starts a fresh optimizer."""
        config, data, history = self.config, self.data, self.history["phase2"]
        started = time.monotonic()
        cache, y = training_trunk_cache(split, self.run, config)
        val_cache = trunk_outputs(split, data.val_images)
        cache_seconds = time.monotonic() - started
        log.info(
            "phase 2 on a cached trunk: %d training images x %d views, %.0f MB, in %.0f s",
            len(y),
            config.phase2_cached_views,
            sum(part.nbytes for part in cache) / 1e6,
            cache_seconds,
        )
        batches = CachedViewBatches(cache, y, config.batch_size, config.seed)
        split.top.compile(optimizer=phase2_optimizer(config, len(batches)), **self.compile_kwargs)
        monitor = ValidationAUROC(
            lambda: split.scorer.predict(
                val_cache if len(val_cache) > 1 else val_cache[0], batch_size=256, verbose=0
            ).reshape(-1),
            data.val_labels,
            config.patience,
            self.checkpoints.saver("phase2", history),
            baseline,
            resumed,
        )
        fit_monitored(
            split.top,
            monitor,
            history,
            data,
            batches,
            epochs=config.phase2_epochs,
            initial_epoch=initial_epoch,
        )
        return len(batches), {
            "cached_views": config.phase2_cached_views,
            "cache_seconds": round(cache_seconds, 1),
            "cache_megabytes": round(sum(part.nbytes for part in cache) / 1e6, 1),
            "cached_images": len(y),
        }


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
        # Several top inputs (multiscale features) go as a tuple: Keras's dataset
        # adapter takes a tuple of arrays for a multi-input model, not a list.
        inputs = tuple(part[self.views[rows], rows] for part in self.cache)
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


def training_trunk_cache(
    split: TrunkSplit, run: Run, config: TrainConfig
) -> tuple[list[np.ndarray], np.ndarray]:
    """The trunk's outputs for every training example in each of the first
    ``phase2_cached_views`` views (per top input: views x examples x ...), and the targets.
    With ``acquisition_views`` V, a share V/(V+1) of each view's images is first shown
    under a random acquisition shift, the mix online augmentation gives phase 2."""
    views = config.phase2_cached_views
    share = config.acquisition_views / (config.acquisition_views + 1)
    # Its own seeded stream, read in the shards' fixed order: a rerun caches the same views.
    shift_rng = np.random.default_rng([config.seed, 2])
    examples = shard_dataset(
        run,
        "train",
        include_augmented=config.imbalance == "oversample",
        target=training_target(config),
    )
    chunks: list[list[list[np.ndarray]]] = []  # per batch, per view, per top input
    targets = []
    for images, y in examples.batch(64).prefetch(2):
        shown = dihedral_views(images.numpy(), views)
        if share:
            shown = [random_acquisition_shifts(view, shift_rng, share) for view in shown]
        chunks.append([trunk_outputs(split, view) for view in shown])
        targets.append(y.numpy())
    cache = [
        np.stack([np.concatenate([batch[v][i] for batch in chunks]) for v in range(views)])
        for i in range(len(chunks[0][0]))
    ]
    return cache, head_targets(np.concatenate(targets), config)


def cached_training_features(
    extractor: keras.Model, run: Run, config: TrainConfig, data: TrainingData
) -> tuple[Any, np.ndarray]:
    """The head's inputs for every training example (pooled features, with metadata when
    the model fuses it) and the targets: each image once, plus ``acquisition_views``
    shifted copies of it."""
    # One stream read in the shards' fixed order: a rerun shifts every image the same way.
    shift_rng = np.random.default_rng(config.seed)
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
    x: Any = np.concatenate(features)
    if data.metadata is not None:
        x = {"features": x, METADATA_INPUT: np.concatenate(metadata)}
    return x, np.concatenate(targets)


def undersampled(x: Any, y: np.ndarray, seed: int) -> tuple[Any, np.ndarray]:
    """Every positive and as many negatives drawn at random (seeded), in their order."""
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    drawn = rng.choice(negatives, size=min(len(negatives), len(positives)), replace=False)
    keep = np.sort(np.concatenate([positives, drawn]))
    x = {k: v[keep] for k, v in x.items()} if isinstance(x, dict) else x[keep]
    return x, y[keep]
