import numpy as np
import pandas as pd
import pytest

from melanoma.subgroups import (
    MIN_PER_CLASS,
    age_band,
    group_order,
    source_confounding,
    source_rates,
    subgroup_metrics,
)


def test_age_bands():
    assert [age_band(a) for a in (5, 30, 44.9, 45, 60, 74, 75, 90)] == [
        "<30",
        "30-44",
        "30-44",
        "45-59",
        "60-74",
        "60-74",
        "75+",
        "75+",
    ]
    assert age_band(None) == age_band("") == age_band(float("nan")) == "unknown"


def _frame(rng, n=600):
    return pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:07d}" for i in range(n)],
            "lesion_id": [f"HAM_{i // 2:07d}" for i in range(n)],
            "label": rng.integers(0, 2, n),
            "probability": rng.random(n),
            "dataset": rng.choice(["clinic_a", "clinic_b"], n),
            "sex": rng.choice(["male", "female", None], n),
            "age": rng.choice([20.0, 50.0, 80.0, np.nan], n),
            "localization": rng.choice(["back", "face"], n),
        }
    )


def test_subgroup_metrics_count_every_image_once_per_attribute():
    frame = _frame(np.random.default_rng(1))
    result = subgroup_metrics(frame, 100, 0, 0.95)
    assert set(result) == {"source", "sex", "age band", "body site"}
    for groups in result.values():
        assert sum(g["images"] for g in groups.values()) == len(frame)
    assert "unknown" in result["sex"] and "unknown" in result["age band"]
    entry = result["source"]["clinic_a"]
    assert entry["auroc"]["ci_low"] <= entry["auroc"]["value"] <= entry["auroc"]["ci_high"]


def test_a_small_or_one_class_group_says_so():
    frame = _frame(np.random.default_rng(2), 200)
    frame.loc[:5, "localization"] = "ear"
    frame.loc[:5, "label"] = [1, 0, 0, 0, 0, 0]
    frame.loc[6:8, "localization"] = "scalp"
    frame.loc[6:8, "label"] = 0
    sites = subgroup_metrics(frame, 100, 0, 0.95)["body site"]
    assert "too wide" in sites["ear"]["note"] and sites["ear"]["auroc"] is not None
    assert sites["scalp"]["auroc"] is None and "one class" in sites["scalp"]["note"]
    assert sites["back"]["positives"] >= MIN_PER_CLASS and sites["back"]["note"] == ""


def test_source_alone_predicts_when_sources_differ_in_rate_and_the_model_only_knows_the_source():
    rng = np.random.default_rng(4)
    n = 2000
    source = rng.choice(["molemax", "modern"], n)
    label = (rng.random(n) < np.where(source == "modern", 0.3, 0.01)).astype(int)
    splits = pd.DataFrame(
        {"dataset": source, "label": label, "split": rng.choice(["train", "test"], n)}
    )
    rates = source_rates(splits)
    assert rates["modern"] > 0.2 > 0.05 > rates["molemax"]
    # A "model" that scores the camera, not the lesion.
    test = splits[splits["split"] == "test"].assign(
        probability=lambda d: (d["dataset"] == "modern") + rng.random(len(d)) * 0.1,
        lesion_id=lambda d: d.index.astype(str),
    )
    measured = source_confounding(test, rates, 200, 0, 0.95)
    assert measured["source_only_auroc"]["value"] > 0.75
    assert measured["within_source_auroc"]["value"] == pytest.approx(0.5, abs=0.08)


def test_age_bands_sort_by_their_lowest_age_with_unknown_last():
    names = ["unknown", "75+", "<30", "60-74", "30-44", "45-59"]
    assert group_order("age band", names) == ["<30", "30-44", "45-59", "60-74", "75+", "unknown"]
    # Other groups by name, unknown last all the same.
    assert group_order("sex", ["unknown", "male", "female"]) == ["female", "male", "unknown"]


def test_every_ham10000_source_has_its_site_and_no_other_does():
    from melanoma.ham10000 import SOURCES
    from melanoma.subgroups import SOURCE_SITES

    assert set(SOURCE_SITES) == set(SOURCES)
