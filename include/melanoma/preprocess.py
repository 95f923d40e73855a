"""Preprocessing plan and shard writing, independent of Spark (Spark only distributes the shards).

Output, under ``runs/<run key>/`` (keys from ``melanoma.layout``):

* ``preprocessed/<split>/part-NNNNN.parquet`` — one row per image (and per augmented copy): ``image_id,
  lesion_id, dx, label, split, augmented`` (0 for the original, k for the k-th copy),
  ``height, width`` and ``image`` (raw RGB uint8 bytes, row-major). Parquet because
  executors write it with pyarrow (no TensorFlow on the Spark side), pandas and Spark
  read it for inspection, and row groups stream into ``tf.data`` batch by batch.
* ``preprocessed/stats.json`` — counts per split and class, augmented copies, rejects with reasons,
  throughput and wall time;
* ``commits/preprocess.json`` — written last (the commit record): every shard with its
  size, sha256, row count and split. Training reads only the shards listed there, and
  checks each against it.

Each source image is checked against the dataset manifest's sha256 as it is read: an
image changed in the store after ingest fails the job with its key named.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from melanoma import RESEARCH_NOTICE
from melanoma.dataset_version import COMMITTED_BY, DatasetVersion
from melanoma.images import (
    NO_PARITY,
    ImageDecodeError,
    PreprocessConfig,
    ResolutionParity,
    augment,
    augment_seed,
    preprocess_image,
    typical_jpeg_quality,
)
from melanoma.layout import DatasetLayout, RunLayout
from melanoma.run import Run, StageWriter
from melanoma.splits import SPLITS
from melanoma.store import ObjectStore, open_store, read_manifest, verified_bytes

ROW_GROUP = 128
# At 224x224 a row is 150 KB: 1,024 rows keep a shard near 150 MB in an executor's memory.
MAX_SHARD_ROWS = 1024
# Training images whose headers give the run's JPEG quality (resolution parity): enough for
# a median, few enough for the driver to read in a second.
JPEG_QUALITY_SAMPLE = 64


@dataclass(frozen=True)
class ImageTask:
    image_id: str
    lesion_id: str
    dx: str
    label: int
    split: str
    image: dict[str, Any]  # the stored image: {key, size, sha256} from the dataset manifest
    mask: dict[str, Any] | None  # its official lesion mask, likewise, where there is one
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
    splits: pd.DataFrame, manifest: dict[str, Any], augment_copies: int
) -> list[ImageTask]:
    """One task per image of the split; the training split's minority-class images get ``augment_copies``.

    Image size comes from the dataset MANIFEST (it enables the reduced decode without reading headers).
    """
    dataset = DatasetVersion(manifest)

    train = splits[splits["split"] == "train"]["label"].value_counts()
    minority = int(train.idxmin()) if len(train) == 2 else None
    tasks = []
    for row in splits.sort_values("image_id").itertuples(index=False):
        try:
            relative = dataset.image_relative(row.image_id)
            image = dataset.entry(relative)
        except LookupError:  # not in the version: its read fails, naming the key
            relative = DatasetLayout.image_relative(row.image_id, ".png")
            image = {"key": dataset.layout.file(relative), "size": None, "sha256": None}
        mask = dataset.mask_relative(row.image_id)
        width, height = dataset.pixels(relative) or (0, 0)
        tasks.append(
            ImageTask(
                image_id=row.image_id,
                lesion_id=row.lesion_id,
                dx=row.dx,
                label=int(row.label),
                split=row.split,
                image=image,
                mask=dataset.entry(mask) if mask else None,
                width=width,
                height=height,
                copies=augment_copies if row.split == "train" and int(row.label) == minority else 0,
            )
        )
    return tasks


def train_long_side(tasks: list[ImageTask]) -> int | None:
    """The median long side, in pixels, of the training split's source images (None when
    the manifest records no sizes): the resolution the run's model learns from."""
    sides = [max(t.width, t.height) for t in tasks if t.split == "train" and t.width and t.height]
    return int(np.median(sides)) if sides else None


