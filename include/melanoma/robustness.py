"""The robustness section: how a run's model holds up under acquisition shift.

A sample of the test split is read from the dataset version as stored, re-rendered under
each shift of ``melanoma.shifts`` at graded strengths, and scored through the run's own
preprocessing and resolution parity, as ``melanoma-predict`` would score such a file. The
model's scoring lives in ``training.robustness``; this module holds the sample, the
rendering and the summary. Research use only, not a diagnostic device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np
import pandas as pd

from melanoma.dataset_version import DatasetVersion
from melanoma.images import PreprocessConfig, ResolutionParity, decode_image, preprocess_image
from melanoma.metrics import auroc_with_interval, paired_auroc_difference
from melanoma.run import Run
from melanoma.shifts import Shift, shift_seed
from melanoma.store import read_manifest


def sample_by_lesion(rows: pd.DataFrame, images: int, seed: int) -> pd.DataFrame:
    """About ``images`` rows of whole lesions, each label's share of images kept; all rows
    when there are no more than ``images``. Seeded, and in ``image_id`` order."""
    if images >= len(rows):
        return rows.sort_values("image_id").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for _, group in rows.groupby("label", sort=True):
        target = images * len(group) / len(rows)
        sizes = group.groupby("lesion_id", sort=True).size()
        taken = 0
        for lesion in sizes.index[rng.permutation(len(sizes))]:
            if taken >= target:
                break
            chosen.append(lesion)
            taken += int(sizes[lesion])
    picked = rows[rows["lesion_id"].isin(chosen)]
    return picked.sort_values("image_id").reset_index(drop=True)


def stored_images(run: Run, image_ids: Iterable[str]) -> list[np.ndarray]:
    """The images as the run's dataset version stores them (RGB), checked against its manifest."""
    dataset = DatasetVersion(read_manifest(run.store, run.config().manifest_key))
    return [decode_image(dataset.read(run.store, dataset.image_relative(i))) for i in image_ids]


def as_model_input(
    image: np.ndarray, config: PreprocessConfig, parity: ResolutionParity
) -> np.ndarray:
    """A (shifted) image as a file would reach the model: lossless PNG bytes, then the
    run's preprocessing with resolution parity."""
    png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    source_wh = (image.shape[1], image.shape[0])
    return preprocess_image(png, config, source_wh, parity=parity)


def shifted_inputs(
    images: list[np.ndarray],
    image_ids: list[str],
    shift: tuple[str, Shift] | None,
    strength: float,
    config: PreprocessConfig,
    parity: ResolutionParity,
    seed: int,
) -> np.ndarray:
    """The model inputs of ``images`` under ``shift`` (name, function) at ``strength``;
    ``shift`` None: the clean images, scored the same way (the baseline)."""
    inputs = []
    for image_id, image in zip(image_ids, images, strict=True):
        if shift is not None:
            name, transform = shift
            image = transform(image, strength, shift_seed(seed, image_id, name, strength))
        inputs.append(as_model_input(image, config, parity))
    return np.stack(inputs)


def summarise_shifts(
    sample: pd.DataFrame,
    clean: np.ndarray,
    shifted: dict[str, dict[float, np.ndarray]],
    replicates: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    """AUROC per shift and strength, each with its interval and its paired difference from
    the clean images; the mean per shift, the mean over all, and its ratio to clean."""
    labels, lesions = sample["label"].to_numpy(), sample["lesion_id"].astype(str).to_numpy()
    args = (replicates, seed, confidence)
    clean_auroc = auroc_with_interval(labels, clean, lesions, *args)
    shifts: dict[str, Any] = {}
    for name, by_strength in shifted.items():
        grades: dict[str, dict[str, Any]] = {
            f"{strength:g}": {
                "auroc": auroc_with_interval(labels, scores, lesions, *args),
                "change": paired_auroc_difference(labels, scores, clean, lesions, *args),
            }
            for strength, scores in by_strength.items()
        }
        mean = float(np.mean([g["auroc"]["value"] for g in grades.values()]))
        shifts[name] = {"strengths": grades, "mean_auroc": mean}
    mean_auroc = float(np.mean([s["mean_auroc"] for s in shifts.values()]))
    return {
        "images": len(sample),
        "lesions": int(sample["lesion_id"].nunique()),
        "positives": int(labels.sum()),
        "clean_auroc": clean_auroc,
        "shifts": shifts,
        "mean_auroc": mean_auroc,
        "ratio_to_clean": mean_auroc / clean_auroc["value"] if clean_auroc["value"] else None,
        "bootstrap": {
            "unit": "lesion",
            "replicates": replicates,
            "seed": seed,
            "confidence": confidence,
        },
    }
