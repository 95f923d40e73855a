"""Spark application: a run's split → training-ready Parquet shards in the object store.

    spark-submit preprocess.py --store-url URL --manifest-key KEY --splits-key KEY --run-id ID [options]

Argument parsing and Spark wiring only: ``melanoma.preprocess.run_preprocessing``
plans shards on the driver, Spark maps them over the executors (each task reads its
own images from the store and writes one shard), and the driver commits
``stats.json`` and, last, ``MANIFEST.json``.
"""

from __future__ import annotations

import argparse
import os
import time

from pyspark.sql import SparkSession

from melanoma.images import INTERPOLATIONS, PreprocessConfig
from melanoma.pipeline import run_prefix
from melanoma.preprocess import run_preprocessing
from melanoma.store import open_store

# Executors open the store themselves, so they need its endpoint and credentials.
FORWARDED_ENV = ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store-url", default=os.environ.get("MELANOMA_STORE_URL"))
    p.add_argument("--manifest-key", required=True, help="the dataset version's MANIFEST.json")
    p.add_argument("--splits-key", required=True, help="the run's splits.csv")
    p.add_argument("--run-id", required=True)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--interpolation", choices=sorted(INTERPOLATIONS), default="area")
    p.add_argument("--no-reduced-decode", action="store_true", help="always decode at full size")
    p.add_argument("--hair-removal", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--lesion-crop", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument(
        "--augment-copies",
        type=int,
        default=2,
        help="extra copies per minority-class training image",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tasks-per-core", type=int, default=3)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args = parse_args(argv)
    config = PreprocessConfig(
        size=args.image_size,
        interpolation=args.interpolation,
        reduced_decode=not args.no_reduced_decode,
        hair_removal=args.hair_removal,
        lesion_crop=args.lesion_crop,
    )
    builder = SparkSession.builder.appName(f"melanoma-preprocess-{args.run_id}")
    for name in FORWARDED_ENV:
        if os.environ.get(name):
            builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    startup = time.monotonic() - started
    stats = run_preprocessing(
        open_store(args.store_url),
        args.manifest_key,
        args.splits_key,
        f"{run_prefix(args.run_id)}/preprocessed",
        config,
        augment_copies=args.augment_copies,
        seed=args.seed,
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
