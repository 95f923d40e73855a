"""Which backbone layers hold up at clinics a model never saw: a LOSO screen in minutes.

    .venv/bin/python benchmarks/loso_features.py --source ../shared/data/ham10000 \\
        --weights ../shared/data/weights/mobilenet_v2_1.0_224_no_top.weights.h5 --seeds 42 7

Reads the archive's metadata (its ``dataset`` column: the source) and images from the
folder of a HAM10000 mirror, brings each image to the model's input shape (150x200 by
default, as the ``cpu`` profile trains), and computes the frozen backbone's pooled maps
once per image for each of its ``multiscale_layers`` and its last layer. Then, for each
layer set and split seed, the leave-one-source-out folds of the DAG
(``melanoma.splits.split_holding_out_source`` on the images outside the promotion
benchmark, each of ``melanoma.loso.LOSO_SOURCES`` held out in turn): a logistic
regression (standardised features, balanced class weights, L2 strength ``--c``) fitted on
the fold's training split scores the held-out source, and the three sources pool into one
LOSO AUROC (``melanoma.loso.pooled_loso_auroc``, same-source pairs only).

The layer sets are the two feature depths the model can be built with (``feature_depth``
``last`` and ``mid``, both with multiscale features) and each layer alone. Each row gives
the gain over ``last`` in the same run. A linear head on one view is not the product's
head; the screen ranks feature sets for a DAG run to confirm them
(``benchmarks/ablation.py --loso``). It never reads a split's test images but the held-out
sources'. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from melanoma.backbones import backbone_spec
from melanoma.cli import run_command
from melanoma.config import FEATURE_DEPTHS, TrainConfig
from melanoma.ham10000 import apply_label_task
from melanoma.images import PreprocessConfig, preprocess_image
from melanoma.loso import LOSO_SOURCES, pooled_loso_auroc
from melanoma.report_html import number
from melanoma.splits import promotion_benchmark_lesions, split_holding_out_source
from training.model import build_model, image_input


def mirror_images(source: Path) -> dict[str, bytes]:
    """Image id -> JPEG bytes, from the mirror's two image archives."""
    images = {}
    for part in (1, 2):
        with zipfile.ZipFile(source / f"HAM10000_images_part_{part}.zip") as archive:
            for name in archive.namelist():
                if name.endswith(".jpg"):
                    images[Path(name).stem] = archive.read(name)
    return images


def layer_features(
    images: list[bytes], backbone: str, weights: str | None, shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Layer name -> (images, channels) pooled maps, one forward pass per batch."""
    spec = backbone_spec(backbone)
    model = build_model(TrainConfig(backbone=backbone, multiscale_features=True), shape, weights)
    names = spec.all_pooled_layers()
    pooled = [model.get_layer(f"head_gap_{n}").output for n in spec.multiscale_layers]
    extractor = keras.Model(image_input(model), [*pooled, model.get_layer("head_gap").output])
    config = PreprocessConfig(size=shape[0], width=shape[1])
    batches: list[list[np.ndarray]] = []
    for start in range(0, len(images), 256):
        batch = np.stack([preprocess_image(data, config) for data in images[start : start + 256]])
        batches.append(extractor.predict(batch, batch_size=64, verbose=0))
    return {name: np.concatenate([b[i] for b in batches]) for i, name in enumerate(names)}


def layer_sets(backbone: str) -> dict[str, tuple[str, ...]]:
    """Set name -> layers: both feature depths with multiscale features, then each layer."""
    spec = backbone_spec(backbone)
    sets = {
        depth: (*spec.earlier_layers(depth), spec.layer_at_depth(depth)) for depth in FEATURE_DEPTHS
    }
    sets.update({name: (name,) for name in spec.all_pooled_layers()})
    return sets


def loso_auroc(
    rows: pd.DataFrame, features: np.ndarray, seed: int, c: float
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """The pooled LOSO AUROC with its interval, and each held-out source's own AUROC."""
    held_out, per_source = {}, {}
    for source in LOSO_SOURCES:
        split = split_holding_out_source(rows, source, seed=seed)
        train, test = split[split["split"] == "train"], split[split["split"] == "test"]
        x = features[train["row"]]
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        head = LogisticRegression(C=c, max_iter=500, class_weight="balanced")
        head.fit((x - mean) / std, train["label"])
        scores = head.decision_function((features[test["row"]] - mean) / std)
        held_out[source] = test.assign(probability=scores)
        per_source[source] = pooled_loso_auroc({source: held_out[source]}, replicates=0)["value"]
    return pooled_loso_auroc(held_out, replicates=500), per_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--backbone", default=os.environ.get("MELANOMA_BACKBONE", "mobilenet_v2"))
    parser.add_argument("--weights", help="the backbone's no-top weights file (none: random)")
    parser.add_argument("--shape", type=int, nargs=2, default=[150, 200], metavar=("H", "W"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 7])
    parser.add_argument("--c", type=float, default=1e-3, help="inverse L2 strength")
    args = parser.parse_args()
    started = time.monotonic()
    images = mirror_images(args.source)
    metadata = pd.read_csv(args.source / "HAM10000_metadata.csv")
    missing = sorted(set(metadata["image_id"]) - set(images))
    metadata = metadata[metadata["image_id"].isin(images)].reset_index(drop=True)
    rows = apply_label_task(metadata, "mel_vs_rest").assign(row=np.arange(len(metadata)))
    # As the DAG places images: the promotion benchmark is in no run's split.
    rows = rows[~rows["lesion_id"].isin(promotion_benchmark_lesions(metadata))]
    features = layer_features(
        [images[i] for i in metadata["image_id"]], args.backbone, args.weights, tuple(args.shape)
    )
    print(
        f"{args.backbone} at {args.shape[0]}x{args.shape[1]}: {len(metadata)} images "
        f"({len(missing)} in the metadata without an image), features in "
        f"{time.monotonic() - started:.0f} s; logistic regression, C {args.c}"
    )
    sources = " / ".join(LOSO_SOURCES)
    print(f"| layers | features | split seed | LOSO AUROC (pooled) | {sources} held out |")
    print("| --- | --- | --- | --- | --- |")
    baseline: dict[int, float] = {}
    for name, layers in layer_sets(args.backbone).items():
        x = np.concatenate([features[layer] for layer in layers], axis=1).astype(np.float64)
        for seed in args.seeds:
            pooled, per_source = loso_auroc(rows, x, seed, args.c)
            value = pooled["value"]
            if name == "last" and value is not None:
                baseline[seed] = value
            gain = ""
            if name != "last" and value is not None and seed in baseline:
                gain = f" ({value - baseline[seed]:+.3f})"
            interval = f"{number(pooled['ci_low'])} to {number(pooled['ci_high'])}"
            each = " / ".join(number(per_source[s]) for s in LOSO_SOURCES)
            named = name if layers == (name,) else f"{name}: {', '.join(layers)}"
            print(
                f"| {named} | {x.shape[1]} | {seed} | {number(value)}{gain} ({interval}) "
                f"| {each} |",
                flush=True,
            )
    print(f"{time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    sys.exit(run_command("loso_features.py", main))
