"""The report says only what the run's artifacts show: its external sets, its sources, the
phases it trained, its subgroups in reading order."""

import re

import pandas as pd

from melanoma import report_sections as sections
from melanoma.evaluation import EvaluationConfig, calibrate_run, evaluate_run
from melanoma.ham10000 import SOURCES
from melanoma.images import NO_PARITY
from melanoma.report import write_report
from melanoma.run import Run
from tests.scored_run import write_external_set, write_scored_run

CONFIG = EvaluationConfig(bootstrap_replicates=100)


def _reported(run: Run) -> str:
    """The page of ``run`` after the real calibrate, evaluate and report stages."""
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)
    write_report(run)
    return run.read_bytes("report", "report").decode()


def _model_row(page: str, name: str) -> str:
    """The text of the model-details row ``name``."""
    match = re.search(rf"<tr><th>{re.escape(name)}</th><td class='text'>(.*?)</td></tr>", page)
    assert match, f"no {name!r} row"
    return match.group(1)


def _limitations(page: str) -> str:
    return page.split("<h2>Limitations and considerations</h2>", 1)[1].split("</ul>", 1)[0]


def test_a_run_with_external_sets_names_them_and_never_says_none_was_used(file_store):
    run = write_scored_run(file_store, "a", metadata=True)
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)
    write_external_set(run, "isic2018")
    write_external_set(run, "ph2", seed=6, parity=NO_PARITY)  # a run from before parity
    # The dataset stored its test images as PNG (a mirror may serve them so).
    splits = run.splits()
    test_ids = splits.loc[splits["split"] == "test", "image_id"]
    manifest_key = run.config().manifest_key
    manifest = file_store.get_json(manifest_key)
    manifest["files"] = {f"images/{i}.png": {"width": 600, "height": 450} for i in test_ids}
    file_store.put_json(manifest_key, manifest)
    write_report(run)
    page = run.read_bytes("report", "report").decode()
    assert "<h2>External validation</h2>" in page
    assert "No external test set" not in page
    assert "External test sets used: <code>isic2018</code>, <code>ph2</code>" in _limitations(page)
    # The test split's formats come from the manifest, not from a fixed "jpeg".
    formats = re.findall(r"<tr><td>formats</td><td>jpeg \d+</td><td>(.*?)</td></tr>", page)
    assert formats == [f"png {len(test_ids)}"] * 2
    # What was done to images sharper than the training images, set by set.
    assert (
        "long side over 200 px (the run's training images) were first shrunk to it, then "
        "saved as JPEG at quality 75" in page
    )
    assert "Resolution parity: not applied (the run records no resolution" in page


def test_a_run_without_external_sets_says_none_was_used(file_store):
    page = _reported(write_scored_run(file_store, "a"))
    assert "No external test set was used for this report." in _limitations(page)
    assert "External validation" not in page and "External test set" not in page


def test_the_report_shows_every_stage_configuration_the_run_recorded(file_store):
    run = write_scored_run(file_store, "a", phase2_epochs=0)
    page = _reported(run)
    shown = page.split("<h2>Configuration</h2>", 1)[1].split("</pre>", 1)[0]
    for stage in run.config().stages:
        assert f"&quot;{stage}&quot;: " in shown
    assert "&quot;phase2_epochs&quot;: 0" in shown


def test_the_report_says_which_hardware_profile_the_run_took_and_why(file_store):
    page = _reported(write_scored_run(file_store, "a"))
    shown = page.split("<h2>Configuration</h2>", 1)[1]
    assert "Hardware profile <code>gpu</code>: the profile param is gpu." in shown


def test_a_run_without_phase_2_shows_none_of_its_settings(file_store):
    page = _reported(write_scored_run(file_store, "a", phase2_epochs=0))
    phase2 = _model_row(page, "Phase 2 (fine-tuning)")
    assert phase2 == "not run (0 epochs configured): the backbone was not fine-tuned"
    # The trainer records the blocks it would have unfrozen; they were never trained.
    assert "unfrozen" not in page and "block_5" not in page
    assert "schedule" not in _model_row(page, "Head and scoring")
    assert _model_row(page, "Validation AUROC").endswith("(phase 2 did not run)")


