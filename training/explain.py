"""Stage explain: Grad-CAM on selected test images, and how much of it falls on the lesion.

Writes ``runs/<run key>/gradcam/``: one PNG per explained test image (the stored image
beside its overlay, lesion outline drawn), ``index.csv`` (one row per image with its
outcome, probability, mask source and attention measures) and ``summary.json``, then the
stage's commit record. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import cv2
import numpy as np
import pandas as pd

from melanoma import RESEARCH_NOTICE
from melanoma.backbones import backbone_spec
from melanoma.cam import (
    draw_mask_outline,
    lesion_attention,
    normalize_cam,
    overlay_heatmap,
    upsample_cam,
)
from melanoma.config import ExplainConfig
from melanoma.evaluation import json_safe, read_predictions
from melanoma.explanations import select_explained, summarize_attention
from melanoma.images import decode_image, segment_lesion
from melanoma.preprocess import DATASET_MANIFEST, plan_images
from melanoma.run import Run
from melanoma.store import read_manifest, verified_bytes
from training.data import metadata_for, split_arrays
from training.gradcam import grad_cam, model_view_box, png_bytes
from training.model import takes_metadata
from training.run_model import load_model

log = logging.getLogger(__name__)


def explain_run(run: Run, config: ExplainConfig) -> str:
    """Grad-CAM for the selected test images, their lesion attention and its summary;
    return the stage's commit key."""
    layout = run.layout
    run_config = run.config()
    backbone_name = run.training_record().backbone
    threshold = run.calibration().threshold(config.operating_point)
    view = run.preprocess_config()
    dataset = read_manifest(run.store, run_config.manifest_key)

    selected = select_explained(
        read_predictions(run, "test"),
        threshold,
        config.per_outcome,
        config.random_count,
        config.seed,
    )
    images, rows = split_arrays(run, "test")
    position = {image_id: i for i, image_id in enumerate(rows["image_id"])}
    inputs = images[[position[i] for i in selected["image_id"]]]
    layer = backbone_spec(backbone_name).last_conv_layer
    model = load_model(run)
    # A model that fuses metadata is explained with the metadata it scored the test images with.
    metadata = metadata_for(run, selected["image_id"]) if takes_metadata(model) else None
    maps = grad_cam(model, inputs, layer, config.batch_size, config.method, metadata)
    tasks = {t.image_id: t for t in plan_images(selected.assign(split="test"), dataset, 0)}

    with run.stage("explain") as stage:
        records = []
        for row, raw_map in zip(selected.itertuples(index=False), maps, strict=True):
            task = tasks[row.image_id]
            stored = decode_image(verified_bytes(run.store, task.image, DATASET_MANIFEST))
            official = None
            if task.mask:
                official = cv2.imdecode(
                    np.frombuffer(verified_bytes(run.store, task.mask, DATASET_MANIFEST), np.uint8),
                    cv2.IMREAD_GRAYSCALE,
                )
                if official is not None and official.shape != stored.shape[:2]:
                    official = cv2.resize(
                        official, stored.shape[1::-1], interpolation=cv2.INTER_NEAREST
                    )
            mask, source = (
                (official, "official")
                if official is not None
                else (segment_lesion(stored), "automatic")
            )
            box = model_view_box(stored, view, official)
            heat = normalize_cam(upsample_cam(raw_map, stored.shape[:2], box))
            attention = lesion_attention(heat, mask)
            overlay = draw_mask_outline(overlay_heatmap(stored, heat), mask)
            key = stage.put_bytes(
                f"image/{row.selected_as}/{row.image_id}",
                layout.gradcam_image(row.selected_as, row.image_id),
                png_bytes(np.hstack([stored, overlay])),
            )
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
        stale = [o.key for o in run.store.list(layout.gradcam + "/") if o.key.endswith(".png")]
        for key in set(stale) - current:
            stage.remove(key)
        stage.put_bytes(
            "index",
            layout.gradcam_index,
            index.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode(),
        )
        summary: dict[str, Any] = {
            "method": config.method,
            "layer": layer,
            "operating_point": config.operating_point,
            "threshold": threshold,
            "config": asdict(config),
            "index": layout.gradcam_index,
            **summarize_attention(index),
            "notice": RESEARCH_NOTICE,
        }
        stage.put_json("summary", layout.gradcam_summary, json_safe(summary))
    log.info(
        "Grad-CAM on %d test images: mean energy in lesion %s",
        len(index),
        summary["overall"]["energy_in_lesion"]["mean"],
    )
    return layout.commit("explain")
