"""melanoma-predict as a command line, without a model: a light --help, every option
explained, the CSV's notice line, the operating point in words, a quiet TensorFlow, the
progress bar and the captioned Grad-CAM figure."""

import argparse
import io
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import PIL.Image
import pytest

from melanoma import RESEARCH_NOTICE
from melanoma.artifacts import Calibration
from melanoma.cli import ProgressBar, quiet_tensorflow
from melanoma.config import OPERATING_POINTS
from melanoma.evaluation import EvaluationConfig, calibrate_run
from melanoma.figures import gradcam_overlay_figure, gradcam_overlay_png
from tests.scored_run import write_scored_run
from training.predict import build_parser, operating_point_summary, read_scores, write_scores

HEAVY = ("tensorflow", "keras", "cv2", "pandas", "sklearn", "matplotlib", "training.scoring")


def test_help_imports_neither_tensorflow_nor_any_other_heavy_library():
    code = (
        "import sys\n"
        "from training.predict import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print(' '.join(sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(done.stderr.split())
    assert not {m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY}
    assert "usage: melanoma-predict" in done.stdout and "Research use only" in done.stdout


def test_the_console_script_is_this_main():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "melanoma-predict"]
    assert script.value == "training.predict:main"


def test_every_option_has_help():
    for action in build_parser()._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
    text = build_parser().format_help()
    assert "--output CSV" in text and "--batch-size N" in text and "MELANOMA_DEBUG" in text


def test_the_operating_points_offered_are_the_configs():
    assert build_parser()._option_string_actions["--operating-point"].choices == OPERATING_POINTS


def test_a_batch_size_below_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["images", "--batch-size", "0"])
    assert exit.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_the_csv_starts_with_the_notice_and_reads_back_whatever_the_names(tmp_path):
    # A '#' inside a name, or starting one, is data: only the lines above the header go.
    scores = pd.DataFrame({"image": ["a#1.jpg", "#2.png", "c.bmp"], "probability": [0.1, 0.5, 1]})
    path = tmp_path / "out" / "predictions.csv"
    write_scores(scores, path)
    lines = path.read_text().splitlines()
    assert lines[0] == f"# {RESEARCH_NOTICE}" and lines[1] == "image,probability"
    pd.testing.assert_frame_equal(read_scores(path), scores)
    pd.testing.assert_frame_equal(pd.read_csv(path, skiprows=1), scores)


@pytest.fixture
def calibration(file_store) -> Calibration:
    """A calibration.json as the calibrate stage writes it (validation: 300 lesions)."""
    run = write_scored_run(file_store, "a")
    calibrate_run(run, EvaluationConfig(bootstrap_replicates=100, target_sensitivity=0.9))
    return run.calibration()


def test_the_summary_names_the_threshold_and_how_validation_chose_it(calibration):
    entry = calibration.thresholds["target_sensitivity"]
    line = operating_point_summary(calibration, "target_sensitivity", "mel_vs_rest")
    assert line.startswith(
        f"Decision: positive for mel_vs_rest when probability >= {entry['threshold']:.4g}, "
        "the highest threshold reaching 90% sensitivity on the validation split"
    )
    sensitivity = entry["validation"]["sensitivity"]
    assert f"there sensitivity {100 * sensitivity:.3g}%" in line
    seen = calibration.validation
    assert f"{seen['images']} validation images, {seen['positives']} positive" in line
    assert len(line.splitlines()) == 1
    for point in ("youden", "max_f1"):
        line = operating_point_summary(calibration, point, "mel_vs_rest")
        threshold = calibration.threshold(point)
        assert f">= {threshold:.4g}" in line and f"(operating point {point};" in line
    assert "Youden's J" in operating_point_summary(calibration, "youden", "mel_vs_rest")


def test_the_summary_of_an_older_calibration_without_measures_still_reads():
    old = Calibration.from_json(
        {"thresholds": {"max_f1": {"threshold": 0.02134}}, "probability_calibration": {}}
    )
    assert operating_point_summary(old, "max_f1", "mel_vs_nv") == (
        "Decision: positive for mel_vs_nv when probability >= 0.02134, the threshold "
        "maximising F1 on the validation split (operating point max_f1)."
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_drawn_for_more_than_one_batch_on_a_terminal_and_erased():
    stream = Terminal()
    with ProgressBar("scoring", 70, 32, stream) as bar:
        for done in (32, 64, 70):
            bar.update(done)
    drawn = stream.getvalue()
    assert "\rscoring [" in drawn and "] 32/70" in drawn and "] 70/70" in drawn
    assert "#" * 30 in drawn  # full at the end
    assert drawn.endswith("\r") and drawn.rsplit("\r", 2)[-2].strip() == ""  # erased
    assert "\n" not in drawn


@pytest.mark.parametrize(("stream", "total"), [(Terminal(), 32), (io.StringIO(), 70)])
def test_no_progress_bar_for_one_batch_or_off_a_terminal(stream, total):
    with ProgressBar("scoring", total, 32, stream) as bar:
        bar.update(total)
    assert stream.getvalue() == ""


def test_quiet_tensorflow_keeps_the_import_time_chatter_off_stderr(capfd, monkeypatch):
    monkeypatch.delenv("MELANOMA_DEBUG", raising=False)
    # set, then removed: monkeypatch then restores it (unset) after the test, whatever
    # quiet_tensorflow sets meanwhile
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    with quiet_tensorflow():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\n")
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    print("ours", file=sys.stderr)
    assert capfd.readouterr().err == "ours\n"


def test_quiet_tensorflow_shows_the_chatter_when_the_import_fails_or_when_debugging(
    capfd, monkeypatch
):
    monkeypatch.delenv("MELANOMA_DEBUG", raising=False)
    with pytest.raises(ImportError), quiet_tensorflow():
        os.write(2, b"libcudart.so: cannot open shared object file\n")
        raise ImportError("no TensorFlow")
    assert "libcudart" in capfd.readouterr().err
    monkeypatch.setenv("MELANOMA_DEBUG", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with quiet_tensorflow():
        os.write(2, b"oneDNN\n")
    assert capfd.readouterr().err == "oneDNN\n" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_the_gradcam_figure_is_captioned_with_a_colour_bar(tmp_path: Path):
    image = np.full((48, 64, 3), 180, np.uint8)
    overlay = np.zeros_like(image)
    title = "nested/ISIC_0000001.jpg\nprobability 0.734 (calibrated 0.612): positive"
    fig = gradcam_overlay_figure(image, overlay, title, RESEARCH_NOTICE)
    assert fig.get_suptitle() == title
    assert [ax.get_label() for ax in fig.axes].count("<colorbar>") == 1
    colour_bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert "Grad-CAM" in colour_bar.get_ylabel()
    assert RESEARCH_NOTICE in fig.get_supxlabel()
    png = gradcam_overlay_png(image, overlay, title, RESEARCH_NOTICE)
    with PIL.Image.open(io.BytesIO(png)) as saved:
        assert saved.text["Title"] == title and saved.text["Description"] == RESEARCH_NOTICE
        assert saved.width > saved.height > 300  # enlarged: two panels and the bar, readable
