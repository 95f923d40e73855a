"""A trained run's artifacts, fabricated: what calibrate, evaluate, promote and report read.

For unit tests of the evaluation stages; the DAG test produces the same artifacts for real.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from melanoma.images import ResolutionParity
from melanoma.layout import DatasetLayout
from melanoma.params import from_params
from melanoma.run import Run, RunConfig
from melanoma.store import ObjectStore


def scored_split(n_lesions: int, seed: int, strength: float, prefix: str) -> pd.DataFrame:
    """Predictions for lesions of 1-3 images; ``strength`` sets how well scores separate classes."""
    rng = np.random.default_rng(seed)
    per_lesion = rng.integers(1, 4, n_lesions)
    lesion_ids = np.repeat([f"HAM_{prefix}{i:05d}" for i in range(n_lesions)], per_lesion)
    melanoma = np.repeat(rng.random(n_lesions) < 0.2, per_lesion)
    logits = strength * (melanoma - 0.5) + rng.normal(0, 1, len(lesion_ids))
    return pd.DataFrame(
        {
            "image_id": [f"ISIC_{prefix}{i:06d}" for i in range(len(lesion_ids))],
            "lesion_id": lesion_ids,
            "dx": np.where(melanoma, "mel", "nv"),
            "label": melanoma.astype(int),
            "probability": np.round(1 / (1 + np.exp(-logits)), 6),
        }
    )


def write_scored_run(
    store: ObjectStore,
    run_id: str,
    strength: float = 3.0,
    seed: int = 0,
    test: pd.DataFrame | None = None,
    label_task: str = "mel_vs_rest",
    metadata: bool = False,
    phase2_epochs: int = 1,
    sources: Sequence[str] | None = None,
    benchmark: pd.DataFrame | None = None,
) -> Run:
    """A run with committed split, preprocess and train stages (fabricated predictions).

    ``metadata``: splits.csv lists every image with a source, sex, age and body site (as a
    split of real HAM10000 does); otherwise only its header (as a split from before that).
    ``sources``: the sources images take in turn (default: two thirds ``clinic_a``, the
    rest ``clinic_b``). ``phase2_epochs``: the phase-2 epochs configured and trained; the
    unfrozen blocks are recorded either way, as the trainer does. ``benchmark``: the rows of
    its promotion benchmark (default: 200 lesions of their own).
    """
    run = Run.for_run_id(store, run_id)
    layout = run.layout
    val = scored_split(300, seed, strength, "v")
    test = scored_split(300, seed + 1, strength, "t") if test is None else test
    dataset = DatasetLayout("v1")
    store.put_json(
        dataset.manifest,
        {
            "dataset_version": "v1",
            "source": "test",
            "counts": {
                "images": 1000,
                "lesions": 700,
                "masks": 1000,
                "quarantined": 1,
                "rejected_rows": 2,
            },
            "validation": {"metadata_rows_without_image": ["ISIC_0000001"]},
        },
    )
    entry = {"images": 600, "lesions": 300, "positives": 120, "melanomas": 120}
    with run.stage("split") as stage:
        stage.put_json(
            "config",
            layout.config,
            RunConfig(
                run_id,
                "v1",
                dataset.manifest,
                {"label_task": label_task, "seed": seed},
                from_params(
                    {"label_task": label_task, "split_seed": seed, "phase2_epochs": phase2_epochs}
                ).resolved(),
                {"name": "gpu", "why": "the profile param is gpu"},
            ).to_json(),
        )
        stage.put_json(
            "splits_summary",
            layout.splits_summary,
            {
                "label_task": label_task,
                "seed": seed,
                "ratios": [0.7, 0.15, 0.15],
                "splits": {
                    s: {**entry, "by_dx": {"mel": 120, "nv": 480}} for s in ("train", "val", "test")
                },
            },
        )
        splits = pd.DataFrame(columns=["image_id", "lesion_id", "dx", "label", "split"])
        if metadata:
            train = scored_split(300, seed + 2, strength, "r")
            splits = pd.concat(
                [f.assign(split=n) for f, n in ((train, "train"), (val, "val"), (test, "test"))]
            ).drop(columns="probability")
            i = np.arange(len(splits))
            splits = splits.assign(
                dataset=np.where(i % 3 == 0, "clinic_b", "clinic_a")
                if sources is None
                else np.asarray(sources)[i % len(sources)],
                sex=np.where(i % 2 == 0, "male", "female"),
                age=20.0 + i % 60,
                localization=np.where(i % 5 == 0, "face", "back"),
            )
        stage.put_bytes("splits", layout.splits, splits.to_csv(index=False).encode())
        if benchmark is None:
            benchmark = scored_split(200, 99, strength, "b").drop(columns="probability")
        stage.put_bytes(
            "promotion_benchmark",
            layout.promotion_benchmark,
            benchmark.to_csv(index=False).encode(),
        )
    preprocess_config = {
        "size": 32,
        "interpolation": "area",
        "hair_removal": False,
        "lesion_crop": False,
    }
    with run.stage("preprocess") as stage:
        stage.put_json(
            "stats",
            layout.preprocess_stats,
            {"rejected": 0, "augmented_copies": 0, "config": preprocess_config},
        )
        stage.data = {
            "dataset_version": "v1",
            "image_size": 32,
            "preprocess_config": preprocess_config,
        }
    with run.stage("train") as stage:
        for split, frame in (("val", val), ("test", test)):
            stage.put_bytes(
                f"predictions_{split}",
                layout.predictions(split),
                frame.to_csv(index=False).encode(),
            )
        stage.put_bytes("model", layout.model, b"a stand-in for model.keras")
        stage.put_json(
            "history",
            layout.history,
            {
                "phase1": {"loss": [0.7, 0.6], "val_auroc": [0.7, 0.8]},
                # As the trainer leaves it: empty when phase 2 never ran.
                "phase2": {"loss": [0.5] * phase2_epochs, "val_auroc": [0.85] * phase2_epochs}
                if phase2_epochs
                else {},
                "summary": {
                    "val_auroc_after_phase1": 0.8,
                    "val_auroc_final": 0.85 if phase2_epochs else 0.8,
                    "unfrozen_blocks": ["block_5"],
                },
            },
        )
        stage.put_json(
            "training_config",
            layout.training_config,
            {
                "config": {
                    "backbone": "tiny_cnn",
                    "phase1_epochs": 2,
                    "phase1_learning_rate": 1e-4,
                    "phase2_epochs": phase2_epochs,
                    "phase2_learning_rate": 1e-5,
                    "imbalance": "class_weight",
                },
                "feature_cache": True,
                "device": {"devices": ["CPU"], "precision": "float32"},
                "weights_key": None,
                "train_images": 600,
                "train_positives": 120,
                "class_weight": {"0": 0.6, "1": 2.5},
            },
        )
    return run


# The parity a run on the shared mirror records: its 200x150 copies, saved at quality 75.
MIRROR_PARITY = ResolutionParity(200, 75)


def write_external_set(
    run: Run, name: str, seed: int = 5, parity: ResolutionParity = MIRROR_PARITY
) -> str:
    """An external set of ``name`` committed for an evaluated ``run``, as ``training.external``
    commits one (fabricated predictions, no model): return its commit key."""
    from melanoma.evaluation import EvaluationConfig, json_safe, measure_predictions
    from melanoma.external import describe_differences

    scored = scored_split(200, seed, 2.0, "x")
    calibration = run.calibration()
    measured, pngs = measure_predictions(
        scored, calibration, EvaluationConfig(bootstrap_replicates=100), "external"
    )
    differences = describe_differences(
        scored,
        [(600, 450)] * len(scored),
        Counter({"jpeg": len(scored)}),
        {"images": 600, "positives": 120, "by_dx": {"mel": 120, "nv": 480}},
        [(600, 450)] * 600,
    )
    layout = run.layout
    with run.stage(f"external/{name}") as stage:
        stage.put_bytes(
            "predictions",
            layout.external_file(name, "predictions.csv"),
            scored.to_csv(index=False).encode(),
        )
        figures = {
            figure: stage.put_bytes(f"figure/{figure}", layout.external_figure(name, figure), png)
            for figure, png in pngs.items()
        }
        stage.put_json(
            "metrics",
            layout.external_file(name, "metrics.json"),
            json_safe(
                {
                    "schema_version": 1,
                    "run_id": run.config().run_id,
                    "label_task": run.config().label_task,
                    "external_set": name,
                    "labels_format": "binary",
                    "source": {"images": f"/data/{name}", "labels": f"/data/{name}.csv"},
                    "thresholds_chosen_on": "val",
                    "resolution_parity": parity.record(),
                    **measured,
                    "not_scored": {},
                    "differences": differences,
                    "figures": figures,
                }
            ),
        )
    return layout.commit(f"external/{name}")


def fabricated_benchmark_scores(model_run: Run, data_run: Run, rows: pd.DataFrame) -> np.ndarray:
    """A stand-in for ``training.scoring.score_stored_images`` (no model): each benchmark
    image gets the score of one of ``model_run``'s test images with its label, so a
    model's benchmark AUROC follows its test AUROC."""
    test = model_run.predictions("test")
    rng = np.random.default_rng(0)
    labels = rows["label"].to_numpy()
    scores = np.zeros(len(rows))
    for label in (0, 1):
        pool = test.loc[test["label"] == label, "probability"].to_numpy()
        scores[labels == label] = rng.choice(pool, int((labels == label).sum()))
    return scores


def write_reported_run(
    store: ObjectStore, run_id: str, strength: float = 3.0, seed: int = 0, **scored: Any
) -> Run:
    """A fabricated run taken through the real calibrate, evaluate, promotion and report
    stages (``scored``: more of ``write_scored_run``'s arguments)."""
    from melanoma.evaluation import (
        EvaluationConfig,
        calibrate_run,
        decide_run_promotion,
        evaluate_run,
        promote_run,
    )
    from melanoma.promotion import PromotionPolicy
    from melanoma.report import write_report

    run = write_scored_run(store, run_id, strength, seed, **scored)
    config = EvaluationConfig(bootstrap_replicates=200)
    calibrate_run(run, config)
    evaluate_run(run, config)
    if decide_run_promotion(run, PromotionPolicy(), fabricated_benchmark_scores)["promote"]:
        promote_run(run)
    write_report(run)
    return run
