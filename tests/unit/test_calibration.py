import numpy as np
import pytest

from melanoma.calibration import (
    choose_thresholds,
    fit_probability_calibration,
    max_f1_threshold,
    probability_calibrator,
    target_sensitivity_threshold,
    youden_threshold,
)
from melanoma.metrics import expected_calibration_error, threshold_metrics


def test_youden_threshold_on_a_constructed_case():
    # Positives at 0.6-0.9, negatives at 0.1-0.4 plus one at 0.7: the best cut is 0.6
    # (sensitivity 1, specificity 4/5, J 0.8); 0.8 gives 3/4 and 1 (J 0.75).
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.7, 0.6, 0.8, 0.85, 0.9])
    assert youden_threshold(labels, scores) == pytest.approx(0.6)
    m = threshold_metrics(labels, scores, 0.6)
    assert (m["sensitivity"], m["specificity"]) == (1.0, 0.8)


def test_target_sensitivity_threshold_reaches_its_target_and_is_the_most_specific():
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.15).astype(int)
    scores = np.clip(0.3 * labels + rng.normal(0.35, 0.15, 2000), 0, 1)
    for target in (0.8, 0.9, 0.95, 1.0):
        t = target_sensitivity_threshold(labels, scores, target)
        assert threshold_metrics(labels, scores, t)["sensitivity"] >= target
        # any higher threshold among the scores misses the target
        higher = scores[scores > t].min()
        assert threshold_metrics(labels, scores, higher)["sensitivity"] < target
    with pytest.raises(ValueError, match="target sensitivity"):
        target_sensitivity_threshold(labels, scores, 0)


def test_max_f1_threshold_matches_a_brute_force_search():
    rng = np.random.default_rng(1)
    labels = (rng.random(500) < 0.2).astype(int)
    scores = np.clip(0.25 * labels + rng.random(500) * 0.8, 0, 1)
    best = max(np.unique(scores), key=lambda t: threshold_metrics(labels, scores, t)["f1"])
    assert threshold_metrics(labels, scores, max_f1_threshold(labels, scores))["f1"] == (
        pytest.approx(threshold_metrics(labels, scores, best)["f1"])
    )


def test_choose_thresholds_says_how_each_was_chosen_and_needs_both_classes():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    chosen = choose_thresholds(labels, scores, 0.95)
    assert set(chosen) == {"youden", "target_sensitivity", "max_f1"}
    assert all("rule" in entry and "threshold" in entry for entry in chosen.values())
    assert chosen["target_sensitivity"]["target"] == 0.95
    with pytest.raises(ValueError, match="both classes"):
        choose_thresholds(np.zeros(4), np.random.default_rng(0).random(4), 0.95)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_probability_calibration_fixes_overconfident_scores_and_keeps_their_order(method):
    rng = np.random.default_rng(2)

    def sample(n):
        true_p = rng.uniform(0.02, 0.6, n)
        return (rng.random(n) < true_p).astype(int), np.sqrt(true_p)  # overconfident scores

    val_labels, val_scores = sample(5000)
    test_labels, test_scores = sample(5000)
    params = fit_probability_calibration(method, val_labels, val_scores)
    calibrate = probability_calibrator(params)
    calibrated = calibrate(test_scores)
    assert expected_calibration_error(test_labels, calibrated) < 0.03
    assert expected_calibration_error(test_labels, test_scores) > 0.15
    order = np.argsort(test_scores)
    assert np.all(np.diff(calibrated[order]) >= -1e-12), "calibration must be monotone"
    assert params["method"] == method
    assert np.array_equal(probability_calibrator({"method": "none"})(test_scores), test_scores)


def test_unknown_calibration_is_rejected():
    with pytest.raises(ValueError, match="probability calibration"):
        fit_probability_calibration("beta", np.array([0, 1]), np.array([0.2, 0.8]))
