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

This module is the stage; the rest of training is by concern: ``training.inputs`` (targets,
class weights, the augmented ``tf.data`` pipeline), ``training.checkpoints`` (early stopping
and resumable checkpoints), ``training.phases`` (phase 1 and phase 2, cached or online),
``training.device`` (threads, precision, XLA) and ``training.model`` (the network).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma.artifacts import TrainingRecord
from melanoma.config import TrainConfig
from melanoma.download import file_digest
from melanoma.layout import record_of
from melanoma.ood import VALIDATION_PASS_SHARE, MahalanobisDetector, fit_mahalanobis
from melanoma.run import Run
from melanoma.store import ArtifactCorruptError, ObjectStore, open_store
from training.data import shard_dataset, split_arrays
from training.device import configure_device, dtype_policy
from training.inputs import (
    TrainingData,
)
from training.model import (
    build_model,
    feature_extractor,
    predict_scores,
    predict_scores_and_features,
    with_features,
)
from training.phases import (
    fit_phases,
)

log = logging.getLogger(__name__)


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


def train_run(run: Run, config: TrainConfig, weights_key: str | None = None) -> str:
    """Stage train: both phases, then predictions, model and history; return the commit key."""
    device = configure_device(config.precision)
    keras.utils.set_random_seed(config.seed)
    use_cache = config.feature_cache == "on" or (
        config.feature_cache == "auto" and not device["gpu"]
    )
    image_shape = run.preprocess_config().shape
    with dtype_policy(device["precision"]):
        with tempfile.TemporaryDirectory() as tmp:
            weights_path = (
                str(fetch_pretrained(run.store, weights_key, Path(tmp))) if weights_key else None
            )
            model = build_model(config, image_shape, weights_path, run.config().label_task)
        data = TrainingData.read(run, config)
        fitted = fit_phases(model, run, config, data, device, use_cache)
    return write_training_outputs(run, model, config, data, fitted, weights_key)


def split_predictions(
    scoring: keras.Model,
    images: np.ndarray,
    rows: pd.DataFrame,
    metadata: np.ndarray | None,
    tta_views: int,
) -> tuple[pd.DataFrame, np.ndarray]:
    """A split's predictions (image_id, lesion_id, dx, label, probability; with metadata
    fusion, whether each image had metadata), and its pooled features, in one pass."""
    probability, features = predict_scores_and_features(scoring, images, 64, tta_views, metadata)
    frame = rows[["image_id", "lesion_id", "dx", "label"]].assign(probability=probability)
    if metadata is not None:
        frame["metadata"] = np.where(metadata[:, 0] > 0, "used", "absent")
    return frame, features


def validation_figures(
    model: keras.Model,
    images: np.ndarray,
    frame: pd.DataFrame,
    metadata: np.ndarray | None,
    tta_views: int,
) -> dict[str, float]:
    """The final validation AUROC, and with metadata fusion the AUROC without metadata:
    what images without it (predict, external sets) can expect."""
    figures = {
        "val_auroc_final": round(float(roc_auc_score(frame["label"], frame["probability"])), 4)
    }
    if metadata is not None:
        alone = predict_scores(model, images, 64, tta_views)
        figures["val_auroc_without_metadata"] = round(
            float(roc_auc_score(frame["label"], alone)), 4
        )
    return figures


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
            frame, features = split_predictions(scoring, images, rows, metadata, config.tta_views)
            distances = detector.distances(features)
            if split == "val":
                detector = detector.with_threshold(distances, VALIDATION_PASS_SHARE)
            summary.setdefault("ood", {"threshold": round(detector.threshold, 4)})[
                f"{split}_flagged_share"
            ] = round(float(np.mean(~detector.in_distribution(distances))), 4)
            stage.put_bytes(
                f"predictions_{split}",
                layout.predictions(split),
                frame.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode(),
            )
            if split == "val":
                summary |= validation_figures(model, images, frame, metadata, config.tta_views)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            model.save(path)
            stage.put_file("model", layout.model, path)
        stage.put_bytes("ood", layout.ood, detector.to_bytes())
        stage.put_json("history", layout.history, {**fitted["history"], "summary": summary})
        record = TrainingRecord(
            config=asdict(config),
            feature_cache=fitted["feature_cache"],
            device=summary["device"],
            weights_key=weights_key,
            train_images=len(data.train_labels),
            train_positives=int(data.train_labels.sum()),
            class_weight=data.class_weight,
        )
        stage.put_json(TrainingRecord.artifact, layout.training_config, record.to_json())
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
        features.append(np.asarray(extractor.predict_on_batch(images), dtype=np.float32))
        labels.append(y.numpy())
    return fit_mahalanobis(np.concatenate(features), np.concatenate(labels))


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
