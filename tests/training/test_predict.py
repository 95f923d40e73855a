"""melanoma-predict on generated images: the pipeline's probabilities, any format, bad files
listed, captioned overlays, and nothing on stderr but its own lines."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import PIL.Image
import pytest

from melanoma import RESEARCH_NOTICE
from melanoma.evaluation import EvaluationConfig
from melanoma.images import ResolutionParity
from melanoma.layout import DatasetLayout, champion_key
from melanoma.promotion import CHAMPION_FIELDS
from training.predict import main, read_scores
from training.run_model import find_run, load_run_scorer
from training.scoring import score_images


@pytest.fixture
def test_images(evaluated_run, tmp_path):
    """The run's test images as files: as stored, and re-encoded losslessly as PNG and BMP."""
    store = evaluated_run.store
    images = DatasetLayout(evaluated_run.config().dataset_version).file("images/")
    stored = {o.key.rsplit("/", 1)[1].split(".")[0]: o.key for o in store.list(images)}
    test = evaluated_run.predictions("test")
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
    folder, names, test = test_images
    scorer = load_run_scorer(evaluated_run)
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    scores, failures, _ = score_images(scorer, paths, folder)
    assert failures.empty and len(scores) == len(test)
    assert {n.rsplit(".", 1)[1] for n in scores["image"]} >= {"png", "bmp"}
    both = scores.assign(image_id=scores["image"].map(names)).merge(test, on="image_id")
    assert len(both) == len(test)
    assert np.allclose(both["probability_x"], both["probability_y"], atol=1e-5)
    calibration = evaluated_run.read_json("calibrate", "calibration")
    threshold = calibration["thresholds"]["target_sensitivity"]["threshold"]
    assert (scores["threshold"] == threshold).all()
    assert (scores["decision"] == (scores["probability"] >= threshold)).all()


def test_an_image_at_three_times_the_training_resolution_scores_as_at_it(
    evaluated_run, test_images, tmp_path
):
    """Resolution parity: the run records its training images' resolution and JPEG quality
    (the generated archive's 64x48, saved at 90) and brings sharper images to them before
    the model's resize."""
    folder, _, _ = test_images
    scorer = load_run_scorer(evaluated_run)
    assert scorer.parity == ResolutionParity(64, 90)
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    originals = sorted(folder.glob("nested/*.png"))
    for path in originals:
        pixels = cv2.imread(str(path))
        height, width = pixels.shape[:2]
        larger = cv2.resize(pixels, (3 * width, 3 * height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(sharp / path.name), larger)
    at_training, _, _ = score_images(scorer, originals, folder)
    at_three_times, failures, _ = score_images(scorer, sorted(sharp.glob("*.png")), sharp)
    assert failures.empty and len(at_three_times) == len(originals) > 3
    pairs = at_training.assign(name=at_training["image"].str.rsplit("/", n=1).str[-1]).merge(
        at_three_times, left_on="name", right_on="image"
    )
    assert len(pairs) == len(originals)
    assert np.allclose(pairs["probability_x"], pairs["probability_y"], atol=0.02)


def test_cli_lists_bad_files_scores_the_rest_and_writes_overlays(
    evaluated_run, test_images, tmp_path, capsys
):
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
            evaluated_run.store.url,
            "--run",
            evaluated_run.layout.prefix,
            "--output",
            str(output),
            "--operating-point",
            "youden",
            "--gradcam",
            str(tmp_path / "cams"),
        ]
    )
    assert code == 0
    assert output.read_text().splitlines()[0] == f"# {RESEARCH_NOTICE}"
    scores = read_scores(output)
    assert sorted(scores["image"]) == sorted(names)
    assert (scores["operating_point"] == "youden").all()
    failures = pd.read_csv(output.with_name("predictions.failures.csv"))
    reasons = dict(zip(failures["image"], failures["reason"], strict=True))
    assert set(reasons) == {"truncated.jpg", "notes.txt", "empty.png"}
    assert "not an image format" in reasons["notes.txt"]
    assert reasons["empty.png"] == "empty file"
    err = capsys.readouterr().err
    assert "3 file(s) not scored" in err and "Research use only" in err
    threshold = evaluated_run.read_json("calibrate", "calibration")["thresholds"]["youden"]
    assert err.splitlines()[-1].startswith(
        f"Decision: positive for mel_vs_rest when probability >= {threshold['threshold']:.4g}, "
        "the threshold maximising sensitivity + specificity - 1 (Youden's J) on the validation "
        "split (operating point youden; there sensitivity"
    )
    # Each overlay is captioned with its image, probability and decision (its PNG title).
    row = scores.set_index("image").loc[good]
    with PIL.Image.open(tmp_path / "cams" / f"{good}.gradcam.png") as overlay:
        name, scored, decided = overlay.text["Title"].split("\n")
        assert overlay.width > overlay.height
    assert name == good and scored.startswith(f"probability {row['probability']:.3f} (")
    assert scored.endswith(f": {'positive' if row['decision'] else 'negative'} for mel_vs_rest")
    assert decided == f"threshold {threshold['threshold']:.4g} (youden), run t-evaluated"
    assert len(list((tmp_path / "cams").rglob("*.gradcam.png"))) == len(scores)


