"""`make run`'s DAG run (`melanoma.embedded.run_dag`): the real `airflow api-server` and
`airflow dags test --use-executor`, so that every task writes its log where the UI reads it,
and a failed run ends with the failed task's own log."""

import subprocess
from datetime import UTC, datetime

from melanoma.embedded import (
    DAG_ID,
    SparkStandalone,
    airflow_cli_json,
    airflow_environment,
    fail_interrupted_runs,
    latest_run_task_states,
    print_failed_task_logs,
    run_dag,
    task_log_file,
)
from melanoma.store import FileStore
from tests.conftest import REPO_ROOT, free_port


def test_a_failed_run_leaves_every_task_log_in_airflows_layout_and_prints_the_failure(
    tmp_path, migrated_airflow_db, capsys
):
    env = airflow_environment(
        REPO_ROOT,
        SparkStandalone(tmp_path / "spark"),  # never started: the run fails before preprocess
        FileStore(tmp_path / "store").url,
        home=tmp_path / "airflow",
        ui_port=free_port(),
    )
    env.update(MELANOMA_RETRY_DELAY_S="0", MELANOMA_CACHE_DIR=str(tmp_path / "cache"))
    migrated_airflow_db(env)
    missing = tmp_path / "no-such-archive"
    conf = {"source": str(missing), "backbone": "tiny_cnn", "pretrained_weights": "none"}

    begun = datetime.now(UTC)
    assert run_dag(env, conf) != 0

    run_id, states = latest_run_task_states(env, begun)
    assert states["store_pretrained_weights"] == "success"
    assert states["download_dataset"] == "failed"
    logs = tmp_path / "airflow" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    # Airflow's own layout: one file per attempt (the task is retried twice).
    attempts = sorted(p.name for p in (logs / "task_id=download_dataset").iterdir())
    assert attempts == ["attempt=1.log", "attempt=2.log", "attempt=3.log"]
    assert (logs / "task_id=store_pretrained_weights" / "attempt=1.log").stat().st_size > 0
    assert (
        task_log_file(env, run_id, "download_dataset")
        == logs / "task_id=download_dataset" / "attempt=3.log"
    )

    capsys.readouterr()
    print_failed_task_logs(env, begun)
    printed = capsys.readouterr().out
    assert "download_dataset failed; the end of its log" in printed
    assert str(missing) in printed  # the task's own error, naming what the user gave
    assert "store_pretrained_weights failed" not in printed
    # A later make run whose `dags test` made no run never shows this run's logs as its own.
    assert latest_run_task_states(env, datetime.now(UTC)) is None


def test_a_run_left_running_by_an_interrupted_make_run_is_marked_failed(
    tmp_path, migrated_airflow_db
):
    # A killed `make run` leaves its DAG run "running" in Airflow's DB. With
    # max_active_runs=1 the next `dags test` would wait on it or finish it as its own.
    env = airflow_environment(
        REPO_ROOT,
        SparkStandalone(tmp_path / "spark"),
        FileStore(tmp_path / "store").url,
        home=tmp_path / "airflow",
        ui_port=free_port(),
    )
    migrated_airflow_db(env)

    def airflow(*args: str) -> str:
        return subprocess.run(
            ["airflow", *args], env=env, check=True, capture_output=True, text=True
        ).stdout

    airflow("dags", "reserialize")
    airflow("dags", "trigger", DAG_ID, "--run-id", "interrupted")  # queued: no scheduler runs

    def states() -> dict[str, str]:
        return {r["run_id"]: r["state"] for r in airflow_cli_json(env, "dags", "list-runs", DAG_ID)}

    assert states() == {"interrupted": "queued"}
    assert fail_interrupted_runs(env) == ["interrupted"]
    assert states() == {"interrupted": "failed"}
    assert fail_interrupted_runs(env) == []  # nothing else is touched on the next run
