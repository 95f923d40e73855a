"""The preprocessing Spark job on the real standalone cluster, reading from and writing to each store."""

import io
import subprocess

import numpy as np
import pandas as pd
import pytest

from melanoma.ham10000 import apply_label_task
from melanoma.ingest import dataset_prefix, ingest
from melanoma.sources import find_layout
from melanoma.splits import split_by_lesion
from melanoma.store import read_manifest
from tests.conftest import MOTO_KEYS, REPO_ROOT


def submit(spark, store, manifest_key, splits_key, run_id, env_extra=None):
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
        "--manifest-key",
        manifest_key,
        "--splits-key",
        splits_key,
        "--run-id",
        run_id,
        "--image-size",
        "64",
        "--augment-copies",
        "2",
        "--seed",
        "5",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def prepare(store, archive_root, corrupt=True):
    """Ingest the mini archive, then corrupt one stored image (after validation, as bit rot would)."""
    result = ingest(find_layout(archive_root), store, "test")
    prefix = dataset_prefix(result.dataset_version)
    meta = pd.read_csv(io.BytesIO(store.get_bytes(f"{prefix}/metadata.csv")))
    splits = split_by_lesion(apply_label_task(meta, "mel_vs_rest"), seed=0)
    store.put_bytes("runs/r1/splits.csv", splits.to_csv(index=False).encode())
    broken = splits[splits["split"] == "val"]["image_id"].iloc[0]
    if corrupt:
        store.put_bytes(f"{prefix}/images/{broken}.jpg", b"\xff\xd8\xff truncated")
    return result.manifest_key, splits, broken


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_job_writes_shards_that_tf_data_reads_back(
    backend, spark_cluster, mini_archive, request, moto_endpoint
):
    store = request.getfixturevalue("file_store" if backend == "file" else "s3_store")
    env = {**MOTO_KEYS, "S3_ENDPOINT_URL": moto_endpoint} if backend == "s3" else {}
    manifest_key, splits, broken = prepare(store, mini_archive.root)
    stdout = submit(spark_cluster, store, manifest_key, "runs/r1/splits.csv", "r1", env)
    assert "1 rejected" in stdout

    manifest = read_manifest(store, "runs/r1/preprocessed/MANIFEST.json")
    stats = store.get_json("runs/r1/preprocessed/stats.json")
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
        examples = list(shard_dataset(store, manifest, split).as_numpy_iterator())
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
    manifest_key, _, _ = prepare(file_store, mini_archive.root, corrupt=False)
    file_store.put_bytes(
        "runs/r1/preprocessed/train/part-00999.parquet", b"left by a crashed attempt"
    )
    submit(spark_cluster, file_store, manifest_key, "runs/r1/splits.csv", "r1")
    first = read_manifest(file_store, "runs/r1/preprocessed/MANIFEST.json")
    assert not file_store.exists("runs/r1/preprocessed/train/part-00999.parquet")
    submit(spark_cluster, file_store, manifest_key, "runs/r1/splits.csv", "r1")
    second = read_manifest(file_store, "runs/r1/preprocessed/MANIFEST.json")
    assert first["shards"] == second["shards"], "same inputs, same shard bytes (sha256)"
    assert len(first["shards"]) >= 3
