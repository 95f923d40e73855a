"""Leave-one-source-out (LOSO): how a model does at a clinic and device it never saw.

Each of HAM10000's larger sources is held out in turn (the DAG's ``holdout_source``): a run
trains and validates on the others and is tested on that source alone. The held-out
sources' test predictions, each from its own run, are pooled into one AUROC that counts
only positive-negative pairs from the same source: each run has its own score scale, and a
pair across runs would compare those scales, not lesions. The interval is a lesion
bootstrap, as for every AUROC in this project.

LOSO's AUROC mixes how hard a clinic's lesions are to tell apart with what it costs that
the model never saw the clinic. ``unseen_source_cost`` separates the two: the run that
trained on every source and the run that held one out score the same images (the first
run's test images of that source), and their paired difference is what holding the
clinic out of training cost (its look, and with it a share of the images to learn from;
the interval is the test images' sampling, not the spread of retraining). Research use
only, not a diagnostic device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from melanoma.metrics import auroc_with_interval, paired_auroc_difference

# vidir_molemax holds only 24 melanomas: too few to be a test set of its own.
LOSO_SOURCES: tuple[str, ...] = ("rosendahl", "vidir_modern", "vienna_dias")


def pooled_loso_auroc(
    held_out: Mapping[str, pd.DataFrame],
    replicates: int = 2000,
    seed: int = 42,
    confidence: float = 0.95,
) -> dict[str, float | None]:
    """One AUROC over every held-out source's test predictions (``label``, ``probability``,
    ``lesion_id``; keyed by source), same-source pairs only, with its lesion-bootstrap
    interval: ``{"value", "ci_low", "ci_high"}``."""
    pooled = pd.concat(
        [predictions.assign(source=source) for source, predictions in held_out.items()],
        ignore_index=True,
    )
    labels, scores, lesions, sources = (
        pooled[c].to_numpy() for c in ("label", "probability", "lesion_id", "source")
    )
    return auroc_with_interval(
        labels, scores, lesions, replicates, seed, confidence, groups=sources
    )


def seen_and_unseen_scores(
    seen: pd.DataFrame, held_out: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """The test images of ``seen`` (a run that trained on every source: its test predictions
    with a ``source`` column) from each source in ``held_out``, with both runs' scores:
    ``seen`` and ``unseen`` (from the test predictions of the run that held that source
    out, keyed by source).

    Raises ValueError naming the source where its hold-out run did not score some of those
    images (the two runs are then not of one dataset version), and naming the run and the
    image where either scores an image twice or not with a finite number.
    """
    check_scores(seen, "the run on every source")
    parts = []
    for source, predictions in held_out.items():
        check_scores(predictions, f"the run that held {source} out")
        images = seen[seen["source"] == source]
        scored = images.merge(
            predictions[["image_id", "probability"]].rename(columns={"probability": "unseen"}),
            on="image_id",
            how="left",
        )
        missing = int(scored["unseen"].isna().sum())
        if missing:
            raise ValueError(
                f"{source}: the run that held it out did not score {missing} of the "
                f"{len(images)} test images of {source} that the other run scored "
                "(not the same dataset version)"
            )
        parts.append(scored.rename(columns={"probability": "seen"}))
    return pd.concat(parts, ignore_index=True)


def check_scores(predictions: pd.DataFrame, whose: str) -> None:
    """One finite score per image, or ValueError naming ``whose`` and the image."""
    repeated = predictions["image_id"][predictions["image_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"{whose} scored image {repeated.iloc[0]} more than once")
    scores = pd.to_numeric(predictions["probability"], errors="coerce")
    bad = predictions["image_id"][~np.isfinite(scores.to_numpy(dtype=float))]
    if len(bad):
        raise ValueError(f"{whose} has no finite score for image {bad.iloc[0]}")


def _seen_against_unseen(
    frame: pd.DataFrame, replicates: int, seed: int, confidence: float
) -> dict[str, Any]:
    """Both runs' AUROC on ``frame``'s images (same-source pairs) and unseen minus seen."""
    labels, lesions, sources = (frame[c].to_numpy() for c in ("label", "lesion_id", "source"))
    args = (replicates, seed, confidence)
    seen, unseen = frame["seen"].to_numpy(), frame["unseen"].to_numpy()
    return {
        "images": len(frame),
        "positives": int(labels.sum()),
        "seen": auroc_with_interval(labels, seen, lesions, *args, groups=sources),
        "unseen": auroc_with_interval(labels, unseen, lesions, *args, groups=sources),
        "difference": paired_auroc_difference(labels, unseen, seen, lesions, *args, groups=sources),
    }


def unseen_source_cost(
    scores: pd.DataFrame, replicates: int = 2000, seed: int = 42, confidence: float = 0.95
) -> dict[str, dict[str, Any]]:
    """What holding a source out of training costs, on the same images
    (``seen_and_unseen_scores``): for each source and ``pooled`` over them (same-source
    pairs only), ``{images, positives, seen, unseen, difference}``; the AUROCs and
    ``difference`` (unseen minus seen, paired) with lesion-bootstrap intervals."""
    by_source = {
        str(source): _seen_against_unseen(part, replicates, seed, confidence)
        for source, part in scores.groupby("source", sort=True)
    }
    return by_source | {"pooled": _seen_against_unseen(scores, replicates, seed, confidence)}


def unseen_source_cost_by_diagnosis(
    scores: pd.DataFrame, replicates: int = 2000, seed: int = 42, confidence: float = 0.95
) -> dict[str, dict[str, Any]]:
    """The same, pooled over the sources, for the positives against each diagnosis among
    the negatives in turn (``dx``): which lesions the model that never saw the clinic
    ranks above its melanomas. ``{dx: {images, positives, seen, unseen, difference}}``;
    ``positives`` counts them all, those of a source without that diagnosis included,
    though only same-source pairs count."""
    positives = scores[scores["label"] == 1]
    negatives = scores[scores["label"] == 0]
    return {
        str(dx): _seen_against_unseen(pd.concat([positives, part]), replicates, seed, confidence)
        for dx, part in negatives.groupby("dx", sort=True)
    }