def test_the_command_prints_only_its_own_lines_and_no_progress_off_a_terminal(
    evaluated_run, test_images, tmp_path
):
    """In a process of its own (TensorFlow not yet imported), with several batches."""
    folder, names, _ = test_images
    env = {
        k: v for k, v in os.environ.items() if k not in ("MELANOMA_DEBUG", "TF_CPP_MIN_LOG_LEVEL")
    }
    output = tmp_path / "scores.csv"
    arguments = ["--store", evaluated_run.store.url, "--run", evaluated_run.layout.prefix]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.predict",
            str(folder),
            *arguments,
            "--output",
            str(output),
            "--batch-size",
            "4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == RESEARCH_NOTICE and lines[1].startswith(f"{len(names)} image(s) scored")
    assert lines[2].startswith("Resolution parity: images with a long side over 64 px")
    assert lines[-1].startswith("Decision: positive for mel_vs_rest"), lines
    # Between them, at most the count of images the out-of-distribution detector flags.
    assert len(lines) == 4 or (len(lines) == 5 and "not of the model's kind" in lines[3]), lines
    assert "\r" not in done.stderr and done.stdout == ""
    assert len(read_scores(output)) == len(names)


def test_the_champion_is_used_unless_a_run_is_given(evaluated_run):
    store, prefix = evaluated_run.store, evaluated_run.layout.prefix
    with pytest.raises(LookupError, match="no champion for mel_vs_nv"):
        find_run(store, None, "mel_vs_nv")
    record = {field: 0.5 for field in CHAMPION_FIELDS}
    store.put_json(
        champion_key("mel_vs_nv"), {**record, "run_prefix": prefix, "label_task": "mel_vs_nv"}
    )
    try:
        assert find_run(store, None, "mel_vs_nv").layout == evaluated_run.layout
    finally:
        store.delete(champion_key("mel_vs_nv"))
    for ref in ("t-evaluated", "runs/t-evaluated", "runs/t-evaluated/"):
        assert find_run(store, ref, "mel_vs_rest").layout == evaluated_run.layout
    with pytest.raises(LookupError, match="has no run"):
        find_run(store, "manual__2020-01-01T00:00:00+00:00", "mel_vs_rest")
    with pytest.raises(LookupError, match="has no trained model"):
        find_run(store, "t", "mel_vs_rest")  # split and preprocessed, never trained


@pytest.mark.parametrize("label_format", ["ham10000", "binary"])
def test_external_validation_uses_the_validation_thresholds(
    evaluated_run, test_images, tmp_path, label_format
):
    from sklearn.metrics import roc_auc_score

    from melanoma.external import ExternalSet
    from melanoma.report import write_report
    from training.external import validate_external

    run = evaluated_run
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

    set_name = f"generated-{label_format}"
    key = validate_external(
        run,
        ExternalSet(set_name, folder, labels_path),
        EvaluationConfig(bootstrap_replicates=100),
    )
    assert key == run.layout.commit(f"external/{set_name}")
    metrics = run.read_json(f"external/{set_name}", "metrics")
    calibration = run.read_json("calibrate", "calibration")
    for name, entry in calibration["thresholds"].items():
        assert metrics["operating_points"][name]["threshold"] == entry["threshold"]
        assert metrics["operating_points"][name]["chosen_on"] == "val"
    assert metrics["labels_format"] == label_format and metrics["thresholds_chosen_on"] == "val"
    assert metrics["not_scored"] == {
        "unreadable": 1,
        "labelled, but no image file": 1,
        "image file without a label": 1,
    }
    scored = run.read_csv(f"external/{set_name}", "predictions")
    assert len(scored) == len(ids) - 1 == metrics["counts"]["images"]
    expected = truth.loc[scored["image_id"]]
    assert np.allclose(scored["probability"], expected["probability"], atol=1e-5)
    assert metrics["threshold_free"]["auroc"]["value"] == pytest.approx(
        roc_auc_score(expected["label"], expected["probability"]), abs=1e-4
    )
    assert metrics["differences"]["formats"].keys() >= {"png", "bmp"}
    write_report(run)
    page = run.read_bytes("report", "report").decode()
    assert "External validation" in page and set_name in page


