"""Binary classification metrics with lesion-level bootstrap intervals. Pure numpy/scikit-learn.

A prediction is positive when ``score >= threshold``. Rates that are undefined for a
confusion matrix (PPV with no positive predictions, say) are ``nan``.

Confidence intervals are percentile intervals of a bootstrap that resamples *lesions*,
not images (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): the
images of one lesion are correlated, so resampling images would understate the spread.
Resampling lesions with replacement is the same as weighting every image by the number
of times its lesion was drawn, which is how it is computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

RATES = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")


def _ratio(numerator, denominator):
    """numerator / denominator, nan where the denominator is 0; scalars or arrays alike."""
    n = np.asarray(numerator, dtype=float)
    d = np.asarray(denominator, dtype=float)
    ratio = np.divide(n, d, out=np.full(np.broadcast(n, d).shape, np.nan), where=d > 0)
    return float(ratio) if ratio.ndim == 0 else ratio


def confusion_counts(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """TN, FP, FN, TP of ``score >= threshold`` against the 0/1 ``labels``."""
    y = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    return {
        "tn": int(np.sum(~y & ~predicted)),
        "fp": int(np.sum(~y & predicted)),
        "fn": int(np.sum(y & ~predicted)),
        "tp": int(np.sum(y & predicted)),
    }


def rates_from_counts(tn, fp, fn, tp) -> dict:
    """Accuracy, sensitivity, specificity, PPV, NPV and F1 of a confusion matrix; given arrays
    of counts (one per bootstrap replicate, say), each rate is an array."""
    return {
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """The confusion matrix and its rates at one threshold."""
    counts = confusion_counts(labels, scores, threshold)
    return {"threshold": float(threshold), "confusion": counts, **rates_from_counts(**counts)}


def lesion_bootstrap_weights(groups: Sequence, replicates: int, seed: int) -> np.ndarray:
    """(replicates, n_images) integer weights: how often each image's lesion was drawn.

    Each replicate draws as many lesions as there are, with replacement; all images of
    a lesion share its weight, so a lesion's images stay together.
    """
    _, lesion_of_image = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    n_lesions = int(lesion_of_image.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_lesions, size=(replicates, n_lesions))
    lesion_counts = np.zeros((replicates, n_lesions), dtype=np.int32)
    np.add.at(lesion_counts, (np.arange(replicates)[:, None], draws), 1)
    return lesion_counts[:, lesion_of_image]


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: Sequence,
    thresholds: Mapping[str, float],
    replicates: int = 2000,
    seed: int = 42,
    confidence: float = 0.95,
) -> dict:
    """Point estimates and lesion-bootstrap intervals of AUROC, AUPRC and every rate at each threshold.

    Returns ``{"auroc": {...}, "auprc": {...}, "thresholds": {name: {rate: {...}}},
    "replicates": n, "degenerate_replicates": k}`` where each ``{...}`` is
    ``{"value", "ci_low", "ci_high"}``. Replicates holding one class only have no
    AUROC; they are counted and left out of the threshold-free intervals.
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    weights = lesion_bootstrap_weights(groups, replicates, seed)
    positives = weights @ y
    usable = (positives > 0) & (positives < weights.sum(axis=1))

    result: dict = {"replicates": replicates, "degenerate_replicates": int((~usable).sum())}
    auroc_replicates = within_group_auroc_replicates(y, s, np.zeros(len(y)), weights[usable])
    auprc_replicates = [average_precision_score(y, s, sample_weight=w) for w in weights[usable]]
    for name, fn, replicate_values in (
        ("auroc", roc_auc_score, auroc_replicates),
        ("auprc", average_precision_score, auprc_replicates),
    ):
        low, high = percentile_interval(np.asarray(replicate_values, dtype=float), confidence)
        result[name] = {"value": float(fn(y, s)), "ci_low": low, "ci_high": high}

    result["thresholds"] = {}
    for name, threshold in thresholds.items():
        predicted = (s >= threshold).astype(int)
        # Weighted confusion counts for every replicate at once.
        tp = weights @ (y * predicted)
        fp = weights @ ((1 - y) * predicted)
        fn = weights @ (y * (1 - predicted))
        tn = weights @ ((1 - y) * (1 - predicted))
        point = rates_from_counts(**confusion_counts(y, s, threshold))
        per_replicate = rates_from_counts(tn=tn, fp=fp, fn=fn, tp=tp)
        result["thresholds"][name] = {}
        for rate in RATES:
            low, high = percentile_interval(per_replicate[rate], confidence)
            result["thresholds"][name][rate] = {
                "value": point[rate],
                "ci_low": low,
                "ci_high": high,
            }
    return result


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    y = np.asarray(labels, dtype=float)
    return float(np.mean((np.asarray(probabilities, dtype=float) - y) ** 2))


