"""The runs page's HTML: the runs table, trends, champion history, compare and artifacts.

The Airflow plugin in ``plugins/melanoma_runs.py`` serves these pages under
``/melanoma-runs/``, and every artifact they link to straight from the store, through
the commit record that lists it. Sorting, filtering and paging happen on the server, so
the pages work without JavaScript; ``runs_page.js`` (served by the plugin, nothing from
the internet) only keeps a run in progress's state live and the compare button honest.
Knows nothing of Airflow, so it is tested on a file store.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlencode

from melanoma import RESEARCH_NOTICE
from melanoma.embedded import DAG_ID
from melanoma.layout import RUN_KEY, STAGES, RunLayout
from melanoma.report_html import STYLE, escape, html_table, number, with_ci
from melanoma.run import Run
from melanoma.runs_compare import (
    BOOTSTRAP_REPLICATES,
    MAX_COMPARED,
    ConfigRow,
    check_compared,
    config_rows,
    curves_on_test,
    paired_differences,
)
from melanoma.runs_index import (
    ChampionChange,
    Interval,
    RunIndex,
    RunSummary,
    champion_history,
)
from melanoma.store import ObjectStore
from melanoma.svg_chart import PALETTE, Curve, TrendPoint, curve_chart, legend, trend_chart
from melanoma.tables import read_table

PAGE_SIZE = 50
TREND_RUNS = 200  # the trend chart's latest runs per label task
# An artifact path as a run's commit records write them: no "..", no absolute path.
ARTIFACT_PATH = re.compile(r"^(?!.*(^|/)\.\.?(/|$))[\w.+~-]+(/[\w.+~-]+)*$")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".csv": "text/csv; charset=utf-8",
}
DOWNLOAD_TYPE = "application/octet-stream"
SCRIPT = files("melanoma").joinpath("runs_page.js")

PAGE_STYLE = (
    STYLE
    + """
