import re

import pytest

from melanoma.calibration import target_sensitivity_threshold
from melanoma.evaluation import EvaluationConfig, calibrate_run, evaluate_run, split_fingerprint
from melanoma.report import write_report
from tests.scored_run import scored_split, write_scored_run

CONFIG = EvaluationConfig(bootstrap_replicates=200)


def test_thresholds_come_from_validation_only(file_store):
    prefix = write_scored_run(file_store, "a")
    calibration = file_store.get_json(calibrate_run(file_store, prefix, CONFIG))
    # Replacing the test predictions leaves the calibration unchanged.
    other = write_scored_run(file_store, "b", test=scored_split(300, 99, 0.5, "t"))
    assert file_store.get_json(calibrate_run(file_store, other, CONFIG)) == calibration
    assert calibration["fitted_on"] == "val"
    val = scored_split(300, 0, 3.0, "v")
    target = calibration["thresholds"]["target_sensitivity"]
    assert target["threshold"] == pytest.approx(
        target_sensitivity_threshold(val["label"], val["probability"], 0.95)
    )
    assert target["validation"]["sensitivity"] >= 0.95


def test_evaluation_writes_the_documented_schema_and_figures(file_store):
    prefix = write_scored_run(file_store, "a")
    calibrate_run(file_store, prefix, CONFIG)
    metrics = file_store.get_json(evaluate_run(file_store, prefix, CONFIG))
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
    for key in metrics["figures"].values():
        assert file_store.get_bytes(key).startswith(b"\x89PNG")
    assert "Research use only" in metrics["notice"]


def test_a_bad_prediction_row_is_named(file_store):
    prefix = write_scored_run(file_store, "a")
    test = scored_split(50, 1, 3.0, "t")
    test.loc[7, "probability"] = 1.5
    file_store.put_bytes(f"{prefix}/predictions/test.csv", test.to_csv(index=False).encode())
    calibrate_run(file_store, prefix, CONFIG)
    with pytest.raises(
        ValueError, match=r"test\.csv: row 9 \(image ISIC_t000007\): probability is 1\.5"
    ):
        evaluate_run(file_store, prefix, CONFIG)


def test_split_fingerprint_identifies_the_test_split():
    test = scored_split(50, 1, 3.0, "t")
    assert split_fingerprint(test) == split_fingerprint(test.sample(frac=1, random_state=0))
    relabelled = test.assign(label=1 - test["label"])
    assert split_fingerprint(relabelled) != split_fingerprint(test)


def test_report_is_self_contained_and_carries_the_notice(file_store):
    prefix = write_scored_run(file_store, "a")
    calibrate_run(file_store, prefix, CONFIG)
    metrics = file_store.get_json(evaluate_run(file_store, prefix, CONFIG))
    page = file_store.get_bytes(write_report(file_store, prefix)).decode()
    assert page.count("Research use only") >= 2
    assert page.count("data:image/png;base64,") == len(metrics["figures"])
    assert not re.search(r"(src|href)=['\"]https?://", page), "no external resources"
    auroc = metrics["threshold_free"]["auroc"]["value"]
    assert f"{auroc:.3f}" in page
    for section in ("Intended use", "Limitations", "Model details", "Thresholds", "Promotion"):
        assert section in page
