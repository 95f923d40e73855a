"""Which frozen-backbone features the head should see: a minutes-long screen before a DAG run.

    MELANOMA_STORE_URL=file://$PWD/.ablation-store .venv/bin/python benchmarks/frozen_features.py \\
        --run manual__2026-12-01T10:02:10.202354+00:00 --backbone mobilenet_v2 \\
        --weights ../shared/data/weights/mobilenet_v2_1.0_224_no_top.weights.h5 --seeds 42 7

Reads a preprocessed run's training and validation images (never its test split), computes
the frozen backbone's pooled features once (every ``multiscale_layers`` layer and the last
one), then trains the product's head (Dropout 0.5, Dense 256, Dropout 0.5, sigmoid; Adam
1e-4, balanced class weights, batch 32) on three feature sets, once per head seed:

- ``last``: the last layer's pooled maps (today's model);
- ``multiscale, raw``: every layer's, concatenated;
- ``multiscale, batch-normalised``: the same through BatchNormalization, as
  ``multiscale_features`` builds it.

Prints each one's best validation AUROC over the epochs (what early stopping keeps), the
within-source validation AUROC at that epoch, and the gain over ``last`` in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from melanoma.backbones import backbone_spec
from melanoma.cli import run_command
from melanoma.config import TrainConfig
from melanoma.metrics import within_group_auroc_replicates
from melanoma.run import Run
from melanoma.store import open_store
from training.data import split_arrays
from training.model import build_model, feature_extractor

FEATURE_SETS = ("last", "multiscale, raw", "multiscale, batch-normalised")


def pooled_features(run: Run, backbone: str, weights: str) -> tuple[dict[str, tuple], int]:
    """Per split, (every layer's pooled features concatenated, labels, sources); and the
    last layer's width (its features are the last columns)."""
    model = build_model(TrainConfig(backbone=backbone, multiscale_features=True), 224, weights)
    extractor = feature_extractor(model)
    last_width = int(model.get_layer("head_gap").output.shape[-1])
    sources = run.splits().drop_duplicates("image_id").set_index("image_id")["dataset"]
    out = {}
    for split in ("train", "val"):
        images, rows = split_arrays(run, split)
        features = extractor.predict(images, batch_size=64, verbose=0)
        out[split] = (features, rows["label"].to_numpy(), sources[rows["image_id"]].to_numpy())
    return out, last_width


def best_head(
    train: tuple, val: tuple, normalise: bool, seed: int, epochs: int
) -> tuple[float, float, int]:
    """(best validation AUROC, within-source AUROC at that epoch, the epoch)."""
    (x, y, _), (val_x, val_y, val_sources) = train, val
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.BatchNormalization()(inputs) if normalise else inputs
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.Dense(256, activation="relu")(h)
    h = keras.layers.Dropout(0.5)(h)
    head = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    head.compile(keras.optimizers.Adam(1e-4), "binary_crossentropy")
    weights = {c: len(y) / (2 * int((y == c).sum())) for c in (0, 1)}
    best = (0.0, 0.0, 0)
    for epoch in range(1, epochs + 1):
        head.fit(x, y, batch_size=32, epochs=1, class_weight=weights, verbose=0)
        scores = head.predict(val_x, batch_size=512, verbose=0).reshape(-1)
        auroc = roc_auc_score(val_y, scores)
        if auroc > best[0]:
            within = within_group_auroc_replicates(val_y, scores, val_sources, np.ones(len(val_y)))
            best = (auroc, float(within[0]), epoch)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a preprocessed run's id or key")
    parser.add_argument("--backbone", default=os.environ.get("MELANOMA_BACKBONE", "mobilenet_v2"))
    parser.add_argument("--weights", required=True, help="the backbone's no-top weights file")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 7])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    run = Run.find(open_store(create=False), args.run)
    features, width = pooled_features(run, args.backbone, args.weights)
    layers = ", ".join(backbone_spec(args.backbone).multiscale_layers)
    print(f"{args.backbone}: last layer {width} features; multiscale adds {layers}")
    print("| features | head seed | best val AUROC | within-source val AUROC | epoch |")
    print("| --- | --- | --- | --- | --- |")
    baseline: dict[int, float] = {}
    for name in FEATURE_SETS:
        for seed in args.seeds:
            columns = slice(-width, None) if name == "last" else slice(None)
            train, val = ((f[:, columns], y, s) for f, y, s in (features["train"], features["val"]))
            auroc, within, epoch = best_head(train, val, "normalised" in name, seed, args.epochs)
            baseline.setdefault(seed, auroc)
            gain = f" ({auroc - baseline[seed]:+.3f})" if name != "last" else ""
            print(f"| {name} | {seed} | {auroc:.4f}{gain} | {within:.4f} | {epoch} |", flush=True)


if __name__ == "__main__":
    sys.exit(run_command("frozen_features.py", main))
