"""The preprocessing Spark job on the real standalone cluster, reading from and writing to each store."""

import hashlib
import json
import subprocess

import numpy as np
import pytest

from melanoma.config import PipelineConfig
from melanoma.ingest import ingest
from melanoma.layout import DatasetLayout
from melanoma.pipeline import write_split
from melanoma.run import Run
from melanoma.sources import find_layout
from tests.conftest import MOTO_KEYS, REPO_ROOT

PARAMS = {"image_size": 64, "augment_copies": 2, "split_seed": 5}


def submit(spark, store, run_id, env_extra=None, check=True, params=PARAMS):
    env = {**spark.environment(), **(env_extra or {})}
    command = [
        str(REPO_ROOT / ".venv/bin/spark-submit")
        if (REPO_ROOT / ".venv/bin/spark-submit").exists()
        else "spark-submit",
        "--master",
        spark.master_url,
        "--deploy-mode",
        "client",
        "--conf",
        "spark.ui.enabled=false",
        str(REPO_ROOT / "spark_jobs/preprocess.py"),
        "--store-url",
        store.url,
        "--run-id",
        run_id,
        "--params",
        json.dumps(params),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def prepare(store, archive_root, undecodable=True, profile="auto"):
    """Ingest the mini archive and split it as run r1; optionally replace one validation
    image, and its manifest entry, with bytes that do not decode (as if ingest had let
    them through), so that preprocessing rejects it."""
    result = ingest(find_layout(archive_root), store, "test")
    run = Run.for_run_id(store, "r1")
    write_split(run, PipelineConfig(seed=0, profile=profile), result.manifest_key)
    splits = run.splits()
    broken = splits[splits["split"] == "val"]["image_id"].iloc[0]
    if undecodable:
        manifest = store.get_json(result.manifest_key)
        relative = DatasetLayout.image_relative(broken, ".jpg")
        data = b"\xff\xd8\xff truncated"
        store.put_bytes(DatasetLayout(result.dataset_version).file(relative), data)
        manifest["files"][relative] |= {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        store.put_json(result.manifest_key, manifest)
    return run, splits, broken


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_job_writes_shards_that_tf_data_reads_back(
    backend, spark_cluster, mini_archive, request, moto_endpoint
):
    store = request.getfixturevalue("file_store" if backend == "file" else "s3_store")
    env = {**MOTO_KEYS, "S3_ENDPOINT_URL": moto_endpoint} if backend == "s3" else {}
    run, splits, broken = prepare(store, mini_archive.root)
    assert "1 rejected" in submit(spark_cluster, store, "r1", env).stdout

    stats = run.read_json("preprocess", "stats")
    assert (
        stats["rejects"][0]["image_id"] == broken and "undecodable" in stats["rejects"][0]["reason"]
    )
    train = splits[splits["split"] == "train"]
    minority = int(train["label"].sum())
    assert stats["augmented_copies"] == 2 * minority
    assert stats["splits"]["val"]["augmented"] == stats["splits"]["test"]["augmented"] == 0

    import tensorflow as tf

    from training.data import shard_dataset

    for split in ("train", "val", "test"):
        expected = splits[splits["split"] == split]
        expected = expected[expected["image_id"] != broken]
        examples = list(shard_dataset(run, split).as_numpy_iterator())
        n_copies = 2 if split == "train" else 0
        positives = int(expected["label"].sum())
        assert len(examples) == len(expected) + n_copies * positives
        assert sum(label for _, label in examples) == positives * (1 + n_copies)
        image = examples[0][0]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tf.executing_eagerly()


def test_rerun_gives_identical_shards_and_removes_stale_ones(
    spark_cluster, mini_archive, file_store
):
    run, _, _ = prepare(file_store, mini_archive.root, undecodable=False)
    stale = run.layout.shard("train", 999)
    file_store.put_bytes(stale, b"left by a crashed attempt")
    submit(spark_cluster, file_store, "r1")
    first = run.entries("preprocess", "shard/")
    assert not file_store.exists(stale)
    submit(spark_cluster, file_store, "r1")
    second = run.entries("preprocess", "shard/")
    assert first == second, "same inputs, same shard bytes (sha256)"
    assert len(first) >= 3


def test_an_image_changed_after_ingest_fails_the_job_naming_it(
    spark_cluster, mini_archive, file_store
):
    run, splits, _ = prepare(file_store, mini_archive.root, undecodable=False)
    dataset = DatasetLayout(run.config().dataset_version)
    changed = dataset.file(DatasetLayout.image_relative(splits["image_id"].iloc[3], ".jpg"))
    other = dataset.file(DatasetLayout.image_relative(splits["image_id"].iloc[4], ".jpg"))
    file_store.put_bytes(changed, file_store.get_bytes(other))  # bit rot, or a tampered file
    done = submit(spark_cluster, file_store, "r1", check=False)
    assert done.returncode != 0
    assert f"{changed}: " in done.stdout + done.stderr and "changed after it was committed" in (
        done.stdout + done.stderr
    )
    assert not run.committed("preprocess")


def test_an_empty_image_size_takes_the_profile_the_split_recorded(
    spark_cluster, mini_archive, file_store
):
    """As every DAG task: a cpu run's shards are the cpu profile's 150x200, not the 224x224
    the stage configs default to (the gpu profile's)."""
    run, _, _ = prepare(file_store, mini_archive.root, undecodable=False, profile="cpu")
    submit(spark_cluster, file_store, "r1", params={"augment_copies": 0})
    assert run.preprocess_config().shape == (150, 200)
    from training.data import shard_dataset

    image, _ = next(shard_dataset(run, "val").as_numpy_iterator())
    assert image.shape == (150, 200, 3)