body { max-width: none; margin: 1em; }
th, td { vertical-align: top; text-align: left; white-space: nowrap; }
td.params { white-space: normal; min-width: 14em; max-width: 28em; }
td.params code { display: inline-block; margin: 0 0.3em 0.1em 0; font-size: 0.85em;
                 background: #f1f4f8; padding: 0 0.25em; }
th a { color: inherit; } th a.sorted { text-decoration: underline; }
span.champion { color: #2e7d32; font-weight: 700; }
span.damaged { color: #b71c1c; white-space: normal; }
span.running { color: #8a5a00; }
tr.differs td { background: #fff3c4; }
tr.differs td:first-child { font-weight: 700; }
form.filters { margin: 0.8em 0; } form.filters input[type=search] { width: 22em; }
.legends { font-size: 0.85em; margin-bottom: 1em; }
.legend { margin-right: 1.2em; white-space: nowrap; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em;
          vertical-align: middle; }
.ring { display: inline-block; width: 0.8em; height: 0.8em; border: 2px solid #2e7d32;
        border-radius: 50%; margin-right: 0.3em; vertical-align: middle; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; }
ul.tree { list-style: none; padding-left: 1.2em; } ul.tree li { margin: 0.1em 0; }
.sha { color: #666; font-family: monospace; font-size: 0.85em; }
"""
)


def _document(title: str, body: str, root: str = "") -> str:
    """A page: ``root`` is the relative path from it to ``/melanoma-runs/``."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{PAGE_STYLE}</style>
<script src="{root}static/runs_page.js" defer></script></head><body>
<p class="notice">{escape(RESEARCH_NOTICE)}</p>
{body}
</body></html>
"""


# ---------------------------------------------------------------- serving artifacts


def artifact_key(key: str, artifact: str) -> str:
    """The store key of a run artifact the pages may serve; ValueError for anything else."""
    if not RUN_KEY.match(key) or not ARTIFACT_PATH.match(artifact):
        raise ValueError(f"{key}/{artifact} is not a run artifact the runs page serves")
    return RunLayout(key).artifact(artifact)


def committed_artifacts(store: ObjectStore, key: str) -> dict[str, dict[str, Any]]:
    """Every artifact the run's committed stages list: store key -> its record entry
    (``key``, ``size``, ``sha256``) with the ``stage`` that committed it."""
    run = Run(store, RunLayout(key))
    listed = {}
    for stage in (*STAGES, *(f"external/{name}" for name in run.external_sets())):
        if run.committed(stage):
            for entry in run.commit_record(stage)["artifacts"].values():
                listed[entry["key"]] = {**entry, "stage": stage}
    return listed


def read_served_artifact(store: ObjectStore, key: str, artifact: str) -> bytes:
    """A run artifact, read through the commit record that lists it.

    ValueError if the path is not a run artifact's; FileNotFoundError if no committed
    stage lists it; ArtifactCorruptError if it changed after its commit.
    """
    wanted = artifact_key(key, artifact)
    entry = committed_artifacts(store, key).get(wanted)
    if entry is None:
        raise FileNotFoundError(f"{store.url}/{wanted}: no committed stage of the run lists it")
    return Run(store, RunLayout(key)).read_entry(entry["stage"], entry)


def media_type(artifact: str) -> str:
    """How a served artifact is sent: what a browser shows, else a download."""
    return MEDIA_TYPES.get(posixpath.splitext(artifact)[1], DOWNLOAD_TYPE)


# ---------------------------------------------------------------- the runs table


def _auroc_value(entry: Interval | None) -> float | None:
    return None if entry is None else entry.get("value")


@dataclass(frozen=True)
class Column:
    """A sortable column: its query name, heading, and each run's sort value."""

    name: str
    heading: str
    value: Callable[[RunSummary], Any]


def columns(index: RunIndex) -> list[Column]:
    fixed = [
        Column("started", "Started (UTC)", lambda r: r.started.isoformat() if r.started else ""),
        Column("state", "State", lambda r: len(r.committed)),
        Column("test", "Test AUROC (95% CI)", lambda r: _auroc_value(r.auroc)),
        Column("within", "Within-source AUROC", lambda r: _auroc_value(r.within_source)),
        Column(
            "holdout",
            "Hold-out source AUROC",
            lambda r: _auroc_value(r.auroc) if r.holdout_source else None,
        ),
        Column("benchmark", "Benchmark AUROC", lambda r: _auroc_value(r.benchmark_auroc)),
    ]
    external = [
        Column(f"external:{name}", f"External {name} AUROC", _external_auroc(name))
        for name in index.external_sets()
    ]
    promotion = Column("promotion", "Promotion", lambda r: r.promoted)
    return [*fixed, *external, promotion]


def _external_auroc(name: str) -> Callable[[RunSummary], float | None]:
    return lambda run: _auroc_value(run.external_auroc.get(name))


@dataclass(frozen=True)
class PageQuery:
    """What the table shows: sorted by ``sort``, filtered by ``text`` and ``task``."""

    sort: str = "started"
    descending: bool = True
    text: str = ""
    task: str = ""
    state: str = ""  # "", "complete", "in progress"
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> PageQuery:
        """From the page's query string; anything unknown falls back to the default."""
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        state = params.get("state", "")
        return cls(
            sort=params.get("sort", "started")[:200],
            descending=params.get("order", "desc") != "asc",
            text=params.get("q", "")[:200],
            task=params.get("task", "")[:200],
            state=state if state in ("complete", "in progress") else "",
            page=page,
        )

    def link(self, **changes: Any) -> str:
        query = replace(self, **changes)
        params = {
            "sort": query.sort,
            "order": "desc" if query.descending else "asc",
            "q": query.text,
            "task": query.task,
            "state": query.state,
            "page": query.page,
        }
        return "?" + urlencode({k: v for k, v in params.items() if v not in ("", 1)})


def search_text(run: RunSummary, champion: bool) -> str:
    """What the filter box matches a run against (lower case)."""
    decision = {True: "promoted", False: "kept champion", None: ""}[run.promoted]
    words = [
        run.run_id,
        run.key,
        run.stage,
        run.label_task,
        run.backbone,
        run.profile,
        run.dataset_version,
        run.holdout_source,
        decision,
        "champion" if champion else "",
        *(f"{name}={value}" for name, value in run.changed),
    ]
    return " ".join(str(w) for w in words if w).lower()


def select_runs(index: RunIndex, query: PageQuery) -> list[RunSummary]:
    """The runs the query keeps, in its order; runs without the sort value last."""
    needle = query.text.lower().strip()
    runs = [
        r
        for r in index.runs
        if (not needle or all(w in search_text(r, index.is_champion(r)) for w in needle.split()))
        and (not query.task or r.label_task == query.task)
        and (not query.state or (query.state == "complete") == r.complete)
    ]
    column = next((c for c in columns(index) if c.name == query.sort), None)
    if column is None:
        return runs  # newest first, as indexed
    have = [r for r in runs if column.value(r) is not None]
    missing = [r for r in runs if column.value(r) is None]
    have.sort(key=column.value, reverse=query.descending)
    return have + missing


def airflow_run_url(ui_root: str, run_id: str, task: str | None = None) -> str:
    """The run's page in the Airflow UI (its grid), or one task's (its log)."""
    url = f"{ui_root}dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
    return url + (f"/tasks/{quote(task, safe='')}" if task else "")


def _interval(entry: Interval | None) -> str:
    return with_ci(entry) if entry else ""


# Airflow's DAG run states after which no stage of the run will commit.
STOPPED = ("failed", "success")


def _state_cell(run: RunSummary, airflow_state: str | None) -> str:
    if run.damaged:
        return f"damaged<br><span class='damaged'>{escape(run.damaged)}</span>"
    if run.complete:
        return escape(run.stage)
    progress = f"{escape(run.stage)} ({len(run.committed)} of {len(STAGES)} stages)"
    if airflow_state in STOPPED:
        return f"<span class='damaged'>stopped at {progress}: Airflow run {airflow_state}</span>"
    return f"<span class='running' data-live='{escape(run.key)}'>{progress}</span>"


def run_url(key: str, path: str) -> str:
    """A run's page or artifact, relative to ``/melanoma-runs/``: the URLs mirror the
    store's layout (``runs/<key>/report.html``); a trailing ``/`` names a page."""
    return escape(RunLayout(key).artifact(path.rstrip("/")) + ("/" if path.endswith("/") else ""))


def _run_cell(run: RunSummary, champion: bool, ui_root: str) -> str:
    links = [f"<a href='{run_url(run.key, 'artifacts/')}'>artifacts</a>"]
    if run.complete:
        links.insert(0, f"<a href='{run_url(run.key, 'report.html')}'><b>report</b></a>")
    if run.gradcam_images:
        links.append(f"<a href='{run_url(run.key, 'gradcam/')}'>Grad-CAM</a>")
    links += [
        f"<a target='_top' data-airflow href='{escape(airflow_run_url(ui_root, run.run_id))}'>"
        "Airflow run</a>",
        f"<a target='_top' data-airflow "
        f"href='{escape(airflow_run_url(ui_root, run.run_id, run.next_task))}'>log</a>",
    ]
    about = " · ".join(
        escape(v)
        for v in (
            run.label_task,
            run.backbone,
            run.profile and f"{run.profile} profile",
            run.dataset_version and f"data {run.dataset_version}",
        )
        if v
    )
    star = " <span class='champion'>&#9733; champion</span>" if champion else ""
    return (
        f"<input type='checkbox' name='run' value='{escape(run.key)}' form='compare' "
        f"aria-label='compare {escape(run.run_id)}'> <code>{escape(run.run_id)}</code>{star}"
        f"<br><span class='ci'>{about}</span><br>{' · '.join(links)}"
    )


def _promotion_cell(run: RunSummary) -> str:
    if run.promoted is None:
        return ""
    decision = "promoted" if run.promoted else "kept champion"
    return f"<span title='{escape(run.promotion_reason)}'>{decision}</span>"


def _row(run: RunSummary, index: RunIndex, ui_root: str) -> str:
    holdout = f"{escape(run.holdout_source)}: {_interval(run.auroc)}" if run.holdout_source else ""
    changed = " ".join(f"<code>{escape(n)}={escape(_plain(v))}</code>" for n, v in run.changed)
    cells = [
        _run_cell(run, index.is_champion(run), ui_root),
        run.started.strftime("%Y-%m-%d %H:%M") if run.started else "unknown",
        _state_cell(run, index.airflow_states.get(run.run_id)),
        (changed or "<span class='ci'>defaults</span>"),
        _interval(run.auroc),
        _interval(run.within_source),
        holdout,
        _interval(run.benchmark_auroc),
        *(_interval(run.external_auroc.get(name)) for name in index.external_sets()),
        _promotion_cell(run),
    ]
    classes = ["", "", "", "params", *[""] * (len(cells) - 4)]
    tds = "".join(
        f"<td class='{c}'>{cell}</td>" if c else f"<td>{cell}</td>"
        for c, cell in zip(classes, cells, strict=True)
    )
    return f"<tr data-run='{escape(run.key)}'>{tds}</tr>"


def _plain(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _heading(column: Column, query: PageQuery) -> str:
    sorted_here = query.sort == column.name
    descending = not (sorted_here and query.descending)
    arrow = (" &#9660;" if query.descending else " &#9650;") if sorted_here else ""
    link = query.link(sort=column.name, descending=descending, page=1)
    css = " class='sorted'" if sorted_here else ""
    return f"<a{css} href='{escape(link)}'>{escape(column.heading)}</a>{arrow}"


def _filters(index: RunIndex, query: PageQuery) -> str:
    tasks = sorted({r.label_task for r in index.runs if r.label_task})
    task_options = "".join(
        f"<option value='{escape(t)}'{' selected' if t == query.task else ''}>{escape(t)}</option>"
        for t in tasks
    )
    state_options = "".join(
        f"<option value='{s}'{' selected' if s == query.state else ''}>{s or 'any state'}</option>"
        for s in ("", "complete", "in progress")
    )
    return f"""<form class="filters" method="get">
<input type="hidden" name="sort" value="{escape(query.sort)}">
<input type="hidden" name="order" value="{"desc" if query.descending else "asc"}">
<input type="search" name="q" value="{escape(query.text)}" aria-label="filter runs"
 placeholder="filter: run id, backbone, phase2_epochs=0, promoted …">
<select name="task" aria-label="label task"><option value="">every label task</option>{task_options}</select>
<select name="state" aria-label="state">{state_options}</select>
<button type="submit">Filter</button> <a href="./">clear</a></form>"""


def _pages(query: PageQuery, shown: int) -> str:
    pages = max(1, -(-shown // PAGE_SIZE))
    if pages == 1:
        return ""
    links = [
        f"<b>{n}</b>" if n == query.page else f"<a href='{escape(query.link(page=n))}'>{n}</a>"
        for n in range(1, pages + 1)
    ]
    return f"<p class='pages'>Page: {' '.join(links)}</p>"


def render_runs_table(index: RunIndex, query: PageQuery, ui_root: str = "../") -> str:
    """The filter form, the compare button and the sortable table, one page of it."""
    selected = select_runs(index, query)
    first = (query.page - 1) * PAGE_SIZE
    rows = "".join(_row(r, index, ui_root) for r in selected[first : first + PAGE_SIZE])
    cols = columns(index)
    head = ["Run (tick 2 to 4 to compare)", _heading(cols[0], query), _heading(cols[1], query)]
    head += ["Parameters that differ from the profile's defaults"]
    head += [_heading(c, query) for c in cols[2:]]
    header = "".join(f"<th>{h}</th>" for h in head)
    shown = f"{len(selected)} of {len(index.runs)} run(s)"
    if len(selected) > PAGE_SIZE:
        last = min(first + PAGE_SIZE, len(selected))
        shown += f", {first + 1} to {last} shown"
    return f"""{_filters(index, query)}
<form id="compare" method="get" action="compare"><p>{shown}.
<button type="submit" id="compare-button">Compare ticked runs</button>
<span class="ci" id="compare-hint">tick 2 to {MAX_COMPARED} runs</span></p></form>
<table id="runs"><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>
{_pages(query, len(selected))}"""


# ---------------------------------------------------------------- trends and champions


def trend_points(index: RunIndex, label_task: str) -> tuple[list[str], list[TrendPoint]]:
    """The label task's evaluated runs, oldest first (the latest ``TREND_RUNS``), and
    their test and external AUROCs as chart points."""
    runs = [r for r in index.runs if r.label_task == label_task and r.auroc and r.started]
    runs = sorted(runs, key=lambda r: (r.started, r.key))[-TREND_RUNS:]
    points = []
    for run in runs:
        series: list[tuple[str, Interval]] = [("test", run.auroc or {})]
        series += [(f"external {name}", e) for name, e in sorted(run.external_auroc.items())]
        for name, entry in series:
            value, low, high = entry.get("value"), entry.get("ci_low"), entry.get("ci_high")
            if value is None:
                continue
            ci = (low, high) if low is not None and high is not None else None
            points.append(
                TrendPoint(name, run.key, run.run_id, float(value), ci, bool(run.promoted))
            )
    return [r.key for r in runs], points


def _history_row(change: ChampionChange) -> list[str]:
    run = (
        f"<a href='{run_url(change.run_key, 'report.html')}'><code>{escape(change.run_id)}</code></a>"
        if change.run_key
        else f"<code>{escape(change.run_id)}</code> <span class='ci'>(run not in the store)</span>"
    )
    by = ""
    comparison = change.comparison or {}
    if comparison.get("difference"):
        by = f"{with_ci(comparison['difference'])} <span class='ci'>on the promotion benchmark</span>"
    elif change.replaced and change.test_auroc is not None and change.replaced_test_auroc:
        by = f"{change.test_auroc - change.replaced_test_auroc:+.3f} <span class='ci'>test AUROC, not paired</span>"
    return [
        run + (" <span class='champion'>&#9733; now</span>" if change.current else ""),
        change.became_champion.strftime("%Y-%m-%d %H:%M") if change.became_champion else "",
        number(change.test_auroc),
        f"<code>{escape(change.replaced)}</code>" if change.replaced else "none (the first)",
        by,
    ]


def render_trends(store: ObjectStore, index: RunIndex) -> str:
    """Per label task: the trend chart and the champion history."""
    sections = []
    for task in sorted({r.label_task for r in index.runs if r.label_task}):
        keys, points = trend_points(index, task)
        chart = (
            trend_chart(keys, points, f"AUROC across {task} runs")
            if points
            else "<p>No evaluated run yet.</p>"
        )
        history = champion_history(store, index, task)
        rows = [_history_row(c) for c in history]
        table = (
            html_table(
                ["Champion", "Since (its run)", "Test AUROC", "Replaced", "By (95% CI)"], rows
            )
            if rows
            else "<p>No champion yet.</p>"
        )
        sections.append(
            f"<h3>{escape(task)}</h3><div class='trend' data-task='{escape(task)}'>{chart}</div>"
            f"<h4>Champion history</h4>{table}"
        )
    return "<h2>Trends and champions</h2>" + "".join(sections) if sections else ""


def render_runs_page(store: ObjectStore, index: RunIndex, query: PageQuery | None = None) -> str:
    query = query or PageQuery()
    body = f"""<h1>Melanoma runs</h1>
<p>Every run in <code>{escape(store.url)}</code>. AUROCs are on each run's test split
(or the source it holds out), with lesion-bootstrap 95% intervals; the benchmark is the
dataset version's promotion benchmark, which no run trains, validates or calibrates on.
&#9733; marks the champion of its label task. Click a heading to sort.</p>
{render_runs_table(index, query)}
{render_trends(store, index)}"""
    return _document("Melanoma runs", body)


def run_states(index: RunIndex, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What the page's script polls for the runs in progress it shows."""
    states = {}
    for key in keys:
        try:
            run = index.find(key)
        except KeyError:
            continue
        states[key] = {
            "stage": run.stage,
            "committed": len(run.committed),
            "stages": len(STAGES),
            "complete": run.complete,
            "damaged": run.damaged,
            "airflow": index.airflow_states.get(run.run_id),
        }
    return states


# ---------------------------------------------------------------- compare


def _config_table(rows: Sequence[ConfigRow], runs: Sequence[RunSummary], table_id: str) -> str:
    body = "".join(
        ("<tr class='differs'" if row.differs else "<tr")
        + f" data-setting='{escape(row.name)}'><td>{escape(row.name)}</td>"
        + "".join(
            f"<td>{escape(_plain(v))}</td>" if v is not None else "<td class='ci'>not recorded</td>"
            for v in row.values
        )
        + "</tr>"
        for row in rows
    )
    header = "".join(f"<th><code>{escape(r.run_id)}</code></th>" for r in runs)
    return f"<table id='{table_id}'><tr><th>Setting</th>{header}</tr>{body}</table>"


def _compare_config(runs: Sequence[RunSummary]) -> str:
    rows = config_rows(runs)
    differing = [row for row in rows if row.differs]
    same = [row for row in rows if not row.differs]
    return (
        f"<h2>Configuration</h2><p>{len(differing)} setting(s) differ, highlighted; "
        "a setting a run did not record (it predates it) is not counted.</p>"
        + (_config_table(differing, runs, "config") if differing else "")
        + f"<details><summary>{len(same)} setting(s) the same</summary>"
        + _config_table(same, runs, "config-same")
        + "</details>"
    )


def _compare_metrics(runs: Sequence[RunSummary]) -> str:
    externals = sorted({name for r in runs for name in r.external_auroc})
    measures: list[tuple[str, Callable[[RunSummary], Interval | None]]] = [
        ("Test AUROC", lambda r: r.auroc),
        ("Test AUPRC", lambda r: r.auprc),
        ("Within-source AUROC", lambda r: r.within_source),
        ("Benchmark AUROC", lambda r: r.benchmark_auroc),
        ("Sensitivity at the operating threshold", lambda r: r.sensitivity),
        ("Specificity at the operating threshold", lambda r: r.specificity),
        *(
            (f"External {name} AUROC", lambda r, name=name: r.external_auroc.get(name))
            for name in externals
        ),
    ]
    rows = [[escape(name)] + [_interval(read(r)) for r in runs] for name, read in measures]
    rows.append(
        ["Grad-CAM energy in the lesion (mean)"]
        + ["" if r.energy_in_lesion is None else number(r.energy_in_lesion, 2) for r in runs]
    )
    header = ["Measure", *(f"<code>{escape(r.run_id)}</code>" for r in runs)]
    return "<h2>Metrics</h2>" + html_table(header, rows)


def _compare_differences(store: ObjectStore, runs: Sequence[RunSummary]) -> str:
    differences = paired_differences(store, runs)
    names = {r.key: r.run_id for r in runs}
    rows = [
        [
            escape(d.image_set),
            f"<code>{escape(names[d.run])}</code> &minus; <code>{escape(names[d.reference])}</code>",
            f"{d.images} ({d.positives} positive)",
            with_ci(dict(d.difference)),
        ]
        for d in differences
    ]
    explained = (
        "AUROC differences on the images the runs share, paired: each of "
        f"{BOOTSTRAP_REPLICATES} lesion-bootstrap replicates scores both runs on the same "
        "lesions. Runs tested on different images are not compared there."
    )
    table = (
        html_table(["Images", "Difference", "Images (positive)", "AUROC difference (95% CI)"], rows)
        if rows
        else "<p>These runs share no test split, benchmark or external set.</p>"
    )
    return f"<h2>Paired differences</h2><p>{explained}</p>{table}"


def _compare_curves(store: ObjectStore, runs: Sequence[RunSummary]) -> str:
    names = {r.key: r.run_id for r in runs}
    curves = curves_on_test(store, runs)
    if not curves:
        return "<h2>Test curves</h2><p>No run has test predictions yet.</p>"
    roc = curve_chart(
        [Curve(c.run, c.roc) for c in curves], "false positive rate", "sensitivity", "ROC"
    )
    pr = curve_chart(
        [Curve(c.run, c.pr) for c in curves], "recall", "precision", "precision-recall"
    )
    return (
        "<h2>Test curves</h2><div class='charts'>"
        f"<figure>{roc}<figcaption>ROC</figcaption></figure>"
        f"<figure>{pr}<figcaption>Precision-recall</figcaption></figure></div>"
        + legend([names[c.run] for c in curves])
    )


def render_compare_page(store: ObjectStore, index: RunIndex, keys: Sequence[str]) -> str:
    """2 to 4 runs side by side; ValueError for another count, KeyError for an unknown run."""
    runs = [index.find(key) for key in check_compared(keys)]
    listed = " · ".join(
        f"<span class='legend'><span class='swatch' style='background:{PALETTE[i]}'></span>"
        f"<a href='{run_url(r.key, 'report.html')}'><code>{escape(r.run_id)}</code></a></span>"
        for i, r in enumerate(runs)
    )
    body = (
        f"<h1>Compare runs</h1><p><a href='./'>&larr; all runs</a></p><p>{listed}</p>"
        + _compare_config(runs)
        + _compare_metrics(runs)
        + _compare_differences(store, runs)
        + _compare_curves(store, runs)
    )
    return _document("Compare runs", body)


# ---------------------------------------------------------------- artifacts


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size:.1f} GB"


def _tree(node: dict[str, Any], path: str) -> str:
    items = []
    for name in sorted(
        node, key=lambda n: (not isinstance(node[n], dict) or "sha256" in node[n], n)
    ):
        child = node[name]
        here = f"{path}{name}"
        if "sha256" in child:
            items.append(
                f"<li><a href='../{escape(here)}'>{escape(name)}</a> · {_size(child['size'])} · "
                f"<span class='sha' title='{escape(child['sha256'])}'>sha256 "
                f"{escape(child['sha256'][:12])}…</span> <span class='ci'>({escape(child['stage'])})"
                "</span></li>"
            )
        else:
            items.append(
                f"<li><details{' open' if here.count('/') < 1 else ''}><summary>{escape(name)}/"
                f"</summary>{_tree(child, here + '/')}</details></li>"
            )
    return f"<ul class='tree'>{''.join(items)}</ul>"


def render_artifact_tree(store: ObjectStore, key: str) -> str:
    """The run's committed artifacts as a tree, with sizes and sha256s from the records."""
    prefix = RunLayout(key).prefix + "/"
    root: dict[str, Any] = {}
    listed = committed_artifacts(store, key)
    for store_key, entry in listed.items():
        node = root
        *folders, name = store_key.removeprefix(prefix).split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = entry
    total = sum(e["size"] for e in listed.values())
    body = (
        f"<h1>Artifacts</h1><p>Run <code>{escape(key)}</code> · "
        f"<a href='../../../'>all runs</a></p><p>{len(listed)} committed artifact(s), "
        f"{_size(total)}, as the run's commit records list them. Each opens or downloads "
        "through this page, checked against its sha256 first.</p>"
        + (_tree(root, "") if listed else "<p>Nothing committed yet.</p>")
    )
    return _document(f"Artifacts: {key}", body, root="../../../")


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
    body = (
        f"<h1>Grad-CAM gallery</h1><p>Run <code>{escape(key)}</code> · "
        f"<a href='../report.html'>report</a></p>"
        f"<div class='gallery'>{''.join(figures)}</div>"
    )
    return _document(f"Grad-CAM: {key}", body, root="../../../")


def script() -> bytes:
    """``runs_page.js``: served by the plugin itself, never fetched from the internet."""
    return SCRIPT.read_bytes()
