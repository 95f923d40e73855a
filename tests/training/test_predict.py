"""melanoma-predict on generated images: the pipeline's probabilities, any format, bad files listed."""

import io

import cv2
import numpy as np
import pandas as pd
import pytest

from melanoma.evaluation import EvaluationConfig
from melanoma.promotion import CHAMPION_FIELDS, champion_key
from training.predict import load_run_scorer, main, resolve_run_prefix, score_images


@pytest.fixture
def test_images(evaluated_run, tmp_path):
    """The run's test images as files: as stored, and re-encoded losslessly as PNG and BMP."""
    store, prefix = evaluated_run
    version = store.get_json(f"{prefix}/config.json")["dataset_version"]
    stored = {
        o.key.rsplit("/", 1)[1].split(".")[0]: o.key
        for o in store.list(f"datasets/ham10000/{version}/images/")
    }
    test = pd.read_csv(io.BytesIO(store.get_bytes(f"{prefix}/predictions/test.csv")))
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    names = {}
    for i, image_id in enumerate(test["image_id"]):
        data = store.get_bytes(stored[image_id])
        suffix = ("original", ".png", ".bmp")[i % 3]
        if suffix == "original":
            name = stored[image_id].rsplit("/", 1)[1]
            (folder / name).write_bytes(data)
        else:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            name = f"nested/{image_id}{suffix}"
            cv2.imwrite(str(folder / name), pixels)
        names[name] = image_id
    return folder, names, test


def test_probabilities_equal_the_pipelines_in_every_format(evaluated_run, test_images):
    store, prefix = evaluated_run
    folder, names, test = test_images
    scorer = load_run_scorer(store, prefix)
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    scores, failures, _ = score_images(scorer, paths, folder)
    assert failures.empty and len(scores) == len(test)
    assert {n.rsplit(".", 1)[1] for n in scores["image"]} >= {"png", "bmp"}
    both = scores.assign(image_id=scores["image"].map(names)).merge(test, on="image_id")
    assert len(both) == len(test)
    assert np.allclose(both["probability_x"], both["probability_y"], atol=1e-5)
    calibration = store.get_json(f"{prefix}/calibration.json")
    threshold = calibration["thresholds"]["target_sensitivity"]["threshold"]
    assert (scores["threshold"] == threshold).all()
    assert (scores["decision"] == (scores["probability"] >= threshold)).all()


def test_cli_lists_bad_files_scores_the_rest_and_writes_overlays(
    evaluated_run, test_images, tmp_path, capsys
):
    store, prefix = evaluated_run
    folder, names, _ = test_images
    good = next(iter(names))
    (folder / "truncated.jpg").write_bytes((folder / good).read_bytes()[:30])
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    output = tmp_path / "out" / "predictions.csv"
    code = main(
        [
            str(folder),
            "--store",
            store.url,
            "--run",
            prefix,
            "--output",
            str(output),
            "--operating-point",
            "youden",
            "--gradcam",
            str(tmp_path / "cams"),
        ]
    )
    assert code == 0
    scores = pd.read_csv(output)
    assert sorted(scores["image"]) == sorted(names)
    assert (scores["operating_point"] == "youden").all()
    failures = pd.read_csv(output.with_name("predictions.failures.csv"))
    reasons = dict(zip(failures["image"], failures["reason"], strict=True))
    assert set(reasons) == {"truncated.jpg", "notes.txt", "empty.png"}
    assert "not an image format" in reasons["notes.txt"]
    assert "unreadable image" in reasons["empty.png"]
    err = capsys.readouterr().err
    assert "3 file(s) not scored" in err and "Research use only" in err
    overlay = cv2.imread(str(tmp_path / "cams" / f"{good}.gradcam.png"))
    original = cv2.imread(str(folder / good))
    assert overlay.shape[:2] == (original.shape[0], 2 * original.shape[1])


def test_the_champion_is_used_unless_a_run_is_given(evaluated_run):
    store, prefix = evaluated_run
    with pytest.raises(LookupError, match="no champion for mel_vs_nv"):
        resolve_run_prefix(store, None, "mel_vs_nv")
    record = {field: 0.5 for field in CHAMPION_FIELDS}
    store.put_json(
        champion_key("mel_vs_nv"), {**record, "run_prefix": prefix, "label_task": "mel_vs_nv"}
    )
    try:
        assert resolve_run_prefix(store, None, "mel_vs_nv") == prefix
    finally:
        store.delete(champion_key("mel_vs_nv"))
    with pytest.raises(LookupError, match="has no trained model"):
        resolve_run_prefix(store, "manual__2020-01-01T00:00:00+00:00", "mel_vs_rest")


@pytest.mark.parametrize("label_format", ["ham10000", "binary"])
def test_external_validation_uses_the_validation_thresholds(
    evaluated_run, test_images, tmp_path, label_format
):
    from sklearn.metrics import roc_auc_score

    from melanoma.external import ExternalSet
    from melanoma.report import write_report
    from training.external import validate_external

    store, prefix = evaluated_run
    folder, names, test = test_images
    truth = test.set_index("image_id")
    ids = list(names.values())
    # The first image has no label, ISIC_9999999 has no image, broken.jpg is unreadable.
    rows = [(i, truth.at[i, "lesion_id"], truth.at[i, "dx"]) for i in ids[1:]]
    rows += [("ISIC_9999999", "HAM_x", "nv"), ("broken", "HAM_y", "mel")]
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    labels = pd.DataFrame(rows, columns=["image_id", "lesion_id", "dx"])
    if label_format == "binary":
        labels = pd.DataFrame(
            {"image_id": labels["image_id"], "melanoma": labels["dx"].eq("mel").astype(int)}
        )
    labels_path = tmp_path / "labels.csv"
    labels.to_csv(labels_path, index=False)

    key = validate_external(
        store,
        prefix,
        ExternalSet(f"generated-{label_format}", folder, labels_path),
        EvaluationConfig(bootstrap_replicates=100),
    )
    metrics = store.get_json(key)
    calibration = store.get_json(f"{prefix}/calibration.json")
    for name, entry in calibration["thresholds"].items():
        assert metrics["operating_points"][name]["threshold"] == entry["threshold"]
        assert metrics["operating_points"][name]["chosen_on"] == "val"
    assert metrics["labels_format"] == label_format and metrics["thresholds_chosen_on"] == "val"
    assert metrics["not_scored"] == {
        "unreadable": 1,
        "labelled, but no image file": 1,
        "image file without a label": 1,
    }
    scored = pd.read_csv(
        io.BytesIO(store.get_bytes(key.replace("metrics.json", "predictions.csv")))
    )
    assert len(scored) == len(ids) - 1 == metrics["counts"]["images"]
    expected = truth.loc[scored["image_id"]]
    assert np.allclose(scored["probability"], expected["probability"], atol=1e-5)
    assert metrics["threshold_free"]["auroc"]["value"] == pytest.approx(
        roc_auc_score(expected["label"], expected["probability"]), abs=1e-4
    )
    assert metrics["differences"]["formats"].keys() >= {"png", "bmp"}
    page = store.get_bytes(write_report(store, prefix)).decode()
    assert "External validation" in page and f"generated-{label_format}" in page
