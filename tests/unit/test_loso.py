"""Leave-one-source-out pooling: same-source pairs only, lesion-bootstrap interval."""

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma.ham10000 import SOURCES
from melanoma.loso import LOSO_SOURCES, pooled_loso_auroc


def held_out_predictions(offset: float, n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A run that ranks its held-out source perfectly, on a score scale of its own."""
    rng = np.random.default_rng(seed)
    label = np.array([0, 1] * (n // 2))
    probability = offset + 0.1 * label + rng.uniform(0, 0.05, n)
    return pd.DataFrame(
        {
            "label": label,
            "probability": probability,
            "lesion_id": [f"L{seed}_{i}" for i in range(n)],
        }
    )


def test_loso_pooling_counts_only_same_source_pairs():
    held_out = {
        "rosendahl": held_out_predictions(0.0, seed=1),
        "vienna_dias": held_out_predictions(0.5, seed=2),
    }
    pooled = pooled_loso_auroc(held_out, replicates=200)
    assert pooled["value"] == 1.0 and pooled["ci_low"] == 1.0
    # Pairs across the two runs compare their score scales: every vienna_dias negative
    # outranks every rosendahl positive, so an AUROC over all pairs drops to 0.75.
    everything = pd.concat(held_out.values())
    assert roc_auc_score(everything["label"], everything["probability"]) == 0.75


def test_the_loso_sources_are_ham10000_sources_with_enough_melanomas():
    assert set(LOSO_SOURCES) < set(SOURCES) and "vidir_molemax" not in LOSO_SOURCES