def reliability_bins(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Equal-width probability bins: count, mean predicted probability and observed frequency."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        if members.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(members.sum()),
                    "mean_probability": float(p[members].mean()),
                    "observed_frequency": float(y[members].mean()),
                }
            )
    return out


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 10
) -> float:
    """ECE: the count-weighted mean gap between predicted probability and observed frequency
    over equal-width bins (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017)."""
    n = len(labels)
    return float(
        sum(
            b["count"] / n * abs(b["mean_probability"] - b["observed_frequency"])
            for b in reliability_bins(labels, probabilities, bins)
        )
    )


def weighted_pair_counts(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concordant and total positive-negative pairs, each image counted ``weight`` times.

    ``weights`` is (replicates, n) or (n,); ties count one half. AUROC is
    ``concordant / pairs`` (the Mann-Whitney statistic), computed for every replicate at
    once from one sort: for each positive, the negative weight below its score and at it.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    order = np.argsort(s, kind="stable")
    s_sorted, w_sorted, y_sorted = s[order], w[:, order], y[order]
    negative_mass = np.concatenate(
        [np.zeros((len(w), 1)), np.cumsum(w_sorted * ~y_sorted, axis=1)], axis=1
    )
    positives = np.flatnonzero(y_sorted)
    below = np.searchsorted(s_sorted, s_sorted[positives], side="left")
    up_to = np.searchsorted(s_sorted, s_sorted[positives], side="right")
    beaten = negative_mass[:, below] + 0.5 * (negative_mass[:, up_to] - negative_mass[:, below])
    concordant = np.sum(w_sorted[:, positives] * beaten, axis=1)
    pairs = w_sorted[:, positives].sum(axis=1) * negative_mass[:, -1]
    return concordant, pairs


def within_group_auroc_replicates(
    labels: np.ndarray, scores: np.ndarray, groups: Sequence | np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """AUROC over positive-negative pairs of the same group only, per replicate (nan: no pairs).

    A stratified AUROC: it ignores whatever separates the groups (a clinic's camera and
    its melanoma rate), so it measures ranking lesions against lesions seen alike.
    """
    g = np.asarray(groups, dtype=str)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    concordant, pairs = np.zeros(len(w)), np.zeros(len(w))
    for value in np.unique(g):
        members = g == value
        c, p = weighted_pair_counts(labels[members], scores[members], w[:, members])
        concordant, pairs = concordant + c, pairs + p
    return _ratio(concordant, pairs)


def auroc_with_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    lesions: Sequence,
    replicates: int,
    seed: int,
    confidence: float,
    groups: Sequence | None = None,
) -> dict[str, float | None]:
    """AUROC (within ``groups`` when given) with its lesion-bootstrap percentile interval.

    ``{"value", "ci_low", "ci_high"}``; nan where the data hold no positive-negative pair.
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    group_of = np.zeros(len(y), dtype=int) if groups is None else np.asarray(groups)
    point = within_group_auroc_replicates(y, s, group_of, np.ones(len(y)))[0]
    weights = lesion_bootstrap_weights(lesions, replicates, seed)
    low, high = percentile_interval(
        within_group_auroc_replicates(y, s, group_of, weights), confidence
    )
    return {"value": float(point), "ci_low": low, "ci_high": high}


def paired_auroc_difference(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    lesions: Sequence,
    replicates: int,
    seed: int,
    confidence: float,
    groups: Sequence | None = None,
) -> dict[str, float]:
    """AUROC of ``scores_a`` minus AUROC of ``scores_b`` on the same images (each within
    ``groups`` when given), with a paired lesion-bootstrap interval: each replicate draws
    one set of lesions and scores both models on it, so what the two share (the images'
    difficulty) cancels.

    ``{"value", "ci_low", "ci_high"}``; nan where the data hold no positive-negative pair.
    """
    y = np.asarray(labels).astype(int)
    group_of = np.zeros(len(y), dtype=int) if groups is None else np.asarray(groups)
    weights = np.vstack([np.ones(len(y)), lesion_bootstrap_weights(lesions, replicates, seed)])
    differences = within_group_auroc_replicates(
        y, np.asarray(scores_a, dtype=float), group_of, weights
    ) - within_group_auroc_replicates(y, np.asarray(scores_b, dtype=float), group_of, weights)
    low, high = percentile_interval(differences[1:], confidence)
    return {"value": float(differences[0]), "ci_low": low, "ci_high": high}
