"""Stage robustness with a real model: the clean sample scores as the run scored its test
split, and every shift is measured."""

import numpy as np
from sklearn.metrics import roc_auc_score

from melanoma.config import RobustnessConfig
from melanoma.robustness import sample_by_lesion
from melanoma.shifts import ACQUISITION_SHIFTS
from training.robustness import measure_robustness


def test_robustness_measures_every_shift_against_the_clean_test_images(evaluated_run):
    run = evaluated_run
    config = RobustnessConfig(images=40, strengths=(0.5, 1.0))
    assert measure_robustness(run, config) == run.layout.commit("robustness")
    record = run.read_json("robustness", "robustness")
    assert set(record["shifts"]) == set(ACQUISITION_SHIFTS)
    assert all(set(s["strengths"]) == {"0.5", "1"} for s in record["shifts"].values())
    # The clean images, read as stored and scored as a file would be, rank as the run's
    # own test predictions of the same images do.
    sample = sample_by_lesion(run.predictions("test"), config.images, config.seed)
    assert record["images"] == len(sample) and 0 < sample["label"].sum() < len(sample)
    stored = roc_auc_score(sample["label"], sample["probability"])
    assert abs(record["clean_auroc"]["value"] - stored) < 0.02
    grades = [g for s in record["shifts"].values() for g in s["strengths"].values()]
    assert np.isfinite([g["auroc"]["value"] for g in grades]).all()
    assert 0 <= record["mean_auroc"] <= 1 and "Research use only" in record["notice"]
