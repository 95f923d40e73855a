"""Retraining triggers: the ham10000_new_version DAG under `airflow dags test` (SQLite
metadata DB) emits the `ham10000` asset for a new dataset version only, which queues a
melanoma_pipeline run."""

import sqlite3
import subprocess

from melanoma.embedded import SparkStandalone, airflow_environment
from melanoma.store import FileStore
from tests.conftest import REPO_ROOT


def _dags_test(env, dag_id):
    done = subprocess.run(
        ["airflow", "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    return done.stdout + done.stderr


def _rows(database, query):
    with sqlite3.connect(database) as db:
        return db.execute(query).fetchall()


def test_new_dataset_version_emits_the_asset_once_and_queues_the_pipeline(
    tmp_path, mini_archive, migrated_airflow_db
):
    store = FileStore(tmp_path / "store")
    home = tmp_path / "airflow"
    env = airflow_environment(REPO_ROOT, SparkStandalone(tmp_path / "spark"), store.url, home=home)
    env.update(HAM10000_SOURCE=str(mini_archive.root), MELANOMA_CACHE_DIR=str(tmp_path / "cache"))
    migrated_airflow_db(env)
    database = home / "airflow.db"
    # The scheduler learns the DAGs (and which one consumes the asset) from the dag-processor.
    subprocess.run(["airflow", "dags", "reserialize"], env=env, check=True, capture_output=True)
    # Only an active consumer gets its run queued.
    subprocess.run(
        ["airflow", "dags", "unpause", "melanoma_pipeline"],
        env=env,
        check=True,
        capture_output=True,
    )

    _dags_test(env, "ham10000_new_version")
    events = _rows(
        database, "SELECT a.name, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
    )
    assert len(events) == 1 and events[0][0] == "ham10000"
    versions = {o.key.split("/")[2] for o in store.list("datasets/ham10000/")}
    assert len(versions) == 1 and versions.pop() in events[0][1]
    queued = _rows(database, "SELECT target_dag_id FROM asset_dag_run_queue")
    assert queued == [("melanoma_pipeline",)]

    # Same source, same version: the download task is skipped and emits nothing.
    second = _dags_test(env, "ham10000_new_version")
    assert "already in the store" in second
    assert len(_rows(database, "SELECT id FROM asset_event")) == 1
    states = _rows(
        database,
        "SELECT state FROM task_instance WHERE dag_id = 'ham10000_new_version' ORDER BY start_date",
    )
    assert [s for (s,) in states] == ["success", "skipped"]
