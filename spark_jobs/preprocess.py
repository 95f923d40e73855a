"""Spark application: a run's split → training-ready Parquet shards in the object store.

    spark-submit preprocess.py --store-url URL --manifest-key KEY --splits-key KEY --run-id ID [options]

The driver reads the dataset MANIFEST and the run's ``splits.csv`` and plans
shards (``melanoma.preprocess``); each Spark task reads its own images from the
store, preprocesses them and writes one shard. The driver then writes
``stats.json`` and, last, ``MANIFEST.json``; shards left by an earlier attempt
with another plan are deleted after the commit.
"""

from __future__ import annotations

import argparse
import io
import os
import time

import pandas as pd
from pyspark.sql import SparkSession

from melanoma import RESEARCH_NOTICE
from melanoma.images import INTERPOLATIONS, PreprocessConfig
from melanoma.ingest import dataset_prefix
from melanoma.pipeline import run_prefix
from melanoma.preprocess import plan_images, plan_shards, process_shard, summarize
from melanoma.store import open_store, read_manifest

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
    spark_ready = time.monotonic()
    sc = spark.sparkContext

    store = open_store(args.store_url)
    manifest = read_manifest(store, args.manifest_key)
    splits = pd.read_csv(
        io.BytesIO(store.get_bytes(args.splits_key)),
        dtype={"image_id": str, "lesion_id": str, "dx": str},
    )
    output = f"{run_prefix(args.run_id)}/preprocessed"
    tasks = plan_images(
        splits, manifest, dataset_prefix(manifest["dataset_version"]), args.augment_copies
    )
    parallelism = sc.defaultParallelism
    shards = plan_shards(tasks, output, parallelism, args.tasks_per_core)

    store_url, seed = store.url, args.seed

    def run(shard):
        return process_shard(open_store(store_url), shard, config, seed)

    results = sc.parallelize(shards, len(shards)).map(run).collect()
    spark.stop()

    stats = summarize(
        results,
        config,
        time.monotonic() - started,
        {
            "dataset_version": manifest["dataset_version"],
            "splits_key": args.splits_key,
            "seed": seed,
            "spark_startup_seconds": round(spark_ready - started, 2),
            "spark_parallelism": parallelism,
            "notice": RESEARCH_NOTICE,
        },
    )
    store.put_json(f"{output}/stats.json", stats)
    store.put_json(
        f"{output}/MANIFEST.json",
        {
            "dataset_version": manifest["dataset_version"],
            "image_size": config.size,
            "stats_key": f"{output}/stats.json",
            "shards": [{k: r[k] for k in ("key", "split", "rows", "sha256")} for r in results],
        },
    )
    listed = {r["key"] for r in results}
    for obj in store.list(f"{output}/"):
        if obj.key.endswith(".parquet") and obj.key not in listed:
            store.delete(obj.key)  # from an earlier attempt with another plan; nothing lists it
    print(
        f"preprocessed {stats['source_images']} images ({stats['rows_written']} rows, "
        f"{stats['augmented_copies']} augmented, {stats['rejected']} rejected) into {len(results)} shards "
        f"in {stats['wall_seconds']}s ({stats['source_images_per_second']} images/s)"
    )


if __name__ == "__main__":
    main()
