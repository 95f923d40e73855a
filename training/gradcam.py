"""Grad-CAM for the melanoma score, and the ``explain`` stage that measures where the model looks.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017): the feature maps A^k of the last convolutional
layer, weighted by the spatial mean of d(score)/dA^k, summed over k, ReLU. The score is
the melanoma logit (the output layer before its sigmoid), as the paper uses the
pre-softmax score: a confident prediction's sigmoid is flat and its gradient vanishes.

``explain_run`` writes ``runs/<run_id>/gradcam/``: one PNG per explained test image
(the stored image beside its overlay, lesion outline drawn), ``index.csv`` (one row per
image with its outcome, probability, mask source and attention measures), and
``summary.json`` last.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from melanoma import RESEARCH_NOTICE
from melanoma.cam import (
    draw_mask_outline,
    lesion_attention,
    normalize_cam,
    overlay_heatmap,
    upsample_cam,
)
from melanoma.evaluation import json_safe, read_predictions
from melanoma.explanations import select_explained, summarize_attention
from melanoma.images import (
    PreprocessConfig,
    decode_image,
    lesion_crop_box,
    remove_hair,
    segment_lesion,
)
from melanoma.ingest import dataset_prefix
from melanoma.preprocess import plan_images
from melanoma.store import ObjectStore, read_manifest
from training.data import split_arrays
from training.model import HEAD_LAYERS, backbone
from training.predict import load_model

log = logging.getLogger(__name__)


CAM_METHODS = ("gradcam", "gradcam++")


def channel_weights(maps: tf.Tensor, grads: tf.Tensor, method: str) -> tf.Tensor:
    """(batch, channels) weights of the feature maps.

    ``gradcam``: the spatial mean of the gradient. ``gradcam++`` (Chattopadhay et al.,
    "Grad-CAM++", WACV 2018, eq. 19 with the exponential trick): pixel-wise weights
    alpha = g^2 / (2 g^2 + sum(A) g^3) on the positive gradients, which keeps several
    instances of the pattern from being averaged away.
    """
    if method == "gradcam":
        return tf.reduce_mean(grads, axis=(1, 2))
    if method == "gradcam++":
        g2, g3 = grads**2, grads**3
        sum_maps = tf.reduce_sum(maps, axis=(1, 2), keepdims=True)
        denominator = 2 * g2 + sum_maps * g3
        alpha = tf.math.divide_no_nan(g2, denominator)
        return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
    raise ValueError(f"CAM method {method!r} not in {CAM_METHODS}")


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    layer_name: str,
    batch_size: int = 16,
    method: str = "gradcam",
) -> np.ndarray:
    """Raw Grad-CAM (or Grad-CAM++) maps (n, h, w) at ``layer_name``'s resolution,
    non-negative, not normalised.

    ``layer_name`` must be the layer feeding the head's pooling (the backbone's last
    convolutional layer, as ``training.model.BACKBONES`` declares it). The model is split
    there, so the gradient is taken with respect to the feature maps themselves whatever
    is trainable.
    """
    to_maps = keras.Model(model.input, model.get_layer(layer_name).output)
    head = [model.get_layer(name) for name in ("head_gap", *HEAD_LAYERS[1:-1])]
    output = model.get_layer(HEAD_LAYERS[-1])

    out = []
    for start in range(0, len(images), batch_size):
        maps = tf.cast(to_maps(images[start : start + batch_size], training=False), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(maps)
            x = maps
            for layer in head:
                x = layer(x, training=False)
            # The logit, not the probability: a saturated sigmoid has zero gradient.
            logit = tf.matmul(tf.cast(x, tf.float32), tf.cast(output.kernel, tf.float32))
            score = (logit + tf.cast(output.bias, tf.float32))[:, 0]
        grads = tape.gradient(score, maps)
        weights = channel_weights(maps, grads, method)
        out.append(tf.nn.relu(tf.einsum("bhwc,bc->bhw", maps, weights)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.float32)


@dataclass(frozen=True)
class ExplainConfig:
    per_outcome: int = 4  # most confident TP, FP, FN, TN each
    random_count: int = 8  # plus a seeded random sample of the other test images
    operating_point: str = "target_sensitivity"
    seed: int = 42
    batch_size: int = 16
    method: str = "gradcam"  # or "gradcam++"

    def __post_init__(self) -> None:
        if self.method not in CAM_METHODS:
            raise ValueError(f"CAM method {self.method!r} not in {CAM_METHODS}")


def model_view_box(
    image: np.ndarray, config: PreprocessConfig, mask: np.ndarray | None
) -> tuple[int, int, int, int]:
    """The region of the stored image the model saw: preprocessing's lesion crop, or all of it."""
    if not config.lesion_crop:
        return 0, 0, image.shape[0], image.shape[1]
    if mask is None:
        mask = segment_lesion(remove_hair(image) if config.hair_removal else image)
    return lesion_crop_box(image.shape, mask, config.crop_margin)


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def explain_run(store: ObjectStore, prefix: str, config: ExplainConfig) -> str:
    """Grad-CAM for the selected test images, their lesion attention and its summary; return summary.json's key."""
    run = store.get_json(f"{prefix}/config.json")
    training = store.get_json(f"{prefix}/model/training_config.json")
    calibration = store.get_json(f"{prefix}/calibration.json")
    threshold = float(calibration["thresholds"][config.operating_point]["threshold"])
    model_manifest = read_manifest(store, f"{prefix}/model/MANIFEST.json")
    preprocessed = read_manifest(store, f"{prefix}/preprocessed/MANIFEST.json")
    preprocess_config = PreprocessConfig(
        **store.get_json(f"{prefix}/preprocessed/stats.json")["config"]
    )
    dataset = read_manifest(store, run["manifest_key"])

    selected = select_explained(
        read_predictions(store, prefix, "test"),
        threshold,
        config.per_outcome,
        config.random_count,
        config.seed,
    )
    images, rows = split_arrays(store, preprocessed, "test")
    position = {image_id: i for i, image_id in enumerate(rows["image_id"])}
    inputs = images[[position[i] for i in selected["image_id"]]]
    model = load_model(store, model_manifest["outputs"]["model"])
    layer = backbone(training["config"]["backbone"]).last_conv_layer
    maps = grad_cam(model, inputs, layer, config.batch_size, config.method)
    tasks = {
        t.image_id: t
        for t in plan_images(
            selected.assign(split="test"), dataset, dataset_prefix(run["dataset_version"]), 0
        )
    }

    records = []
    for row, raw_map in zip(selected.itertuples(index=False), maps, strict=True):
        task = tasks[row.image_id]
        stored = decode_image(store.get_bytes(task.key))
        official = None
        if task.mask_key:
            official = cv2.imdecode(
                np.frombuffer(store.get_bytes(task.mask_key), np.uint8), cv2.IMREAD_GRAYSCALE
            )
            if official is not None and official.shape != stored.shape[:2]:
                official = cv2.resize(
                    official, stored.shape[1::-1], interpolation=cv2.INTER_NEAREST
                )
        mask, source = (
            (official, "official")
            if official is not None
            else (
                segment_lesion(stored),
                "automatic",
            )
        )
        box = model_view_box(stored, preprocess_config, official)
        heat = normalize_cam(upsample_cam(raw_map, stored.shape[:2], box))
        attention = lesion_attention(heat, mask)
        overlay = draw_mask_outline(overlay_heatmap(stored, heat), mask)
        key = f"{prefix}/gradcam/{row.selected_as}/{row.image_id}.png"
        store.put_bytes(key, png_bytes(np.hstack([stored, overlay])))
        records.append(
            {
                "image_id": row.image_id,
                "lesion_id": row.lesion_id,
                "dx": row.dx,
                "label": int(row.label),
                "probability": float(row.probability),
                "outcome": row.outcome,
                "selected_as": row.selected_as,
                "mask_source": source,
                "width": stored.shape[1],
                "height": stored.shape[0],
                "png": key,
                **attention,
            }
        )
    index = pd.DataFrame(records)
    # A rerun with other settings must not leave the previous run's images behind.
    current = set(index["png"])
    stale = [o.key for o in store.list(f"{prefix}/gradcam/") if o.key.endswith(".png")]
    for key in set(stale) - current:
        store.delete(key)
    store.put_bytes(
        f"{prefix}/gradcam/index.csv",
        index.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode(),
    )
    summary: dict[str, Any] = {
        "method": config.method,
        "layer": layer,
        "operating_point": config.operating_point,
        "threshold": threshold,
        "config": asdict(config),
        "index": f"{prefix}/gradcam/index.csv",
        **summarize_attention(index),
        "notice": RESEARCH_NOTICE,
    }
    key = f"{prefix}/gradcam/summary.json"
    store.put_json(key, json_safe(summary))
    log.info(
        "Grad-CAM on %d test images: mean energy in lesion %s",
        len(index),
        summary["overall"]["energy_in_lesion"]["mean"],
    )
    return key
