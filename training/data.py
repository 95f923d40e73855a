"""``tf.data`` input from the preprocessing shards (Parquet, listed by the preprocessing MANIFEST)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from melanoma.store import ObjectStore


def shard_keys(manifest: dict[str, Any], split: str) -> list[str]:
    return [s["key"] for s in manifest["shards"] if s["split"] == split]


def iter_shard(store: ObjectStore, key: str) -> Iterator[tuple[np.ndarray, int]]:
    """(RGB uint8 image, label) rows of one shard, one Parquet row group at a time."""
    shard = pq.ParquetFile(pa.BufferReader(store.get_bytes(key)))
    for batch in shard.iter_batches(columns=["image", "label", "height", "width"]):
        columns = batch.to_pydict()
        for image, label, height, width in zip(
            columns["image"], columns["label"], columns["height"], columns["width"], strict=True
        ):
            yield np.frombuffer(image, np.uint8).reshape(height, width, 3), label


def shard_dataset(
    store: ObjectStore,
    manifest: dict[str, Any],
    split: str,
    *,
    shuffle_seed: int | None = None,
    parallel_shards: int = 4,
) -> tf.data.Dataset:
    """Unbatched ``(image uint8 [size, size, 3], label int32)`` examples of ``split``.

    Shards are read ``parallel_shards`` at a time and interleaved; with a seed the
    shard order is shuffled (examples within shards are shuffled by the caller's
    ``Dataset.shuffle``).
    """
    keys = shard_keys(manifest, split)
    if not keys:
        raise ValueError(f"the preprocessing manifest lists no shards for split {split!r}")
    size = int(manifest["image_size"])
    signature = (
        tf.TensorSpec((size, size, 3), tf.uint8),
        tf.TensorSpec((), tf.int32),
    )
    keys_ds = tf.data.Dataset.from_tensor_slices(keys)
    if shuffle_seed is not None:
        keys_ds = keys_ds.shuffle(len(keys), seed=shuffle_seed)
    return keys_ds.interleave(
        lambda key: tf.data.Dataset.from_generator(
            lambda k: iter_shard(store, k.decode()), output_signature=signature, args=(key,)
        ),
        cycle_length=min(parallel_shards, len(keys)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=shuffle_seed is None,
    )
