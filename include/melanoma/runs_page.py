"""The runs page: every run in the store with its metrics, promotion decision and links.

The Airflow plugin in ``plugins/melanoma_runs.py`` serves these pages under
``/melanoma-runs/`` and the artifacts they link to straight from the store. This
module reads the store and renders HTML; it knows nothing of Airflow, so it is
tested on a file store.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from melanoma import RESEARCH_NOTICE
from melanoma.layout import CHAMPIONS, RUN_KEY, RUNS, STAGES, RunLayout
from melanoma.promotion import ChampionCorruptError, read_champion
from melanoma.report_html import STYLE, escape, html_table, with_ci
from melanoma.run import Run
from melanoma.store import ArtifactCorruptError, ArtifactIncompleteError, ObjectStore
from melanoma.tables import read_table

# The only run artifacts served: what a person reads, never models, images or shards.
SERVED_ARTIFACT = re.compile(
    r"^(report\.html|config\.json|calibration\.json|promotion\.json|evaluation/metrics\.json"
    r"|evaluation/figures/[\w.-]+\.png|gradcam/(index\.csv|summary\.json)"
    r"|gradcam/[\w+-]+/[\w.-]+\.png"
    r"|external/[\w-][\w.-]*/(metrics\.json|figures/[\w.-]+\.png))$"
)
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".csv": "text/csv; charset=utf-8",
}
# How far a run got: its latest committed stage, in words.
STAGE_NAMES = {
    "report": "reported",
    "promote": "promotion decided",
    "explain": "explained",
    "robustness": "robustness measured",
    "evaluate": "evaluated",
    "calibrate": "calibrated",
    "train": "trained",
    "preprocess": "preprocessed",
    "split": "split",
}
# Airflow run ids carry the run's date: manual__2026-11-23T17:23:08.460512+00:00 (or its
# store key, with _ for the colons).
RUN_DATE = re.compile(r"__(\d{4}-\d\d-\d\d)T(\d\d)[:_](\d\d)[:_](\d\d)")

PAGE_STYLE = (
    STYLE
    + """
