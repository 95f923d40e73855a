"""``tf.data`` input from the preprocessing shards (Parquet, listed by the preprocessing MANIFEST)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from melanoma.store import ObjectStore


def shard_keys(manifest: dict[str, Any], split: str) -> list[str]:
    return [s["key"] for s in manifest["shards"] if s["split"] == split]


def iter_shard(store: ObjectStore, key: str) -> Iterator[tuple[np.ndarray, int, int]]:
    """(RGB uint8 image, label, augmented) rows of one shard, one Parquet row group at a time."""
    shard = pq.ParquetFile(pa.BufferReader(store.get_bytes(key)))
    for batch in shard.iter_batches(columns=["image", "label", "augmented", "height", "width"]):
        c = batch.to_pydict()
        for image, label, augmented, height, width in zip(
            c["image"], c["label"], c["augmented"], c["height"], c["width"], strict=True
        ):
            yield np.frombuffer(image, np.uint8).reshape(height, width, 3), label, augmented


def split_rows(store: ObjectStore, manifest: dict[str, Any], split: str) -> pd.DataFrame:
    """Every row's identifiers and labels for ``split``, without pixels (Parquet reads only those columns)."""
    columns = ["image_id", "lesion_id", "dx", "label", "augmented"]
    frames = [
        pq.read_table(pa.BufferReader(store.get_bytes(key)), columns=columns).to_pandas()
        for key in shard_keys(manifest, split)
    ]
    return pd.concat(frames, ignore_index=True)


def split_arrays(
    store: ObjectStore, manifest: dict[str, Any], split: str
) -> tuple[np.ndarray, pd.DataFrame]:
    """All original (non-augmented) images of ``split`` in memory, with their rows; for val/test."""
    images, frames = [], []
    for key in shard_keys(manifest, split):
        table = pq.read_table(pa.BufferReader(store.get_bytes(key))).to_pandas()
        table = table[table["augmented"] == 0]
        images += [
            np.frombuffer(b, np.uint8).reshape(h, w, 3)
            for b, h, w in zip(table["image"], table["height"], table["width"], strict=True)
        ]
        frames.append(table.drop(columns=["image"]))
    return np.stack(images), pd.concat(frames, ignore_index=True)


def shard_dataset(
    store: ObjectStore,
    manifest: dict[str, Any],
    split: str,
    *,
    include_augmented: bool = True,
    shuffle_seed: int | None = None,
    parallel_shards: int = 4,
) -> tf.data.Dataset:
    """Unbatched ``(image uint8 [size, size, 3], label int32)`` examples of ``split``.

    Shards are read ``parallel_shards`` at a time and interleaved; with a seed the
    shard order is shuffled (examples within shards are shuffled by the caller's
    ``Dataset.shuffle``). ``include_augmented=False`` drops preprocessing's offline copies.
    """
    keys = shard_keys(manifest, split)
    if not keys:
        raise ValueError(f"the preprocessing manifest lists no shards for split {split!r}")
    size = int(manifest["image_size"])
    signature = (
        tf.TensorSpec((size, size, 3), tf.uint8),
        tf.TensorSpec((), tf.int32),
        tf.TensorSpec((), tf.int32),
    )

    def read(key: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(
            lambda k: iter_shard(store, k.decode()), output_signature=signature, args=(key,)
        )

    keys_ds = tf.data.Dataset.from_tensor_slices(keys)
    if shuffle_seed is not None:
        keys_ds = keys_ds.shuffle(len(keys), seed=shuffle_seed)
    examples = keys_ds.interleave(
        read,
        cycle_length=min(parallel_shards, len(keys)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=shuffle_seed is None,
    )
    if not include_augmented:
        examples = examples.filter(_is_original)
    return examples.map(_drop_augmented_flag)


def _is_original(image: tf.Tensor, label: tf.Tensor, augmented: tf.Tensor) -> tf.Tensor:
    return tf.equal(augmented, 0)


def _drop_augmented_flag(
    image: tf.Tensor, label: tf.Tensor, augmented: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    return image, label