def test_a_run_with_phase_2_shows_the_epochs_it_ran_and_the_blocks_it_unfroze(file_store):
    page = _reported(write_scored_run(file_store, "a", phase2_epochs=3))
    phase2 = _model_row(page, "Phase 2 (fine-tuning)")
    assert phase2 == ("3 epochs run of 3 at most, lr 1e-05, schedule constant, unfrozen: block_5")
    assert "did not run" not in _model_row(page, "Validation AUROC")


def test_phase_2_counts_the_epochs_its_history_recorded_not_the_configured_maximum():
    training = {"config": {"phase2_epochs": 20}}
    early = {"phase2": {"loss": [0.5] * 4, "val_auroc": [0.8] * 4, "best_epoch": 1}}
    assert sections.phase2_epochs_run(training, early) == 4
    assert sections.phase2_epochs_run({"config": {"phase2_epochs": 0}}, early) == 0
    assert sections.phase2_epochs_run(training, {"phase2": {}}) == 0
    timed = {"phase2": {}, "summary": {"timing": {"phase2": {"epochs": 2}}}}
    assert sections.phase2_epochs_run(training, timed) == 2


def test_the_final_validation_auroc_says_it_averaged_test_time_views():
    training = {
        "config": {
            "backbone": "tiny_cnn",
            "phase1_epochs": 2,
            "phase1_learning_rate": 1e-4,
            "phase2_epochs": 0,
            "phase2_learning_rate": 1e-5,
            "imbalance": "none",
            "tta_views": 4,
        },
        "feature_cache": False,
        "device": {"devices": ["CPU"], "precision": "float32"},
        "train_images": 10,
        "train_positives": 2,
    }
    history = {"summary": {"val_auroc_after_phase1": 0.8, "val_auroc_final": 0.82}}
    preprocessing = {
        "size": 32,
        "interpolation": "area",
        "hair_removal": False,
        "lesion_crop": False,
    }
    page = sections.model_section(training, history, preprocessing)
    assert "0.8200 final (final with 4 test-time views, phase 1 without)" in page
    one_view = {**training, "config": {**training["config"], "tta_views": 1}}
    assert "test-time views, phase 1" not in sections.model_section(
        one_view, history, preprocessing
    )


def test_age_bands_are_listed_youngest_first(file_store):
    page = _reported(write_scored_run(file_store, "a", metadata=True))
    table = page.split("<h3>By age band</h3>", 1)[1].split("</table>", 1)[0]
    bands = re.findall(r"<tr><td>(.*?)</td>", table)
    assert bands == ["&lt;30", "30-44", "45-59", "60-74", "75+"]
    # Attributes in the evaluation's order, not metrics.json's sorted keys.
    headings = re.findall(r"<h3>By (.*?)</h3>", page)
    assert headings == ["source", "sex", "age band", "body site"]


def test_the_sources_sentence_counts_the_sources_of_the_runs_split(file_store):
    run = write_scored_run(file_store, "a", metadata=True, sources=SOURCES)
    page = _reported(run)
    counts = run.splits()["dataset"].value_counts()
    limitations = _limitations(page)
    assert "One source" not in limitations
    assert "One archive, 4 sources" in limitations
    for source in SOURCES:
        assert f"<code>{source}</code> {counts[source]}" in limitations
    assert "collected at 2 sites (Queensland, Vienna)" in limitations


def test_sources_of_no_known_site_are_counted_and_no_site_is_claimed(file_store):
    page = _reported(write_scored_run(file_store, "a", metadata=True))
    limitations = _limitations(page)
    assert "One archive, 2 sources" in limitations
    assert "the site of clinic_a, clinic_b is not recorded here" in limitations
    assert "Vienna" not in page and "Queensland" not in page


def test_a_split_without_sources_claims_no_count_of_them(file_store):
    limitations = _limitations(_reported(write_scored_run(file_store, "a")))
    assert "does not record each image's source" in limitations
    assert not re.search(r"\b(one|two|three|four|\d+) (source|site)s?\b", limitations)


