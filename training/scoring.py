"""Scoring images with a stored model: a run's preprocessed split, or new image files.

The TensorFlow half of ``melanoma-predict``: ``training.predict`` is the command line and
imports this module only once it is about to score, so that ``--help`` and a user's
mistake answer without loading TensorFlow. The DAG's promotion stage scores both models
on the promotion benchmark with ``score_stored_images``. Research use only, not a
diagnostic device.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import PIL.Image

from melanoma import RESEARCH_NOTICE, clinical
from melanoma.cam import normalize_cam, overlay_heatmap, upsample_cam
from melanoma.external import display_name
from melanoma.figures import gradcam_overlay_png
from melanoma.images import (
    JPEG_MAGIC,
    NO_PARITY,
    PNG_MAGIC,
    ImageDecodeError,
    ImageRefusedError,
    PreprocessConfig,
    ResolutionParity,
    check_image,
    decode_image,
    match_resolution,
    preprocess_image,
    shrink_to_long_side,
)
from melanoma.limits import ImageLimits
from melanoma.promotion import benchmark_inputs
from melanoma.run import Run
from training.gradcam import grad_cam, model_view_box
from training.model import (
    pooled_layer,
    predict_scores,
    predict_scores_and_features,
    takes_metadata,
    with_features,
)
from training.run_model import RunScorer, load_model

# Called with the number of inputs handled so far, after each batch.
Progress = Callable[[int], None]


def score_stored_images(
    model_run: Run, data_run: Run, rows: pd.DataFrame, batch_size: int = 64
) -> np.ndarray:
    """``model_run``'s model's probabilities for the stored images of ``rows`` (image ids of
    ``data_run``'s dataset version), in order: each image through ``model_run``'s own
    preprocessing and resolution parity (``melanoma.promotion.benchmark_inputs``), as
    ``melanoma-predict`` scores a file. The promotion benchmark is scored this way.

    A model that fuses metadata reads it from ``rows`` (absent where they carry none).
    """
    model = load_model(model_run)
    images = benchmark_inputs(model_run, data_run, rows)
    metadata = None
    if takes_metadata(model):
        vectors = clinical.vectors_by_image(rows) if clinical.has_columns(rows) else {}
        metadata = clinical.matrix(rows["image_id"], vectors)
    return predict_scores(
        model, images, batch_size, model_run.training_record().tta_views, metadata
    )


# What `melanoma-predict` reads; anything else in a folder is listed as not scored.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def model_input(
    path: Path, config: PreprocessConfig, parity: ResolutionParity = NO_PARITY
) -> np.ndarray:
    """The file as the model saw the run's images: the same decode, hair removal, crop, resize.

    The header gives the source size, so an image is decoded as in preprocessing: reduced
    when large, in full when it is larger than the run's training images, which is then
    brought to their resolution and JPEG quality (resolution parity: ``parity``).
    ImageDecodeError (or OSError) names what is wrong.
    """
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageDecodeError(f"not an image format we read ({path.suffix or 'no suffix'})")
    data = path.read_bytes()
    if not data:
        raise ImageDecodeError("empty file")
    if data[:3] == JPEG_MAGIC or data[:8] == PNG_MAGIC:
        # Strictly, as at ingest: a damaged JPEG or a transparent PNG is not scored.
        return preprocess_image(data, config, check_image(data), parity=parity)
    try:
        with PIL.Image.open(io.BytesIO(data)) as header:  # reads the header, not the pixels
            source_wh = header.size
    except PIL.Image.DecompressionBombError as error:
        raise ImageRefusedError(f"refused before decoding: {error}") from None
    except (PIL.UnidentifiedImageError, OSError) as error:
        reason = str(error).split(" <_io.", 1)[0]  # PIL names the in-memory buffer
        raise ImageDecodeError(f"unreadable image: {reason}") from error
    if reason := ImageLimits.from_environment().refusal(*source_wh):
        raise ImageRefusedError(reason)
    return preprocess_image(data, config, source_wh, parity=parity)


def score_images(
    scorer: RunScorer,
    paths: list[Path],
    root: Path,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Score ``paths``; return (scores, failures, model inputs of the scored images).

    scores: image (relative to ``root``), probability (the model's, as in the run's
    predictions), calibrated_probability, decision (1 = positive for the label task),
    threshold, operating_point, run_id, metadata (``absent``: the model fuses metadata and
    scored the image without it; ``not used``: an image-only model); with the run's
    out-of-distribution detector, ood_distance and in_distribution (1: within the
    threshold that 95% of validation images pass). failures: image, reason.
    ``batch_size`` files are decoded and scored at a time; ``progress`` hears after each.
    """
    names, failures, batches, probabilities, distances = [], [], [], [], []
    # With a detector, one pass gives the score and the features it measures.
    scoring = with_features(scorer.model) if scorer.ood else scorer.model
    for start in range(0, len(paths), batch_size):
        inputs = []
        for path in paths[start : start + batch_size]:
            name = display_name(path, root)
            try:
                inputs.append(model_input(path, scorer.preprocess, scorer.parity))
                names.append(name)
            except (ImageDecodeError, cv2.error, OSError) as error:
                failures.append({"image": name, "reason": str(error)})
        if inputs:
            batches.append(np.stack(inputs))
            scores, features = predict_scores_and_features(
                scoring, batches[-1], batch_size, scorer.tta_views
            )
            probabilities.append(scores)
            if scorer.ood is not None:
                distances.append(scorer.ood.distances(features))
        if progress:
            progress(min(start + batch_size, len(paths)))
    empty = np.zeros((0, *scorer.preprocess.shape, 3), np.uint8)
    batch = np.concatenate(batches) if batches else empty
    # Rounded as the run's predictions CSV is, so thresholds compare like for like.
    scored = np.concatenate(probabilities).round(6) if probabilities else np.zeros(0)
    scores = _scores_frame(scorer, names, scored)
    if scorer.ood is not None:
        # Far from every diagnosis the run trained on: its probability means little.
        ood_distance = np.concatenate(distances) if distances else np.zeros(0)
        scores["ood_distance"] = ood_distance.round(4)
        scores["in_distribution"] = scorer.ood.in_distribution(ood_distance).astype(int)
    return scores, pd.DataFrame(failures, columns=["image", "reason"]), batch


def _scores_frame(scorer: RunScorer, names: list[str], scored: np.ndarray) -> pd.DataFrame:
    """The scores CSV's columns: each image's probability, calibrated, and the decision."""
    return pd.DataFrame(
        {
            "image": names,
            "probability": scored,
            "calibrated_probability": np.asarray(scorer.calibrate(scored)).round(6),
            "decision": (scored >= scorer.threshold).astype(int),
            "threshold": scorer.threshold,
            "operating_point": scorer.operating_point,
            "run_id": scorer.run_id,
            "metadata": "absent" if takes_metadata(scorer.model) else "not used",
        }
    )


def overlay_title(scorer: RunScorer, image: str, probability: float, decision: int) -> str:
    """The caption of one image's overlay: which image, its score and what was decided."""
    calibrated = float(np.asarray(scorer.calibrate(np.array([probability])))[0])
    verdict = "positive" if decision else "negative"
    return (
        f"{image}\nprobability {probability:.3f} (calibrated {calibrated:.3f}): {verdict} for "
        f"{scorer.label_task}\nthreshold {scorer.threshold:.4g} ({scorer.operating_point}), "
        f"run {scorer.run_id}"
    )


def write_gradcam_overlays(
    scorer: RunScorer,
    batch: np.ndarray,
    paths: list[Path],
    out_dir: Path,
    scores: pd.DataFrame,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> None:
    """Each scored image (long side at most 600 px) beside its Grad-CAM overlay, captioned
    with its name, probability and decision, with the map's colour bar, as PNG.

    ``batch``, ``paths`` and the rows of ``scores`` are the scored images, in one order.
    """
    layer = pooled_layer(scorer.model)
    rows = list(scores[["image", "probability", "decision"]].itertuples(index=False))
    for start in range(0, len(paths), batch_size):
        end = start + batch_size
        # The raw maps (training.gradcam), then the post-processing (melanoma.cam) and the
        # figure (melanoma.figures): each step as the explain stage has them.
        maps = grad_cam(scorer.model, batch[start:end], layer)
        for path, row, raw_map in zip(paths[start:end], rows[start:end], maps, strict=True):
            decoded = decode_image(path.read_bytes())
            # The lesion crop's box where the model's crop was taken (after resolution
            # parity), then scaled to the image shown (long side at most 600 px).
            seen = match_resolution(decoded, scorer.parity)
            image = shrink_to_long_side(decoded, 600)
            ratio = image.shape[0] / seen.shape[0]
            top, left, height, width = model_view_box(seen, scorer.preprocess, None)
            box = (
                round(top * ratio),
                round(left * ratio),
                round(height * ratio),
                round(width * ratio),
            )
            heat = normalize_cam(upsample_cam(raw_map, image.shape[:2], box))
            title = overlay_title(scorer, row.image, float(row.probability), int(row.decision))
            target = out_dir / f"{row.image}.gradcam.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(
                gradcam_overlay_png(image, overlay_heatmap(image, heat), title, RESEARCH_NOTICE)
            )
        if progress:
            progress(min(end, len(paths)))
