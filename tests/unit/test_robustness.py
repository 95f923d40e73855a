"""The robustness section's pure parts: the test sample, the rendering, the summary."""

import numpy as np

from melanoma.images import NO_PARITY, PreprocessConfig, ResolutionParity
from melanoma.report_sections import robustness_section
from melanoma.robustness import sample_by_lesion, shifted_inputs, summarise_shifts
from melanoma.shifts import ACQUISITION_SHIFTS
from tests.scored_run import scored_split


def test_the_sample_takes_whole_lesions_and_keeps_the_prevalence():
    test = scored_split(600, 1, 2.0, "t")
    sample = sample_by_lesion(test, 300, seed=0)
    assert 280 <= len(sample) <= 320
    # whole lesions: every image of a chosen lesion is in
    chosen = test[test["lesion_id"].isin(sample["lesion_id"])]
    assert len(chosen) == len(sample)
    assert abs(sample["label"].mean() - test["label"].mean()) < 0.03
    assert sample.equals(sample_by_lesion(test, 300, seed=0))
    assert not sample.equals(sample_by_lesion(test, 300, seed=1))
    assert len(sample_by_lesion(test, 10_000, seed=0)) == len(test)


def test_shifted_inputs_at_strength_zero_are_the_clean_inputs():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(3)]
    ids = ["a", "b", "c"]
    config = PreprocessConfig(size=32)
    # With parity that shrinks and re-saves them too: the same steps give the same pixels.
    for parity in (NO_PARITY, ResolutionParity(60, 75)):
        clean = shifted_inputs(images, ids, None, 0.0, config, parity, seed=0)
        assert clean.shape == (3, 32, 32, 3)
        for name, shift in ACQUISITION_SHIFTS.items():
            same = shifted_inputs(images, ids, (name, shift), 0.0, config, parity, seed=0)
            np.testing.assert_array_equal(same, clean, err_msg=name)
    blurred = shifted_inputs(
        images, ids, ("blur", ACQUISITION_SHIFTS["blur"]), 1.0, config, parity, 0
    )
    assert not np.array_equal(blurred, clean)


def test_the_summary_sees_a_shift_that_erases_the_signal():
    sample = scored_split(300, 2, 3.0, "t")
    clean = sample["probability"].to_numpy()
    noise = np.random.default_rng(0).random(len(sample))
    shifted = {
        "harmless": {0.4: clean, 0.8: clean},
        "erasing": {0.4: 0.5 * clean + 0.5 * noise, 0.8: noise},
    }
    summary = summarise_shifts(sample, clean, shifted, 200, 0, 0.95)
    harmless, erasing = summary["shifts"]["harmless"], summary["shifts"]["erasing"]
    assert harmless["mean_auroc"] == summary["clean_auroc"]["value"]
    assert harmless["strengths"]["0.4"]["change"]["value"] == 0
    assert erasing["strengths"]["0.8"]["auroc"]["value"] < 0.65
    assert erasing["strengths"]["0.8"]["change"]["ci_high"] < 0
    assert summary["mean_auroc"] == (harmless["mean_auroc"] + erasing["mean_auroc"]) / 2
    assert summary["ratio_to_clean"] < 1

    html = robustness_section(
        {
            **summary,
            "config": {"strengths": [0.4, 0.8]},
            "resolution_parity": {"train_long_side": 200, "train_jpeg_quality": 75},
        }
    )
    assert "erasing" in html and "strength 0.8" in html and "long side over 200 px" in html
    assert "saved as JPEG at quality 75" in html
    # Rows in the yardstick's order, whatever order the JSON kept.
    names = list(ACQUISITION_SHIFTS)
    ordered = robustness_section(
        {
            **summary,
            "shifts": {n: harmless for n in sorted(names)},
            "config": {"strengths": [0.4, 0.8]},
            "resolution_parity": {"train_long_side": None},
        }
    )
    positions = [ordered.index(f"<td>{n.replace('_', ' ')}</td>") for n in names]
    assert positions == sorted(positions)
    assert "Not measured" in robustness_section(None)
