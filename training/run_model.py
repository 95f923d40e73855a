"""A run's trained model, loaded with everything needed to score images as the run did.

Used by ``predict`` (new images), ``explain`` (Grad-CAM) and ``external`` (external
validation), so that the model is loaded, and checked against its commit, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from melanoma.artifacts import Calibration
from melanoma.calibration import probability_calibrator
from melanoma.images import NO_PARITY, PreprocessConfig, ResolutionParity
from melanoma.ood import MahalanobisDetector
from melanoma.promotion import read_champion
from melanoma.run import Run
from melanoma.store import ObjectStore

if TYPE_CHECKING:
    import keras


def load_model(run: Run) -> keras.Model:
    """The run's ``model.keras``, checked against the train stage's commit record."""
    # Keras (and TensorFlow) load here, not with this module: melanoma-predict finds the run
    # and reports a wrong one before it pays for them.
    import keras

    import training.model  # noqa: F401  (registers BackbonePreprocess for deserialisation)

    with run.local_file("train", "model") as path:
        return keras.saving.load_model(path, compile=False)


@dataclass(frozen=True)
class RunScorer:
    """A run's model with everything needed to score new images exactly as the run did."""

    run: Run
    run_id: str
    label_task: str
    model: keras.Model
    preprocess: PreprocessConfig
    operating_point: str
    threshold: float
    calibrate: Callable[[np.ndarray], np.ndarray]
    # The run's calibration.json: how each operating point's threshold was chosen, and
    # what it gave on validation (see melanoma.calibration.choose_thresholds).
    calibration: Calibration = field(hash=False)
    tta_views: int = 1  # flips/rotations averaged, as the run scored its splits
    # The long side and JPEG quality of the run's training images: larger new images are
    # brought to them first (resolution parity; NO_PARITY for a run from before it).
    parity: ResolutionParity = NO_PARITY
    # Out-of-distribution detector on the pooled features (None for a run from before it).
    ood: MahalanobisDetector | None = field(default=None, hash=False)


def find_run(store: ObjectStore, ref: str | None, label_task: str) -> Run:
    """The run ``ref`` names (run id, run key or ``runs/<key>``), or the label task's champion.

    LookupError names what is missing.
    """
    if ref is None:
        champion = read_champion(store, label_task)
        if champion is None:
            raise LookupError(
                f"no champion for {label_task} in {store.url}; pass --run or run the pipeline"
            )
        ref = champion["run_prefix"]
    run = Run.find(store, ref)
    if not run.committed("train"):
        raise LookupError(f"{store.url}/{run.layout.prefix} has no trained model (stage train)")
    return run


def load_run_scorer(run: Run, operating_point: str | None = None) -> RunScorer:
    """Load the run's model, preprocessing, calibration and operating threshold.

    ``operating_point`` defaults to the one the run's promotion decision used.
    """
    config = run.config()
    training = run.training_record()
    calibration = run.calibration()
    if operating_point is None:
        promotion = run.promotion()
        candidate = promotion.candidate if promotion is not None else {}
        operating_point = candidate.get("operating_point", "target_sensitivity")
    if operating_point not in calibration.thresholds:
        raise ValueError(
            f"operating point {operating_point!r} not in {sorted(calibration.thresholds)}"
        )
    return RunScorer(
        run=run,
        run_id=config.run_id,
        label_task=config.label_task,
        model=load_model(run),
        preprocess=run.preprocess_config(),
        operating_point=operating_point,
        threshold=calibration.threshold(operating_point),
        calibrate=probability_calibrator(calibration.probability_calibration),
        tta_views=training.tta_views,
        parity=run.resolution_parity(),
        calibration=calibration,
        ood=read_ood_detector(run),
    )


def read_ood_detector(run: Run) -> MahalanobisDetector | None:
    """The run's out-of-distribution detector; None for a run trained before it existed."""
    if "ood" not in run.commit_record("train")["artifacts"]:
        return None
    return MahalanobisDetector.from_bytes(run.read_bytes("train", "ood"))
