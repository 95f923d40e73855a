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
from melanoma.layout import DatasetLayout, RunLayout
from melanoma.preprocess import plan_images, plan_shards, process_shard
from melanoma.run import Run, RunConfig
from melanoma.store import FileStore

# The generated images are the tests' (tests/synthetic.py): the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.synthetic import lesion_image


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


def prepare(store: FileStore, n: int, sample: Path | None) -> Run:
    """N JPEGs as dataset version ``bench``, split as run ``bench`` (its split stage committed)."""
    jpegs = source_jpegs(sample)
    dataset = DatasetLayout("bench")
    files, rows = {}, []
    for i in range(n):
        data = jpegs[i % len(jpegs)]
        image_id = f"ISIC_{i:07d}"
        relative = DatasetLayout.image_relative(image_id, ".jpg")
        store.put_bytes(dataset.file(relative), data)
        files[relative] = {
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
    store.put_json(dataset.manifest, {"dataset_version": "bench", "files": files})
    run = Run.for_run_id(store, "bench")
    with run.stage("split") as stage:
        stage.put_json(
            "config", run.layout.config, RunConfig("bench", "bench", dataset.manifest).to_json()
        )
        splits = pd.DataFrame(rows).astype({"label": int}).to_csv(index=False).encode()
        stage.put_bytes("splits", run.layout.splits, splits)
    mean_kb = np.mean([len(jpegs[i % len(jpegs)]) for i in range(n)]) / 1024
    print(
        f"prepared {n} JPEGs of 600x450, mean {mean_kb:.0f} KB, from {len(jpegs)} distinct sources"
    )
    return run


def single_process(run: Run, n: int) -> float:
    splits = run.splits().head(n)
    tasks = plan_images(splits, run.store.get_json(run.config().manifest_key), augment_copies=0)
    shard = plan_shards(tasks, RunLayout("loop"), parallelism=1, tasks_per_core=1)
    store = run.store
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
        run = prepare(store, args.images, args.sample)

        loop_rate = single_process(run, min(args.loop_images, args.images))
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
                    "--run-id",
                    "bench",
                    "--params",
                    '{"augment_copies": 0}',
                ],
                env=spark.environment(),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            job_wall = time.perf_counter() - submit_started
        finally:
            spark.stop()
        stats = run.read_json("preprocess", "stats")
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
