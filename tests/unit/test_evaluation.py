import re

import pytest

from melanoma.calibration import target_sensitivity_threshold
from melanoma.evaluation import EvaluationConfig, calibrate_run, evaluate_run, split_fingerprint
from melanoma.report import write_report
from melanoma.store import ArtifactCorruptError
from tests.scored_run import scored_split, write_scored_run

CONFIG = EvaluationConfig(bootstrap_replicates=200)


def test_thresholds_come_from_validation_only(file_store):
    run = write_scored_run(file_store, "a")
    calibrate_run(run, CONFIG)
    calibration = run.read_json("calibrate", "calibration")
    # Replacing the test predictions leaves the calibration unchanged.
    other = write_scored_run(file_store, "b", test=scored_split(300, 99, 0.5, "t"))
    calibrate_run(other, CONFIG)
    assert other.read_json("calibrate", "calibration") == calibration
    assert calibration["fitted_on"] == "val"
    val = scored_split(300, 0, 3.0, "v")
    target = calibration["thresholds"]["target_sensitivity"]
    assert target["threshold"] == pytest.approx(
        target_sensitivity_threshold(val["label"], val["probability"], 0.95)
    )
    assert target["validation"]["sensitivity"] >= 0.95


def test_evaluation_writes_the_documented_schema_and_figures(file_store):
    run = write_scored_run(file_store, "a")
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)
    metrics = run.read_json("evaluate", "metrics")
    assert metrics["schema_version"] == 1 and metrics["split"] == "test"
    assert set(metrics["operating_points"]) == {"at_0.5", "youden", "target_sensitivity", "max_f1"}
    for name, point in metrics["operating_points"].items():
        assert point["chosen_on"] == ("fixed" if name == "at_0.5" else "val")
        c = point["confusion"]
        assert sum(c.values()) == metrics["counts"]["images"]
        for rate in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"):
            assert point[rate]["ci_low"] <= point[rate]["value"] <= point[rate]["ci_high"]
    free = metrics["threshold_free"]
    assert free["auprc_baseline"] == pytest.approx(metrics["counts"]["prevalence"])
    assert free["auprc"]["value"] > free["auprc_baseline"]
    assert metrics["bootstrap"]["unit"] == "lesion" and metrics["bootstrap"]["replicates"] == 200
    calibration = metrics["probability_calibration"]
    assert calibration["fitted_on"] == "val" and calibration["method"] == "platt"
    assert set(calibration["test"]) == {"raw", "calibrated"}
    for name, key in metrics["figures"].items():
        assert run.entry("evaluate", f"figure/{name}")["key"] == key
        assert run.read_bytes("evaluate", f"figure/{name}").startswith(b"\x89PNG")
    assert "Research use only" in metrics["notice"]


def test_a_bad_prediction_row_is_named(file_store):
    test = scored_split(50, 1, 3.0, "t")
    test.loc[7, "probability"] = 1.5
    run = write_scored_run(file_store, "a", test=test)
    calibrate_run(run, CONFIG)
    with pytest.raises(
        ValueError, match=r"test\.csv: row 9 \(image ISIC_t000007\): probability is 1\.5"
    ):
        evaluate_run(run, CONFIG)
    assert not run.committed("evaluate")


def test_predictions_changed_after_their_commit_are_refused(file_store):
    run = write_scored_run(file_store, "a")
    key = run.layout.predictions("val")
    file_store.put_bytes(key, file_store.get_bytes(key).replace(b"0.", b"0.9", 1))
    with pytest.raises(ArtifactCorruptError, match=re.escape(key)):
        calibrate_run(run, CONFIG)
    assert not run.committed("calibrate")


def test_split_fingerprint_identifies_the_test_split():
    test = scored_split(50, 1, 3.0, "t")
    assert split_fingerprint(test) == split_fingerprint(test.sample(frac=1, random_state=0))
    relabelled = test.assign(label=1 - test["label"])
    assert split_fingerprint(relabelled) != split_fingerprint(test)


def test_report_is_self_contained_and_carries_the_notice(file_store):
    run = write_scored_run(file_store, "a")
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)
    metrics = run.read_json("evaluate", "metrics")
    write_report(run)
    page = run.read_bytes("report", "report").decode()
    assert page.count("Research use only") >= 2
    assert page.count("data:image/png;base64,") == len(metrics["figures"])
    assert not re.search(r"(src|href)=['\"]https?://", page), "no external resources"
    auroc = metrics["threshold_free"]["auroc"]["value"]
    assert f"{auroc:.3f}" in page
    for section in ("Intended use", "Limitations", "Model details", "Thresholds", "Promotion"):
        assert section in page
    assert "binary head; test-time views 1; no metadata" in page


def test_every_report_measures_within_source_per_subgroup_and_the_source_alone(file_store):
    run = write_scored_run(file_store, "a", metadata=True)
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)
    metrics = run.read_json("evaluate", "metrics")
    confounding = metrics["source_confounding"]
    assert confounding["sources"] == 2
    assert set(confounding["train_rates"]) == {"clinic_a", "clinic_b"}
    for name in ("within_source_auroc", "source_only_auroc"):
        entry = confounding[name]
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    # Sources assigned regardless of the label: the source alone predicts nothing.
    assert abs(confounding["source_only_auroc"]["value"] - 0.5) < 0.1
    assert set(metrics["subgroups"]) == {"source", "sex", "age band", "body site"}
    for groups in metrics["subgroups"].values():
        assert sum(g["images"] for g in groups.values()) == metrics["counts"]["images"]
    assert metrics["holdout_source"] is None

    write_report(run)
    page = run.read_bytes("report", "report").decode()
    assert "pairs within a source" in page and "AUROC of the source alone" in page
    assert "By body site" in page and "Within a source:" in page


def test_a_split_without_metadata_has_no_subgroups_and_the_report_says_so(file_store):
    run = write_scored_run(file_store, "a")
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)
    metrics = run.read_json("evaluate", "metrics")
    assert "subgroups" not in metrics and "source_confounding" not in metrics
    write_report(run)
    assert "carries no metadata" in run.read_bytes("report", "report").decode()
