import numpy as np
import pandas as pd
import pytest

from melanoma.ham10000 import apply_label_task
from melanoma.splits import (
    PROMOTION_BENCHMARK_SHARE,
    promotion_benchmark_lesions,
    split_by_lesion,
    split_summary,
)


def fake_metadata(n_lesions: int = 3000, seed: int = 0) -> pd.DataFrame:
    """HAM10000-like: diagnosis mix of the real archive, 1-4 images per lesion."""
    rng = np.random.default_rng(seed)
    dx_mix = {
        "nv": 0.67,
        "mel": 0.11,
        "bkl": 0.11,
        "bcc": 0.05,
        "akiec": 0.03,
        "vasc": 0.015,
        "df": 0.015,
    }
    dxs = rng.choice(
        list(dx_mix), size=n_lesions, p=np.array(list(dx_mix.values())) / sum(dx_mix.values())
    )
    rows = []
    for i, dx in enumerate(dxs):
        for _ in range(int(rng.integers(1, 5))):
            rows.append(
                {"lesion_id": f"HAM_{i:07d}", "image_id": f"ISIC_{len(rows):07d}", "dx": dx}
            )
    return pd.DataFrame(rows)


def test_no_lesion_crosses_splits():
    split = split_by_lesion(fake_metadata(), seed=1)
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    assert split["split"].notna().all()
    assert set(split["split"]) == {"train", "val", "test"}


def test_proportions_per_diagnosis_within_two_points():
    split = split_by_lesion(fake_metadata(), ratios=(0.7, 0.15, 0.15), seed=3)
    for dx, part in split.groupby("dx"):
        share = part["split"].value_counts(normalize=True)
        tolerance = (
            0.02 if len(part) > 300 else 0.06
        )  # a few lesions of 1-4 images each for rare dx
        for name, target in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            assert abs(share.get(name, 0) - target) <= tolerance, (dx, name, share.to_dict())


def test_same_seed_same_split_other_seed_other_split():
    meta = fake_metadata(500)
    a = split_by_lesion(meta, seed=7)
    b = split_by_lesion(meta.sample(frac=1, random_state=0), seed=7).loc[a.index]
    c = split_by_lesion(meta, seed=8)
    assert (a["split"] == b["split"]).all(), "row order must not change the split"
    assert (a["split"] != c["split"]).any()


def test_custom_ratios_and_validation():
    split = split_by_lesion(fake_metadata(), ratios=(0.8, 0.0, 0.2), seed=0)
    assert "val" not in set(split["split"])
    assert abs((split["split"] == "train").mean() - 0.8) < 0.02
    with pytest.raises(ValueError, match="summing to 1"):
        split_by_lesion(fake_metadata(50), ratios=(0.5, 0.2, 0.2))


def test_lesion_with_two_diagnoses_is_an_error():
    meta = pd.DataFrame(
        {
            "lesion_id": ["L1", "L1"],
            "image_id": ["ISIC_0000001", "ISIC_0000002"],
            "dx": ["mel", "nv"],
        }
    )
    with pytest.raises(ValueError, match="L1"):
        split_by_lesion(meta)


def test_summary_counts_images_lesions_melanomas():
    meta = apply_label_task(fake_metadata(400), "mel_vs_rest")
    split = split_by_lesion(meta, seed=0)
    summary = split_summary(split)
    assert sum(s["images"] for s in summary.values()) == len(meta)
    assert sum(s["lesions"] for s in summary.values()) == meta["lesion_id"].nunique()
    assert sum(s["melanomas"] for s in summary.values()) == (meta["dx"] == "mel").sum()
    assert all(s["positives"] == s["melanomas"] for s in summary.values())


def test_holding_out_a_source_tests_on_it_alone_and_keeps_lesions_whole():
    import pandas as pd

    from melanoma.splits import split_holding_out_source

    rows = pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:07d}" for i in range(12)],
            "lesion_id": ["L0", "L0", "L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8", "L9", "L9"],
            "dx": ["mel", "mel", "nv", "nv", "mel", "nv", "nv", "nv", "mel", "nv", "nv", "nv"],
            # L0 has an image in each of a and b: it must not be learned and tested.
            "dataset": ["a", "b", "a", "a", "a", "a", "b", "b", "a", "a", "a", "a"],
        }
    )
    split = split_holding_out_source(rows, "b", (0.7, 0.15, 0.15), 0)
    assert set(split.loc[split["split"] == "test", "dataset"]) == {"b"}
    assert set(split.loc[split["split"] != "test", "dataset"]) == {"a"}
    assert "ISIC_0000000" not in set(split["image_id"])  # L0's image from source a: left out
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    assert set(split["split"]) == {"train", "val", "test"}
    with pytest.raises(ValueError, match=r"not a source.*'a', 'b'"):
        split_holding_out_source(rows, "c")


def test_the_promotion_benchmark_is_lesion_grouped_stratified_and_seed_free():
    rng = np.random.default_rng(0)
    dxs = rng.choice(["nv", "mel", "bkl", "bcc"], size=3000, p=[0.6, 0.15, 0.15, 0.1])
    rows = pd.DataFrame(
        {
            "lesion_id": [f"HAM_{i:07d}" for i in range(3000) for _ in range(1 + i % 3)],
            "dx": [dx for i, dx in enumerate(dxs) for _ in range(1 + i % 3)],
        }
    )
    chosen = promotion_benchmark_lesions(rows)
    share = rows.assign(bench=rows["lesion_id"].isin(chosen)).groupby("dx")["bench"].mean()
    assert np.allclose(share, PROMOTION_BENCHMARK_SHARE, atol=0.005), share
    # The same lesions whatever the rows' order; a lesion's place never depends on a seed.
    assert promotion_benchmark_lesions(rows.sample(frac=1, random_state=3)) == chosen
    # A new version with more lesions keeps almost all of the old benchmark.
    more = pd.concat([rows, rows.head(600).assign(lesion_id=lambda r: r["lesion_id"] + "b")])
    assert len(chosen - promotion_benchmark_lesions(more)) <= 0.05 * len(chosen)
    assert promotion_benchmark_lesions(rows, 0.0) == set()
