"""Stage robustness: the run's model on a sample of its test split under acquisition shift.

Writes ``evaluation/robustness.json`` (``melanoma.robustness.summarise_shifts``: the AUROC
per shift and strength with its interval and its paired change from the clean images, the
mean per shift and over all, and the ratio to clean), then the stage's commit record. The
report shows it as its robustness section. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np

from melanoma import RESEARCH_NOTICE
from melanoma.config import RobustnessConfig
from melanoma.evaluation import json_safe
from melanoma.robustness import sample_by_lesion, shifted_inputs, stored_images, summarise_shifts
from melanoma.run import Run
from melanoma.shifts import ACQUISITION_SHIFTS
from training.model import predict_scores
from training.run_model import load_model

log = logging.getLogger(__name__)


def measure_robustness(run: Run, config: RobustnessConfig) -> str:
    """Score the clean sample and every shift at every strength; return the commit key."""
    started = time.monotonic()
    sample = sample_by_lesion(run.predictions("test"), config.images, config.seed)
    ids = list(sample["image_id"])
    images = stored_images(run, ids)
    model, views = load_model(run), run.training_record().tta_views
    preprocess, parity = run.preprocess_config(), run.resolution_parity()

    def scores(shift, strength: float) -> np.ndarray:
        inputs = shifted_inputs(images, ids, shift, strength, preprocess, parity, config.seed)
        return predict_scores(model, inputs, config.batch_size, views)

    clean = scores(None, 0.0)
    shifted = {
        name: {s: scores((name, transform), s) for s in config.strengths}
        for name, transform in ACQUISITION_SHIFTS.items()
    }
    bootstrap = run.metrics().bootstrap
    summary = summarise_shifts(
        sample, clean, shifted, bootstrap["replicates"], bootstrap["seed"], bootstrap["confidence"]
    )
    seconds = round(time.monotonic() - started, 1)
    log.info(
        "robustness on %d test images: clean AUROC %.4f, mean under shift %.4f (%.0f s)",
        summary["images"],
        summary["clean_auroc"]["value"],
        summary["mean_auroc"],
        seconds,
    )
    record = {
        "run_id": run.config().run_id,
        "config": asdict(config),
        "resolution_parity": parity.record(),
        **summary,
        "seconds": seconds,
        "notice": RESEARCH_NOTICE,
    }
    with run.stage("robustness") as stage:
        stage.put_json("robustness", run.layout.robustness, json_safe(record))
    return run.layout.commit("robustness")
