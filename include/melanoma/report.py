"""Stage report: ``report.html``, one self-contained page per run, doubling as its model card.

Everything comes from the run's committed artifacts, each checked as it is read; figures
are inlined as data URIs so the page can be mailed or archived on its own. The sections
are in ``melanoma.report_sections``, the HTML building blocks in ``melanoma.report_html``.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import PurePosixPath

import pandas as pd

from melanoma import RESEARCH_NOTICE
from melanoma import report_sections as sections
from melanoma.artifacts import Calibration, Metrics, PromotionDecision, TrainingRecord
from melanoma.report_html import STYLE, escape, with_ci
from melanoma.run import Run, RunConfig
from melanoma.store import read_manifest
from melanoma.subgroups import ATTRIBUTES, group_labels, group_order

# A dataset file's suffix -> the format name external sets' formats are counted by (PIL's);
# ingest stores JPEG and PNG only, so no other suffix needs a name.
FORMAT_NAMES = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png"}


def _data_section(run: Run, config: RunConfig, dataset: dict, stats: dict) -> str:
    splits = run.read_json("split", "splits_summary")
    return sections.data_section(config.dataset_version, dataset, splits, stats)


def _gradcam_section(run: Run) -> str:
    if not run.committed("explain"):
        return sections.gradcam_section(None, None, lambda key: b"")
    by_key = {entry["key"]: entry for entry in run.entries("explain", "image/")}
    return sections.gradcam_section(
        run.read_json("explain", "summary"),
        run.read_csv("explain", "index"),
        lambda key: run.read_entry("explain", by_key[key]),
    )


def _external_sets(run: Run, names: list[str]) -> list[tuple[dict, sections.Figure]]:
    """The external sets ``names`` committed for the run: metrics and a reader of figures."""

    def figures(stage: str) -> sections.Figure:
        return lambda name: run.read_bytes(stage, f"figure/{name}")

    return [
        (run.read_json(f"external/{name}", "metrics"), figures(f"external/{name}"))
        for name in names
    ]


def _source_counts(splits: pd.DataFrame) -> dict[str, int] | None:
    """Images per source (HAM10000's ``dataset`` column) over the run's split, in name order
    (``unknown`` last); None for a split from before it carried the column."""
    if ATTRIBUTES["source"] not in splits.columns:
        return None
    counts = group_labels(splits, "source").value_counts()
    return {name: int(counts[name]) for name in group_order("source", counts.index)}


def _test_formats(splits: pd.DataFrame, dataset: dict) -> dict[str, int]:
    """Images per file format in the run's test split, from the suffixes the dataset
    manifest stored them under; empty when the manifest lists no image files."""
    test_ids = set(splits.loc[splits["split"] == "test", "image_id"].astype(str))
    suffixes = Counter(
        PurePosixPath(name).suffix.lower().lstrip(".")
        for name in dataset.get("files", {})
        if name.startswith("images/") and PurePosixPath(name).stem in test_ids
    )
    formats: Counter[str] = Counter()
    for suffix, n in suffixes.items():
        formats[FORMAT_NAMES.get(suffix, suffix)] += n
    return dict(sorted(formats.items()))


def _resolved_configuration(config: RunConfig, training: dict, calibration: dict) -> dict:
    """``config.json``'s every-stage record; for a run made before it, what the stages
    recorded themselves (pipeline, training, evaluation)."""
    if config.stages:
        return config.stages
    return {
        "pipeline": config.config,
        "training": training["config"],
        "evaluation": calibration["config"],
    }


def _profile_sentence(config: RunConfig) -> str:
    """Which hardware profile's defaults the run took, and why (``melanoma.profiles``)."""
    if not config.profile:
        return "Hardware profile: not recorded (a run from before profiles)."
    return (
        f"Hardware profile <code>{escape(config.profile['name'])}</code>: "
        f"{escape(config.profile['why'])}. A setting left empty took the profile's value."
    )


def write_report(run: Run) -> str:
    """Stage report: render the run's report from its committed artifacts; return the commit key."""
    config = run.config()
    # The report renders the artifacts' JSON as stored (each section knows its schema).
    metrics = run.read_json(Metrics.stage, Metrics.artifact)
    calibration = run.read_json(Calibration.stage, Calibration.artifact)
    training = run.read_json(TrainingRecord.stage, TrainingRecord.artifact)
    history = run.read_json("train", "history")
    stats = run.read_json("preprocess", "stats")
    promotion = (
        run.read_json(PromotionDecision.stage, PromotionDecision.artifact)
        if run.committed(PromotionDecision.stage)
        else None
    )
    # Read once: the limitations name the sets that the external section then shows.
    external_names = run.external_sets()
    external_sets = _external_sets(run, external_names)
    robustness = run.read_json("robustness", "robustness") if run.committed("robustness") else None
    dataset = read_manifest(run.store, config.manifest_key)
    splits = run.splits()
    auroc = metrics["threshold_free"]["auroc"]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Melanoma classifier report: {escape(config.run_id)}</title>
<style>{STYLE}</style></head><body>
<h1>Melanoma classifier: run report and model card</h1>
<p>Run <code>{escape(config.run_id)}</code> · dataset <code>{
        escape(config.dataset_version)
    }</code> ·
label task <code>{escape(metrics["label_task"])}</code> · generated {generated}</p>
<p class="notice">{escape(RESEARCH_NOTICE)}</p>
<h2>Summary</h2>
<p>Test AUROC {with_ci(auroc)} on {metrics["counts"]["images"]} images
({metrics["counts"]["lesions"]} lesions, {metrics["counts"]["positives"]} positive for
<code>{escape(metrics["label_task"])}</code>).{sections.source_summary(metrics)}</p>
{sections.promotion_section(promotion)}
{sections.model_section(training, history, stats["config"])}
{sections.considerations_section(metrics, _source_counts(splits), external_names)}
{_data_section(run, config, dataset, stats)}
{sections.calibration_section(calibration)}
{sections.metrics_section(metrics, lambda name: run.read_bytes("evaluate", f"figure/{name}"))}
{sections.subgroups_section(metrics)}
{sections.robustness_section(robustness)}
{_gradcam_section(run)}
{sections.ood_section(history.get("summary", {}), [m for m, _ in external_sets])}
{sections.external_section(external_sets, metrics, _test_formats(splits, dataset))}
<h2>Configuration</h2>
<p>{_profile_sentence(config)}</p>
<details><summary>Every stage's configuration, as the run resolved it (JSON)</summary>
<pre>{escape(json.dumps(_resolved_configuration(config, training, calibration), indent=2))}</pre>
</details>
<p class="notice">{escape(RESEARCH_NOTICE)}</p>
</body></html>
"""
    with run.stage("report") as stage:
        stage.put_bytes("report", run.layout.report, page.encode())
    return run.layout.commit("report")
