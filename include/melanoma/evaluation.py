"""Stages calibrate, evaluate and promote: calibrate on validation, evaluate on test, decide.

Reads the train stage's committed ``predictions/{val,test}.csv`` and writes, each stage
committing its artifacts (see ``melanoma.run``):

- calibrate: ``calibration.json``, thresholds and probability calibration fitted on
  validation only, each with its validation metrics;
- evaluate: ``evaluation/figures/*.png`` and ``evaluation/metrics.json`` (schema below);
- promote: ``promotion.json``, ``promotion_scores.csv`` (both models on the promotion
  benchmark) and, when promoted, ``champions/<task>/champion.json``.

``metrics.json`` (``schema_version`` 1)::

    run_id, dataset_version, label_task, split ("test"), notice
    counts: {images, lesions, positives, negatives, prevalence}
    test_fingerprint: sha256 of the test split's sorted (image_id, label) pairs
    bootstrap: {unit: "lesion", replicates, degenerate_replicates, confidence, seed}
    threshold_free: {auroc: CI, auprc: CI, auprc_baseline}
    operating_points: {name: {threshold, chosen_on, confusion: {tn, fp, fn, tp},
                              accuracy: CI, sensitivity: CI, specificity: CI,
                              ppv: CI, npv: CI, f1: CI}}
    probability_calibration: {method, fitted_on: "val",
                              test: {raw: {brier, ece, bins}, calibrated: {brier, ece, bins}}}
    holdout_source: the source tested alone ("unseen clinic"), or null
    source_confounding: {sources, within_source_auroc: CI, source_only_auroc: CI,
                         train_rates: {source: rate}}            (when the split has sources)
    subgroups: {attribute: {group: {images, lesions, positives, auroc: CI | null, note}}}
    figures: {name: key}

where ``CI`` is ``{value, ci_low, ci_high}``; undefined values are ``null``.
Operating points are ``at_0.5`` and every threshold in ``calibration.json``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma import RESEARCH_NOTICE, figures
from melanoma.artifacts import Calibration
from melanoma.calibration import (
    choose_thresholds,
    fit_probability_calibration,
    probability_calibrator,
)
from melanoma.config import CheckedSettings, check_settings
from melanoma.layout import champion_key, previous_champion_key
from melanoma.metrics import (
    auroc_with_interval,
    bootstrap_intervals,
    brier_score,
    expected_calibration_error,
    paired_auroc_difference,
    reliability_bins,
    threshold_metrics,
)
from melanoma.promotion import (
    PromotionPolicy,
    benchmark_refusal,
    decide_promotion,
    read_champion,
)
from melanoma.run import Run
from melanoma.subgroups import METADATA_COLUMNS, source_confounding, source_rates, subgroup_metrics

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PREDICTION_COLUMNS = ("image_id", "lesion_id", "dx", "label", "probability")


@dataclass(frozen=True)
class EvaluationConfig(CheckedSettings):
    target_sensitivity: float = 0.95
    probability_calibration: str = "platt"
    bootstrap_replicates: int = 2000
    confidence: float = 0.95
    calibration_bins: int = 10
    seed: int = 42

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        check_settings(self)


def json_safe(value: Any) -> Any:
    """NaN becomes null: JSON has no NaN, and an undefined rate is not a number."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def read_predictions(run: Run, split: str) -> pd.DataFrame:
    """The train stage's committed predictions for ``split``, checked for the expected columns."""
    frame = run.predictions(split)
    location = f"{run.store.url}/{run.layout.predictions(split)}"
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{location}: missing column(s) {missing}")
    for column, valid, expected in (
        ("label", frame["label"].isin([0, 1]), "0 or 1"),
        ("probability", frame["probability"].between(0, 1), "a number in [0, 1]"),
    ):
        if not valid.all():
            row = int(np.flatnonzero(~valid.to_numpy())[0])
            raise ValueError(
                f"{location}: row {row + 2} (image {frame['image_id'].iloc[row]}): "
                f"{column} is {frame[column].iloc[row]!s}, expected {expected}"
            )
    return frame


def split_fingerprint(predictions: pd.DataFrame) -> str:
    """Identifies a test split: the same images with the same labels give the same fingerprint."""
    pairs = sorted(zip(predictions["image_id"], predictions["label"].astype(int), strict=True))
    return hashlib.sha256("\n".join(f"{i},{y}" for i, y in pairs).encode()).hexdigest()[:16]


