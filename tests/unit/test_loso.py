"""Leave-one-source-out pooling: same-source pairs only, lesion-bootstrap interval; and
what an unseen source costs, on the same images."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.ham10000 import SOURCES
from melanoma.loso import (
    LOSO_SOURCES,
    pooled_loso_auroc,
    seen_and_unseen_scores,
    unseen_source_cost,
    unseen_source_cost_by_diagnosis,
)


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


def full_run_test(source: str, n: int = 40) -> pd.DataFrame:
    """A run's test images of ``source``: half melanomas, the rest nevi and keratoses,
    ranked perfectly."""
    label = np.array([1, 0] * (n // 2))
    dx = np.where(label == 1, "mel", np.where(np.arange(n) % 4 == 1, "nv", "bkl"))
    return pd.DataFrame(
        {
            "image_id": [f"{source}_{i}" for i in range(n)],
            "lesion_id": [f"L_{source}_{i}" for i in range(n)],
            "dx": dx,
            "label": label,
            "probability": 0.2 + 0.5 * label + np.linspace(0, 0.1, n),
            "source": source,
        }
    )


def hold_out_test(seen: pd.DataFrame, scores: np.ndarray, extra: int = 10) -> pd.DataFrame:
    """The run that held the source out: it scores the whole source, the other run's test
    images among them."""
    others = pd.DataFrame(
        {"image_id": [f"other_{i}" for i in range(extra)], "probability": np.full(extra, 0.5)}
    )
    return pd.concat([seen[["image_id"]].assign(probability=scores), others])


def test_an_unseen_source_costs_what_its_hold_out_run_loses_on_the_same_images():
    rosendahl, vienna = full_run_test("rosendahl"), full_run_test("vienna_dias")
    seen = pd.concat([rosendahl, vienna], ignore_index=True)
    # Held out, rosendahl's keratoses score as high as its melanomas; vienna_dias is ranked
    # as well as before, on a score scale of its own.
    keratosis = (rosendahl["dx"] == "bkl").to_numpy()
    held_out = {
        "rosendahl": hold_out_test(
            rosendahl, np.where(keratosis, 0.9, rosendahl["probability"]) + 0.01
        ),
        "vienna_dias": hold_out_test(vienna, vienna["probability"].to_numpy() / 10),
    }
    scores = seen_and_unseen_scores(seen, held_out)
    assert len(scores) == 80  # the seen run's test images, not the hold-out runs' others
    cost = unseen_source_cost(scores, replicates=200)
    assert cost["vienna_dias"]["difference"]["value"] == 0.0
    assert cost["rosendahl"]["seen"]["value"] == 1.0
    assert cost["rosendahl"]["difference"]["value"] < -0.4
    assert cost["rosendahl"]["difference"]["ci_high"] < 0
    # Pooled over same-source pairs: vienna_dias's scale (a tenth) is never compared with
    # rosendahl's. Of rosendahl's 400 pairs the 200 with a keratosis are lost; vienna_dias's
    # 400 all hold.
    assert cost["pooled"]["seen"]["value"] == 1.0
    assert cost["pooled"]["unseen"]["value"] == 0.75
    assert cost["pooled"]["difference"]["value"] == -0.25
    assert cost["pooled"]["images"] == 80 and cost["pooled"]["positives"] == 40
    by_dx = unseen_source_cost_by_diagnosis(scores, replicates=200)
    assert set(by_dx) == {"bkl", "nv"}
    assert by_dx["nv"]["difference"]["value"] == 0.0
    assert by_dx["bkl"]["difference"]["value"] < -0.4


def test_a_hold_out_run_that_did_not_score_the_other_runs_images_is_refused():
    rosendahl = full_run_test("rosendahl")
    held_out = hold_out_test(rosendahl, rosendahl["probability"].to_numpy()).iloc[3:]
    with pytest.raises(ValueError, match=r"^rosendahl: .* did not score 3 of the 40 test images"):
        seen_and_unseen_scores(rosendahl, {"rosendahl": held_out})


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("seen_twice", r"^the run on every source scored image rosendahl_0 more than once"),
        ("held_out_twice", r"^the run that held rosendahl out scored image rosendahl_5 more"),
        ("seen_nan", r"^the run on every source has no finite score for image rosendahl_2"),
        ("held_out_nan", r"^the run that held rosendahl out has no finite score for image"),
    ],
)
def test_an_image_scored_twice_or_without_a_finite_score_is_refused(fault, message):
    seen = full_run_test("rosendahl")
    held_out = hold_out_test(seen, seen["probability"].to_numpy())
    if fault == "seen_twice":
        seen = pd.concat([seen, seen.iloc[[0]]])
    elif fault == "held_out_twice":
        held_out = pd.concat([held_out, held_out.iloc[[5]]])
    elif fault == "seen_nan":
        seen.loc[2, "probability"] = np.nan
    else:
        held_out.iloc[4, held_out.columns.get_loc("probability")] = np.inf
    with pytest.raises(ValueError, match=message):
        seen_and_unseen_scores(seen, {"rosendahl": held_out})
