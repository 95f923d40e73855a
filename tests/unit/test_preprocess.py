"""Preprocessing plan and shard writing without Spark, on the file store."""

import hashlib

import pandas as pd
import pytest

from melanoma.ham10000 import apply_label_task
from melanoma.images import PreprocessConfig
from melanoma.ingest import dataset_prefix, ingest
from melanoma.preprocess import plan_images, plan_shards, process_shard, read_shards, summarize
from melanoma.sources import find_layout
from melanoma.splits import split_by_lesion


@pytest.fixture
def ingested(mini_archive, file_store):
    result = ingest(find_layout(mini_archive.root), file_store, "test")
    meta = pd.read_csv(file_store.root / dataset_prefix(result.dataset_version) / "metadata.csv")
    splits = split_by_lesion(apply_label_task(meta, "mel_vs_rest"), seed=0)
    return result.manifest, splits


def test_only_minority_training_images_get_augmented_copies(ingested):
    manifest, splits = ingested
    tasks = plan_images(
        splits, manifest, dataset_prefix(manifest["dataset_version"]), augment_copies=3
    )
    by_id = {t.image_id: t for t in tasks}
    for row in splits.itertuples():
        expected = 3 if (row.split == "train" and row.label == 1) else 0  # melanoma is the minority
        assert by_id[row.image_id].copies == expected
    assert all(t.width == 120 and t.height == 90 for t in tasks), "sizes come from the MANIFEST"


def test_shards_stay_within_a_split_and_cover_every_image_once(ingested):
    manifest, splits = ingested
    tasks = plan_images(splits, manifest, "p", augment_copies=2)
    shards = plan_shards(tasks, "out", parallelism=2, tasks_per_core=3)
    assert all(
        len({t.split for t in s.tasks}) == 1 and s.key.startswith(f"out/{s.split}/part-")
        for s in shards
    )
    covered = [t.image_id for s in shards for t in s.tasks]
    assert sorted(covered) == sorted(splits["image_id"])
    assert 3 <= len(shards) <= 12  # neither one task per image nor one for all
    assert len({s.key for s in shards}) == len(shards)


def test_shard_rows_rejects_and_identical_bytes_on_rerun(ingested, file_store):
    manifest, splits = ingested
    prefix = dataset_prefix(manifest["dataset_version"])
    tasks = plan_images(splits, manifest, prefix, augment_copies=2)
    train = [t for t in tasks if t.split == "train"]
    broken = train[0]
    file_store.put_bytes(broken.key, b"\xff\xd8\xff not an image")  # corrupt one stored image
    shard = plan_shards(train, "out", parallelism=1, tasks_per_core=1)[0]
    config = PreprocessConfig(size=48)
    first = process_shard(file_store, shard, config, seed=1)
    digest = hashlib.sha256(file_store.get_bytes(shard.key)).hexdigest()
    second = process_shard(file_store, shard, config, seed=1)
    assert first["sha256"] == second["sha256"] == digest, "a rerun must write identical shards"

    assert first["rejects"] == [
        {
            "image_id": broken.image_id,
            "key": broken.key,
            "reason": "ImageDecodeError: undecodable image",
        }
    ]
    good = [t for t in shard.tasks if t is not broken]
    assert first["rows"] == sum(1 + t.copies for t in good)
    assert first["augmented"] == sum(t.copies for t in good)

    rows = read_shards(file_store, {"shards": [first]}, "train")
    assert len(rows) == first["rows"]
    assert set(rows["height"]) == {48} and all(len(b) == 48 * 48 * 3 for b in rows["image"])
    assert (
        rows.groupby("image_id")["augmented"].max() == rows.groupby("image_id")["label"].first() * 2
    ).all()
    stats = summarize([first], config, 1.0, {})
    assert stats["rejected"] == 1 and stats["splits"]["train"]["images"] == first["rows"]
    assert (
        stats["splits"]["train"]["label_1"] + stats["splits"]["train"]["label_0"] == first["rows"]
    )
