"""The second matrix's runs-page rows (issue 28): one damaged run, or a stray folder,
must not hide every other run."""

from __future__ import annotations

import shutil

import pytest

from melanoma.layout import run_key
from melanoma.runs_index import index_runs
from melanoma.runs_page import render_runs_page
from tests.scored_run import write_reported_run

GOOD = "manual__2026-11-20T09:00:00+00:00"
DAMAGED = "manual__2026-11-21T09:00:00+00:00"


def _corrupt_metrics(store, run) -> str:
    (store.root / run.layout.metrics).write_text('{"changed": true}')
    return "changed after"


def _delete_external_set(store, run) -> str:
    with run.stage("external/site_a") as stage:
        stage.put_json("metrics", run.layout.external_file("site_a", "metrics.json"), {})
    shutil.rmtree(store.root / run.layout.prefix / "external" / "site_a")
    return "site_a"


def _unparseable_record(store, run) -> str:
    (store.root / run.layout.commit("evaluate")).write_text("{not json")
    return "evaluate"


@pytest.mark.parametrize(
    "damage",
    [_corrupt_metrics, _delete_external_set, _unparseable_record],
    ids=lambda f: f.__name__,
)
def test_a_damaged_run_is_listed_as_damaged_with_why_and_the_others_as_ever(file_store, damage):
    write_reported_run(file_store, GOOD, strength=3.0)
    damaged = write_reported_run(file_store, DAMAGED, strength=3.0)
    expected = damage(file_store, damaged)
    # A stray folder is not a run.
    (file_store.root / "runs" / "stray_folder").mkdir()
    (file_store.root / "runs" / "stray_folder" / "notes.txt").write_text("mine")

    index = index_runs(file_store, cache=None)
    runs = {run.key: run for run in index.runs}

    assert set(runs) == {run_key(GOOD), run_key(DAMAGED)}
    assert runs[run_key(GOOD)].stage == "reported" and runs[run_key(GOOD)].damaged is None
    bad = runs[run_key(DAMAGED)]
    assert bad.stage == "damaged" and expected in bad.damaged, bad.damaged
    page = render_runs_page(file_store, index)
    assert "class='damaged'" in page and page.count("<tr data-run=") == 2
