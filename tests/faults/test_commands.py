"""The bad-input matrix at the commands: melanoma-predict and melanoma-validate-external
(issue 16). A user's mistake is one line and exit status 2, found before the model loads;
a bad file among good ones is listed as not scored, with its reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import training.external
import training.run_model
from melanoma.layout import DatasetLayout
from tests.conftest import free_port
from tests.faults.cases import IMAGE_CASES, png_with_alpha, tiff_claiming
from training.external import main as validate_main
from training.predict import main as predict_main
from training.predict import read_scores


@pytest.fixture
def images(evaluated_run, tmp_path) -> tuple[Path, dict[str, str]]:
    """Six of the run's test images as files (three melanomas), by file name -> image id."""
    store = evaluated_run.store
    prefix = DatasetLayout(evaluated_run.config().dataset_version).file("images/")
    stored = {o.key.rsplit("/", 1)[1].split(".")[0]: o.key for o in store.list(prefix)}
    folder = tmp_path / "images"
    folder.mkdir()
    names = {}
    test = evaluated_run.predictions("test")
    # Three of each class, alternating, so that any four of them still hold both classes.
    chosen = zip(
        test[test["label"] == 1]["image_id"][:3],
        test[test["label"] == 0]["image_id"][:3],
        strict=True,
    )
    for image_id in [i for pair in chosen for i in pair]:
        (folder / f"{image_id}.jpg").write_bytes(store.get_bytes(stored[image_id]))
        names[f"{image_id}.jpg"] = image_id
    return folder, names


