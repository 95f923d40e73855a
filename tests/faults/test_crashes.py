"""Faults mid-task (issue 16): a killed process, a killed Spark worker, a store that goes
down. Each test kills or stops a real thing and checks what survives and what the retry
does."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from tests.conftest import REPO_ROOT
from tests.trained_runs import FAST, copy_run
from training.train import TrainConfig, train_run

# Phase 2 long enough that the kill (at its third epoch) lands inside it, never after it;
# patience as long, so early stopping never ends it.
LONG_PHASE2 = {**FAST, "phase2_epochs": 20, "patience": 20}


def test_training_killed_mid_phase2_resumes_from_its_checkpoint(preprocessed_run):
    run = copy_run(preprocessed_run, "t-killed")
    store = run.store
    _, _, state_key = run.layout.checkpoint("phase2")
    attempt = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "training.train",
            "--store-url",
            store.url,
            "--run",
            run.layout.prefix,
            "--config",
            json.dumps(LONG_PHASE2),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and attempt.poll() is None:
            if store.exists(state_key) and store.get_json(state_key).get("epoch", -1) >= 2:
                break
            time.sleep(0.05)
        assert attempt.poll() is None, "the first attempt ended before it could be killed"
        attempt.send_signal(signal.SIGKILL)  # as the OOM killer or a lost worker would
    finally:
        attempt.kill()
        attempt.wait()
    assert not run.committed("train")
    killed_at = store.get_json(state_key)
    done_epochs = len(killed_at["history"]["loss"])
    assert not killed_at["complete"] and done_epochs >= 3

    train_run(run, TrainConfig(**LONG_PHASE2))  # Airflow's retry of the task

    history = run.read_json("train", "history")
    timing = history["summary"]["timing"]
    assert timing["phase1"] == {"resumed": True}
    assert timing["phase2"]["resumed_at_epoch"] == done_epochs
    assert timing["phase2"]["epochs"] == LONG_PHASE2["phase2_epochs"] - done_epochs
    phase2 = history["phase2"]
    assert len(phase2["loss"]) == LONG_PHASE2["phase2_epochs"]
    assert phase2["loss"][:done_epochs] == killed_at["history"]["loss"]  # not started over
    # Early stopping's state came through the crash: the best epoch is the best recorded.
    best = int(np.argmax(phase2["val_auroc"]))
    if phase2["val_auroc"][best] > history["summary"]["val_auroc_after_phase1"]:
        assert phase2["best_epoch"] == best
    predictions = run.predictions("test")
    assert roc_auc_score(predictions["label"], predictions["probability"]) > 0.9


def test_a_spark_worker_killed_mid_preprocess_leaves_a_complete_job(tmp_path, file_store):
    """Two workers; one is killed (with its executor) once shards are being written. Spark
    re-runs the lost tasks on the other worker, and the commit record lists every shard."""
    from melanoma.config import PipelineConfig
    from melanoma.ingest import ingest
    from melanoma.pipeline import write_split
    from melanoma.preprocess import read_shards
    from melanoma.run import Run
    from melanoma.sources import find_layout
    from tests.conftest import local_spark_cluster
    from tests.synthetic import write_archive

    archive = write_archive(tmp_path / "ham", {"nv": 90, "mel": 30}, seed=2, size=(300, 225))
    result = ingest(find_layout(archive.root), file_store, "test")
    run = Run.for_run_id(file_store, "spark-loss")
    write_split(run, PipelineConfig(seed=0), result.manifest_key)
    base = local_spark_cluster(tmp_path / "stack")
    cluster = dataclasses.replace(base, worker_cores=1, workers=2)
    cluster.start()
    try:
        assert cluster.master_status()["aliveworkers"] == 2
        command = [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master",
            cluster.master_url,
            "--conf",
            "spark.ui.enabled=false",
            str(REPO_ROOT / "spark_jobs/preprocess.py"),
            "--store-url",
            file_store.url,
            "--run-id",
            "spark-loss",
            "--params",
            json.dumps({"image_size": 96, "hair_removal": True, "lesion_crop": True}),
            "--tasks-per-core",
            "8",
        ]
        job = subprocess.Popen(
            command,
            env=cluster.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        shards = run.layout.preprocessed
        deadline = time.monotonic() + 300
        while job.poll() is None and time.monotonic() < deadline:
            if any(True for _ in file_store.list(shards + "/")):
                break
            time.sleep(0.1)
        assert job.poll() is None, "the job ended before a worker could be killed"
        os.killpg(cluster.read_pid("worker-2"), signal.SIGKILL)  # the worker and its executor
        output, _ = job.communicate(timeout=600)
    finally:
        cluster.stop()
    assert job.returncode == 0, output[-4000:]
    assert "lost" in output.lower(), "the kill did not reach a running executor"
    assert run.committed("preprocess")
    splits = run.splits()
    stats = run.read_json("preprocess", "stats")
    assert stats["rejected"] == 0
    assert stats["source_images"] == len(splits)
    for split in ("train", "val", "test"):
        rows = read_shards(run, split)  # every shard read, and checked against its record
        originals = rows[rows["augmented"] == 0]
        expected = splits[splits["split"] == split]["image_id"]
        assert sorted(originals["image_id"]) == sorted(expected)  # each image once, none lost


def test_the_store_down_during_a_task_fails_it_clearly_and_airflow_retries_it(
    tmp_path, mini_archive, s3_store, moto_endpoint, migrated_airflow_db
):
    """The real DAG under `airflow dags test`, its S3 store behind a relay that is down
    when download_dataset starts. The task fails naming the endpoint; the store comes
    back; Airflow's retry ingests the dataset. Every other task is marked successful
    unrun (--mark-success-pattern): the retry of this one task is what is tested."""
    from urllib.parse import urlparse

    from melanoma.embedded import airflow_environment
    from melanoma.layout import DATASETS
    from tests.conftest import MOTO_KEYS, local_spark_cluster
    from tests.tcp_proxy import TcpProxy

    moto = urlparse(moto_endpoint)
    proxy = TcpProxy(moto.hostname, moto.port)  # down until the first attempt has failed
    never_started = local_spark_cluster(tmp_path / "spark")
    env = airflow_environment(REPO_ROOT, never_started, s3_store.url, home=tmp_path / "airflow")
    env.update(
        MOTO_KEYS,
        S3_ENDPOINT_URL=proxy.url,
        S3_RETRIES="0",
        S3_CONNECT_TIMEOUT_S="2",
        MELANOMA_CACHE_DIR=str(tmp_path / "cache"),
        MELANOMA_RETRY_DELAY_S="1",
    )
    migrated_airflow_db(env)
    conf = {"source": str(mini_archive.root), "backbone": "tiny_cnn", "pretrained_weights": "none"}
    command = [
        "airflow",
        "dags",
        "test",
        "melanoma_pipeline",
        "--conf",
        json.dumps(conf),
        "--mark-success-pattern",
        "(?!download_dataset$).*",
    ]
    dag = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        for line in dag.stdout:
            lines.append(line)
            if f"S3 endpoint {proxy.url} did not answer" in line and proxy._server is None:
                proxy.up()  # the store is back
        dag.wait(600)
    finally:
        dag.kill()
        proxy.down()
    output = "".join(lines)
    assert dag.returncode == 0, output[-4000:]
    failure = next(line for line in lines if "did not answer" in line)
    assert f"S3 endpoint {proxy.url} did not answer" in failure
    assert "StoreUnavailableError" in output
    assert "up_for_retry" in output.lower()
    manifests = [o.key for o in s3_store.list(f"{DATASETS}/") if o.key.endswith("MANIFEST.json")]
    assert len(manifests) == 1  # the retry committed the dataset version, once
