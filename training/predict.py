"""Score images with a stored model: a run's preprocessed split, or new image files.

``melanoma-predict`` (``main``) scores a folder or a single image with the champion or a
given run: the run's own preprocessing, its probability calibration and its operating
threshold from validation. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import PIL.Image

from melanoma import RESEARCH_NOTICE
from melanoma.backbones import backbone_spec
from melanoma.cam import normalize_cam, overlay_heatmap, upsample_cam
from melanoma.cli import run_command
from melanoma.config import OPERATING_POINTS
from melanoma.external import image_files, is_hidden
from melanoma.images import (
    JPEG_MAGIC,
    PNG_MAGIC,
    ImageDecodeError,
    PreprocessConfig,
    check_image,
    decode_image,
    preprocess_image,
)
from melanoma.run import Run
from melanoma.store import default_store_url, open_store
from training.data import metadata_for, split_arrays
from training.gradcam import grad_cam, model_view_box, png_bytes
from training.model import image_size, predict_scores, takes_metadata
from training.run_model import RunScorer, find_run, load_model, load_run_scorer, tta_views


def score_split(model_run: Run, data_run: Run, split: str, batch_size: int = 64) -> pd.DataFrame:
    """``model_run``'s model's probabilities for ``data_run``'s preprocessed ``split``
    (original images only): the champion re-scored on a candidate's test split.

    Columns: image_id, lesion_id, dx, label, probability, as in ``predictions/<split>.csv``.
    """
    model = load_model(model_run)
    size, data_size = image_size(model), int(data_run.preprocess_data()["image_size"])
    if size != data_size:
        raise ValueError(
            f"{model_run.layout.model} takes {size}px images; {data_run.layout.prefix} was "
            f"preprocessed at {data_size}px"
        )
    images, rows = split_arrays(data_run, split)
    metadata = metadata_for(data_run, rows["image_id"]) if takes_metadata(model) else None
    probabilities = predict_scores(model, images, batch_size, tta_views(model_run), metadata)
    return rows[["image_id", "lesion_id", "dx", "label"]].assign(probability=probabilities)


# What `melanoma-predict` reads; anything else in a folder is listed as not scored.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def model_input(path: Path, config: PreprocessConfig) -> np.ndarray:
    """The file as the model saw the run's images: the same decode, hair removal, crop, resize.

    The header gives the source size, so large images take the same reduced decode as in
    preprocessing. ImageDecodeError (or OSError) names what is wrong.
    """
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageDecodeError(f"not an image format we read ({path.suffix or 'no suffix'})")
    data = path.read_bytes()
    if not data:
        raise ImageDecodeError("empty file")
    if data[:3] == JPEG_MAGIC or data[:8] == PNG_MAGIC:
        # Strictly, as at ingest: a damaged JPEG or a transparent PNG is not scored.
        return preprocess_image(data, config, check_image(data))
    try:
        with PIL.Image.open(io.BytesIO(data)) as header:
            source_wh = header.size
    except (PIL.UnidentifiedImageError, OSError) as error:
        reason = str(error).split(" <_io.", 1)[0]  # PIL names the in-memory buffer
        raise ImageDecodeError(f"unreadable image: {reason}") from error
    return preprocess_image(data, config, source_wh)


def score_images(
    scorer: RunScorer, paths: list[Path], root: Path, batch_size: int = 32
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Score ``paths``; return (scores, failures, model inputs of the scored images).

    scores: image (relative to ``root``), probability (the model's, as in the run's
    predictions), calibrated_probability, decision (1 = positive for the label task),
    threshold, operating_point, run_id, metadata (``absent``: the model fuses metadata and
    scored the image without it; ``not used``: an image-only model). failures: image, reason.
    """
    inputs, names, failures = [], [], []
    for path in paths:
        name = str(path.relative_to(root)) if path != root else path.name
        try:
            inputs.append(model_input(path, scorer.preprocess))
            names.append(name)
        except (ImageDecodeError, cv2.error, OSError) as error:
            failures.append({"image": name, "reason": str(error)})
    size = scorer.preprocess.size
    batch = np.stack(inputs) if inputs else np.zeros((0, size, size, 3), np.uint8)
    # Rounded as the run's predictions CSV is, so thresholds compare like for like.
    probabilities = predict_scores(scorer.model, batch, batch_size, scorer.tta_views).round(6)
    scores = pd.DataFrame(
        {
            "image": names,
            "probability": probabilities,
            "calibrated_probability": np.asarray(scorer.calibrate(probabilities)).round(6),
            "decision": (probabilities >= scorer.threshold).astype(int),
            "threshold": scorer.threshold,
            "operating_point": scorer.operating_point,
            "run_id": scorer.run_id,
            "metadata": "absent" if takes_metadata(scorer.model) else "not used",
        }
    )
    return scores, pd.DataFrame(failures, columns=["image", "reason"]), batch


