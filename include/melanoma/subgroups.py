"""How a score does within and across the groups HAM10000's metadata names (pure logic).

HAM10000 pools four sources (its ``dataset`` column: the clinic and the device) whose
melanoma rates differ widely, so a model can score well overall by telling the cameras
apart. Three figures expose that, each with a lesion-bootstrap interval: the AUROC over
melanoma/non-melanoma pairs *from the same source* only, the AUROC per source, and the
AUROC of the source alone (each image scored by its source's rate in the training
split). Per sex, age band and body site the same per-group AUROC is given, with counts,
and a note where a group is too small for its interval to mean anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from melanoma.metrics import auroc_with_interval

# Report attribute -> the splits.csv column it is read from (HAM10000's metadata names).
ATTRIBUTES: dict[str, str] = {
    "source": "dataset",
    "sex": "sex",
    "age band": "age",
    "body site": "localization",
}
METADATA_COLUMNS: tuple[str, ...] = tuple(ATTRIBUTES.values())
AGE_BANDS: tuple[tuple[float, str], ...] = (
    (30, "<30"),
    (45, "30-44"),
    (60, "45-59"),
    (75, "60-74"),
)
OLDEST_BAND = "75+"
# Fewer positives or negatives than this: the group's interval is too wide to read.
MIN_PER_CLASS = 10
UNKNOWN = "unknown"
# Where each of HAM10000's four sources (its ``dataset`` column) was collected (Tschandl et
# al., Sci. Data 2018): the report names sites only from this, never from a fixed sentence.
SOURCE_SITES: dict[str, str] = {
    "rosendahl": "Queensland",
    "vidir_modern": "Vienna",
    "vidir_molemax": "Vienna",
    "vienna_dias": "Vienna",
}


def age_band(age: Any) -> str:
    """``<30``, ``30-44``, ``45-59``, ``60-74``, ``75+`` or ``unknown``."""
    value = pd.to_numeric(age, errors="coerce")
    if pd.isna(value):
        return UNKNOWN
    for upper, name in AGE_BANDS:
        if value < upper:
            return name
    return OLDEST_BAND


# Each band's lowest age: a band starts where the one before it ends.
_BAND_LOWER: dict[str, float] = {
    name: lower
    for name, lower in zip(
        [name for _, name in AGE_BANDS] + [OLDEST_BAND],
        [0.0] + [float(upper) for upper, _ in AGE_BANDS],
        strict=True,
    )
}


def group_order(attribute: str, names: Iterable[str]) -> list[str]:
    """``names`` in reading order: age bands by their lowest age, other groups by name;
    ``unknown`` (and a band this code does not define) last."""

    def key(name: str) -> tuple[int, float, str]:
        if name == UNKNOWN:
            return (2, 0.0, name)
        if attribute == "age band":
            # A string sort puts "<30" after "75+"; an unknown band goes before "unknown".
            lower = _BAND_LOWER.get(name)
            return (0, lower, name) if lower is not None else (1, 0.0, name)
        return (0, 0.0, name)

    return sorted(names, key=key)


def group_labels(frame: pd.DataFrame, attribute: str) -> pd.Series:
    """Each row's group for ``attribute``; missing values are ``unknown``."""
    column = frame[ATTRIBUTES[attribute]]
    if attribute == "age band":
        return column.map(age_band)
    return column.astype("string").fillna(UNKNOWN).replace("", UNKNOWN).astype(str)


def _group_entry(part: pd.DataFrame, replicates: int, seed: int, confidence: float) -> dict:
    positives = int(part["label"].sum())
    negatives = len(part) - positives
    entry: dict[str, Any] = {
        "images": len(part),
        "lesions": int(part["lesion_id"].nunique()),
        "positives": positives,
        "auroc": None,
        "note": "",
    }
    if positives == 0 or negatives == 0:
        entry["note"] = "one class only: no AUROC"
        return entry
    entry["auroc"] = auroc_with_interval(
        part["label"].to_numpy(),
        part["probability"].to_numpy(),
        part["lesion_id"].to_numpy(),
        replicates,
        seed,
        confidence,
    )
    fewer = min(positives, negatives)
    if fewer < MIN_PER_CLASS:
        kind = "positive" if positives < negatives else "negative"
        entry["note"] = (
            f"{fewer} {kind}{'' if fewer == 1 else 's'} (under {MIN_PER_CLASS}): "
            "the interval is too wide to mean anything"
        )
    return entry


def subgroup_metrics(
    frame: pd.DataFrame, replicates: int, seed: int, confidence: float
) -> dict[str, dict[str, dict]]:
    """``{attribute: {group: {images, lesions, positives, auroc: CI | None, note}}}`` for each
    attribute whose column ``frame`` holds (label, probability, lesion_id and metadata)."""
    result: dict[str, dict[str, dict]] = {}
    for attribute, column in ATTRIBUTES.items():
        if column not in frame.columns:
            continue
        groups = group_labels(frame, attribute)
        result[attribute] = {
            str(name): _group_entry(frame[groups == name], replicates, seed, confidence)
            for name in sorted(groups.unique())
        }
    return result


def source_rates(splits: pd.DataFrame) -> dict[str, float]:
    """Each source's positive rate in the training split: all a source-only classifier knows."""
    train = splits[splits["split"] == "train"]
    return {
        str(k): float(v)
        for k, v in train.groupby(group_labels(train, "source"))["label"].mean().items()
    }


def source_confounding(
    frame: pd.DataFrame, rates: dict[str, float], replicates: int, seed: int, confidence: float
) -> dict[str, Any]:
    """The within-source AUROC and the AUROC of the source alone, each with its interval.

    A source missing from ``rates`` (one held out of training) scores the mean rate.
    """
    sources = group_labels(frame, "source")
    labels, lesions = frame["label"].to_numpy(), frame["lesion_id"].to_numpy()
    fallback = float(np.mean(list(rates.values()))) if rates else 0.5
    source_scores = sources.map(lambda s: rates.get(s, fallback)).to_numpy(dtype=float)
    args = (replicates, seed, confidence)
    return {
        "sources": int(sources.nunique()),
        "within_source_auroc": auroc_with_interval(
            labels, frame["probability"].to_numpy(), lesions, *args, groups=sources.to_numpy()
        ),
        "source_only_auroc": auroc_with_interval(labels, source_scores, lesions, *args),
        "train_rates": rates,
    }