def training_parity(store: ObjectStore, tasks: list[ImageTask]) -> ResolutionParity:
    """What new images are brought to (``melanoma.images.ResolutionParity``): the training
    images' median long side, from the manifest's sizes, and their typical JPEG quality,
    from the first ``JPEG_QUALITY_SAMPLE`` of them by image id (verified reads, as the
    shards read them: a changed image fails the job here; a missing one is left to its
    shard to reject)."""
    long_side = train_long_side(tasks)
    if long_side is None:
        return NO_PARITY
    sample: list[bytes] = []
    for task in [t for t in tasks if t.split == "train" and t.image["sha256"]]:
        if len(sample) == JPEG_QUALITY_SAMPLE:
            break
        try:
            sample.append(verified_bytes(store, task.image, COMMITTED_BY))
        except FileNotFoundError:
            continue
    return ResolutionParity(long_side, typical_jpeg_quality(sample) if sample else None)


def plan_shards(
    tasks: list[ImageTask], layout: RunLayout, parallelism: int, tasks_per_core: int = 3
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
                shards.append(Shard(split, index, layout.shard(split, index), tuple(current)))
                current, load, index = [], 0, index + 1
        if current:
            shards.append(Shard(split, index, layout.shard(split, index), tuple(current)))
    return shards


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


def preprocessed_image(
    store: ObjectStore, task: ImageTask, config: PreprocessConfig, parity: ResolutionParity
) -> np.ndarray:
    """The task's stored image (and its mask, for a lesion crop), verified and preprocessed;
    ImageDecodeError, cv2.error or FileNotFoundError when it cannot be."""
    import cv2

    mask = None
    if config.lesion_crop and task.mask:
        mask = cv2.imdecode(
            np.frombuffer(verified_bytes(store, task.mask, COMMITTED_BY), np.uint8),
            cv2.IMREAD_GRAYSCALE,
        )
    return preprocess_image(
        verified_bytes(store, task.image, COMMITTED_BY),
        config,
        (task.width, task.height) if task.width else None,
        mask,
        parity=parity,
    )


def shard_row(task: ImageTask, copy: int, pixels: np.ndarray) -> dict[str, Any]:
    """One row of a shard, in ``SCHEMA_FIELDS`` order: the image (copy 0) or an augmented copy."""
    return {
        "image_id": task.image_id,
        "lesion_id": task.lesion_id,
        "dx": task.dx,
        "label": task.label,
        "split": task.split,
        "augmented": copy,
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        "image": np.ascontiguousarray(pixels).tobytes(),
    }


def process_shard(
    store: ObjectStore,
    shard: Shard,
    config: PreprocessConfig,
    seed: int,
    parity: ResolutionParity = NO_PARITY,
) -> dict[str, Any]:
    """Preprocess one shard's images and write its Parquet file to the store (atomically).

    ``parity``: images larger than the training images' median long side are brought to
    it (and to their JPEG quality) first, exactly as predict and external validation treat
    new images (resolution parity); identity where every image has the same size.
    Returns the shard's statistics, including every reject with its reason.
    """
    import cv2
    import pyarrow as pa

    # One OpenCV thread per Spark task: the cluster already runs one task per core.
    cv2.setNumThreads(1)
    started = time.monotonic()
    tally = _ShardTally()
    # The shard is built in memory (shards are capped at MAX_SHARD_ROWS) and uploaded in one
    # atomic put; no temporary file is written and read back.
    data = _parquet_bytes(_shard_rows(store, shard, config, seed, parity, tally))
    sha256 = hashlib.sha256(data).hexdigest()
    store.put_stream(shard.key, pa.BufferReader(data), data.size)
    return {
        "key": shard.key,
        "split": shard.split,
        "rows": tally.written,
        "augmented": tally.augmented,
        "size": data.size,
        "sha256": sha256,
        "counts": dict(tally.counts),
        "rejects": tally.rejects,
        "seconds": round(time.monotonic() - started, 3),
        "source_images": len(shard.tasks),
    }


@dataclass
class _ShardTally:
    """What a shard's rows were: rows and augmented copies written, per split/label, rejects."""

    counts: Counter[str] = field(default_factory=Counter)
    rejects: list[dict[str, str]] = field(default_factory=list)
    written: int = 0
    augmented: int = 0


def _shard_rows(
    store: ObjectStore,
    shard: Shard,
    config: PreprocessConfig,
    seed: int,
    parity: ResolutionParity,
    tally: _ShardTally,
) -> Iterator[dict[str, Any]]:
    """Each image of the shard and its augmented copies, as rows; an image that cannot be
    read or decoded is counted in ``tally.rejects`` with its reason, not raised."""
    import cv2

    for task in shard.tasks:
        try:
            image = preprocessed_image(store, task, config, parity)
        except (ImageDecodeError, cv2.error, FileNotFoundError) as e:
            reason = f"{type(e).__name__}: {e}"
            tally.rejects.append(
                {"image_id": task.image_id, "key": task.image["key"], "reason": reason}
            )
            continue
        versions = [image] + [
            augment(image, augment_seed(seed, task.image_id, k)) for k in range(1, task.copies + 1)
        ]
        for copy, pixels in enumerate(versions):
            tally.counts[f"{task.split}/{task.label}"] += 1
            tally.written += 1
            tally.augmented += copy > 0
            yield shard_row(task, copy, pixels)


def _parquet_bytes(rows: Iterable[dict[str, Any]]) -> Any:
    """The rows as one Parquet file in memory (a pyarrow Buffer), ``ROW_GROUP`` rows a group.

    Deterministic bytes for the same rows: no statistics, fixed row groups, no timestamps.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA_FIELDS}
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, _schema(), compression="none", write_statistics=False) as writer:

        def flush() -> None:
            if columns["image_id"]:
                writer.write_table(pa.table(columns, schema=_schema()))
                for column in columns.values():
                    column.clear()

        for row in rows:
            for name, value in row.items():
                columns[name].append(value)
            if len(columns["image_id"]) >= ROW_GROUP:
                flush()
        flush()
    return sink.getvalue()


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


def read_shards(run: Run, split: str) -> pd.DataFrame:
    """All rows of one split, as the preprocess commit lists them (for tests and inspection)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames = [
        pq.read_table(pa.BufferReader(run.read_entry("preprocess", shard))).to_pandas()
        for shard in run.shards(split)
    ]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(SCHEMA_FIELDS))
    )


