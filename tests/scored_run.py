"""A trained run's artifacts, fabricated: what calibrate, evaluate, promote and report read.

For unit tests of the evaluation stages; the DAG test produces the same artifacts for real.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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
) -> str:
    """Write a run's config, split summary, shard stats, model MANIFEST and predictions; return its prefix."""
    prefix = f"runs/{run_id}"
    val = scored_split(300, seed, strength, "v")
    test = scored_split(300, seed + 1, strength, "t") if test is None else test
    for split, frame in (("val", val), ("test", test)):
        store.put_bytes(f"{prefix}/predictions/{split}.csv", frame.to_csv(index=False).encode())
    store.put_json(
        "datasets/ham10000/v1/MANIFEST.json",
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
    store.put_json(
        f"{prefix}/config.json",
        {
            "run_id": run_id,
            "dataset_version": "v1",
            "manifest_key": "datasets/ham10000/v1/MANIFEST.json",
            "config": {"label_task": label_task, "seed": seed},
        },
    )
    entry = {"images": 600, "lesions": 300, "positives": 120, "melanomas": 120}
    store.put_json(
        f"{prefix}/splits_summary.json",
        {
            "label_task": label_task,
            "seed": seed,
            "ratios": [0.7, 0.15, 0.15],
            "splits": {
                s: {**entry, "by_dx": {"mel": 120, "nv": 480}} for s in ("train", "val", "test")
            },
        },
    )
    store.put_json(
        f"{prefix}/preprocessed/stats.json",
        {
            "rejected": 0,
            "augmented_copies": 0,
            "config": {
                "size": 32,
                "interpolation": "area",
                "hair_removal": False,
                "lesion_crop": False,
            },
        },
    )
    store.put_json(f"{prefix}/preprocessed/MANIFEST.json", {"image_size": 32, "shards": []})
    store.put_json(
        f"{prefix}/model/history.json",
        {
            "phase1": {"loss": [0.7, 0.6], "val_auroc": [0.7, 0.8]},
            "phase2": {"loss": [0.5], "val_auroc": [0.85]},
            "summary": {
                "val_auroc_after_phase1": 0.8,
                "val_auroc_final": 0.85,
                "unfrozen_blocks": [],
            },
        },
    )
    store.put_json(
        f"{prefix}/model/training_config.json",
        {
            "config": {
                "backbone": "tiny_cnn",
                "phase1_epochs": 2,
                "phase1_learning_rate": 1e-4,
                "phase2_epochs": 1,
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
    store.put_json(
        f"{prefix}/model/MANIFEST.json",
        {
            "outputs": {
                "model": f"{prefix}/model/model.keras",
                "predictions_val": f"{prefix}/predictions/val.csv",
                "predictions_test": f"{prefix}/predictions/test.csv",
            }
        },
    )
    return prefix


def write_reported_run(
    store: ObjectStore, run_id: str, strength: float = 3.0, seed: int = 0
) -> str:
    """A fabricated run taken through the real calibrate, evaluate, promotion and report stages."""
    from melanoma.evaluation import (
        EvaluationConfig,
        calibrate_run,
        decide_run_promotion,
        evaluate_run,
        promote_run,
    )
    from melanoma.promotion import PromotionPolicy
    from melanoma.report import write_report

    prefix = write_scored_run(store, run_id, strength, seed)
    config = EvaluationConfig(bootstrap_replicates=200)
    calibrate_run(store, prefix, config)
    evaluate_run(store, prefix, config)
    if decide_run_promotion(store, prefix, PromotionPolicy())["promote"]:
        promote_run(store, prefix)
    write_report(store, prefix)
    return prefix
