"""``melanoma-predict``: score dermoscopy images with the champion or a given run.

``main`` scores a folder or a single image with the run's own preprocessing, its
probability calibration and its operating threshold from validation, and writes a CSV
(the research-use notice on its first line, as a ``#`` comment). Research use only, not
a diagnostic device.

This module is the command line only: the standard library and the light part of the
library, so that ``--help`` answers at once. pandas and OpenCV load as the inputs, the
store and the run are checked; TensorFlow and Keras only after that, when the command is
about to score (``training.scoring``), so that a user's mistake answers without them.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from melanoma import RESEARCH_NOTICE
from melanoma.artifacts import Calibration
from melanoma.cli import ProgressBar, quiet_tensorflow, run_command

if TYPE_CHECKING:
    import pandas as pd

    from training.run_model import RunScorer

# melanoma.config.OPERATING_POINTS, spelled out: melanoma.config imports pandas (through
# melanoma.ham10000), which would double the time --help takes. A unit test keeps them equal.
OPERATING_POINTS = ("target_sensitivity", "youden", "max_f1")

# What each operating point's threshold is, in words (calibration.json has the numbers).
THRESHOLD_RULES = {
    "youden": "the threshold maximising sensitivity + specificity - 1 (Youden's J) on the "
    "validation split",
    "max_f1": "the threshold maximising F1 on the validation split",
    "target_sensitivity": "the highest threshold reaching the target sensitivity on the "
    "validation split",
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="melanoma-predict",
        description="Score dermoscopy images with the champion model or a given run: the "
        "run's own preprocessing, its probability calibration and its operating threshold "
        "chosen on validation. " + RESEARCH_NOTICE,
        epilog="Environment: MELANOMA_STORE_URL (the default store); MELANOMA_DEBUG=1 shows "
        "tracebacks and TensorFlow's own logging. Exit status 0 when an image was scored, 1 "
        "when none could be, 2 for a mistake in the arguments or inputs (one line on stderr).",
    )
    parser.add_argument(
        "images", type=Path, help="an image file, or a folder of images (searched recursively)"
    )
    parser.add_argument(
        "--run",
        help="run id, run key or runs/<key> of the model to use (default: the label task's "
        "champion)",
    )
    parser.add_argument(
        "--label-task",
        default="mel_vs_rest",
        metavar="TASK",
        help="whose champion scores when --run is not given (default: %(default)s)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: MELANOMA_STORE_URL, else the checkout's .store/)",
    )
    parser.add_argument(
        "--operating-point",
        choices=OPERATING_POINTS,
        help="which validation threshold decides (default: the run's promotion operating point)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("predictions.csv"),
        metavar="CSV",
        help="CSV of scores to write (default: %(default)s); files not scored are listed "
        "beside it, in <name>.failures.csv",
    )
    parser.add_argument(
        "--gradcam",
        type=Path,
        metavar="DIR",
        help="also write each image beside its Grad-CAM overlay, captioned, to DIR/<image>"
        ".gradcam.png",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        metavar="N",
        help="images decoded and scored at a time (default: %(default)s); lower it if "
        "memory is short",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run_command("melanoma-predict", lambda: predict(args))


def predict(args: argparse.Namespace) -> int:
    """``melanoma-predict``: the inputs, the store and the run are checked before
    TensorFlow and the model load."""
    # Each import where it is first needed, so that a mistake is reported before the rest load.
    from melanoma.external import display_name
    from melanoma.store import default_store_url, open_store

    root, files, skipped = _input_files(args.images)
    paths = [p for p in files if p not in skipped]
    check_outputs(args.output, files)
    store = open_store(args.store or default_store_url(), create=False)
    from training import run_model  # scikit-learn (through melanoma.promotion), no TensorFlow

    run = run_model.find_run(store, args.run, args.label_task)

    import pandas as pd

    with quiet_tensorflow():
        from training import scoring  # TensorFlow, Keras, OpenCV
    scorer = run_model.load_run_scorer(run, args.operating_point)
    started = time.monotonic()
    with ProgressBar("scoring", len(paths), args.batch_size) as bar:
        scores, failures, batch = scoring.score_images(
            scorer, paths, root, args.batch_size, bar.update
        )
    elapsed = time.monotonic() - started
    not_scored = pd.DataFrame(
        {"image": [display_name(p, root) for p in skipped], "reason": list(skipped.values())}
    )
    failures = pd.concat([failures, not_scored], ignore_index=True)
    write_scores(scores, args.output)
    failures_path = failures_path_of(args.output)
    failures_path.unlink(missing_ok=True)  # never leave an earlier call's failures beside
    if len(failures):
        failures.to_csv(failures_path, index=False, lineterminator="\n")
    if args.gradcam and len(scores):
        names = set(scores["image"])
        scored = [p for p in paths if display_name(p, root) in names]
        with ProgressBar("Grad-CAM", len(scored), args.batch_size) as bar:
            scoring.write_gradcam_overlays(
                scorer, batch, scored, args.gradcam, scores, args.batch_size, bar.update
            )
    speed = f"{elapsed:.1f} s ({elapsed / max(len(paths), 1):.2f} s per file)"
    _print_outcome(scorer, scores, failures, f"{speed} -> {args.output}", failures_path)
    return 0 if len(scores) else 1


def _input_files(images: Path) -> tuple[Path, list[Path], dict[Path, str]]:
    """The folder names are relative to, every file found, and those skipped with why.

    In a folder, hidden files (.DS_Store, ._x.jpg) and Grad-CAM overlays are skipped and
    listed; a file named on the command line is scored whatever its name.
    """
    from melanoma.external import image_files, skip_reason

    root = images if images.is_dir() else images.parent
    files = image_files(images)
    if not files:
        raise FileNotFoundError(f"{images}: no files in this folder")
    skipped = {p: why for p in files if images.is_dir() and (why := skip_reason(p, root))}
    return root, files, skipped


def _print_outcome(
    scorer: RunScorer, scores: pd.DataFrame, failures: pd.DataFrame, speed: str, failures_path: Path
) -> None:
    """What was scored, with which model and how fast; what was not, and why (on stderr)."""
    print(RESEARCH_NOTICE, file=sys.stderr)
    print(
        f"{len(scores)} image(s) scored with {scorer.run_id} ({scorer.run.layout.prefix}): "
        f"{int(scores['decision'].sum())} positive for {scorer.label_task}. {speed}",
        file=sys.stderr,
    )
    print(scorer.parity.describe(), file=sys.stderr)
    if "in_distribution" in scores and (flagged := int((scores["in_distribution"] == 0).sum())):
        print(
            f"{flagged} image(s) are not of the model's kind (in_distribution = 0: far from "
            "every class of its training images); their probabilities mean little.",
            file=sys.stderr,
        )
    for row in failures.itertuples():
        print(f"not scored: {row.image}: {row.reason}", file=sys.stderr)
    if len(failures):
        print(f"{len(failures)} file(s) not scored, listed in {failures_path}", file=sys.stderr)
    print(
        operating_point_summary(scorer.calibration, scorer.operating_point, scorer.label_task),
        file=sys.stderr,
    )


def failures_path_of(output: Path) -> Path:
    return output.with_name(output.stem + ".failures.csv")


def check_outputs(output: Path, inputs: list[Path]) -> None:
    """Before anything is scored, refuse outputs that would destroy a file or cannot be
    written: one of the images, a file that is not an earlier call's CSV, a folder, a
    place this user cannot write. ValueError or OSError, naming the path."""
    ours = {output: f"# {RESEARCH_NOTICE}", failures_path_of(output): "image,reason"}
    for path, first_line in ours.items():
        if path.is_dir():
            raise IsADirectoryError(f"{path}: is a folder; --output takes a CSV file's path")
        if not path.exists():
            continue
        if any(path.samefile(image) for image in inputs if image.exists()):
            raise ValueError(f"{path}: is one of the images to score; choose another --output")
        with path.open("rb") as existing:
            head = existing.readline().decode("utf-8", "replace").rstrip("\r\n")
        if head != first_line:
            raise ValueError(
                f"{path}: exists and is not a CSV melanoma-predict wrote; refusing to "
                "overwrite it (choose another --output)"
            )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output.parent):
            pass
    except OSError as error:
        raise OSError(f"{output}: cannot be written ({error.strerror or error})") from None


def write_scores(scores: pd.DataFrame, path: Path) -> None:
    """The scores as CSV, under a first line ``# <research-use notice>`` (read it back with
    ``read_scores``, or pandas' ``skiprows=1``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(f"# {RESEARCH_NOTICE}\n")
        scores.to_csv(out, index=False, lineterminator="\n")


