"""Leave-one-source-out (LOSO): how a model does at a clinic and device it never saw.

Each of HAM10000's larger sources is held out in turn (the DAG's ``holdout_source``): a run
trains and validates on the others and is tested on that source alone. The held-out
sources' test predictions, each from its own run, are pooled into one AUROC that counts
only positive-negative pairs from the same source: each run has its own score scale, and a
pair across runs would compare those scales, not lesions. The interval is a lesion
bootstrap, as for every AUROC in this project. Research use only, not a diagnostic device.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from melanoma.metrics import auroc_with_interval

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
