"""The embedded Spark standalone cluster, and an application submitted through SparkSubmitOperator."""

import json
import os
import platform

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from melanoma.embedded import _alive
from tests.conftest import REPO_ROOT, local_spark_cluster


@pytest.fixture
def spark(tmp_path):
    cluster = local_spark_cluster(tmp_path / "stack")  # its own: this test stops it
    cluster.start()
    yield cluster
    cluster.stop()


def test_spark_submit_operator_runs_on_the_standalone_cluster(spark, tmp_path, monkeypatch):
    pids = [spark.read_pid(role) for role in ("master", "worker")]
    status = spark.master_status()
    assert status["status"] == "ALIVE" and status["aliveworkers"] == 1 and status["cores"] == 2

    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_DEFAULT", f"spark://127.0.0.1:{spark.master_port}?deploy-mode=client"
    )
    for key, value in spark.environment().items():
        if key.startswith(("SPARK_", "PYSPARK_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv(
        "PATH", f"{os.path.dirname(os.environ['PYSPARK_PYTHON'])}:{os.environ['PATH']}"
    )
    output = tmp_path / "result.json"
    SparkSubmitOperator(
        task_id="cluster_check",
        application=str(REPO_ROOT / "spark_jobs" / "cluster_check.py"),
        application_args=[str(output)],
        conn_id="spark_default",
        conf={"spark.ui.enabled": "false"},
    ).execute(context={})
    result = json.loads(output.read_text())
    assert result["sum_of_squares"] == sum(x * x for x in range(100_000))
    assert result["master"] == spark.master_url
    assert result["executors"][0][1] == platform.python_version()
    completed = [app["id"] for app in spark.master_status()["completedapps"]]
    assert result["app_id"] in completed, "the application must have run on this master"

    spark.stop()
    assert not any(_alive(pid) for pid in pids)
    assert spark.master_status() is None