def calibrate_run(run: Run, config: EvaluationConfig) -> str:
    """Thresholds and probability calibration from the validation split; return the commit key."""
    val = read_predictions(run, "val")
    labels, scores = val["label"].to_numpy(), val["probability"].to_numpy()
    thresholds = choose_thresholds(labels, scores, config.target_sensitivity)
    for entry in thresholds.values():
        entry["validation"] = threshold_metrics(labels, scores, entry["threshold"])
    record = Calibration(
        fitted_on="val",
        validation={"images": len(val), "positives": int(labels.sum())},
        thresholds=thresholds,
        probability_calibration=fit_probability_calibration(
            config.probability_calibration, labels, scores
        ),
        config=asdict(config),
    )
    with run.stage(Calibration.stage) as stage:
        stage.put_json(Calibration.artifact, run.layout.calibration, json_safe(record.to_json()))
    log.info(
        "thresholds on validation: %s",
        {k: round(v["threshold"], 4) for k, v in thresholds.items()},
    )
    return run.layout.commit("calibrate")


def probability_measures(
    labels: np.ndarray,
    scores: np.ndarray,
    calibration: Calibration,
    config: EvaluationConfig,
    split: str,
) -> dict[str, Any]:
    """Brier score, ECE and reliability bins of the raw and the calibrated probabilities."""
    calibrated = probability_calibrator(calibration.probability_calibration)(scores)
    bins = config.calibration_bins
    return {
        "method": calibration.probability_calibration["method"],
        "fitted_on": "val",
        split: {
            name: {
                "brier": brier_score(labels, p),
                "ece": expected_calibration_error(labels, p, bins),
                "bins": reliability_bins(labels, p, bins),
            }
            for name, p in (("raw", scores), ("calibrated", calibrated))
        },
    }


def prediction_figures(
    labels: np.ndarray,
    scores: np.ndarray,
    points: dict[str, Any],
    intervals: dict[str, Any],
    probability: dict[str, Any],
    split: str,
) -> dict[str, bytes]:
    """ROC, PR, confusion matrices, metrics against threshold and reliability (name -> PNG)."""
    data = "test split" if split == "test" else f"{split} set"
    reliability = {
        "raw": probability[split]["raw"]["bins"],
        f"{probability['method']} (fitted on val)": probability[split]["calibrated"]["bins"],
    }
    return {
        "roc": figures.roc_figure(labels, scores, points, intervals["auroc"], data),
        "precision_recall": figures.pr_figure(labels, scores, points, intervals["auprc"], data),
        "confusion_matrices": figures.confusion_figure(points),
        "metrics_vs_threshold": figures.threshold_sweep_figure(labels, scores, points, data),
        "reliability": figures.reliability_figure(reliability, data),
    }


