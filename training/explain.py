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
from melanoma.cam import (
    draw_mask_outline,
    lesion_attention,
    normalize_cam,
    overlay_heatmap,
    upsample_cam,
)
from melanoma.config import ExplainConfig
from melanoma.dataset_version import COMMITTED_BY
from melanoma.evaluation import json_safe, read_predictions
from melanoma.explanations import select_explained, summarize_attention
from melanoma.images import PreprocessConfig, decode_image, segment_lesion
from melanoma.preprocess import ImageTask, plan_images
from melanoma.run import Run
from melanoma.store import read_manifest, verified_bytes
from training.data import metadata_for, split_arrays
from training.gradcam import grad_cam, model_view_box, png_bytes
from training.model import pooled_layer, takes_metadata
from training.run_model import load_model

log = logging.getLogger(__name__)


def lesion_mask(run: Run, task: ImageTask, stored: np.ndarray) -> tuple[np.ndarray, str]:
    """The lesion's mask at the stored image's size and where it came from: the official
    one when the dataset has it, else an automatic segmentation."""
    official = None
    if task.mask:
        official = cv2.imdecode(
            np.frombuffer(verified_bytes(run.store, task.mask, COMMITTED_BY), np.uint8),
            cv2.IMREAD_GRAYSCALE,
        )
        if official is not None and official.shape != stored.shape[:2]:
            official = cv2.resize(official, stored.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    if official is None:
        return segment_lesion(stored), "automatic"
    return official, "official"


def explain_image(
    run: Run, task: ImageTask, raw_map: np.ndarray, view: PreprocessConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """The stored image beside its Grad-CAM overlay (lesion outlined), and the image's
    record: its mask source, size and attention measures."""
    stored = decode_image(verified_bytes(run.store, task.image, COMMITTED_BY))
    mask, source = lesion_mask(run, task, stored)
    official = mask if source == "official" else None
    heat = normalize_cam(
        upsample_cam(raw_map, stored.shape[:2], model_view_box(stored, view, official))
    )
    overlay = draw_mask_outline(overlay_heatmap(stored, heat), mask)
    record = {
        "mask_source": source,
        "width": stored.shape[1],
        "height": stored.shape[0],
        **lesion_attention(heat, mask),
    }
    return np.hstack([stored, overlay]), record


def index_row(row: Any, png_key: str, measured: dict[str, Any]) -> dict[str, Any]:
    """One explained image's row of ``index.csv``: who it is, how it was scored, its PNG
    and its attention measures (``explain_image``'s record)."""
    return {
        "image_id": row.image_id,
        "lesion_id": row.lesion_id,
        "dx": row.dx,
        "label": int(row.label),
        "probability": float(row.probability),
        "outcome": row.outcome,
        "selected_as": row.selected_as,
        "mask_source": measured["mask_source"],
        "width": measured["width"],
        "height": measured["height"],
        "png": png_key,
        **{k: v for k, v in measured.items() if k not in ("mask_source", "width", "height")},
    }


def explain_run(run: Run, config: ExplainConfig) -> str:
    """Grad-CAM for the selected test images, their lesion attention and its summary;
    return the stage's commit key."""
    layout = run.layout
    threshold = run.calibration().threshold(config.operating_point)
    dataset = read_manifest(run.store, run.config().manifest_key)
    selected = select_explained(
        read_predictions(run, "test"), threshold, config.per_outcome, config.random_count,
        config.seed,
    )  # fmt: skip
    images, rows = split_arrays(run, "test")
    position = {image_id: i for i, image_id in enumerate(rows["image_id"])}
    inputs = images[[position[i] for i in selected["image_id"]]]
    model = load_model(run)
    layer = pooled_layer(model)
    # A model that fuses metadata is explained with the metadata it scored the test images with.
    metadata = metadata_for(run, selected["image_id"]) if takes_metadata(model) else None
    maps = grad_cam(model, inputs, layer, config.batch_size, config.method, metadata)
    tasks = {t.image_id: t for t in plan_images(selected.assign(split="test"), dataset, 0)}
    view = run.preprocess_config()
    with run.stage("explain") as stage:
        records = []
        for row, raw_map in zip(selected.itertuples(index=False), maps, strict=True):
            pair, measured = explain_image(run, tasks[row.image_id], raw_map, view)
            key = stage.put_bytes(
                f"image/{row.selected_as}/{row.image_id}",
                layout.gradcam_image(row.selected_as, row.image_id),
                png_bytes(pair),
            )
            records.append(index_row(row, key, measured))
        index = pd.DataFrame(records)
        # A rerun with other settings must not leave the previous run's images behind.
        stale = {o.key for o in run.store.list(layout.gradcam + "/") if o.key.endswith(".png")}
        for key in stale - set(index["png"]):
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
