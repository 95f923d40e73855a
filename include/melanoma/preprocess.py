"""Preprocessing plan and shard writing, independent of Spark (Spark only distributes the shards).

Output, under ``runs/<run_id>/preprocessed/``:

* ``<split>/part-NNNNN.parquet`` — one row per image (and per augmented copy): ``image_id,
  lesion_id, dx, label, split, augmented`` (0 for the original, k for the k-th copy),
  ``height, width`` and ``image`` (raw RGB uint8 bytes, row-major). Parquet because
  executors write it with pyarrow (no TensorFlow on the Spark side), pandas and Spark
  read it for inspection, and row groups stream into ``tf.data`` batch by batch.
* ``stats.json`` — counts per split and class, augmented copies, rejects with reasons,
  throughput and wall time;
* ``MANIFEST.json`` — written last (the commit marker): every shard with its sha256,
  row count and split. Training reads only the shards listed there.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from melanoma import RESEARCH_NOTICE
from melanoma.images import (
    ImageDecodeError,
    PreprocessConfig,
    augment,
    augment_seed,
    preprocess_image,
)
from melanoma.ingest import dataset_prefix
from melanoma.splits import SPLITS
from melanoma.store import ObjectStore, open_store, read_manifest

ROW_GROUP = 128
# At 224x224 a row is 150 KB: 1,024 rows keep a shard near 150 MB in an executor's memory.
MAX_SHARD_ROWS = 1024


@dataclass(frozen=True)
class ImageTask:
    image_id: str
    lesion_id: str
    dx: str
    label: int
    split: str
    key: str
    mask_key: str | None
    width: int
    height: int
    copies: int  # extra augmented copies to make of this image


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    key: str
    tasks: tuple[ImageTask, ...]


def plan_images(
    splits: pd.DataFrame, manifest: dict[str, Any], prefix: str, augment_copies: int
) -> list[ImageTask]:
    """One task per image of the split; the training split's minority-class images get ``augment_copies``.

    Image size comes from the dataset MANIFEST (it enables the reduced decode without reading headers).
    """
    files = manifest["files"]
    train = splits[splits["split"] == "train"]["label"].value_counts()
    minority = int(train.idxmin()) if len(train) == 2 else None
    tasks = []
    for row in splits.sort_values("image_id").itertuples(index=False):
        rel = (
            f"images/{row.image_id}.jpg"
            if f"images/{row.image_id}.jpg" in files
            else f"images/{row.image_id}.png"
        )
        info = files.get(rel, {})
        mask_rel = f"masks/{row.image_id}_segmentation.png"
        tasks.append(
            ImageTask(
                image_id=row.image_id,
                lesion_id=row.lesion_id,
                dx=row.dx,
                label=int(row.label),
                split=row.split,
                key=f"{prefix}/{rel}",
                mask_key=f"{prefix}/{mask_rel}" if mask_rel in files else None,
                width=int(info.get("width", 0)),
                height=int(info.get("height", 0)),
                copies=augment_copies if row.split == "train" and int(row.label) == minority else 0,
            )
        )
    return tasks


def plan_shards(
    tasks: list[ImageTask], output_prefix: str, parallelism: int, tasks_per_core: int = 3
) -> list[Shard]:
    """Cut each split into shards so the cluster gets about ``tasks_per_core`` tasks per core.

    Enough tasks to balance load and retry cheaply, few enough that per-task overhead
    (Python worker, store connection, Parquet footer) stays small. Work is counted
    with augmented copies, so the minority-heavy shards are not the stragglers.
    """
    work = sum(1 + t.copies for t in tasks)
    per_shard = min(MAX_SHARD_ROWS, max(64, -(-work // max(1, parallelism * tasks_per_core))))
    shards: list[Shard] = []
    for split in SPLITS:
        current: list[ImageTask] = []
        load = index = 0
        for task in (t for t in tasks if t.split == split):
            current.append(task)
            load += 1 + task.copies
            if load >= per_shard:
                shards.append(_shard(split, index, output_prefix, current))
                current, load, index = [], 0, index + 1
        if current:
            shards.append(_shard(split, index, output_prefix, current))
    return shards


def _shard(split: str, index: int, output_prefix: str, tasks: list[ImageTask]) -> Shard:
    return Shard(split, index, f"{output_prefix}/{split}/part-{index:05d}.parquet", tuple(tasks))


SCHEMA_FIELDS = (
    "image_id",
    "lesion_id",
    "dx",
    "label",
    "split",
    "augmented",
    "height",
    "width",
    "image",
)


def _schema():  # pyarrow imported lazily: the driver-side planning does not need it
    import pyarrow as pa

    return pa.schema(
        [
            ("image_id", pa.string()),
            ("lesion_id", pa.string()),
            ("dx", pa.string()),
            ("label", pa.int8()),
            ("split", pa.string()),
            ("augmented", pa.int8()),
            ("height", pa.int16()),
            ("width", pa.int16()),
            ("image", pa.binary()),
        ]
    )


def process_shard(
    store: ObjectStore, shard: Shard, config: PreprocessConfig, seed: int
) -> dict[str, Any]:
    """Preprocess one shard's images and write its Parquet file to the store (atomically).

    Returns the shard's statistics, including every reject with its reason.
    """
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    # One OpenCV thread per Spark task: the cluster already runs one task per core.
    cv2.setNumThreads(1)
    started = time.monotonic()
    rows: dict[str, list[Any]] = {name: [] for name in SCHEMA_FIELDS}
    counts: Counter[str] = Counter()
    rejects: list[dict[str, str]] = []
    written = augmented = 0
    # The shard is built in memory (shards are capped at MAX_SHARD_ROWS) and uploaded in one
    # atomic put; no temporary file is written and read back.
    sink = pa.BufferOutputStream()
    # Deterministic bytes for the same input: no statistics, fixed row groups, no timestamps.
    with pq.ParquetWriter(sink, _schema(), compression="none", write_statistics=False) as writer:

        def flush() -> None:
            if rows["image_id"]:
                writer.write_table(pa.table(rows, schema=_schema()))
                for column in rows.values():
                    column.clear()

        for task in shard.tasks:
            try:
                data = store.get_bytes(task.key)
                mask = None
                if config.lesion_crop and task.mask_key:
                    mask = cv2.imdecode(
                        np.frombuffer(store.get_bytes(task.mask_key), np.uint8),
                        cv2.IMREAD_GRAYSCALE,
                    )
                image = preprocess_image(
                    data, config, (task.width, task.height) if task.width else None, mask
                )
            except (ImageDecodeError, cv2.error, FileNotFoundError) as e:
                rejects.append(
                    {
                        "image_id": task.image_id,
                        "key": task.key,
                        "reason": f"{type(e).__name__}: {e}",
                    }
                )
                continue
            versions = [image] + [
                augment(image, augment_seed(seed, task.image_id, k))
                for k in range(1, task.copies + 1)
            ]
            for copy, pixels in enumerate(versions):
                for name, value in (
                    ("image_id", task.image_id),
                    ("lesion_id", task.lesion_id),
                    ("dx", task.dx),
                    ("label", task.label),
                    ("split", task.split),
                    ("augmented", copy),
                    ("height", pixels.shape[0]),
                    ("width", pixels.shape[1]),
                    ("image", np.ascontiguousarray(pixels).tobytes()),
                ):
                    rows[name].append(value)
                counts[f"{task.split}/{task.label}"] += 1
                written += 1
                augmented += copy > 0
                if len(rows["image_id"]) >= ROW_GROUP:
                    flush()
        flush()
    data = sink.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    store.put_stream(shard.key, pa.BufferReader(data), data.size)
    return {
        "key": shard.key,
        "split": shard.split,
        "rows": written,
        "augmented": augmented,
        "sha256": sha256,
        "counts": dict(counts),
        "rejects": rejects,
        "seconds": round(time.monotonic() - started, 3),
        "source_images": len(shard.tasks),
    }


def summarize(
    results: list[dict[str, Any]],
    config: PreprocessConfig,
    wall_seconds: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """``stats.json``: per split and class counts, augmented copies, rejects, throughput."""
    per_split: dict[str, dict[str, int]] = {
        s: {"images": 0, "augmented": 0, "label_0": 0, "label_1": 0} for s in SPLITS
    }
    for r in results:
        entry = per_split[r["split"]]
        entry["images"] += r["rows"]
        entry["augmented"] += r["augmented"]
        for split_label, n in r["counts"].items():
            entry[f"label_{split_label.split('/')[1]}"] += n
    rejects = sorted((x for r in results for x in r["rejects"]), key=lambda x: x["image_id"])
    source_images = sum(r["source_images"] for r in results)
    return {
        "config": asdict(config),
        "splits": per_split,
        "source_images": source_images,
        "rows_written": sum(r["rows"] for r in results),
        "augmented_copies": sum(r["augmented"] for r in results),
        "rejects": rejects,
        "rejected": len(rejects),
        "shards": len(results),
        "wall_seconds": round(wall_seconds, 2),
        "source_images_per_second": round(source_images / wall_seconds, 1)
        if wall_seconds
        else None,
        "task_seconds": round(sum(r["seconds"] for r in results), 2),
        **extra,
    }


def read_shards(store: ObjectStore, manifest: dict[str, Any], split: str) -> pd.DataFrame:
    """All rows of one split, as listed by the preprocessing MANIFEST (for tests and inspection)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames = []
    for shard in manifest["shards"]:
        if shard["split"] == split:
            frames.append(pq.read_table(pa.BufferReader(store.get_bytes(shard["key"]))).to_pandas())
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(SCHEMA_FIELDS))
    )


