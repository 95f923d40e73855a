"""The run's commit protocol: records written last, reads checked, retries never mixed."""

import errno
import re
import subprocess
import sys

import pandas as pd
import pytest

from melanoma.config import PipelineConfig
from melanoma.evaluation import EvaluationConfig, calibrate_run, evaluate_run
from melanoma.ingest import ingest
from melanoma.layout import RunLayout, run_key
from melanoma.migrate import legacy_runs, migrate_run
from melanoma.pipeline import write_split
from melanoma.run import Run, RunConfig, RunOwnershipError
from melanoma.sources import find_layout
from melanoma.store import ArtifactCorruptError, ArtifactIncompleteError, FileStore
from tests.conftest import REPO_ROOT
from tests.scored_run import write_scored_run

CONFIG = EvaluationConfig(bootstrap_replicates=100)


def test_a_stage_commits_each_artifact_with_its_size_and_hash(file_store):
    run = Run.for_run_id(file_store, "r")
    with run.stage("calibrate") as stage:
        stage.put_json("calibration", run.layout.calibration, {"thresholds": {}})
    record = run.commit_record("calibrate")
    entry = record["artifacts"]["calibration"]
    assert entry["key"] == run.layout.calibration
    assert entry["size"] == len(file_store.get_bytes(entry["key"]))
    assert run.read_json("calibrate", "calibration") == {"thresholds": {}}
    assert "Research use only" in record["notice"]


def test_a_failed_stage_commits_nothing(file_store):
    run = Run.for_run_id(file_store, "r")
    with pytest.raises(RuntimeError), run.stage("calibrate") as stage:
        stage.put_json("calibration", run.layout.calibration, {})
        raise RuntimeError("the task died")
    assert not run.committed("calibrate")
    with pytest.raises(ArtifactIncompleteError, match=r"stage calibrate .* never committed"):
        run.read_json("calibrate", "calibration")


@pytest.mark.parametrize("artifact", ["predictions_test", "model", "history"])
def test_an_object_changed_after_its_commit_is_named_on_read(file_store, artifact):
    run = write_scored_run(file_store, "r")
    key = run.entry("train", artifact)["key"]
    file_store.put_bytes(key, file_store.get_bytes(key) + b" ")
    with pytest.raises(ArtifactCorruptError, match=re.escape(key)):
        run.read_bytes("train", artifact)


# Runs the real evaluate stage in a child process that is SIGKILLed after its n-th write.
KILLED_EVALUATION = """
import os, signal, sys
from melanoma.evaluation import EvaluationConfig, evaluate_run
from melanoma.layout import RunLayout
from melanoma.run import Run
from melanoma.store import FileStore

store, writes = FileStore(sys.argv[1]), 0
put = store.put_stream

def put_then_die(key, stream, size=-1):
    global writes
    put(key, stream, size)
    writes += 1
    if writes == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

store.put_stream = put_then_die
evaluate_run(Run(store, RunLayout(sys.argv[2])), EvaluationConfig(bootstrap_replicates=100, seed=7))
"""


def _read_every_artifact(run: Run, stage: str) -> None:
    for name in run.commit_record(stage)["artifacts"]:
        run.read_bytes(stage, name)  # checked against the record: raises on any mix


def test_a_stage_killed_mid_write_keeps_its_last_commit_and_the_retry_repairs_it(file_store):
    run = write_scored_run(file_store, "r")
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)  # the first attempt, committed (bootstrap seed 42)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_EVALUATION, str(file_store.root), run.layout.key, "3"],
        cwd=REPO_ROOT,
        capture_output=True,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    # The first attempt's record stands; the objects the killed one replaced were moved
    # aside, and no read takes the new ones for the old (each is checked on read).
    assert run.commit_record("evaluate")["artifacts"]
    assert any(o.key.endswith(".previous") for o in file_store.list(run.layout.prefix + "/"))

    evaluate_run(run, EvaluationConfig(bootstrap_replicates=100, seed=7))  # Airflow's retry
    _read_every_artifact(run, "evaluate")
    assert run.read_json("evaluate", "metrics")["bootstrap"]["seed"] == 7
    assert not any(o.key.endswith(".previous") for o in file_store.list(run.layout.prefix + "/"))