def measure_predictions(
    frame: pd.DataFrame, calibration: Calibration, config: EvaluationConfig, split: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Metrics of ``frame`` (label, probability, lesion_id) at the thresholds chosen on
    validation, with lesion-bootstrap intervals, and their figures (name -> PNG).

    Returns the ``counts``, ``bootstrap``, ``threshold_free``, ``operating_points`` and
    ``probability_calibration`` parts of ``metrics.json``; ``split`` names the data measured.
    """
    labels, scores = frame["label"].to_numpy(), frame["probability"].to_numpy()
    if len(np.unique(labels)) < 2:
        raise ValueError(f"the {split} data hold one class only; nothing to evaluate")
    thresholds = {"at_0.5": 0.5} | calibration.operating_thresholds
    intervals = bootstrap_intervals(
        labels,
        scores,
        frame["lesion_id"].to_numpy(),
        thresholds,
        config.bootstrap_replicates,
        config.seed,
        config.confidence,
    )
    operating_points, plain_points = {}, {}
    for name, threshold in thresholds.items():
        point = plain_points[name] = threshold_metrics(labels, scores, threshold)
        operating_points[name] = {
            "threshold": threshold,
            "chosen_on": "fixed" if name == "at_0.5" else "val",
            "confusion": point["confusion"],
            **intervals["thresholds"][name],
        }
    probability = probability_measures(labels, scores, calibration, config, split)
    pngs = prediction_figures(labels, scores, plain_points, intervals, probability, split)
    measured = {
        "counts": {
            "images": len(frame),
            "lesions": int(frame["lesion_id"].nunique()),
            "positives": int(labels.sum()),
            "negatives": int(len(labels) - labels.sum()),
            "prevalence": float(labels.mean()),
        },
        "bootstrap": {
            "unit": "lesion",
            "replicates": intervals["replicates"],
            "degenerate_replicates": intervals["degenerate_replicates"],
            "confidence": config.confidence,
            "seed": config.seed,
        },
        "threshold_free": {
            "auroc": intervals["auroc"],
            "auprc": intervals["auprc"],
            "auprc_baseline": float(labels.mean()),
        },
        "operating_points": operating_points,
        "probability_calibration": probability,
    }
    return measured, pngs


def evaluate_run(run: Run, config: EvaluationConfig) -> str:
    """Every test metric with lesion-bootstrap intervals, and the figures; return the commit key."""
    calibration = run.calibration()
    test = read_predictions(run, "test")
    try:
        measured, pngs = measure_predictions(test, calibration, config, "test")
    except ValueError as error:
        raise ValueError(f"{run.layout.prefix}: {error}") from None
    run_config = run.config()
    groups = subgroup_measures(run, test, config)
    pngs["training_curves"] = figures.training_curves_figure(run.read_json("train", "history"))
    with run.stage("evaluate") as stage:
        figure_keys = {
            name: stage.put_bytes(f"figure/{name}", run.layout.figure(name), png)
            for name, png in pngs.items()
        }
        metrics = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_config.run_id,
            "dataset_version": run_config.dataset_version,
            "label_task": run_config.label_task,
            "split": "test",
            "counts": measured["counts"],
            "test_fingerprint": split_fingerprint(test),
            **{k: v for k, v in measured.items() if k != "counts"},
            "holdout_source": run_config.config.get("holdout_source") or None,
            **groups,
            "figures": figure_keys,
            "notice": RESEARCH_NOTICE,
        }
        stage.put_json("metrics", run.layout.metrics, json_safe(metrics))
    auroc = measured["threshold_free"]["auroc"]
    log.info(
        "test AUROC %.4f (95%% CI %.4f-%.4f, lesion bootstrap)",
        auroc["value"],
        auroc["ci_low"],
        auroc["ci_high"],
    )
    return run.layout.commit("evaluate")


def subgroup_measures(run: Run, test: pd.DataFrame, config: EvaluationConfig) -> dict[str, Any]:
    """``source_confounding`` and ``subgroups`` of the test predictions, from the metadata
    the split carries (none for a split written before it carried them)."""
    splits = run.splits()
    present = [c for c in METADATA_COLUMNS if c in splits.columns]
    if not present:
        return {}
    frame = test.merge(splits[["image_id", *present]], on="image_id", how="left")
    args = (config.bootstrap_replicates, config.seed, config.confidence)
    measures: dict[str, Any] = {"subgroups": subgroup_metrics(frame, *args)}
    if "dataset" in present:
        measures["source_confounding"] = source_confounding(frame, source_rates(splits), *args)
    return measures


def candidate_summary(run: Run, policy: PromotionPolicy) -> dict[str, Any]:
    """What the promotion rule needs to know about a run (and what champion.json records)."""
    metrics = run.metrics()
    point = metrics.operating_points[policy.operating_point]
    return {
        "run_id": metrics.run_id,
        "label_task": metrics.label_task,
        "dataset_version": metrics.dataset_version,
        "test_fingerprint": metrics.test_fingerprint,
        "auroc": metrics.auroc["value"],
        "auroc_ci": [metrics.auroc["ci_low"], metrics.auroc["ci_high"]],
        "operating_point": policy.operating_point,
        "threshold": point["threshold"],
        "sensitivity": point["sensitivity"]["value"],
        "specificity": point["specificity"]["value"],
        "image_size": run.preprocess_data()["image_size"],
        "image_shape": list(run.preprocess_config().shape),  # (height, width)
        "model_key": run.entry("train", "model")["key"],
        "run_prefix": run.layout.prefix,
        "holdout_source": metrics.holdout_source,
    }


# (model's run, data's run, benchmark rows) -> the model's probabilities for the rows'
# stored images, in order. TensorFlow lives behind it (training.scoring.score_stored_images).
BenchmarkScoreFn = Callable[[Run, Run, pd.DataFrame], np.ndarray]


def compare_on_benchmark(scores: pd.DataFrame, bootstrap: dict[str, Any]) -> dict[str, Any]:
    """Candidate against champion on the benchmark's scores (columns label, lesion_id,
    candidate, champion): both AUROCs and their paired difference with its interval."""
    replicates, seed, confidence = (
        bootstrap["replicates"],
        bootstrap["seed"],
        bootstrap["confidence"],
    )
    labels, lesions = scores["label"].to_numpy(), scores["lesion_id"].astype(str).to_numpy()
    return {
        "images": len(scores),
        "lesions": int(scores["lesion_id"].nunique()),
        "positives": int(scores["label"].sum()),
        "candidate_auroc": float(roc_auc_score(labels, scores["candidate"])),
        "champion_auroc": float(roc_auc_score(labels, scores["champion"])),
        "difference": paired_auroc_difference(
            labels, scores["candidate"], scores["champion"], lesions, replicates, seed, confidence
        ),
        "bootstrap": {
            "unit": "lesion",
            "replicates": replicates,
            "seed": seed,
            "confidence": confidence,
        },
    }


def decide_run_promotion(
    run: Run, policy: PromotionPolicy, score: BenchmarkScoreFn | None = None
) -> dict[str, Any]:
    """Stage promote: apply the promotion rule; write ``promotion.json`` and both models'
    scores on the promotion benchmark (``promotion_scores.csv``); return the decision.

    ``score`` scores a model on the benchmark. Without it (no TensorFlow) only a first
    champion or a rerun can be decided.
    """
    candidate = candidate_summary(run, policy)
    champion = read_champion(run.store, candidate["label_task"])
    bootstrap = run.metrics().bootstrap
    comparable = not candidate["holdout_source"]
    needs_comparison = (
        comparable
        and champion is not None
        and champion["run_id"] != candidate["run_id"]
        and candidate["sensitivity"] >= policy.sensitivity_floor
    )
    if champion is not None and needs_comparison and score is None:
        raise ValueError(
            f"comparing with champion {champion['run_id']} needs both models scored on the "
            "promotion benchmark"
        )
    comparison, scores = None, None
    if comparable and score is not None:
        benchmark = run.promotion_benchmark()
        scores = benchmark[["image_id", "lesion_id", "dx", "label"]].assign(
            candidate=np.round(score(run, run, benchmark), 6)
        )
        if scores["label"].nunique() == 2:
            candidate["benchmark_auroc"] = auroc_with_interval(
                scores["label"],
                scores["candidate"],
                scores["lesion_id"],
                bootstrap["replicates"],
                bootstrap["seed"],
                bootstrap["confidence"],
            )
        if champion is not None and needs_comparison:
            comparison = compare_with_champion(run, champion, benchmark, scores, score, bootstrap)
    decision = decide_promotion(candidate, champion, comparison, policy)
    with run.stage("promote") as stage:
        stage.put_json(
            "promotion", run.layout.promotion, json_safe({**decision, "notice": RESEARCH_NOTICE})
        )
        if scores is not None:
            stage.put_bytes(
                "promotion_scores",
                run.layout.promotion_scores,
                scores.to_csv(index=False, lineterminator="\n").encode(),
            )
    log.info("promotion: %s (%s)", decision["promote"], "; ".join(decision["reasons"]))
    return decision


def compare_with_champion(
    run: Run,
    champion: dict[str, Any],
    benchmark: pd.DataFrame,
    scores: pd.DataFrame,
    score: BenchmarkScoreFn,
    bootstrap: dict[str, Any],
) -> dict[str, Any]:
    """The champion re-scored on the candidate's benchmark through its own preprocessing,
    and the paired comparison; ``{"refused": reason}`` when it cannot be made fairly.
    ``scores`` gains the champion's column."""
    try:
        champion_run = Run.find(run.store, champion.get("run_prefix") or champion["run_id"])
    except (LookupError, ValueError) as error:
        return {"refused": f"its run cannot be read ({error})"}
    refusal = benchmark_refusal(champion_run, benchmark)
    if refusal:
        return {"refused": refusal}
    log.info("scoring champion %s on the promotion benchmark", champion["run_id"])
    scores["champion"] = np.round(score(champion_run, run, benchmark), 6)
    return compare_on_benchmark(scores, bootstrap)


def promote_run(run: Run) -> str:
    """Make the run the champion per its ``promotion.json``; keep the replaced record."""
    decision = run.promotion()
    if decision is None:
        raise ValueError(f"{run.layout.prefix} has no promotion decision: nothing to promote")
    if not decision.promote:
        raise ValueError(f"{run.layout.promotion} says not to promote: {decision.reasons}")
    candidate = decision.candidate
    key = champion_key(candidate["label_task"])
    previous = decision.champion
    if previous:
        run.store.put_json(
            previous_champion_key(candidate["label_task"], previous["run_id"]), previous
        )
    run.store.put_json(key, candidate | {"promotion_reasons": decision.reasons})
    log.info("run %s is the champion for %s", candidate["run_id"], candidate["label_task"])
    return key
