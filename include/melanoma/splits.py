"""Lesion-grouped, diagnosis-stratified train/val/test split (pure logic).

HAM10000 holds several images of many lesions (``lesion_id``). An image-level
split puts pictures of the same lesion in train and test and inflates every
test metric, so whole lesions are assigned to one split.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

SPLITS: tuple[str, ...] = ("train", "val", "test")

# The share of each diagnosis's images kept for the promotion benchmark (see
# promotion_benchmark_lesions): fixed, so that it is one set per dataset version.
PROMOTION_BENCHMARK_SHARE = 0.10


def split_by_lesion(
    rows: pd.DataFrame, ratios: tuple[float, float, float] = (0.70, 0.15, 0.15), seed: int = 42
) -> pd.DataFrame:
    """Assign every row a ``split`` so that no lesion spans two splits.

    Stratified by ``dx``: lesions of each diagnosis are shuffled (seeded) and each
    goes, in turn, to the split furthest below its target share of that
    diagnosis's images. With many lesions per diagnosis the image proportions
    then sit close to ``ratios``; rare diagnoses with few lesions land within one
    lesion's images of the target.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(
            f"split ratios must be three non-negative numbers summing to 1, got {ratios}"
        )
    for col in ("image_id", "lesion_id", "dx"):
        if col not in rows.columns:
            raise ValueError(f"split_by_lesion needs column {col!r}")
    # A lesion with images of two diagnoses would make stratification ambiguous; HAM10000 has none.
    mixed = rows.groupby("lesion_id")["dx"].nunique()
    if (mixed > 1).any():
        raise ValueError(f"lesions with more than one dx: {sorted(mixed[mixed > 1].index)[:5]}")

    rng = np.random.default_rng(seed)
    target = np.asarray(ratios, dtype=float)
    assignment: dict[str, str] = {}
    lesion_sizes = rows.groupby("lesion_id", sort=True).size()
    lesion_dx = rows.groupby("lesion_id", sort=True)["dx"].first()
    for dx in sorted(lesion_dx.unique()):
        lesions = lesion_dx.index[lesion_dx == dx].to_numpy()
        lesions = lesions[rng.permutation(len(lesions))]
        counts = np.zeros(3)
        for lesion in lesions:
            n = lesion_sizes[lesion]
            # Largest deficit after adding this lesion, relative to the stratum's running total.
            deficit = target * (counts.sum() + n) - counts
            deficit[target == 0] = -np.inf
            k = int(np.argmax(deficit))
            counts[k] += n
            assignment[lesion] = SPLITS[k]
    return rows.assign(split=rows["lesion_id"].map(assignment))


def split_holding_out_source(
    rows: pd.DataFrame,
    source: str,
    ratios: tuple[float, float, float] = (0.70, 0.15, 0.15),
    seed: int = 42,
) -> pd.DataFrame:
    """Test on one source (HAM10000's ``dataset`` column) alone; train and validate on the rest.

    An estimate of how the model does at a clinic it never saw. The other sources are
    split by lesion with the train:val ratio of ``ratios``. A lesion with images in the
    held-out source is kept out of train and val (its other images are left out of the
    result), so that no lesion is both learned and tested.
    """
    if "dataset" not in rows.columns:
        raise ValueError("holdout_source needs the metadata's 'dataset' column (the source)")
    sources = rows["dataset"].astype("string").fillna("")
    held = sources == source
    if not held.any():
        known = sorted(s for s in sources.unique() if s)
        raise ValueError(
            f"holdout_source {source!r} is not a source of this data; sources: {known}"
        )
    train, val = float(ratios[0]), float(ratios[1])
    if train + val <= 0:
        raise ValueError(f"split ratios {ratios} leave nothing to train and validate on")
    held_lesions = set(rows.loc[held, "lesion_id"])
    rest = rows[~held & ~rows["lesion_id"].isin(held_lesions)]
    assigned = split_by_lesion(rest, (train / (train + val), val / (train + val), 0.0), seed)
    return pd.concat([assigned, rows[held].assign(split="test")]).sort_index()


class SplitPlacementError(ValueError):
    """An image of the run's data is in no split, or in two, and not listed as excluded."""


def check_every_image_placed(
    image_ids: pd.Series, split: pd.DataFrame, benchmark: pd.DataFrame, excluded: pd.Series
) -> None:
    """Raise SplitPlacementError unless each of ``image_ids`` is in exactly one of: a split
    of ``split``, the promotion ``benchmark``, ``excluded`` (listed with its reason)."""
    placed = pd.concat([split["image_id"], benchmark["image_id"], excluded], ignore_index=True)
    counts = placed.value_counts()
    lost = sorted(set(image_ids) - set(counts.index))
    twice = sorted(counts.index[counts > 1])
    for problem, ids in (("in no split and not excluded", lost), ("placed twice", twice)):
        if ids:
            shown = ", ".join(repr(i) for i in ids[:5]) + (" …" if len(ids) > 5 else "")
            raise SplitPlacementError(f"{len(ids)} image(s) {problem}: {shown}")


def lesion_rank(lesion_id: str) -> float:
    """A lesion's fixed place in [0, 1): from a hash of its id, so no seed or run moves it."""
    digest = hashlib.sha256(f"promotion-benchmark/{lesion_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def promotion_benchmark_lesions(
    metadata: pd.DataFrame, share: float = PROMOTION_BENCHMARK_SHARE
) -> set[str]:
    """The lesions of the promotion benchmark: images that no run trains, validates,
    calibrates or tests on, whatever its ``split_seed``, label task or held-out source.
    Champion and challenger are compared on them (``melanoma.promotion``).

    Lesion-grouped and stratified by ``dx``: within each diagnosis, lesions are taken in
    the order of ``lesion_rank`` (a hash of the id, not a seed) while that brings the
    diagnosis's benchmark images closer to ``share`` of its images. Chosen from the whole
    dataset version's metadata, so every run of a version shares one benchmark; a new
    version that keeps the same lesions keeps nearly the same benchmark.
    """
    if not 0 <= share < 1:
        raise ValueError(f"the promotion benchmark's share must be in [0, 1), got {share}")
    lesions = metadata.groupby("lesion_id", sort=True).agg(
        dx=("dx", "first"), images=("dx", "size")
    )
    chosen: set[str] = set()
    for _, group in lesions.groupby("dx", sort=True):
        target = share * group["images"].sum()
        taken = 0
        for lesion_id in sorted(group.index, key=lesion_rank):
            n = int(group.at[lesion_id, "images"])
            if abs(taken + n - target) >= abs(taken - target):
                break
            chosen.add(str(lesion_id))
            taken += n
    return chosen


def split_summary(split_rows: pd.DataFrame) -> dict[str, Any]:
    """Images, lesions and positives per split, and images per diagnosis per split."""
    summary: dict[str, Any] = {}
    for name in SPLITS:
        part = split_rows[split_rows["split"] == name]
        entry: dict[str, Any] = {
            "images": len(part),
            "lesions": int(part["lesion_id"].nunique()),
            "melanomas": int((part["dx"] == "mel").sum()),
            "by_dx": {str(k): int(v) for k, v in part["dx"].value_counts().sort_index().items()},
        }
        if "label" in part.columns:
            entry["positives"] = int(part["label"].sum())
        summary[name] = entry
    return summary
