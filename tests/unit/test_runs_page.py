import re
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from melanoma.layout import STAGES, RunLayout, run_key
from melanoma.run import Run, RunConfig
from melanoma.runs_index import RunIndex, RunSummary, index_runs
from melanoma.runs_page import (
    DOWNLOAD_TYPE,
    PAGE_SIZE,
    PageQuery,
    airflow_run_url,
    artifact_key,
    committed_artifacts,
    media_type,
    read_served_artifact,
    render_artifact_tree,
    render_compare_page,
    render_gradcam_gallery,
    render_runs_page,
    render_runs_table,
    run_states,
    script,
    select_runs,
    trend_points,
)
from melanoma.store import ArtifactCorruptError, FileStore
from tests.scored_run import write_reported_run

FIRST = "manual__2026-11-20T09:00:00+00:00"
SECOND = "scheduled__2026-11-22T00:00:00+00:00"
EXTERNAL = {"threshold_free": {"auroc": {"value": 0.81, "ci_low": 0.75, "ci_high": 0.86}}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two reported runs (the second weaker, triggered with phase2_epochs=0), an external
    set on the first, and a run that stopped after its split."""
    store = FileStore(tmp_path_factory.mktemp("runs_page") / "store")
    first = write_reported_run(store, FIRST, strength=3.0)
    write_reported_run(store, SECOND, strength=0.5, phase2_epochs=0)
    crashed = Run.for_run_id(store, "crashed_run")
    with crashed.stage("split") as stage:
        stage.put_json(
            "config", crashed.layout.config, RunConfig("crashed_run", "v1", "m").to_json()
        )
    with first.stage("external/isic2018") as stage:
        stage.put_json("metrics", first.layout.external_file("isic2018", "metrics.json"), EXTERNAL)
    return store


@pytest.fixture
def index(store):
    return index_runs(store, cache=None)


def rows(page: str) -> list[str]:
    """The run keys of the table's rows, in order."""
    return re.findall(r"<tr data-run='([^']+)'>", page)


def test_page_shows_each_run_once_with_its_metrics_parameters_and_links(store, index):
    page = render_runs_page(store, index)
    assert "Research use only" in page
    assert rows(page) == [run_key(SECOND), run_key(FIRST), "crashed_run"]
    first = index.find(run_key(FIRST))
    row = page.split(f"<tr data-run='{run_key(FIRST)}'>")[1].split("</tr>")[0]
    assert f"{first.auroc['value']:.3f}" in row and f"{first.auroc['ci_low']:.3f}" in row
    assert row.count(FIRST) == 2  # the run id, and the checkbox's label; the key never
    assert "&#9733; champion" in row and "promoted" in row
    assert "<code>phase2_epochs=1</code>" in row and "0.810" in row
    # One column per external set, named once in the header.
    assert page.count("External isic2018 AUROC") == 1
    second = page.split(f"<tr data-run='{run_key(SECOND)}'>")[1].split("</tr>")[0]
    assert "<code>phase2_epochs=0</code>" in second and "kept champion" in second
    crashed = page.split("<tr data-run='crashed_run'>")[1].split("</tr>")[0]
    assert "data-live='crashed_run'" in crashed and f"(1 of {len(STAGES)} stages)" in crashed
    assert "report.html" not in crashed  # no report yet, no link
    # Every link into a run resolves to a committed artifact or page.
    for link in re.findall(r"href='(runs/[^']+)'", page):
        key, artifact = link.removeprefix("runs/").split("/", 1)
        if artifact.endswith("/"):  # the artifact tree and the Grad-CAM gallery
            continue
        assert read_served_artifact(store, key, artifact)
    assert "static/runs_page.js" in page and "http://" not in page and "https://" not in page


def test_runs_link_to_their_airflow_run_and_the_log_of_the_stage_they_reached(store, index):
    page = render_runs_page(store, index)
    assert airflow_run_url("../", FIRST) == (
        "../dags/melanoma_pipeline/runs/manual__2026-11-20T09%3A00%3A00%2B00%3A00"
    )
    assert f"href='{airflow_run_url('../', FIRST)}'" in page
    assert f"href='{airflow_run_url('../', 'crashed_run', 'preprocess')}'" in page
    assert "target='_top'" in page  # out of the UI's iframe, into the UI


def test_the_table_sorts_filters_and_pages_on_the_server(store, index):
    by_auroc = render_runs_table(index, PageQuery(sort="test", descending=True))
    assert rows(by_auroc) == [run_key(FIRST), run_key(SECOND), "crashed_run"]  # none last
    ascending = render_runs_table(index, PageQuery(sort="test", descending=False))
    assert rows(ascending) == [run_key(SECOND), run_key(FIRST), "crashed_run"]
    assert rows(render_runs_table(index, PageQuery(text="phase2_epochs=0"))) == [run_key(SECOND)]
    assert rows(render_runs_table(index, PageQuery(text="champion promoted"))) == [run_key(FIRST)]
    assert rows(render_runs_table(index, PageQuery(state="in progress"))) == ["crashed_run"]
    assert rows(render_runs_table(index, PageQuery(task="no_such_task"))) == []
    # Each heading's link sorts by it, the other way once it is the sort.
    heading = re.search(r"href='([^']+)'>Test AUROC", render_runs_table(index, PageQuery()))
    assert parse_qs(urlsplit(heading.group(1).replace("&amp;", "&")).query) == {
        "sort": ["test"],
        "order": ["desc"],
    }
    sorted_page = render_runs_table(index, PageQuery(sort="test"))
    again = re.search(r"href='([^']+)'>Test AUROC", sorted_page).group(1)
    assert "order=asc" in again


def test_a_query_string_never_breaks_the_page():
    assert PageQuery.parse({}) == PageQuery()
    query = PageQuery.parse({"sort": "x" * 999, "order": "up", "page": "-3", "state": "odd"})
    assert query.page == 1 and query.state == "" and query.descending and len(query.sort) == 200
    assert PageQuery.parse({"page": "two"}).page == 1
    assert PageQuery(text="a b", page=2).link(page=3) == "?sort=started&order=desc&q=a+b&page=3"


def many_runs(count: int) -> RunIndex:
    start = datetime(2026, 1, 1)
    runs = tuple(
        RunSummary(
            key=f"run_{i:04d}",
            run_id=f"run_{i:04d}",
            started=start + timedelta(hours=i),
            stage="reported",
            committed=STAGES,
            label_task="mel_vs_rest",
            auroc={"value": 0.5 + i / (2 * count), "ci_low": 0.4, "ci_high": 0.99},
        )
        for i in range(count)
    )
    return RunIndex(runs[::-1], {})


def test_a_long_table_is_paged(store):
    index = many_runs(120)
    first = render_runs_table(index, PageQuery())
    assert len(rows(first)) == PAGE_SIZE and rows(first)[0] == "run_0119"
    last = render_runs_table(index, PageQuery(page=3))
    assert rows(last) == [f"run_{i:04d}" for i in range(19, -1, -1)]
    assert "101 to 120 shown" in last and "&amp;page=2'>2</a>" in last
    assert len(select_runs(index, PageQuery(sort="test"))) == 120


def test_trend_points_are_the_runs_stored_aurocs_in_time_order(store, index):
    keys, points = trend_points(index, "mel_vs_rest")
    assert keys == [run_key(FIRST), run_key(SECOND)]
    for point in points:
        run = index.find(point.run)
        stored = run.auroc if point.series == "test" else run.external_auroc["isic2018"]
        assert point.value == stored["value"] and point.ci == (stored["ci_low"], stored["ci_high"])
        assert point.promoted == run.promoted
    assert {p.series for p in points} == {"test", "external isic2018"}
    page = render_runs_page(store, index)
    assert "Champion history" in page and page.count("class='point'") == len(points)


def test_compare_shows_differing_settings_metrics_differences_and_curves(store, index):
    page = render_compare_page(store, index, [run_key(FIRST), run_key(SECOND)])
    assert "<tr class='differs' data-setting='train.phase2_epochs'>" in page
    assert "<tr data-setting='train.batch_size'>" in page
    assert "Paired differences" in page and re.search(r"<td>test</td>", page)
    assert page.count("<polyline class='curve'") == 4  # ROC and PR for each run
    assert "Research use only" in page
    with pytest.raises(ValueError, match="tick 2 to 4"):
        render_compare_page(store, index, [run_key(FIRST)])
    with pytest.raises(KeyError):
        render_compare_page(store, index, [run_key(FIRST), "no_such_run"])


def test_the_artifact_tree_lists_every_committed_artifact_with_size_and_sha256(store):
    key = run_key(FIRST)
    page = render_artifact_tree(store, key)
    listed = committed_artifacts(store, key)
    prefix = RunLayout(key).prefix + "/"
    assert len(listed) > 10 and f"{len(listed)} committed artifact(s)" in page
    for store_key, entry in listed.items():
        name = store_key.rsplit("/", 1)[1]
        assert f"href='../{store_key.removeprefix(prefix)}'>{name}</a>" in page
        assert entry["sha256"][:12] in page
    assert "model.keras" in page and "commits/" not in page


def test_every_committed_artifact_is_served_checked_and_nothing_else(store):
    key = run_key(FIRST)
    layout = RunLayout(key)
    model = read_served_artifact(store, key, "model/model.keras")
    assert model == store.get_bytes(layout.model)
    assert media_type("model/model.keras") == DOWNLOAD_TYPE
    assert media_type("evaluation/figures/roc.png") == "image/png"
    assert media_type("report.html").startswith("text/html")
    # In the store but listed by no commit record: not served.
    store.put_bytes(layout.artifact("notes.txt"), b"mine")
    with pytest.raises(FileNotFoundError, match="no committed stage"):
        read_served_artifact(store, key, "notes.txt")
    with pytest.raises(FileNotFoundError):
        read_served_artifact(store, key, "commits/train.json")


def test_a_changed_artifact_is_refused(tmp_path):
    store = FileStore(tmp_path / "store")
    run = write_reported_run(store, FIRST)
    store.put_bytes(run.layout.report, b"<html>changed</html>")
    with pytest.raises(ArtifactCorruptError, match=run.layout.report):
        read_served_artifact(store, run.layout.key, "report.html")


def test_only_paths_inside_a_run_are_artifact_keys():
    assert artifact_key("r1", "report.html") == "runs/r1/report.html"
    assert artifact_key("r1", "gradcam/TP/ISIC_1.png") == "runs/r1/gradcam/TP/ISIC_1.png"
    for key, artifact in [
        ("r1", "../../champions/mel_vs_rest/champion.json"),
        ("r1", "evaluation/figures/../../model/model.keras"),
        ("r1", "./report.html"),
        ("r1", "/etc/passwd"),
        ("r1", "a//b"),
        ("r1", "a\\b"),
        ("..", "report.html"),
        ("r1/../r2", "report.html"),
    ]:
        with pytest.raises(ValueError, match="not a run artifact the runs page serves"):
            artifact_key(key, artifact)


def test_a_run_airflow_has_stopped_is_not_shown_as_in_progress(store, index):
    assert index.in_progress() == ["crashed_run"]
    stopped = replace(index, airflow_states={"crashed_run": "failed"})
    row = render_runs_table(stopped, PageQuery()).split("<tr data-run='crashed_run'>")[1]
    assert f"stopped at split (1 of {len(STAGES)} stages): Airflow run failed" in row
    assert "data-live" not in row.split("</tr>")[0]
    assert run_states(stopped, ["crashed_run"])["crashed_run"]["airflow"] == "failed"
    running = replace(index, airflow_states={"crashed_run": "running"})
    assert "data-live='crashed_run'" in render_runs_table(running, PageQuery())


def test_the_script_polls_runs_in_progress_for_their_state(index):
    states = run_states(index, ["crashed_run", run_key(FIRST), "no_such_run"])
    assert states["crashed_run"] == {
        "stage": "split",
        "committed": 1,
        "stages": len(STAGES),
        "complete": False,
        "damaged": None,
        "airflow": None,
    }
    assert states[run_key(FIRST)]["complete"] and "no_such_run" not in states
    code = script().decode()
    assert "state.json" in code and "http" not in code.replace("https://", "X")  # no CDN


def test_gradcam_gallery_shows_each_overlay_with_its_outcome(file_store):
    run = Run.for_run_id(file_store, "r1")
    index = pd.DataFrame(
        {
            "image_id": ["ISIC_1", "ISIC_2"],
            "outcome": ["TP", "FN"],
            "selected_as": ["TP", "random"],
            "probability": [0.91, 0.12],
            "energy_in_lesion": [0.7, float("nan")],
            "mask_source": ["official", "automatic"],
            "png": [
                run.layout.gradcam_image("TP", "ISIC_1"),
                run.layout.gradcam_image("random", "ISIC_2"),
            ],
        }
    )
    with run.stage("explain") as stage:
        stage.put_bytes("index", run.layout.gradcam_index, index.to_csv(index=False).encode())
    page = render_gradcam_gallery(file_store, "r1")
    assert re.findall(r"src='([^']+)'", page) == ["TP/ISIC_1.png", "random/ISIC_2.png"]
    assert "FN (selected as random)" in page and "automatic mask" in page
    assert "Research use only" in page
