"""Decision thresholds and probability calibration, fitted on the validation split only.

Thresholds (a prediction is positive when ``score >= threshold``):

- ``youden``: maximises Youden's J = sensitivity + specificity - 1
  (Youden, "Index for rating diagnostic tests", Cancer 1950);
- ``target_sensitivity``: the highest threshold whose sensitivity reaches the target,
  i.e. the most specific one that still finds that share of melanomas;
- ``max_f1``: maximises F1.

Probability calibration maps scores to probabilities with a monotone function, so
it leaves AUROC and the threshold-based decisions unchanged (thresholds apply to the
model's own scores): Platt scaling (Platt 1999; a logistic regression on the score's
logit) or isotonic regression (Zadrozny & Elkan, KDD 2002). The fitted parameters are
plain numbers, applied without scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve, roc_curve

from melanoma.config import OPERATING_POINTS, PROBABILITY_CALIBRATIONS

# The thresholds chosen on validation are the operating points a run can decide at.
THRESHOLD_METHODS = OPERATING_POINTS


def _roc(labels: np.ndarray, scores: np.ndarray):
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # scikit-learn's first threshold is +inf
    return fpr[finite], tpr[finite], thresholds[finite]


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr, thresholds = _roc(labels, scores)
    return float(thresholds[int(np.argmax(tpr - fpr))])


def target_sensitivity_threshold(labels: np.ndarray, scores: np.ndarray, target: float) -> float:
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    _, tpr, thresholds = _roc(labels, scores)
    # thresholds decrease and sensitivity grows along the curve: the first that reaches it
    return float(thresholds[int(np.argmax(tpr >= target - 1e-12))])


def max_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def choose_thresholds(
    labels: np.ndarray, scores: np.ndarray, target_sensitivity: float
) -> dict[str, dict]:
    """Every threshold method on one (validation) split, with how each was chosen."""
    y = np.asarray(labels).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("choosing thresholds needs both classes in the validation split")
    s = np.asarray(scores, dtype=float)
    return {
        "youden": {
            "threshold": youden_threshold(y, s),
            "rule": "maximises sensitivity + specificity - 1 on validation",
        },
        "target_sensitivity": {
            "threshold": target_sensitivity_threshold(y, s, target_sensitivity),
            "target": target_sensitivity,
            "rule": f"highest threshold with validation sensitivity >= {target_sensitivity}",
        },
        "max_f1": {"threshold": max_f1_threshold(y, s), "rule": "maximises F1 on validation"},
    }


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_probability_calibration(method: str, labels: np.ndarray, scores: np.ndarray) -> dict:
    """Fit ``method`` (none | platt | isotonic) on validation; return its parameters."""
    if method not in PROBABILITY_CALIBRATIONS:
        raise ValueError(f"probability calibration {method!r} not in {PROBABILITY_CALIBRATIONS}")
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    if method == "none":
        return {"method": "none"}
    if method == "platt":
        fit = LogisticRegression(C=1e6).fit(_logit(s).reshape(-1, 1), y)
        return {
            "method": "platt",
            "slope": float(fit.coef_[0, 0]),
            "intercept": float(fit.intercept_[0]),
        }
    fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
    return {
        "method": "isotonic",
        "x": [float(v) for v in fit.X_thresholds_],
        "y": [float(v) for v in fit.y_thresholds_],
    }


def probability_calibrator(params: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The function that ``fit_probability_calibration``'s parameters describe."""
    method = params["method"]
    if method == "none":
        return lambda s: np.asarray(s, dtype=float)
    if method == "platt":
        slope, intercept = params["slope"], params["intercept"]
        return lambda s: 1 / (1 + np.exp(-(slope * _logit(s) + intercept)))
    if method == "isotonic":
        x, y = np.asarray(params["x"]), np.asarray(params["y"])
        return lambda s: np.interp(np.asarray(s, dtype=float), x, y)
    raise ValueError(f"probability calibration {method!r} not in {PROBABILITY_CALIBRATIONS}")
