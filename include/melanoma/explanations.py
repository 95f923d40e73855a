"""Which test images to explain, and the lesion-attention summary over them. Pure pandas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

OUTCOMES = ("TP", "FP", "FN", "TN")
ATTENTION_MEASURES = ("energy_in_lesion", "background_to_lesion_ratio", "lesion_area_fraction")


def outcomes(labels: pd.Series, probabilities: pd.Series, threshold: float) -> pd.Series:
    """TP, FP, FN or TN of each prediction at ``threshold`` (positive when >= threshold)."""
    positive = probabilities.to_numpy() >= threshold
    truth = labels.to_numpy().astype(bool)
    return pd.Series(
        np.select(
            [truth & positive, ~truth & positive, truth & ~positive], ["TP", "FP", "FN"], "TN"
        ),
        index=labels.index,
    )


def select_explained(
    predictions: pd.DataFrame, threshold: float, per_outcome: int, random_count: int, seed: int
) -> pd.DataFrame:
    """The ``per_outcome`` most confident TP, FP, FN and TN, plus a seeded random sample of the rest.

    Most confident: highest probability for predicted positives (TP, FP), lowest for
    predicted negatives (FN, TN). Adds ``outcome`` and ``selected_as`` columns.
    """
    frame = predictions.assign(
        outcome=outcomes(predictions["label"], predictions["probability"], threshold)
    )
    chosen = []
    for outcome in OUTCOMES:
        group = frame[frame["outcome"] == outcome]
        ascending = outcome in ("FN", "TN")
        chosen.append(
            group.sort_values(["probability", "image_id"], ascending=[ascending, True])
            .head(per_outcome)
            .assign(selected_as=outcome)
        )
    picked = pd.concat(chosen)
    rest = frame.drop(index=picked.index)
    sample = rest.sample(n=min(random_count, len(rest)), random_state=seed).assign(
        selected_as="random"
    )
    return pd.concat([picked, sample]).reset_index(drop=True)


def _describe(values: pd.Series) -> dict[str, float | int | None]:
    finite = values.replace([np.inf, -np.inf], np.nan).dropna()
    if finite.empty:
        return {"n": 0, "mean": None, "median": None}
    return {"n": len(finite), "mean": float(finite.mean()), "median": float(finite.median())}


def summarize_attention(records: pd.DataFrame) -> dict:
    """Attention measures per outcome group (every explained image, by its true outcome) and overall.

    ``records`` has one row per explained image: ``outcome``, ``mask_source`` and the
    ``ATTENTION_MEASURES``. Means and medians skip undefined values; an all-zero map (no
    positive evidence anywhere) has no energy share and is counted instead.
    """
    summary: dict = {"by_outcome": {}, "overall": {}}
    for outcome in OUTCOMES:
        group = records[records["outcome"] == outcome]
        summary["by_outcome"][outcome] = {
            "images": len(group),
            # Grad-CAM is all zero where nothing in the image raises the melanoma score.
            "maps_without_positive_evidence": int(group["energy_in_lesion"].isna().sum()),
            **{m: _describe(group[m]) for m in ATTENTION_MEASURES},
        }
    summary["overall"] = {
        "images": len(records),
        "maps_without_positive_evidence": int(records["energy_in_lesion"].isna().sum()),
        **{m: _describe(records[m]) for m in ATTENTION_MEASURES},
    }
    # Against the area share of the same images (those with a non-zero map): 1 = no preference.
    defined = records.dropna(subset=["energy_in_lesion", "lesion_area_fraction"])
    area = float(defined["lesion_area_fraction"].mean()) if len(defined) else math.nan
    summary["overall"]["energy_to_area"] = (
        float(defined["energy_in_lesion"].mean()) / area if area > 0 else None
    )
    summary["mask_sources"] = records["mask_source"].value_counts().to_dict()
    return summary