def test_two_external_sets_from_like_named_folders_both_stay(evaluated_run, test_images, tmp_path):
    from melanoma.external import resolve_external_set
    from melanoma.report import write_report
    from training.external import validate_external

    run = evaluated_run
    folder, names, test = test_images
    other = tmp_path / "clinic_b" / "images"  # the same folder name as the first set's
    other.mkdir(parents=True)
    labels = {}
    for set_name, images, chosen in (
        ("ph2", folder, list(names)[::2]),
        ("derm7pt", other, list(names)[1::2]),
    ):
        rows = []
        for name in chosen:
            target = images / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if images is other:
                target.write_bytes((folder / name).read_bytes())
            rows.append(
                {
                    "image_id": names[name],
                    "melanoma": int(test.set_index("image_id").at[names[name], "label"]),
                }
            )
        labels[set_name] = tmp_path / f"{set_name}.csv"
        pd.DataFrame(rows).to_csv(labels[set_name], index=False)
    config = EvaluationConfig(bootstrap_replicates=100)
    for set_name, images in (("ph2", folder), ("derm7pt", other)):
        external = resolve_external_set(str(images), str(labels[set_name]), tmp_path / "cache")
        assert external.name == set_name  # from the labels file, never the folder
        validate_external(run, external, config)
    assert {"ph2", "derm7pt"} <= set(run.external_sets())
    assert run.read_json("external/ph2", "metrics")["counts"]["images"] == len(list(names)[::2])
    write_report(run)
    page = run.read_bytes("report", "report").decode()
    assert "<h3>ph2</h3>" in page and "<h3>derm7pt</h3>" in page

    # The same name for other files is refused, not silently replaced.
    clash = resolve_external_set(str(other), str(labels["derm7pt"]), tmp_path / "cache", "ph2")
    with pytest.raises(ValueError, match="give this set another name"):
        validate_external(run, clash, config)
    assert run.read_json("external/ph2", "metrics")["counts"]["images"] == len(list(names)[::2])


def test_photographs_that_are_not_dermoscopy_are_flagged_out_of_distribution(
    evaluated_run, test_images, tmp_path
):
    """scikit-image's bundled photographs and generated pictures score far from every
    class; the run's own test images mostly pass (95% of validation does, by its threshold)."""
    import skimage.data

    summary = evaluated_run.commit_record("train")["data"]["summary"]["ood"]
    # 5% of validation flagged, to within one of its 48 images.
    assert summary["val_flagged_share"] <= 0.05 + 1 / 40 and summary["threshold"] > 0
    folder, _, _ = test_images
    others = tmp_path / "others"
    others.mkdir()
    rng = np.random.default_rng(0)
    pictures = {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "noise": rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
        "stripes": np.tile(np.repeat([[0], [255]], 8, axis=0), (20, 400))[..., None].repeat(3, 2),
    }
    for name, rgb in pictures.items():
        cv2.imwrite(
            str(others / f"{name}.png"), cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR)
        )
    scorer = load_run_scorer(evaluated_run)
    theirs, failures, _ = score_images(scorer, sorted(others.iterdir()), others)
    ours, _, _ = score_images(scorer, sorted(folder.rglob("*.*")), folder)
    assert failures.empty and len(theirs) == len(pictures)
    assert theirs["in_distribution"].mean() <= 0.2, theirs[["image", "ood_distance"]]
    assert ours["in_distribution"].mean() >= 0.85
    assert theirs["ood_distance"].median() > ours["ood_distance"].quantile(0.95)
