"""External validation: a run's model on a labelled set from outside HAM10000.

Stage ``external/<set>``: writes ``runs/<run key>/external/<set>/``: ``predictions.csv``,
``not_scored.csv``, ``figures/*.png`` and ``metrics.json`` (the evaluation schema's counts,
bootstrap, threshold_free, operating_points and probability_calibration, plus what was
not scored and how the set differs from the run's HAM10000 test split), then the
stage's commit record. The set's name is the user's (``--name``, else the labels file's
stem); a second set under a name already used for other files is refused. The
thresholds are the ones the run chose on its validation split; the external set never
chooses them.

``melanoma-validate-external`` (``main``) is the same as a command; the DAG's
``external_validation`` task calls ``validate_external``. Research use only, not a
diagnostic device.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import PIL.Image

from melanoma import RESEARCH_NOTICE
from melanoma.artifacts import ExternalMetrics
from melanoma.cli import USER_ERRORS, run_command
from melanoma.download import file_digest
from melanoma.evaluation import EvaluationConfig, json_safe, measure_predictions
from melanoma.external import (
    ExternalLabelsError,
    ExternalSet,
    ImageIndex,
    describe_differences,
    display_name,
    index_images,
    labels_for_task,
    read_external_labels,
    resolve_external_set,
)
from melanoma.run import Run
from melanoma.store import default_store_url, open_store, read_manifest
from training.run_model import find_run, load_run_scorer
from training.scoring import score_images

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1


def _header(path: Path) -> tuple[tuple[int, int], str]:
    with PIL.Image.open(path) as image:
        return image.size, (image.format or path.suffix.lstrip(".")).lower()


def _test_split_reference(run: Run) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """The run's HAM10000 test split: its counts by dx, and its images' stored sizes."""
    split = run.splits()
    test = split[split["split"] == "test"]
    reference = {
        "images": len(test),
        "positives": int(test["label"].astype(int).sum()),
        "by_dx": test["dx"].value_counts().to_dict(),
    }
    files = read_manifest(run.store, run.config().manifest_key)["files"]
    test_ids = set(test["image_id"])
    sizes = [
        (entry["width"], entry["height"])
        for name, entry in files.items()
        if name.startswith("images/") and Path(name).stem in test_ids and "width" in entry
    ]
    return reference, sizes


def set_identity(external: ExternalSet, images: list[Path]) -> dict[str, Any]:
    """What an external set is, by content: the sha256 of its labels file, and one over
    every scored image's name and sha256. The same files under another path are the
    same set; other files under the same path are not."""
    digest = hashlib.sha256()
    for path in sorted(images, key=lambda p: display_name(p, external.images)):
        name = display_name(path, external.images)
        digest.update(f"{name}\t{file_digest(path)}\n".encode())
    return {
        "images": str(external.images),
        "labels": str(external.labels),
        "labels_sha256": file_digest(external.labels),
        "images_sha256": digest.hexdigest(),
        "image_count": len(images),
    }


CONTENT_FIELDS = ("labels_sha256", "images_sha256")


def check_set_name(run: Run, name: str, identity: dict[str, Any], meanwhile: bool = False) -> None:
    """Refuse to replace a committed external set of this name that holds other files
    (by content; a set committed before content identity, by its paths)."""
    if not run.committed(ExternalMetrics.stage_of(name)):
        return
    source = run.external(name).source
    fields = CONTENT_FIELDS if all(f in source for f in CONTENT_FIELDS) else ("images", "labels")
    if any(source[f] != identity[f] for f in fields):
        when = "while this one ran; nothing of this one was saved" if meanwhile else ""
        raise ValueError(
            f"external set {name!r} of {run.layout.prefix} was validated on other files "
            f"({source.get('image_count', '?')} images from {source['images']}, labels "
            f"{source['labels']}){' ' + when if when else ''}; give this set another name (--name)"
        )


@dataclass(frozen=True)
class MatchedSet:
    """An external set's labels matched to its image files, before any model loads."""

    raw_labels: pd.DataFrame  # every labelled row, as read
    labels_format: str
    labels: pd.DataFrame  # the rows of the run's label task
    index: ImageIndex  # the folder's files: by id, ambiguous, skipped
    matched: pd.DataFrame  # labelled rows with exactly one image file

    @property
    def paths(self) -> list[Path]:
        return [self.index.by_id[i] for i in self.matched["image_id"]]


