"""``tf.data`` input from the preprocessing shards (Parquet), as the preprocess commit lists them.

Every shard is checked against its recorded size and sha256 as it is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from melanoma import clinical
from melanoma.ham10000 import DX_INDEX
from melanoma.run import Run


def read_shard(run: Run, entry: dict[str, Any]) -> pa.BufferReader:
    return pa.BufferReader(run.read_entry("preprocess", entry))


TARGETS = ("label", "dx")


def iter_shard(
    run: Run,
    entry: dict[str, Any],
    target: str = "label",
    metadata: Mapping[str, np.ndarray] | None = None,
) -> Iterator[tuple[Any, int, int]]:
    """(RGB uint8 image, target, augmented) rows of one shard, one Parquet row group at a
    time. ``target``: the task's 0/1 ``label``, or ``dx`` as its index in ``DX_CODES``.
    With ``metadata`` (image id → vector) the first item is (image, its vector)."""
    shard = pq.ParquetFile(read_shard(run, entry))
    columns = ["image", target, "augmented", "height", "width", "image_id"]
    for batch in shard.iter_batches(columns=columns):
        c = batch.to_pydict()
        targets = c[target] if target == "label" else [DX_INDEX[dx] for dx in c["dx"]]
        for image, y, augmented, height, width, image_id in zip(
            c["image"], targets, c["augmented"], c["height"], c["width"], c["image_id"], strict=True
        ):
            pixels = np.frombuffer(image, np.uint8).reshape(height, width, 3)
            if metadata is None:
                yield pixels, y, augmented
            else:
                yield (pixels, metadata.get(image_id, clinical.absent(1)[0])), y, augmented


def run_metadata(run: Run, required: bool = True) -> dict[str, np.ndarray]:
    """Every image's metadata vector (``melanoma.clinical``), from the run's splits.csv.

    Splits without age, sex and body site (written before they carried them, or from
    metadata without them) give ValueError when ``required`` (metadata fusion has nothing
    to fuse), else no vectors: every image is then scored as without metadata.
    """
    splits = run.splits()
    if clinical.has_columns(splits):
        return clinical.vectors_by_image(splits)
    if not required:
        return {}
    raise ValueError(
        f"{run.store.url}/{run.layout.splits} has no {', '.join(clinical.COLUMNS)} columns: "
        "metadata fusion needs them (rerun the split stage, or turn metadata_fusion off)"
    )


def metadata_for(run: Run, image_ids: Any) -> np.ndarray:
    """The metadata vectors of ``image_ids``, in order; absent (all zeros) for an image
    the run's splits give none."""
    return clinical.matrix(image_ids, run_metadata(run, required=False))


def split_rows(run: Run, split: str) -> pd.DataFrame:
    """Every row's identifiers and labels for ``split``, without pixels (Parquet reads only those columns)."""
    columns = ["image_id", "lesion_id", "dx", "label", "augmented"]
    frames = [
        pq.read_table(read_shard(run, entry), columns=columns).to_pandas()
        for entry in run.shards(split)
    ]
    return pd.concat(frames, ignore_index=True)


def split_arrays(run: Run, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """All original (non-augmented) images of ``split`` in memory, with their rows; for val/test."""
    images, frames = [], []
    for entry in run.shards(split):
        table = pq.read_table(read_shard(run, entry)).to_pandas()
        table = table[table["augmented"] == 0]
        images += [
            np.frombuffer(b, np.uint8).reshape(h, w, 3)
            for b, h, w in zip(table["image"], table["height"], table["width"], strict=True)
        ]
        frames.append(table.drop(columns=["image"]))
    return np.stack(images), pd.concat(frames, ignore_index=True)


def shard_dataset(
    run: Run,
    split: str,
    *,
    include_augmented: bool = True,
    shuffle_seed: int | None = None,
    parallel_shards: int = 4,
    target: str = "label",
    metadata: Mapping[str, np.ndarray] | None = None,
) -> tf.data.Dataset:
    """Unbatched ``(image uint8 [height, width, 3], target int32)`` examples of ``split``;
    ``target`` is the task's ``label`` or the ``dx`` index (the multiclass head's). With
    ``metadata`` (image id → vector) the inputs are ``{"image": ..., "metadata": ...}``.

    Shards are read ``parallel_shards`` at a time and interleaved; with a seed the
    shard order is shuffled (examples within shards are shuffled by the caller's
    ``Dataset.shuffle``). ``include_augmented=False`` drops preprocessing's offline copies.
    """
    entries = run.shards(split)
    if not entries:
        raise ValueError(f"{run}: the preprocess commit lists no shards for split {split!r}")
    height, width = run.preprocess_config().shape
    image = tf.TensorSpec((height, width, 3), tf.uint8)
    inputs = image if metadata is None else (image, tf.TensorSpec((clinical.WIDTH,), tf.float32))
    signature = (inputs, tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32))

    def read(index: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(
            lambda i: iter_shard(run, entries[int(i)], target, metadata),
            output_signature=signature,
            args=(index,),
        )

    indices = tf.data.Dataset.range(len(entries))
    if shuffle_seed is not None:
        indices = indices.shuffle(len(entries), seed=shuffle_seed)
    examples = indices.interleave(
        read,
        cycle_length=min(parallel_shards, len(entries)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=shuffle_seed is None,
    )
    if not include_augmented:
        examples = examples.filter(_is_original)
    return examples.map(_drop_augmented_flag)


def _is_original(image: tf.Tensor, label: tf.Tensor, augmented: tf.Tensor) -> tf.Tensor:
    return tf.equal(augmented, 0)


def _drop_augmented_flag(
    inputs: Any, label: tf.Tensor, augmented: tf.Tensor
) -> tuple[Any, tf.Tensor]:
    """(inputs, label): the image, or the model's named inputs ``{"image", "metadata"}``."""
    if isinstance(inputs, tuple):
        return {"image": inputs[0], "metadata": inputs[1]}, label
    return inputs, label
