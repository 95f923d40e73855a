from datetime import datetime

import pytest

from melanoma.layout import RunLayout, run_key
from melanoma.params import from_params
from melanoma.profiles import PROFILES
from melanoma.run import Run, RunConfig
from melanoma.runs_index import (
    SummaryCache,
    champion_history,
    changed_settings,
    index_runs,
    run_started,
)
from melanoma.store import FileStore
from tests.scored_run import write_reported_run

FIRST = "manual__2026-11-20T09:00:00+00:00"
SECOND = "scheduled__2026-11-22T00:00:00+00:00"
THIRD = "manual__2026-11-23T09:00:00+00:00"
EXTERNAL = {"threshold_free": {"auroc": {"value": 0.81, "ci_low": 0.75, "ci_high": 0.86}}}


@pytest.fixture
def store_with_runs(file_store):
    first = write_reported_run(file_store, FIRST, strength=3.0)
    # Much weaker: below the champion by more than the margin, so it is not promoted.
    write_reported_run(file_store, SECOND, strength=0.5, phase2_epochs=0)
    crashed = Run.for_run_id(file_store, "crashed_run")
    with crashed.stage("split") as stage:
        stage.put_json(
            "config", crashed.layout.config, RunConfig("crashed_run", "v1", "m").to_json()
        )
    with first.stage("external/isic2018") as stage:
        stage.put_json("metrics", first.layout.external_file("isic2018", "metrics.json"), EXTERNAL)
    return file_store


def test_every_run_is_indexed_newest_first_with_its_stage_and_decision(store_with_runs):
    index = index_runs(store_with_runs, cache=None)
    assert [r.key for r in index.runs] == [run_key(SECOND), run_key(FIRST), "crashed_run"]
    second, first, crashed = index.runs
    assert first.started == datetime(2026, 11, 20, 9) and crashed.started is None
    assert first.stage == second.stage == "reported" and first.complete
    assert crashed.stage == "split" and crashed.committed == ("split",) and not crashed.complete
    assert crashed.next_task == "preprocess" and first.next_task == "write_report"
    assert first.promoted is True and index.is_champion(first)
    assert second.promoted is False and not index.is_champion(second)
    assert "margin" in second.promotion_reason and second.replaced == FIRST
    metrics = store_with_runs.get_json(RunLayout(run_key(FIRST)).metrics)
    assert first.auroc == metrics["threshold_free"]["auroc"]
    assert first.sensitivity == metrics["operating_points"]["target_sensitivity"]["sensitivity"]
    assert first.test_fingerprint == metrics["test_fingerprint"]
    promotion = store_with_runs.get_json(RunLayout(run_key(FIRST)).promotion)
    assert first.benchmark_auroc == promotion["candidate"]["benchmark_auroc"]
    assert first.dataset_version == "v1" and first.backbone == "tiny_cnn"
    assert first.profile == "gpu"
    assert crashed.auroc is None and crashed.promoted is None
    assert first.external_auroc == {"isic2018": EXTERNAL["threshold_free"]["auroc"]}
    assert second.external_auroc == {} and index.external_sets() == ["isic2018"]
    # What tells the two runs apart: the phase-2 epochs each was triggered with.
    assert dict(first.changed)["phase2_epochs"] == 1
    assert dict(second.changed)["phase2_epochs"] == 0


def test_changed_settings_are_those_that_differ_from_the_profile_defaults():
    cpu = from_params({}, detected_profile="cpu").resolved()
    assert changed_settings(cpu, "cpu") == {}
    # The cpu profile's values are not defaults in a gpu run.
    assert changed_settings(cpu, "gpu") == dict(PROFILES["cpu"])
    tuned = from_params(
        {"phase2_epochs": 3, "color_constancy": True, "source": "/data/ham", "split_seed": 7},
        detected_profile="cpu",
    ).resolved()
    # Where the data came from is not a model choice; a seed is.
    assert changed_settings(tuned, "cpu") == {
        "phase2_epochs": 3,
        "color_constancy": True,
        "split_seed": 7,
    }
    external = from_params(
        {"external_validation": True, "external_name": "site_a"}, detected_profile="cpu"
    ).resolved()
    assert changed_settings(external, "cpu") == {
        "external_validation": True,
        "external_name": "site_a",
    }
    # A run recorded before a setting existed does not show it as changed.
    del cpu["train"]["phase2_schedule"]
    assert changed_settings(cpu, "cpu") == {}


class CountingStore(FileStore):
    """A file store that counts the objects read from it."""

    reads = 0

    def get_stream(self, key):
        self.reads += 1
        return super().get_stream(key)


def test_a_runs_summary_is_read_once_until_its_commit_records_change(store_with_runs):
    counting = CountingStore(store_with_runs.root)
    cache = SummaryCache()
    first = index_runs(counting, cache)
    cold = counting.reads
    assert cold > 0
    second = index_runs(counting, cache)
    # Only the champion record is read again: the runs' artifacts are not.
    assert counting.reads - cold == 1 and second.runs == first.runs
    # A stage committed anew (another external set) is seen at once.
    run = Run.for_run_id(store_with_runs, SECOND)
    with run.stage("external/site_b") as stage:
        stage.put_json("metrics", run.layout.external_file("site_b", "metrics.json"), EXTERNAL)
    third = index_runs(counting, cache)
    assert third.find(run_key(SECOND)).external_auroc == {
        "site_b": EXTERNAL["threshold_free"]["auroc"]
    }


def test_champion_history_says_who_replaced_whom_and_by_how_much(file_store):
    write_reported_run(file_store, FIRST, strength=1.0)
    write_reported_run(file_store, THIRD, strength=6.0)
    index = index_runs(file_store, cache=None)
    assert index.champions == {"mel_vs_rest": run_key(THIRD)}
    history = champion_history(file_store, index, "mel_vs_rest")
    assert [(c.run_id, c.current, c.replaced) for c in history] == [
        (THIRD, True, FIRST),
        (FIRST, False, None),
    ]
    now, before = history
    promotion = file_store.get_json(RunLayout(run_key(THIRD)).promotion)
    assert now.comparison == promotion["comparison"]
    assert now.comparison["difference"]["ci_low"] > 0
    assert now.replaced_test_auroc == before.test_auroc
    assert now.became_champion == datetime(2026, 11, 23, 9) and now.run_key == run_key(THIRD)


def test_run_dates_come_from_airflow_run_ids_or_their_store_keys():
    assert run_started(FIRST) == run_started(run_key(FIRST)) == datetime(2026, 11, 20, 9)
    assert run_started("manual__2026-11-20T09_00_00_00_00") == datetime(2026, 11, 20, 9)
    assert run_started("asset_triggered__2026-01-02T03:04:05.1+00:00") == datetime(
        2026, 1, 2, 3, 4, 5
    )
    assert run_started("my-experiment") is None