@pytest.fixture
def no_model_load(monkeypatch):
    """A command that reaches the model here has not checked its inputs first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(training.run_model, "load_run_scorer", refuse)  # what predict calls
    monkeypatch.setattr(training.external, "load_run_scorer", refuse)


def one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: "), err
    return err


def _closed_s3(monkeypatch) -> str:
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("S3_SECRET_KEY", "testing")
    monkeypatch.setenv("S3_RETRIES", "0")
    return "s3://bucket"


# (case, arguments given the images folder, the store URL and tmp_path; the error's text)
PREDICT_CASES = [
    ("missing images path", lambda f, s, t: [str(t / "nowhere"), "--store", s], "no such file"),
    ("empty images folder", lambda f, s, t: [str(t / "empty"), "--store", s], "no files in"),
    ("unknown run", lambda f, s, t: [str(f), "--store", s, "--run", "nope"], "has no run 'nope'"),
    (
        "run path leaving the store",
        lambda f, s, t: [str(f), "--store", s, "--run", "runs/../../etc"],
        "'../../etc' is not a run key",
    ),
    ("malformed store URL", lambda f, s, t: [str(f), "--store", "ftp://x/y"], "unsupported object"),
    (
        "store that does not exist",
        lambda f, s, t: [str(f), "--store", (t / "no" / "such").as_uri()],
        "no store there",
    ),
    ("unreachable S3 endpoint", lambda f, s, t: [str(f), "--store", "S3"], "did not answer"),
]


@pytest.mark.parametrize(
    ("case", "arguments", "message"), PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES]
)
def test_predict_user_errors_are_one_line(
    case, arguments, message, evaluated_run, images, tmp_path, capsys, monkeypatch, no_model_load
):
    folder, _ = images
    (tmp_path / "empty").mkdir()
    args = arguments(folder, evaluated_run.store.url, tmp_path)
    args = [(_closed_s3(monkeypatch) if a == "S3" else a) for a in args]
    assert predict_main([*args, "--output", str(tmp_path / "out.csv")]) == 2
    assert message in one_line_error(capsys, "melanoma-predict")
    assert not (tmp_path / "no").exists()  # a reader never creates a store
    assert not (tmp_path / "out.csv").exists()


# (case, the --output given the images folder and tmp_path; the error's text)
OUTPUT_CASES = [
    ("an image it scores", lambda f, t: sorted(f.iterdir())[0], "is one of the images to score"),
    ("a file of the user's", lambda f, t: t / "notes.csv", "exists and is not a CSV melanoma"),
    ("a path under a file", lambda f, t: t / "notes.csv" / "out.csv", "cannot be written"),
    ("a folder", lambda f, t: t, "is a folder; --output takes a CSV file's path"),
]


@pytest.mark.parametrize(
    ("case", "output", "message"), OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES]
)
def test_predict_refuses_an_output_that_would_destroy_a_file_before_scoring(
    case, output, message, evaluated_run, images, tmp_path, capsys, no_model_load
):
    folder, _ = images
    (tmp_path / "notes.csv").write_text("patient,note\n1,keep me\n")
    before = {p: p.read_bytes() for p in [*folder.iterdir(), tmp_path / "notes.csv"]}
    code = predict_main(
        [str(folder), "--store", evaluated_run.store.url, "--output", str(output(folder, tmp_path))]
    )
    assert code == 2 and message in one_line_error(capsys, "melanoma-predict")
    assert {p: p.read_bytes() for p in before} == before  # every file as it was


def test_predict_refuses_a_batch_size_below_1(capsys):
    with pytest.raises(SystemExit) as exit_:
        predict_main(["images", "--batch-size", "-5"])
    assert exit_.value.code == 2
    assert "--batch-size: must be at least 1, got -5" in capsys.readouterr().err


def test_predict_lists_each_bad_file_with_its_reason_and_scores_the_rest(
    evaluated_run, images, tmp_path, capsys
):
    folder, names = images
    good = (folder / next(iter(names))).read_bytes()
    expected = {}
    for case, edit, reason in IMAGE_CASES:
        data = edit(good)
        name = case.replace(" ", "_").replace(",", "") + (
            ".png" if data[:4] == b"\x89PNG" else ".jpg"
        )
        (folder / name).write_bytes(data)
        expected[name] = reason
    (folder / ".hidden.jpg").write_bytes(good)
    # An overlay an earlier --gradcam wrote into the folder is not a lesion.
    (folder / "ISIC_1.gradcam.png").write_bytes(png_with_alpha(transparent=False))
    # A TIFF whose header claims 14000x14000 pixels: refused from the header.
    (folder / "huge.tif").write_bytes(tiff_claiming(14000, 14000))
    # A file name that is not UTF-8, and images in a symlinked sub-folder.
    Path(os.fsdecode(os.fsencode(folder) + b"/\xff\xfe.jpg")).write_bytes(good)
    linked = tmp_path / "elsewhere"
    linked.mkdir()
    (linked / "linked.jpg").write_bytes(good)
    (folder / "link").symlink_to(linked, target_is_directory=True)
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a link loop ends
    output = tmp_path / "predictions.csv"
    code = predict_main(
        [
            str(folder),
            "--store",
            evaluated_run.store.url,
            "--run",
            evaluated_run.layout.prefix,
            "--output",
            str(output),
        ]
    )
    assert code == 0
    scored = set(read_scores(output)["image"])
    failures = pd.read_csv(output.with_name("predictions.failures.csv"))
    reasons = dict(zip(failures["image"], failures["reason"], strict=True))
    for name, reason in expected.items():
        if reason is None:
            assert name in scored
        else:
            assert name not in scored and reason in reasons[name], (name, reasons.get(name))
    assert set(names) <= scored
    assert reasons[".hidden.jpg"].startswith("hidden file")
    assert reasons["ISIC_1.gradcam.png"].startswith("a Grad-CAM overlay")
    assert "refused before decoding" in reasons["huge.tif"]
    assert "link/linked.jpg" in scored  # followed, not skipped silently
    assert "\\udcff\\udcfe.jpg" in scored  # written escaped: the CSV stays UTF-8
    assert not any(name.startswith("loop/") for name in scored | set(reasons))
    assert "Traceback" not in capsys.readouterr().err


def _labels(tmp_path: Path, text: str) -> str:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return str(path)


VALIDATE_CASES = [
    ("labels file missing", lambda f, t: ["--labels", str(t / "none.csv")], "no such labels file"),
    ("labels file empty", lambda f, t: ["--labels", _labels(t, "")], "empty file"),
    (
        "labels with a bad column",
        lambda f, t: ["--labels", _labels(t, "file,label\nISIC_1,1\n")],
        "match no known format",
    ),
    (
        "labels with a bad value",
        lambda f, t: ["--labels", _labels(t, "image_id,melanoma\nISIC_1,maybe\n")],
        "melanoma must be 0 or 1 (line(s) 2",
    ),
    (
        "empty images folder",
        lambda f, t: [
            "--images",
            str(t / "empty"),
            "--labels",
            _labels(t, "image_id,melanoma\nISIC_1,1\n"),
        ],
        "has exactly one image file there",
    ),
    (
        "missing images folder",
        lambda f, t: [
            "--images",
            str(t / "nowhere"),
            "--labels",
            _labels(t, "image_id,melanoma\nISIC_1,1\n"),
        ],
        "no such folder or zip",
    ),
    (
        "unknown run",
        lambda f, t: ["--run", "nope", "--labels", _labels(t, "image_id,melanoma\nISIC_1,1\n")],
        "has no run 'nope'",
    ),
]


@pytest.mark.parametrize(
    ("case", "arguments", "message"), VALIDATE_CASES, ids=[c[0] for c in VALIDATE_CASES]
)
def test_validate_external_user_errors_are_one_line(
    case, arguments, message, evaluated_run, images, tmp_path, capsys, no_model_load
):
    folder, _ = images
    (tmp_path / "empty").mkdir()
    args = [
        "--images",
        str(folder),
        "--store",
        evaluated_run.store.url,
        "--run",
        evaluated_run.layout.prefix,
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    code = validate_main([*args, *arguments(folder, tmp_path)])
    assert code == 2
    assert message in one_line_error(capsys, "melanoma-validate-external")


def test_external_ids_two_files_share_are_not_scored_and_both_paths_listed(
    evaluated_run, images, tmp_path
):
    from melanoma.evaluation import EvaluationConfig
    from melanoma.external import ExternalSet
    from training.external import validate_external

    folder, names = images
    ids = list(names.values())
    labels = evaluated_run.predictions("test").set_index("image_id").loc[ids, ["label"]]
    (folder / "nested").mkdir()
    shutil.copy(folder / f"{ids[0]}.jpg", folder / "nested" / f"{ids[0]}.jpg")  # a/x beside x
    shutil.copy(folder / f"{ids[1]}.jpg", folder / f"{ids[1]}.png")  # x.jpg beside x.png
    (folder / f".{ids[2]}.jpg").write_bytes(b"hidden")
    # A labelled TIFF whose header claims 14000x14000 pixels: that image alone is lost.
    (folder / "ISIC_9999999.tif").write_bytes(tiff_claiming(14000, 14000))
    labels.loc["ISIC_9999999"] = 0
    labels_path = tmp_path / "set.csv"
    labels.rename(columns={"label": "melanoma"}).rename_axis("image_id").reset_index().to_csv(
        labels_path, index=False
    )

    run = evaluated_run
    validate_external(
        run,
        ExternalSet("ambiguous", folder, labels_path),
        EvaluationConfig(bootstrap_replicates=100),
    )
    not_scored = run.read_csv("external/ambiguous", "not_scored")
    reasons = dict(zip(not_scored["image_id"], not_scored["reason"], strict=True))
    assert (
        reasons[ids[0]]
        == f"ambiguous: several files have this id: {ids[0]}.jpg, nested/{ids[0]}.jpg"
    )
    assert reasons[ids[1]] == f"ambiguous: several files have this id: {ids[1]}.jpg, {ids[1]}.png"
    assert reasons[f".{ids[2]}"] == (
        f"hidden file (its name starts with '.'), skipped: .{ids[2]}.jpg"
    )
    assert reasons["ISIC_9999999"].startswith("unreadable: ")
    assert "refused before decoding" in reasons["ISIC_9999999"]
    scored = run.read_csv("external/ambiguous", "predictions")
    assert set(scored["image_id"]) == set(ids[2:])


def test_refused_s3_credentials_are_one_line_in_predict_and_the_store_command(
    images, tmp_path, capsys, monkeypatch, refusing_s3_endpoint, no_model_load
):
    from melanoma.migrate import main as store_main

    folder, _ = images
    monkeypatch.setenv("S3_ENDPOINT_URL", refusing_s3_endpoint)
    monkeypatch.setenv("S3_ACCESS_KEY", "wrong-key-id")
    monkeypatch.setenv("S3_SECRET_KEY", "wrong-secret")
    output = tmp_path / "out.csv"
    assert predict_main([str(folder), "--store", "s3://bucket", "--output", str(output)]) == 2
    assert "refused access" in one_line_error(capsys, "melanoma-predict")
    assert store_main(["migrate", "--store", "s3://bucket"]) == 2
    message = one_line_error(capsys, "melanoma-store")
    assert "'wrong-key-id'" in message and "wrong-secret" not in message
    assert not output.exists()
