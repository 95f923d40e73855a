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
    mean = bench.mean_logit([a, b])
    assert list(mean.image_id) == ["x", "y"]
    # logit(0.9) = -logit(0.1): x averages to 0, as does y (both members at 0.5)
    np.testing.assert_allclose(mean.probability, [0.0, 0.0], atol=1e-12)


def test_a_member_that_scored_other_images_is_refused():
    bench = load_benchmark("loso_ensemble")
    with pytest.raises(ValueError, match="member 2 scored other images"):
        bench.mean_logit([predictions(["x"], [1], [0.9]), predictions(["z"], [1], [0.9])])


def test_two_members_that_each_miss_a_different_pair_rank_every_pair_together():
    """Each member ranks one melanoma below a nevus; their average ranks both above."""
    bench = load_benchmark("loso_ensemble")
    ids, labels = ["m1", "m2", "n1", "n2"], [1, 1, 0, 0]
    first = predictions(ids, labels, [0.9, 0.3, 0.4, 0.1])
    second = predictions(ids, labels, [0.3, 0.9, 0.1, 0.4])
    held_out = [
        {s: first.assign(source=s) for s in LOSO_SOURCES},
        {s: second.assign(source=s) for s in LOSO_SOURCES},
    ]
    figures = bench.ensemble_figures([first, second], held_out, replicates=20)
    assert figures["loso"]["value"] == 1.0
    assert figures["over_best_member"]["value"] == pytest.approx(0.25)  # 1.0 against 0.75
    assert figures["test"]["value"] == 1.0
    assert figures["within_source_test"]["value"] == 1.0
