import re
from datetime import datetime

import pandas as pd
import pytest

from melanoma.layout import RunLayout, run_key
from melanoma.run import Run, RunConfig
from melanoma.runs_page import (
    artifact_key,
    list_runs,
    media_type,
    read_served_artifact,
    render_gradcam_gallery,
    render_runs_page,
    run_started,
)
from melanoma.store import ArtifactCorruptError
from tests.scored_run import write_reported_run

FIRST = "manual__2026-11-20T09:00:00+00:00"
SECOND = "scheduled__2026-11-22T00:00:00+00:00"


def _key(run_id: str) -> str:
    return run_key(run_id)


@pytest.fixture
def store_with_runs(file_store):
    first = write_reported_run(file_store, FIRST, strength=3.0)
    # Much weaker: below the champion by more than the margin, so it is not promoted.
    write_reported_run(file_store, SECOND, strength=0.5)
    crashed = Run.for_run_id(file_store, "crashed_run")
    with crashed.stage("split") as stage:
        stage.put_json(
            "config", crashed.layout.config, RunConfig("crashed_run", "v1", "m").to_json()
        )
    external = {"threshold_free": {"auroc": {"value": 0.81, "ci_low": 0.75, "ci_high": 0.86}}}
    with first.stage("external/isic2018") as stage:
        stage.put_json("metrics", first.layout.external_file("isic2018", "metrics.json"), external)
    return file_store


def test_every_run_is_listed_newest_first_with_its_stage_and_decision(store_with_runs):
    runs = list_runs(store_with_runs)
    assert [r.key for r in runs] == [_key(SECOND), _key(FIRST), "crashed_run"]
    second, first, crashed = runs
    assert first.started == datetime(2026, 11, 20, 9) and crashed.started is None
    assert first.stage == second.stage == "reported" and crashed.stage == "split"
    assert first.promoted is True and first.is_champion
    assert second.promoted is False and not second.is_champion
    assert "margin" in second.promotion_reason
    metrics = store_with_runs.get_json(RunLayout(_key(FIRST)).metrics)
    assert first.auroc == metrics["threshold_free"]["auroc"]
    assert first.sensitivity == metrics["operating_points"]["target_sensitivity"]["sensitivity"]
    assert first.dataset_version == "v1" and first.backbone == "tiny_cnn"
    assert crashed.auroc is None and crashed.promoted is None
    assert first.external_auroc == (("isic2018", {"value": 0.81, "ci_low": 0.75, "ci_high": 0.86}),)
    assert second.external_auroc == ()


def test_page_shows_metrics_with_intervals_marks_the_champion_and_links_artifacts(
    store_with_runs,
):
    runs = list_runs(store_with_runs)
    page = render_runs_page(runs, store_with_runs.url)
    assert "Research use only" in page
    auroc = runs[1].auroc
    assert f"{auroc['value']:.3f}" in page and f"{auroc['ci_low']:.3f}" in page
    assert page.count("&#9733; champion</span>") == 1
    assert "external isic2018:" in page and "0.810" in page
    champion_row = next(row for row in page.split("<tr>") if "&#9733; champion</span>" in row)
    assert _key(FIRST) in champion_row and "promoted" in champion_row
    links = re.findall(r"href='([^']+)'", page)
    assert f"runs/{_key(FIRST)}/report.html" in links
    assert f"runs/{_key(FIRST)}/evaluation/figures/roc.png" in links
    assert "runs/crashed_run/report.html" not in links  # no report yet, no link
    for link in links:
        key, artifact = link.removeprefix("runs/").split("/", 1)
        assert read_served_artifact(store_with_runs, key, artifact)


def test_served_artifacts_are_committed_and_unchanged(store_with_runs):
    key = _key(FIRST)
    layout = RunLayout(key)
    # In the store but listed by no commit record: not served.
    store_with_runs.put_bytes(layout.artifact("gradcam/summary.json"), b"{}")
    with pytest.raises(FileNotFoundError, match="no committed stage"):
        read_served_artifact(store_with_runs, key, "gradcam/summary.json")
    store_with_runs.put_bytes(layout.report, b"<html>changed</html>")
    with pytest.raises(ArtifactCorruptError, match=layout.report):
        read_served_artifact(store_with_runs, key, "report.html")


def test_only_readable_artifacts_are_served():
    assert artifact_key("r1", "report.html") == "runs/r1/report.html"
    assert artifact_key("r1", "gradcam/TP/ISIC_1.png") == "runs/r1/gradcam/TP/ISIC_1.png"
    assert artifact_key("r1", "external/isic2018/figures/roc.png").endswith("roc.png")
    assert media_type("evaluation/figures/roc.png") == "image/png"
    for key, artifact in [
        ("r1", "model/model.keras"),
        ("r1", "preprocessed/MANIFEST.json"),
        ("r1", "../../champions/mel_vs_rest/champion.json"),
        ("r1", "evaluation/figures/../../model/model.keras"),
        ("r1", "external/../model/model.keras"),
        ("r1", "external/isic2018/predictions.csv"),
        ("..", "report.html"),
        ("r1/../r2", "report.html"),
    ]:
        with pytest.raises(ValueError, match="not a run artifact the runs page serves"):
            artifact_key(key, artifact)


def test_run_dates_come_from_airflow_run_ids_or_their_store_keys():
    assert run_started(FIRST) == run_started(_key(FIRST)) == datetime(2026, 11, 20, 9)
    assert run_started("manual__2026-11-20T09_00_00_00_00") == datetime(2026, 11, 20, 9)
    assert run_started("asset_triggered__2026-01-02T03:04:05.1+00:00") == datetime(
        2026, 1, 2, 3, 4, 5
    )
    assert run_started("my-experiment") is None


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