class FullDisk(FileStore):
    """A file store whose disk fills after ``room`` more writes: the next raises ENOSPC."""

    room = 10**9

    def put_stream(self, key, stream, size=-1):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device", key)
        self.room -= 1
        super().put_stream(key, stream, size)


@pytest.mark.parametrize("room", [0, 1, 3])
def test_a_rerun_that_fills_the_disk_leaves_the_last_commit_readable_and_intact(tmp_path, room):
    store = FullDisk(tmp_path / "store")
    run = write_scored_run(store, "r")
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)
    before = {
        entry["key"]: store.get_bytes(entry["key"])
        for entry in run.commit_record("evaluate")["artifacts"].values()
    }
    record = store.get_bytes(run.layout.commit("evaluate"))

    store.room = room
    with pytest.raises(OSError, match="No space left"):
        evaluate_run(run, EvaluationConfig(bootstrap_replicates=100, seed=7))

    assert store.get_bytes(run.layout.commit("evaluate")) == record
    assert {key: store.get_bytes(key) for key in before} == before
    _read_every_artifact(run, "evaluate")
    assert run.read_json("evaluate", "metrics")["bootstrap"]["seed"] == 42


def _dataset(mini_archive, file_store) -> str:
    return ingest(find_layout(mini_archive.root), file_store, "test").manifest_key


def test_a_run_never_writes_into_another_runs_prefix(mini_archive, file_store):
    manifest_key = _dataset(mini_archive, file_store)
    # A store written before hashed keys: this run id was kept at its cleaned form.
    colon_id, cleaned = "manual__2026-01-01T00:00:00+00:00", "manual__2026-01-01T00_00_00_00_00"
    legacy = Run(file_store, RunLayout(cleaned))
    file_store.put_json(legacy.layout.config, RunConfig(colon_id, "v", manifest_key).to_json())
    assert Run.for_run_id(file_store, colon_id).layout.key == cleaned  # still found there

    # The run whose own id is the cleaned form maps to that same key: refused, nothing lost.
    intruder = Run.for_run_id(file_store, cleaned)
    assert intruder.layout.key == cleaned == run_key(cleaned)
    with pytest.raises(RunOwnershipError, match=re.escape(colon_id)):
        write_split(intruder, PipelineConfig(), manifest_key)
    assert file_store.get_json(legacy.layout.config)["run_id"] == colon_id

    # Two new runs whose ids clean to the same text get prefixes of their own.
    for run_id in ("manual__2026-02-01T00:00:00+00:00", "manual__2026-02-01T00_00_00_00_00"):
        write_split(Run.for_run_id(file_store, run_id), PipelineConfig(), manifest_key)
    for run_id in ("manual__2026-02-01T00:00:00+00:00", "manual__2026-02-01T00_00_00_00_00"):
        assert Run.for_run_id(file_store, run_id).config().run_id == run_id


def test_a_store_written_before_commit_records_migrates_and_evaluates_identically(file_store):
    run = write_scored_run(file_store, "old")
    calibrate_run(run, CONFIG)
    evaluate_run(run, CONFIG)
    metrics = file_store.get_bytes(run.layout.metrics)
    # What the first layout left: the same objects, its two manifests, no commit records.
    layout = run.layout
    train = run.commit_record("train")["artifacts"]
    file_store.put_json(
        layout.legacy_manifest("train"),
        {"outputs": {n: e["key"] for n, e in train.items()}, "summary": {}},
    )
    file_store.put_json(
        layout.legacy_manifest("preprocess"),
        {"dataset_version": "v1", "image_size": 32, "shards": []},
    )
    for info in list(file_store.list(layout.commits + "/")):
        file_store.delete(info.key)
    with pytest.raises(ArtifactIncompleteError, match="melanoma-store migrate"):
        run.predictions("test")

    assert legacy_runs(file_store) == [layout.key]
    migrated = migrate_run(file_store, layout.key)
    assert migrated.committed == ["split", "preprocess", "train", "calibrate", "evaluate"]
    assert set(migrated.skipped) == {"explain", "promote", "report"}
    assert legacy_runs(file_store) == []

    evaluate_run(run, CONFIG)  # re-evaluating the stored predictions through the new code
    assert file_store.get_bytes(layout.metrics) == metrics
    assert isinstance(run.predictions("test"), pd.DataFrame)
