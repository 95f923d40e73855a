import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from melanoma.metrics import (
    bootstrap_intervals,
    brier_score,
    confusion_counts,
    expected_calibration_error,
    lesion_bootstrap_weights,
    paired_auroc_difference,
    rates_from_counts,
    threshold_metrics,
)


def scored_lesions(n_lesions: int, seed: int):
    """Images grouped in lesions (1-3 each); a lesion's images share its label and a noisy score."""
    rng = np.random.default_rng(seed)
    per_lesion = rng.integers(1, 4, n_lesions)
    groups = np.repeat([f"L{i}" for i in range(n_lesions)], per_lesion)
    lesion_labels = rng.random(n_lesions) < 0.2
    labels = np.repeat(lesion_labels, per_lesion).astype(int)
    scores = 1 / (1 + np.exp(-(1.5 * labels - 0.75 + rng.normal(0, 1, len(labels)))))
    return labels, scores, groups


def test_threshold_metrics_match_scikit_learn_on_random_vectors():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = (rng.random(300) < 0.3).astype(int)
        scores = rng.random(300)
        threshold = float(rng.uniform(0.2, 0.8))
        predicted = (scores >= threshold).astype(int)
        m = threshold_metrics(labels, scores, threshold)
        tn, fp, fn, tp = confusion_matrix(labels, predicted).ravel()
        assert m["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
        assert m["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
        assert m["sensitivity"] == pytest.approx(recall_score(labels, predicted))
        assert m["specificity"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
        assert m["ppv"] == pytest.approx(precision_score(labels, predicted))
        assert m["npv"] == pytest.approx(precision_score(labels, predicted, pos_label=0))
        assert m["f1"] == pytest.approx(f1_score(labels, predicted))


def test_rates_reproduce_the_reference_studys_published_confusion_matrix():
    rates = rates_from_counts(tn=349, fp=981, fn=1, tp=155)
    assert round(rates["accuracy"], 4) == 0.3392
    assert round(rates["sensitivity"], 4) == 0.9936
    assert round(rates["specificity"], 4) == 0.2624
    assert round(rates["ppv"], 4) == 0.1364
    assert round(rates["npv"], 4) == 0.9971


def test_undefined_rates_are_nan_not_an_error():
    rates = rates_from_counts(
        **confusion_counts(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]), 0.9)
    )
    assert np.isnan(rates["ppv"]) and rates["sensitivity"] == 0 and rates["specificity"] == 1


def test_lesion_bootstrap_keeps_a_lesions_images_together():
    groups = np.array(["a", "a", "a", "b", "c", "c", "d"])
    weights = lesion_bootstrap_weights(groups, replicates=500, seed=1)
    assert weights.shape == (500, 7)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()
    assert (weights[:, 4] == weights[:, 5]).all()
    # each replicate draws as many lesions as there are: 4 lesion draws
    lesion_draws = weights[:, [0, 3, 4, 6]].sum(axis=1)
    assert (lesion_draws == 4).all()
    assert not (weights[:, 0] == weights[:, 3]).all(), "different lesions are drawn independently"


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_lesions():
    widths = []
    for n_lesions in (100, 1600):
        labels, scores, groups = scored_lesions(n_lesions, seed=n_lesions)
        result = bootstrap_intervals(labels, scores, groups, {"t": 0.5}, replicates=400, seed=0)
        auroc = result["auroc"]
        assert auroc["value"] == pytest.approx(roc_auc_score(labels, scores))
        assert result["auprc"]["value"] == pytest.approx(average_precision_score(labels, scores))
        assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"]
        for rate, entry in result["thresholds"]["t"].items():
            assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], rate
        widths.append(auroc["ci_high"] - auroc["ci_low"])
    assert widths[1] < widths[0] / 2  # about 1/sqrt(16) in theory


def test_bootstrap_is_seeded():
    labels, scores, groups = scored_lesions(200, seed=3)
    first = bootstrap_intervals(labels, scores, groups, {"t": 0.4}, replicates=200, seed=7)
    again = bootstrap_intervals(labels, scores, groups, {"t": 0.4}, replicates=200, seed=7)
    other = bootstrap_intervals(labels, scores, groups, {"t": 0.4}, replicates=200, seed=8)
    assert first == again and first["auroc"] != other["auroc"]


def test_brier_and_expected_calibration_error():
    labels = np.array([0, 0, 1, 1])
    assert brier_score(labels, labels.astype(float)) == 0
    assert brier_score(labels, np.full(4, 0.5)) == 0.25
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    calibrated_labels = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(calibrated_labels, p) < 0.02
    assert expected_calibration_error(calibrated_labels, p**3) > 0.15


def test_weighted_pair_counts_give_scikit_learns_auroc_with_ties_and_weights():
    from melanoma.metrics import weighted_pair_counts

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300), 1)  # many ties
    weights = rng.integers(0, 3, (5, 300)).astype(float)
    concordant, pairs = weighted_pair_counts(labels, scores, weights)
    for w, c, p in zip(weights, concordant, pairs, strict=True):
        assert c / p == pytest.approx(roc_auc_score(labels, scores, sample_weight=w))


def test_within_group_auroc_ignores_what_separates_the_groups():
    from melanoma.metrics import auroc_with_interval

    # Group b has the positives' rate and higher scores everywhere; within each group the
    # score is pure noise, so only the between-group pairs make the pooled AUROC high.
    rng = np.random.default_rng(0)
    groups = np.repeat(["a", "b"], 400)
    labels = np.concatenate([rng.random(400) < 0.05, rng.random(400) < 0.5]).astype(int)
    scores = np.concatenate([rng.random(400), rng.random(400) + 1.0])
    lesions = np.arange(800)
    pooled = auroc_with_interval(labels, scores, lesions, 200, 0, 0.95)
    within = auroc_with_interval(labels, scores, lesions, 200, 0, 0.95, groups=groups)
    assert pooled["value"] > 0.7
    assert abs(within["value"] - 0.5) < 0.08
    assert within["ci_low"] <= within["value"] <= within["ci_high"]


def test_a_paired_difference_within_groups_ignores_each_groups_score_scale():
    labels, scores, lesions = scored_lesions(200, seed=3)
    groups = np.where(np.arange(len(labels)) % 2 == 0, "a", "b")
    # The same ranking within each group, on another scale in group b.
    rescaled = np.where(groups == "b", scores / 10, scores)
    within = paired_auroc_difference(labels, rescaled, scores, lesions, 200, 0, 0.95, groups=groups)
    assert within == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    overall = paired_auroc_difference(labels, rescaled, scores, lesions, 200, 0, 0.95)
    assert overall["value"] < -0.05