def run_preprocessing(
    run: Run,
    config: PreprocessConfig,
    *,
    augment_copies: int,
    seed: int,
    parallelism: int,
    map_shards: Callable[[Callable[[Shard], dict[str, Any]], list[Shard]], list[dict[str, Any]]],
    tasks_per_core: int = 3,
    extra_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage preprocess: plan, process (through ``map_shards``: Spark's map, or the builtin
    for a local run), commit.

    Writes the shards and ``stats.json``, then the commit record last, then deletes shards
    that an earlier attempt with another plan left and nothing lists.
    """
    started = time.monotonic()
    run_config = run.config()
    manifest = read_manifest(run.store, run_config.manifest_key)
    tasks = plan_images(run.splits(), manifest, augment_copies)
    parity = training_parity(run.store, tasks)
    shards = plan_shards(tasks, run.layout, parallelism, tasks_per_core)
    store_url = run.store.url

    def process(shard: Shard) -> dict[str, Any]:
        return process_shard(open_store(store_url), shard, config, seed, parity)

    with run.stage("preprocess") as stage:
        stage.will_write(shard.key for shard in shards)
        results = map_shards(process, shards)
        stats = summarize(
            results,
            config,
            time.monotonic() - started,
            {
                "dataset_version": manifest["dataset_version"],
                "seed": seed,
                "augment_copies_per_minority_image": augment_copies,
                "parallelism": parallelism,
                **parity.record(),
                "notice": RESEARCH_NOTICE,
                **(extra_stats or {}),
            },
        )
        stage.put_json("stats", run.layout.preprocess_stats, stats)
        _record_shards(stage, results)
        stage.data = {
            "dataset_version": manifest["dataset_version"],
            "image_size": config.size,
            "preprocess_config": asdict(config),
            # New images are brought to this resolution and quality before the model's resize.
            **parity.record(),
        }
    _delete_unlisted_shards(run, {r["key"] for r in results})
    return stats


def _delete_unlisted_shards(run: Run, listed: set[str]) -> None:
    """Shards an earlier attempt with another plan left, which the commit does not list."""
    for obj in run.store.list(run.layout.preprocessed + "/"):
        if obj.key.endswith(".parquet") and obj.key not in listed:
            run.store.delete(obj.key)


def _record_shards(stage: StageWriter, results: list[dict[str, Any]]) -> None:
    """Each written shard in the commit record, by split, with its size, digest and rows."""
    for r in results:
        stage.record(
            f"shard/{r['split']}/{r['key'].rsplit('/', 1)[-1]}",
            r["key"],
            r["size"],
            r["sha256"],
            split=r["split"],
            rows=r["rows"],
        )