def test_a_held_out_source_is_described_as_the_test_split():
    splits = {
        "label_task": "mel_vs_rest",
        "seed": 7,
        "ratios": [0.7, 0.15, 0.15],
        "holdout_source": "rosendahl",
        "excluded_images": 3,
        "splits": {
            s: {"images": 1, "lesions": 1, "positives": 0, "by_dx": {"nv": 1}}
            for s in ("test", "train", "val")  # as splits_summary.json's sorted keys
        },
    }
    dataset = {
        "source": "test",
        "counts": {"images": 3, "lesions": 3, "masks": 3, "quarantined": 0, "rejected_rows": 0},
        "validation": {"metadata_rows_without_image": []},
    }
    data = sections.data_section("v1", dataset, splits, {"rejected": 0, "augmented_copies": 0})
    assert "test split: the source <code>rosendahl</code> alone" in data
    assert "train:validation 0.7:0.15" in data and "3 images of lesions" in data
    assert "ratios 0.7, 0.15, 0.15" not in data
    assert re.findall(r"<tr><td>(\w+)</td>", data) == ["train", "val", "test"]

    metrics = {"counts": {"prevalence": 0.1}, "holdout_source": "rosendahl"}
    page = sections.considerations_section(metrics, {"rosendahl": 5, "vidir_modern": 9}, [])
    assert "<code>rosendahl</code> alone, held out of training and validation" in page
    assert "same archive as the training data" not in page


def test_the_automatic_mask_note_appears_only_with_automatic_masks():
    entry = {
        "images": 1,
        "maps_without_positive_evidence": 0,
        "energy_in_lesion": {"mean": 0.5, "median": 0.5},
        "lesion_area_fraction": {"mean": 0.3},
        "background_to_lesion_ratio": {"median": 0.8},
        "energy_to_area": 1.6,
    }
    summary = {
        "method": "gradcam",
        "layer": "conv",
        "operating_point": "youden",
        "threshold": 0.4,
        "by_outcome": dict.fromkeys(("TP", "FP", "FN", "TN"), entry),
        "overall": entry,
        "mask_sources": {"official": 4},
    }
    index = pd.DataFrame(columns=["selected_as", "png", "image_id", "dx", "probability"])
    official = sections.gradcam_section(summary, index, lambda key: b"")
    assert "Otsu" not in official and "4 official." in official
    automatic = {**summary, "mask_sources": {"official": 3, "automatic": 1}}
    assert "automatic = Otsu" in sections.gradcam_section(automatic, index, lambda key: b"")


def test_intervals_are_named_by_the_confidence_the_bootstrap_used(file_store):
    run = write_scored_run(file_store, "a", metadata=True)
    config = EvaluationConfig(bootstrap_replicates=100, confidence=0.9)
    calibrate_run(run, config)
    evaluate_run(run, config)
    write_report(run)
    page = run.read_bytes("report", "report").decode()
    assert "Intervals: 90% percentile" in page
    assert "value (90% CI)" in page and "AUROC (90% CI)" in page
    assert "95% CI" not in page


def test_the_report_shows_the_benchmark_comparison_with_its_interval():
    from melanoma.report_sections import promotion_section

    promotion = {
        "promote": False,
        "reasons": ["on the promotion benchmark: worse by more than the margin 0.010"],
        "policy": {"operating_point": "youden", "sensitivity_floor": 0.8, "auroc_margin": 0.01},
        "candidate": {"benchmark_auroc": {"value": 0.81, "ci_low": 0.77, "ci_high": 0.85}},
        "champion": {"run_id": "old"},
        "comparison": {
            "champion_auroc": 0.84,
            "difference": {"value": -0.03, "ci_low": -0.05, "ci_high": -0.01},
        },
    }
    html = promotion_section(promotion)
    assert "Not promoted" in html and "champion old" in html
    assert "-0.0300" in html and "-0.0500" in html and "0.8100" in html
    assert "no run trains, validates, calibrates or tests on" in html


def test_the_model_row_says_where_the_head_reads_the_backbone():
    def said(config):
        return sections._head_and_scoring(config, {}).split(";")[0]

    assert said({}) == "last-layer features"  # a run from before feature_depth
    assert said({"multiscale_features": True}) == "last-layer features, multiscale"
    assert said({"feature_depth": "mid", "multiscale_features": True}) == (
        "mid-level features, multiscale"
    )