def match_external_set(external: ExternalSet, label_task: str) -> MatchedSet:
    """The set's labels for ``label_task`` and its files, matched by image id; one error
    naming both when none match (checked before the model loads: a bad set fails fast)."""
    raw_labels, fmt = read_external_labels(external.labels)
    labels = labels_for_task(raw_labels, label_task, fmt)
    index = index_images(external.images)
    files = index.by_id
    matched = labels[labels["image_id"].isin(list(files))].reset_index(drop=True)
    if matched.empty:
        raise ExternalLabelsError(
            f"{external.images}: none of the {len(labels)} image ids of {external.labels} "
            f"(label task {label_task}) has exactly one image file there "
            f"({len(files)} usable files, {len(index.ambiguous)} ambiguous ids, "
            f"{len(index.skipped)} skipped files)"
        )
    return MatchedSet(raw_labels, fmt, labels, index, matched)


SCORED_COLUMNS = ("image", "probability", "calibrated_probability", "metadata")
OOD_COLUMNS = ("ood_distance", "in_distribution")


def scored_rows(
    found: MatchedSet, scores: pd.DataFrame, images: Path
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The matched rows with their scores, and each scored file's name -> image id."""
    by_name = {display_name(found.index.by_id[i], images): i for i in found.matched["image_id"]}
    columns = [*SCORED_COLUMNS, *(c for c in OOD_COLUMNS if c in scores)]
    scored = found.matched.merge(
        scores.assign(image_id=scores["image"].map(by_name))[["image_id", *columns]],
        on="image_id",
    )
    return scored, by_name


def not_scored_reasons(
    found: MatchedSet,
    failures: pd.DataFrame,
    by_name: dict[str, str],
    images: Path,
    label_task: str,
) -> pd.DataFrame:
    """image_id, reason: every labelled image or image file that was not scored, and why."""
    index, labels, raw = found.index, found.labels, found.raw_labels

    def relative(paths: list[Path]) -> str:
        return ", ".join(display_name(p, images) for p in paths)

    def rows(ids: list[str], reasons: list[str] | str) -> pd.DataFrame:
        return pd.DataFrame({"image_id": ids, "reason": reasons})

    ambiguous = sorted(index.ambiguous)
    known = set(index.by_id) | set(index.ambiguous)
    return pd.concat(
        [
            failures.assign(
                image_id=failures["image"].map(by_name), reason="unreadable: " + failures["reason"]
            ),
            rows(
                ambiguous,
                [
                    f"ambiguous: several files have this id: {relative(index.ambiguous[i])}"
                    for i in ambiguous
                ],
            ),
            rows(
                [p.stem for p in index.skipped],
                [f"{why}: {relative([p])}" for p, why in index.skipped.items()],
            ),
            rows(sorted(set(labels["image_id"]) - known), "labelled, but no image file"),
            rows(sorted(set(index.by_id) - set(raw["image_id"])), "image file without a label"),
            rows(
                sorted(set(raw["image_id"]) - set(labels["image_id"])),
                f"outside label task {label_task}",
            ),
        ],
        ignore_index=True,
    )[["image_id", "reason"]]


def commit_external_set(
    run: Run,
    name: str,
    identity: dict[str, Any],
    scored: pd.DataFrame,
    not_scored: pd.DataFrame,
    pngs: dict[str, bytes],
    metrics: dict[str, Any],
) -> str:
    """Write the set's predictions, reasons, figures and metrics, committed as a
    compare-and-swap: under the store's lock for this name, the name must still hold
    nothing or these files; the loser of two concurrent validations saves nothing."""
    layout, stage_name = run.layout, ExternalMetrics.stage_of(name)
    with run.store.exclusive(layout.commit(stage_name)):
        check_set_name(run, name, identity, meanwhile=True)
        with run.stage(stage_name) as stage:
            stage.put_bytes(
                "predictions",
                layout.external_file(name, "predictions.csv"),
                scored.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode(),
            )
            stage.put_bytes(
                "not_scored",
                layout.external_file(name, "not_scored.csv"),
                not_scored.to_csv(index=False, lineterminator="\n").encode(),
            )
            figure_keys = {
                figure: stage.put_bytes(
                    f"figure/{figure}", layout.external_figure(name, figure), png
                )
                for figure, png in pngs.items()
            }
            stage.put_json(
                "metrics",
                layout.external_file(name, "metrics.json"),
                json_safe({**metrics, "figures": figure_keys, "notice": RESEARCH_NOTICE}),
            )
    return layout.commit(stage_name)


def validate_external(
    run: Run,
    external: ExternalSet,
    config: EvaluationConfig,
    batch_size: int = 32,
) -> str:
    """Score ``external`` with the run's model and measure it; return the commit key."""
    found = match_external_set(external, run.config().label_task)
    identity = set_identity(external, found.paths)
    check_set_name(run, external.name, identity)
    scorer = load_run_scorer(run)
    scores, failures, _ = score_images(scorer, found.paths, external.images, batch_size)
    scored, by_name = scored_rows(found, scores, external.images)
    not_scored = not_scored_reasons(found, failures, by_name, external.images, scorer.label_task)
    measured, pngs = measure_predictions(scored, run.calibration(), config, "external")
    headers = [_header(found.index.by_id[i]) for i in scored["image_id"]]
    reference, reference_sizes = _test_split_reference(run)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "run_id": scorer.run_id,
        "label_task": scorer.label_task,
        "external_set": external.name,
        "labels_format": found.labels_format,
        "source": identity,
        "thresholds_chosen_on": "val",
        # Larger images were brought to the training images' long side and quality first.
        "resolution_parity": scorer.parity.record(),
        **measured,
        "not_scored": not_scored["reason"].str.split(":").str[0].value_counts().to_dict(),
        # The share of scored images the run's detector calls not its kind.
        "ood_flagged_share": (
            round(float(1 - scored["in_distribution"].mean()), 4)
            if "in_distribution" in scored and len(scored)
            else None
        ),
        "differences": describe_differences(
            scored,
            [size for size, _ in headers],
            Counter(f for _, f in headers),
            reference,
            reference_sizes,
        ),
    }
    commit = commit_external_set(run, external.name, identity, scored, not_scored, pngs, metrics)
    auroc = measured["threshold_free"]["auroc"]
    log.info(
        "%s: AUROC %.4f (95%% CI %.4f-%.4f) on %d images; %d not scored",
        external.name,
        auroc["value"],
        auroc["ci_low"],
        auroc["ci_high"],
        len(scored),
        len(not_scored),
    )
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="melanoma-validate-external",
        description="Evaluate a run's model on an external labelled set. " + RESEARCH_NOTICE,
    )
    parser.add_argument(
        "--images",
        default="isic2018",
        help="isic2018 (the ISIC 2018 Task 3 test set from Dataverse; isic2018:<url> for "
        "another Dataverse), or a local folder or zip of images",
    )
    parser.add_argument(
        "--labels", help="labels CSV for a local set (ISIC 2018, HAM10000 or binary format)"
    )
    parser.add_argument(
        "--name",
        help="the set's name in the store and the report (default: isic2018, or the labels "
        "file's name without .csv)",
    )
    parser.add_argument("--run", help="run id or runs/<key> (default: the label task's champion)")
    parser.add_argument("--label-task", default="mel_vs_rest")
    parser.add_argument("--store", help="store URL (default MELANOMA_STORE_URL, else .store/)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--bootstrap-replicates", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run_command(parser.prog, lambda: validate_external_command(args))


def validate_external_command(args: argparse.Namespace) -> int:
    """``melanoma-validate-external``: the set and the run are found before the model loads."""
    from melanoma.report import write_report

    external = resolve_external_set(args.images, args.labels, args.cache_dir, args.name)
    store = open_store(args.store or default_store_url(), create=False)
    run = find_run(store, args.run, args.label_task)
    config = EvaluationConfig(bootstrap_replicates=args.bootstrap_replicates, seed=args.seed)
    validate_external(run, external, config)
    metrics = run.external(external.name)
    key = run.layout.external_file(external.name, "metrics.json")
    auroc = metrics.auroc
    print(RESEARCH_NOTICE, file=sys.stderr)
    print(
        f"{external.name}: {metrics.counts['images']} images scored with {metrics.run_id}, "
        f"AUROC {auroc['value']:.3f} ({auroc['ci_low']:.3f}-{auroc['ci_high']:.3f}); "
        f"not scored: {metrics.not_scored or 'none'}. Saved: {store.url}/{key}",
        file=sys.stderr,
    )
    if run.committed("report"):
        # The set is saved whatever happens here; a failed re-render keeps the last report.
        try:
            print(f"report updated: {write_report(run)}", file=sys.stderr)
        except USER_ERRORS as error:
            print(
                f"warning: the report was not re-rendered ({' '.join(str(error).split())}); "
                "the previous report stands. Run this command again to retry.",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