def write_gradcam_overlays(
    scorer: RunScorer, batch: np.ndarray, paths: list[Path], out_dir: Path, names: list[str]
) -> None:
    """Each scored image (long side at most 600 px) beside its Grad-CAM overlay, as PNG."""
    maps = grad_cam(scorer.model, batch, backbone_spec(scorer.backbone).last_conv_layer)
    for path, name, raw_map in zip(paths, names, maps, strict=True):
        image = decode_image(path.read_bytes())
        scale = 600 / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        box = model_view_box(image, scorer.preprocess, None)
        heat = normalize_cam(upsample_cam(raw_map, image.shape[:2], box))
        target = out_dir / f"{name}.gradcam.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png_bytes(np.hstack([image, overlay_heatmap(image, heat)])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="melanoma-predict",
        description="Score dermoscopy images with the champion model or a given run. "
        + RESEARCH_NOTICE,
    )
    parser.add_argument("images", type=Path, help="an image file or a folder of images")
    parser.add_argument("--run", help="run id or runs/<key> (default: the label task's champion)")
    parser.add_argument(
        "--label-task", default="mel_vs_rest", help="whose champion (default mel_vs_rest)"
    )
    parser.add_argument("--store", help="store URL (default MELANOMA_STORE_URL, else .store/)")
    parser.add_argument(
        "--operating-point",
        choices=OPERATING_POINTS,
        help="which validation threshold decides (default: the run's promotion operating point)",
    )
    parser.add_argument("--output", type=Path, default=Path("predictions.csv"))
    parser.add_argument("--gradcam", type=Path, help="also write Grad-CAM overlays to this folder")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run_command(parser.prog, lambda: predict(args))


def predict(args: argparse.Namespace) -> int:
    """``melanoma-predict``: the inputs are checked before the model loads."""
    root = args.images if args.images.is_dir() else args.images.parent
    files = image_files(args.images)
    if not files:
        raise FileNotFoundError(f"{args.images}: no files in this folder")
    # In a folder, hidden files (.DS_Store, ._x.jpg) are skipped and listed; a file named
    # on the command line is scored whatever its name.
    hidden = [p for p in files if args.images.is_dir() and is_hidden(p, root)]
    paths = [p for p in files if p not in hidden]
    store = open_store(args.store or default_store_url(), create=False)
    run = find_run(store, args.run, args.label_task)
    scorer = load_run_scorer(run, args.operating_point)
    prefix = scorer.run.layout.prefix
    started = time.monotonic()
    scores, failures, batch = score_images(scorer, paths, root, args.batch_size)
    elapsed = time.monotonic() - started
    skipped = pd.DataFrame(
        {
            "image": [str(p.relative_to(root)) for p in hidden],
            "reason": "hidden file (its name starts with '.'), skipped",
        }
    )
    failures = pd.concat([failures, skipped], ignore_index=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(args.output, index=False, lineterminator="\n")
    failures_path = args.output.with_name(args.output.stem + ".failures.csv")
    failures_path.unlink(missing_ok=True)  # never leave an earlier call's failures beside
    if len(failures):
        failures.to_csv(failures_path, index=False, lineterminator="\n")
    if args.gradcam and len(scores):
        names = set(scores["image"])
        scored = [p for p in paths if str(p.relative_to(root)) in names]
        write_gradcam_overlays(scorer, batch, scored, args.gradcam, list(scores["image"]))

    print(RESEARCH_NOTICE, file=sys.stderr)
    print(
        f"{len(scores)} image(s) scored with {scorer.run_id} ({prefix}) at the "
        f"{scorer.operating_point} threshold {scorer.threshold:.4f} chosen on its validation "
        f"split: {int(scores['decision'].sum())} positive for {scorer.label_task}. "
        f"{elapsed:.1f} s ({elapsed / max(len(paths), 1):.2f} s per file) -> {args.output}",
        file=sys.stderr,
    )
    for row in failures.itertuples():
        print(f"not scored: {row.image}: {row.reason}", file=sys.stderr)
    if len(failures):
        print(f"{len(failures)} file(s) not scored, listed in {failures_path}", file=sys.stderr)
    return 0 if len(scores) else 1


if __name__ == "__main__":
    sys.exit(main())
