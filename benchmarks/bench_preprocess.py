"""Preprocessing throughput: the Spark job on the local standalone cluster against one process.

    .venv/bin/python benchmarks/bench_preprocess.py [--images 10015] [--loop-images 2000]
        [--sample ../shared/data/ham10000/HAM10000_images_fullres_sample.zip]

Prepares N full-resolution 600x450 dermoscopy JPEGs in a file store (cycling the
218-image full-resolution sample of the shared mirror, or generated images of
similar size when no sample is given), then measures in one run:

(a) one Python process doing the same per-image work (read from the store, reduced
    decode, resize to 224, write a Parquet shard) over ``--loop-images`` images;
(b) the Spark job (spark_jobs/preprocess.py) on a fresh local standalone cluster using
    all cores, end to end: spark-submit start-up, store reads, shard writes, commit.

Prints images/s for both, the end-to-end ratio, and the steady-state ratio (the job's
images over its time after the SparkContext is up) against 0.6 x cores x (a).
Augmentation is off in both, so both do exactly one output image per input.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from melanoma.embedded import PROJECT_ROOT, SparkStandalone
from melanoma.images import PreprocessConfig
from melanoma.preprocess import plan_images, plan_shards, process_shard
from melanoma.store import FileStore
from melanoma.synthetic import lesion_image


def source_jpegs(sample: Path | None) -> list[bytes]:
    if sample and sample.exists():
        with zipfile.ZipFile(sample) as z:
            return [z.read(n) for n in sorted(z.namelist()) if n.endswith(".jpg")]
    rng = np.random.default_rng(0)
    return [
        cv2.imencode(".jpg", lesion_image(rng, (600, 450))[0], [cv2.IMWRITE_JPEG_QUALITY, 97])[
            1
        ].tobytes()
        for _ in range(50)
    ]


def prepare(store: FileStore, n: int, sample: Path | None) -> tuple[str, str]:
    jpegs = source_jpegs(sample)
    files, rows = {}, []
    for i in range(n):
        data = jpegs[i % len(jpegs)]
        image_id = f"ISIC_{i:07d}"
        store.put_bytes(f"datasets/ham10000/bench/images/{image_id}.jpg", data)
        files[f"images/{image_id}.jpg"] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "width": 600,
            "height": 450,
        }
        rows.append(
            {
                "image_id": image_id,
                "lesion_id": f"HAM_{i:07d}",
                "dx": "nv",
                "label": i % 9 == 0,
                "split": ("train", "train", "train", "train", "val", "test")[i % 6],
            }
        )
    store.put_json(
        "datasets/ham10000/bench/MANIFEST.json", {"dataset_version": "bench", "files": files}
    )
    pd.DataFrame(rows).astype({"label": int}).to_csv(store.root / "splits.csv", index=False)
    mean_kb = np.mean([len(jpegs[i % len(jpegs)]) for i in range(n)]) / 1024
    print(
        f"prepared {n} JPEGs of 600x450, mean {mean_kb:.0f} KB, from {len(jpegs)} distinct sources"
    )
    return "datasets/ham10000/bench/MANIFEST.json", "splits.csv"


def single_process(store: FileStore, manifest_key: str, splits_key: str, n: int) -> float:
    splits = pd.read_csv(store.root / splits_key).head(n)
    tasks = plan_images(
        splits, store.get_json(manifest_key), "datasets/ham10000/bench", augment_copies=0
    )
    shard = plan_shards(tasks, "loop", parallelism=1, tasks_per_core=1)
    started = time.perf_counter()
    for s in shard:
        process_shard(store, s, PreprocessConfig(), seed=0)
    return len(tasks) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10015)
    parser.add_argument("--loop-images", type=int, default=2000)
    default_sample = PROJECT_ROOT.parent / "shared/data/ham10000/HAM10000_images_fullres_sample.zip"
    parser.add_argument(
        "--sample", type=Path, default=default_sample if default_sample.exists() else None
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp) / "store")
        manifest_key, splits_key = prepare(store, args.images, args.sample)

        loop_rate = single_process(
            store, manifest_key, splits_key, min(args.loop_images, args.images)
        )
        print(f"(a) single process: {loop_rate:.0f} images/s")

        spark = SparkStandalone(
            Path(tmp) / "stack",
            master_port=7177,
            master_webui_port=8190,
            worker_webui_port=8191,
            worker_cores=cores,
            worker_memory="4g",
        )
        started = time.perf_counter()
        spark.start()
        cluster_up = time.perf_counter() - started
        try:
            submit_started = time.perf_counter()
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "spark-submit"),
                    "--master",
                    spark.master_url,
                    "--conf",
                    "spark.ui.showConsoleProgress=false",
                    str(PROJECT_ROOT / "spark_jobs/preprocess.py"),
                    "--store-url",
                    store.url,
                    "--manifest-key",
                    manifest_key,
                    "--splits-key",
                    splits_key,
                    "--run-id",
                    "bench",
                    "--augment-copies",
                    "0",
                ],
                env=spark.environment(),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            job_wall = time.perf_counter() - submit_started
        finally:
            spark.stop()
        stats = store.get_json("runs/bench/preprocessed/stats.json")
        end_to_end = args.images / job_wall
        steady = (
            args.images / stats["wall_seconds"]
        )  # measured by the job from SparkContext up to commit
        print(
            f"(b) Spark job, {cores} cores: {args.images} images in {job_wall:.1f}s end to end "
            f"(spark-submit to commit; cluster start {cluster_up:.1f}s more) = {end_to_end:.0f} images/s; "
            f"{stats['shards']} shards, {stats['rejected']} rejected"
        )
        print(
            f"    steady state (after SparkContext start-up, {stats['spark_startup_seconds']:.1f}s): {steady:.0f} images/s"
        )
        print(f"ratio end-to-end Spark / single process: {end_to_end / loop_rate:.2f}x")
        print(
            f"ratio steady-state Spark / single process: {steady / loop_rate:.2f}x "
            f"(target >= 0.6 x {cores} cores = {0.6 * cores:.1f}x)"
        )


if __name__ == "__main__":
    main()
