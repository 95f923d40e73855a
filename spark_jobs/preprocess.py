"""Spark application: a run's split → training-ready Parquet shards in the object store.

    spark-submit preprocess.py --store-url URL --run-id ID --params '{"image_size": 224}'

Argument parsing and Spark wiring only: ``melanoma.preprocess.run_preprocessing``
reads the run's committed split, plans shards on the driver, Spark maps them over the
executors (each task reads its own images from the store, checks them against the
dataset manifest and writes one shard), and the driver writes ``stats.json`` and, last,
the stage's commit record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from pyspark.sql import SparkSession

from melanoma.params import run_stage_configs
from melanoma.preprocess import run_preprocessing
from melanoma.run import Run
from melanoma.store import open_store

# Executors open the store themselves, so they need its endpoint and credentials.
FORWARDED_ENV = ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store-url", default=os.environ.get("MELANOMA_STORE_URL"))
    p.add_argument("--run-id", required=True)
    p.add_argument(
        "--params",
        default="{}",
        help="the DAG's params as JSON (image_size, interpolation, hair_removal, lesion_crop, "
        "augment_copies, split_seed); absent ones take their defaults",
    )
    p.add_argument("--no-reduced-decode", action="store_true", help="always decode at full size")
    p.add_argument("--tasks-per-core", type=int, default=3)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args = parse_args(argv)
    run = Run.for_run_id(open_store(args.store_url), args.run_id)
    # With what the split recorded, as every task resolves it: from the params alone, an
    # empty image_size took the gpu profile's 224 in a cpu run.
    settings = run_stage_configs(json.loads(args.params), run).preprocess
    config = dataclasses.replace(settings.config, reduced_decode=not args.no_reduced_decode)
    builder = SparkSession.builder.appName(f"melanoma-preprocess-{args.run_id}")
    for name in FORWARDED_ENV:
        if os.environ.get(name):
            builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    startup = time.monotonic() - started
    stats = run_preprocessing(
        run,
        config,
        augment_copies=settings.augment_copies,
        seed=settings.seed,
        parallelism=sc.defaultParallelism,
        map_shards=lambda process, shards: (
            sc.parallelize(shards, len(shards)).map(process).collect()
        ),
        tasks_per_core=args.tasks_per_core,
        extra_stats={"spark_startup_seconds": round(startup, 2)},
    )
    spark.stop()
    print(
        f"preprocessed {stats['source_images']} images ({stats['rows_written']} rows, "
        f"{stats['augmented_copies']} augmented, {stats['rejected']} rejected) into {stats['shards']} shards "
        f"in {stats['wall_seconds']}s ({stats['source_images_per_second']} images/s)"
    )


if __name__ == "__main__":
    main()