def run_preprocessing(
    store: ObjectStore,
    manifest_key: str,
    splits_key: str,
    output_prefix: str,
    config: PreprocessConfig,
    *,
    augment_copies: int,
    seed: int,
    parallelism: int,
    map_shards: Callable[[Callable[[Shard], dict[str, Any]], list[Shard]], list[dict[str, Any]]],
    tasks_per_core: int = 3,
    extra_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plan, process (through ``map_shards``: Spark's map, or the builtin for a local run), commit.

    Writes ``stats.json``, then ``MANIFEST.json`` last, then deletes shards under
    ``output_prefix`` that an earlier attempt with another plan left and nothing lists.
    """
    started = time.monotonic()
    manifest = read_manifest(store, manifest_key)
    splits = pd.read_csv(
        io.BytesIO(store.get_bytes(splits_key)),
        dtype={"image_id": str, "lesion_id": str, "dx": str},
    )
    tasks = plan_images(
        splits, manifest, dataset_prefix(manifest["dataset_version"]), augment_copies
    )
    shards = plan_shards(tasks, output_prefix, parallelism, tasks_per_core)
    store_url = store.url

    def process(shard: Shard) -> dict[str, Any]:
        return process_shard(open_store(store_url), shard, config, seed)

    results = map_shards(process, shards)
    stats = summarize(
        results,
        config,
        time.monotonic() - started,
        {
            "dataset_version": manifest["dataset_version"],
            "splits_key": splits_key,
            "seed": seed,
            "augment_copies_per_minority_image": augment_copies,
            "parallelism": parallelism,
            "notice": RESEARCH_NOTICE,
            **(extra_stats or {}),
        },
    )
    store.put_json(f"{output_prefix}/stats.json", stats)
    store.put_json(
        f"{output_prefix}/MANIFEST.json",
        {
            "dataset_version": manifest["dataset_version"],
            "image_size": config.size,
            "stats_key": f"{output_prefix}/stats.json",
            "shards": [{k: r[k] for k in ("key", "split", "rows", "sha256")} for r in results],
        },
    )
    listed = {r["key"] for r in results}
    for obj in store.list(f"{output_prefix}/"):
        if obj.key.endswith(".parquet") and obj.key not in listed:
            store.delete(obj.key)
    return stats
