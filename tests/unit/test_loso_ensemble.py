"""benchmarks/loso_ensemble.py: averaging stored runs' scores, image by image."""

import numpy as np
import pandas as pd
import pytest

from melanoma.loso import LOSO_SOURCES
from tests.conftest import load_benchmark


def predictions(ids, labels, probabilities, source="rosendahl"):
    return pd.DataFrame(
        {
            "image_id": ids,
            "lesion_id": [f"L{i}" for i in ids],
            "label": labels,
            "probability": probabilities,
            "source": source,
        }
    )


def test_members_are_averaged_in_logits_on_the_same_images_in_any_order():
    bench = load_benchmark("loso_ensemble")
    a = predictions(["x", "y"], [1, 0], [0.9, 0.5])
    b = predictions(["y", "x"], [0, 1], [0.5, 0.1])  # another order
    mean = bench.mean_logit({"a": a, "b": b}, "test")
    assert list(mean.image_id) == ["x", "y"]
    # logit(0.9) = -logit(0.1): x averages to 0, as does y (both members at 0.5)
    np.testing.assert_allclose(mean.probability, [0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (predictions(["z"], [1], [0.9]), "b scored other test images than a"),
        (predictions(["x", "x"], [1, 1], [0.9, 0.8]), r"b \(test\) scored image x more than once"),
        (predictions(["x"], [1], [float("nan")]), r"b \(test\) has no finite score for image x"),
    ],
)
def test_a_member_that_scored_other_images_twice_or_without_a_score_is_refused(second, message):
    bench = load_benchmark("loso_ensemble")
    with pytest.raises(ValueError, match=message):
        bench.mean_logit({"a": predictions(["x"], [1], [0.9]), "b": second}, "test")


def member(bench, number, scores, shuffle=False):
    """A member whose every source (and full run) holds two melanomas and two nevi of its
    own, scored ``scores``; ``shuffle`` stores each in another row order."""
    held_out = {}
    for source in LOSO_SOURCES:
        ids = [f"{source}-{name}" for name in ("m1", "m2", "n1", "n2")]
        frame = predictions(ids, [1, 1, 0, 0], scores, source)
        held_out[source] = frame.iloc[::-1].reset_index(drop=True) if shuffle else frame
    full = pd.concat(held_out.values(), ignore_index=True)
    return bench.Member(number, full, held_out)


def test_an_ensemble_is_set_against_its_best_member_on_loso():
    """Each member misranks one pair of each source; the better misses one of four, the
    worse two. Their mean ranks every pair right: +0.25 over the better, not +0.5."""
    bench = load_benchmark("loso_ensemble")
    worse = member(bench, 1, [0.6, 0.3, 0.4, 0.45])  # m2 below both nevi: AUROC 0.5
    better = member(bench, 2, [0.3, 0.9, 0.1, 0.4], shuffle=True)  # m1 < n2: 0.75
    figures = bench.ensemble_figures([worse, better], replicates=20)
    assert figures["loso"]["value"] == 1.0
    assert figures["over_best_member"]["value"] == pytest.approx(0.25)
    assert figures["test"]["value"] == 1.0
    assert figures["within_source_test"]["value"] == 1.0
    alone = bench.ensemble_figures([better], replicates=20)
    assert alone["loso"]["value"] == pytest.approx(0.75)
    assert alone["over_best_member"]["value"] == pytest.approx(0.0)