body { max-width: none; }
th, td { vertical-align: top; text-align: left; }
td:last-child { max-width: 16em; }
td .ci { display: inline-block; max-width: 24em; }
span.champion { color: #2e7d32; font-weight: 700; }
span.damaged { color: #b71c1c; }
"""
)


@dataclass(frozen=True)
class RunSummary:
    """One run as the runs page shows it; None where the run has not produced the artifact."""

    key: str  # runs/<key>/ in the store
    run_id: str
    started: datetime | None
    stage: str
    dataset_version: str | None = None
    label_task: str | None = None
    backbone: str | None = None
    auroc: dict[str, float | None] | None = None
    auprc: dict[str, float | None] | None = None
    operating_point: str | None = None
    sensitivity: dict[str, float | None] | None = None
    specificity: dict[str, float | None] | None = None
    promoted: bool | None = None
    promotion_reason: str | None = None
    is_champion: bool = False
    figures: tuple[str, ...] = ()
    gradcam_images: int = 0
    energy_in_lesion: float | None = None
    external_auroc: tuple[tuple[str, dict[str, float | None]], ...] = ()
    # Why the run cannot be summarised (an artifact changed or gone), or None.
    damaged: str | None = None


def run_started(run_id: str) -> datetime | None:
    match = RUN_DATE.search(run_id)
    if not match:
        return None
    day, hour, minute, second = match.groups()
    return datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}")


def champion_prefixes(store: ObjectStore) -> dict[str, str]:
    """Run prefix -> label task, for every readable champion record."""
    prefixes = {}
    for info in store.list(f"{CHAMPIONS}/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == "champion.json":
            try:
                champion = read_champion(store, parts[1])
            except ChampionCorruptError:
                continue  # the promotion task reports it; the page still lists the runs
            if champion:
                prefixes[champion["run_prefix"]] = parts[1]
    return prefixes


def summarize_run(
    store: ObjectStore, key: str, present: set[str], champions: dict[str, str]
) -> RunSummary:
    """Summarise ``runs/<key>/`` from its committed stages (``present``: its keys)."""
    run = Run(store, RunLayout(key))
    committed = {stage for stage in STAGES if run.layout.commit(stage) in present}

    def read(stage: str, name: str) -> Any:
        return run.read_json(stage, name) if stage in committed else None

    # config.json is written before its stage commits: it names an in-progress run too.
    config = (store.get_json(run.layout.config) if run.layout.config in present else None) or {}
    metrics = read("evaluate", "metrics")
    promotion = read("promote", "promotion")
    training = read("train", "training_config")
    gradcam = read("explain", "summary")
    run_id = config.get("run_id", key)
    stage = next((STAGE_NAMES[s] for s in reversed(STAGES) if s in committed), None)
    if stage is None:
        legacy = any(k.endswith("/report.html") for k in present) and not committed
        stage = "written before commit records: migrate the store" if legacy else "started"
    prefix = run.layout.prefix
    values: dict[str, Any] = {
        "key": key,
        "run_id": run_id,
        "started": run_started(run_id),
        "stage": stage,
        "dataset_version": config.get("dataset_version"),
        "label_task": (config.get("config") or {}).get("label_task"),
        "backbone": training and training["config"].get("backbone"),
        "is_champion": prefix in champions,
    }
    if metrics:
        point = (promotion or {}).get("candidate", {}).get("operating_point", "target_sensitivity")
        rates = metrics["operating_points"].get(point, {})
        values |= {
            "label_task": metrics["label_task"],
            "auroc": metrics["threshold_free"]["auroc"],
            "auprc": metrics["threshold_free"]["auprc"],
            "operating_point": point,
            "sensitivity": rates.get("sensitivity"),
            "specificity": rates.get("specificity"),
            "figures": tuple(sorted(metrics.get("figures", {}))),
        }
    if promotion:
        values |= {
            "promoted": bool(promotion["promote"]),
            "promotion_reason": "; ".join(promotion.get("reasons", [])),
        }
    if gradcam:
        values |= {
            "gradcam_images": gradcam["overall"]["images"],
            "energy_in_lesion": gradcam["overall"]["energy_in_lesion"]["mean"],
        }
    values["external_auroc"] = tuple(
        (name, run.external(name).auroc) for name in run.external_sets()
    )
    return RunSummary(**values)


# What reading a damaged run raises: a changed or missing artifact, a record not JSON.
DAMAGE = (ArtifactCorruptError, ArtifactIncompleteError, OSError, ValueError, KeyError, TypeError)


def list_runs(store: ObjectStore) -> list[RunSummary]:
    """Every run under ``runs/`` (a folder with a ``config.json``: anything else there is
    not a run), newest first (runs without a date last, by key). A run that cannot be
    read is listed as damaged, with why; the others are listed as ever."""
    present: dict[str, set[str]] = {}
    for info in store.list(f"{RUNS}/"):
        parts = info.key.split("/", 2)
        if len(parts) == 3 and RUN_KEY.match(parts[1]):
            present.setdefault(parts[1], set()).add(info.key)
    champions = champion_prefixes(store)
    runs = []
    for key, keys in present.items():
        if RunLayout(key).config not in keys:
            continue
        try:
            runs.append(summarize_run(store, key, keys, champions))
        except DAMAGE as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            runs.append(RunSummary(key, key, run_started(key), "damaged", damaged=reason))
    return sorted(
        runs, key=lambda r: (r.started is not None, r.started or datetime.min, r.key), reverse=True
    )


def artifact_key(key: str, artifact: str) -> str:
    """The store key of a run artifact the pages may serve; ValueError for anything else."""
    if not RUN_KEY.match(key) or not SERVED_ARTIFACT.match(artifact):
        raise ValueError(f"{key}/{artifact} is not a run artifact the runs page serves")
    return RunLayout(key).artifact(artifact)


def read_served_artifact(store: ObjectStore, key: str, artifact: str) -> bytes:
    """A run artifact the pages serve, read through the commit record that lists it.

    ValueError if it is not one the pages serve; FileNotFoundError if no committed stage
    lists it; ArtifactCorruptError if it changed after its commit.
    """
    wanted = artifact_key(key, artifact)
    run = Run(store, RunLayout(key))
    for stage in (*STAGES, *(f"external/{name}" for name in run.external_sets())):
        if not run.committed(stage):
            continue
        for entry in run.commit_record(stage)["artifacts"].values():
            if entry["key"] == wanted:
                return run.read_entry(stage, entry)
    raise FileNotFoundError(f"{store.url}/{wanted}: no committed stage of the run lists it")


def media_type(artifact: str) -> str:
    return MEDIA_TYPES[artifact[artifact.rfind(".") :]]


def _interval(entry: dict[str, float | None] | None) -> str:
    return with_ci(entry) if entry else ""


def _run_row(run: RunSummary) -> list[str]:
    base = escape(RunLayout(run.key).prefix)
    links = []
    if run.stage == "reported":
        links.append(f"<a href='{base}/report.html'><b>report</b></a>")
    if run.figures:
        links.append(
            "figures: "
            + " · ".join(
                f"<a href='{base}/evaluation/figures/{escape(name)}.png'>"
                f"{escape(name.replace('_', ' '))}</a>"
                for name in run.figures
            )
        )
    if run.gradcam_images:
        links.append(f"<a href='{base}/gradcam/'>Grad-CAM gallery</a>")
    stored_as = "" if run.key == run.run_id else f"<br>stored as <code>{escape(run.key)}</code>"
    champion = "<br><span class='champion'>&#9733; champion</span>" if run.is_champion else ""
    started = run.started.strftime("%Y-%m-%d %H:%M") if run.started else "date unknown"
    rates = ""
    if run.sensitivity and run.specificity:
        rates = (
            f"sens. {_interval(run.sensitivity)}<br>spec. {_interval(run.specificity)}"
            f"<br><span class='ci'>at {escape((run.operating_point or '').replace('_', ' '))}</span>"
        )
    decision = ""
    if run.promoted is not None:
        decision = (
            "promoted" if run.promoted else "kept champion"
        ) + f"<br><span class='ci'>{escape(run.promotion_reason)}</span>"
    return [
        f"<code>{escape(run.run_id)}</code>{stored_as}{champion}",
        f"{started}<br><span class='ci'>{escape(run.stage)}</span>"
        + (f"<br><span class='damaged'>{escape(run.damaged)}</span>" if run.damaged else ""),
        "<br>".join(
            escape(v)
            for v in (
                run.label_task,
                run.backbone,
                run.dataset_version and f"data {run.dataset_version}",
            )
            if v
        ),
        _interval(run.auroc)
        + "".join(
            f"<br><span class='ci'>external {escape(name)}:</span> {_interval(auroc)}"
            for name, auroc in run.external_auroc
        ),
        _interval(run.auprc),
        rates,
        "" if run.energy_in_lesion is None else f"{run.energy_in_lesion:.2f}",
        decision,
        "<br>".join(links),
    ]


def render_runs_page(runs: list[RunSummary], store_url: str) -> str:
    header = [
        "Run",
        "Started (UTC), stage",
        "Task, backbone, dataset",
        "Test AUROC (95% CI)",
        "Test AUPRC (95% CI)",
        "At the operating threshold",
        "Grad-CAM energy in lesion",
        "Promotion",
        "Artifacts",
    ]
    rows = [_run_row(run) for run in runs]
    table = html_table(header, rows) if rows else "<p>No runs in the store yet.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Melanoma runs</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Melanoma runs</h1>
<p class="notice">{escape(RESEARCH_NOTICE)}</p>
<p>{len(runs)} run(s) in <code>{escape(store_url)}</code>. Metrics are on each run's test
split with lesion-bootstrap 95% intervals, at the operating threshold chosen on its
validation split. &#9733; marks the champion of its label task.</p>
{table}
</body></html>
"""


def render_gradcam_gallery(store: ObjectStore, key: str) -> str:
    """The run's Grad-CAM overlays at full size, with each image's outcome and attention."""
    index = read_table(read_served_artifact(store, key, "gradcam/index.csv"))
    gradcam = RunLayout(key).gradcam
    figures = []
    for row in index.itertuples():
        relative = posixpath.relpath(row.png, gradcam)
        figures.append(
            f"<figure><img src='{escape(relative)}' alt='{escape(row.image_id)}'>"
            f"<figcaption>{escape(row.image_id)} · {escape(row.outcome)} "
            f"(selected as {escape(row.selected_as)}) · p={row.probability:.3f} · "
            f"energy in lesion {row.energy_in_lesion:.2f} ({escape(row.mask_source)} mask)"
            "</figcaption></figure>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Grad-CAM: {escape(key)}</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Grad-CAM gallery</h1>
<p>Run <code>{escape(key)}</code> · <a href='../report.html'>report</a></p>
<p class="notice">{escape(RESEARCH_NOTICE)}</p>
<div class="gallery">{"".join(figures)}</div>
</body></html>
"""