def read_scores(path: Path) -> pd.DataFrame:
    """A CSV ``write_scores`` wrote: the ``#`` lines above the header skipped, and only those
    (not pandas' ``comment="#"``, which would also cut a file name holding a ``#``)."""
    from melanoma.tables import read_table

    with path.open(encoding="utf-8") as lines:
        notice_lines = next((i for i, line in enumerate(lines) if not line.startswith("#")), 0)
    return read_table(path, skiprows=notice_lines)


def _percent(value: Any) -> str | None:
    """0.95 -> "95%"; None or NaN (a measure with no denominator, stored as null) -> None."""
    if not isinstance(value, int | float) or math.isnan(value):
        return None
    return f"{100 * value:.3g}%"


def operating_point_summary(calibration: Calibration, operating_point: str, label_task: str) -> str:
    """One line: from which score an image is positive, and why that threshold (how
    ``calibration.json`` chose it on validation, and what it gave there)."""
    entry = calibration.thresholds[operating_point]
    how = THRESHOLD_RULES.get(operating_point) or entry.get("rule", "chosen on validation")
    target = _percent(entry.get("target"))
    if operating_point == "target_sensitivity" and target:
        how = f"the highest threshold reaching {target} sensitivity on the validation split"
    details = [f"operating point {operating_point}"]
    measured = entry.get("validation") or {}
    sensitivity, specificity = (_percent(measured.get(k)) for k in ("sensitivity", "specificity"))
    if sensitivity and specificity:
        details.append(f"there sensitivity {sensitivity}, specificity {specificity}")
    seen = calibration.validation
    if "images" in seen and "positives" in seen:
        details.append(f"{seen['images']} validation images, {seen['positives']} positive")
    return (
        f"Decision: positive for {label_task} when probability >= {entry['threshold']:.4g}, "
        f"{how} ({'; '.join(details)})."
    )


if __name__ == "__main__":
    sys.exit(main())
