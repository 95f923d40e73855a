"""Preprocessing plan and shard writing without Spark, on the file store."""

import hashlib

import pandas as pd
import pytest

from melanoma.ham10000 import apply_label_task
from melanoma.images import NO_PARITY, PreprocessConfig, ResolutionParity, preprocess_image
from melanoma.ingest import ingest
from melanoma.layout import DatasetLayout, RunLayout
from melanoma.preprocess import (
    ImageTask,
    plan_images,
    plan_shards,
    process_shard,
    read_shards,
    summarize,
    train_long_side,
    training_parity,
)
from melanoma.run import Run
from melanoma.sources import find_layout
from melanoma.splits import split_by_lesion
from melanoma.store import ArtifactCorruptError

OUT = RunLayout("out")


@pytest.fixture
def ingested(mini_archive, file_store):
    result = ingest(find_layout(mini_archive.root), file_store, "test")
    meta = pd.read_csv(file_store.root / DatasetLayout(result.dataset_version).metadata)
    splits = split_by_lesion(apply_label_task(meta, "mel_vs_rest"), seed=0)
    return result.manifest, splits


def test_only_minority_training_images_get_augmented_copies(ingested):
    manifest, splits = ingested
    tasks = plan_images(splits, manifest, augment_copies=3)
    by_id = {t.image_id: t for t in tasks}
    for row in splits.itertuples():
        expected = 3 if (row.split == "train" and row.label == 1) else 0  # melanoma is the minority
        assert by_id[row.image_id].copies == expected
    assert all(t.width == 120 and t.height == 90 for t in tasks), "sizes come from the MANIFEST"


def test_shards_stay_within_a_split_and_cover_every_image_once(ingested):
    manifest, splits = ingested
    tasks = plan_images(splits, manifest, augment_copies=2)
    shards = plan_shards(tasks, OUT, parallelism=2, tasks_per_core=3)
    assert all(
        len({t.split for t in s.tasks}) == 1 and s.key == OUT.shard(s.split, s.index)
        for s in shards
    )
    covered = [t.image_id for s in shards for t in s.tasks]
    assert sorted(covered) == sorted(splits["image_id"])
    assert 3 <= len(shards) <= 12  # neither one task per image nor one for all
    assert len({s.key for s in shards}) == len(shards)


def test_shard_rows_rejects_and_identical_bytes_on_rerun(ingested, file_store):
    manifest, splits = ingested
    # An image that ingest accepted but that does not decode: its manifest entry matches it.
    broken_id = sorted(splits.loc[splits["split"] == "train", "image_id"])[0]
    relative = DatasetLayout.image_relative(broken_id, ".jpg")
    data = b"\xff\xd8\xff not an image"
    file_store.put_bytes(DatasetLayout(manifest["dataset_version"]).file(relative), data)
    manifest["files"][relative] |= {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    tasks = plan_images(splits, manifest, augment_copies=2)
    train = [t for t in tasks if t.split == "train"]
    broken = next(t for t in train if t.image_id == broken_id)
    shard = plan_shards(train, OUT, parallelism=1, tasks_per_core=1)[0]
    config = PreprocessConfig(size=48)
    first = process_shard(file_store, shard, config, seed=1)
    digest = hashlib.sha256(file_store.get_bytes(shard.key)).hexdigest()
    second = process_shard(file_store, shard, config, seed=1)
    assert first["sha256"] == second["sha256"] == digest, "a rerun must write identical shards"

    assert first["rejects"] == [
        {
            "image_id": broken.image_id,
            "key": broken.image["key"],
            "reason": "ImageDecodeError: undecodable image",
        }
    ]
    good = [t for t in shard.tasks if t is not broken]
    assert first["rows"] == sum(1 + t.copies for t in good)
    assert first["augmented"] == sum(t.copies for t in good)

    run = Run(file_store, OUT)
    with run.stage("preprocess") as stage:
        stage.record("shard/train/0", first["key"], first["size"], first["sha256"], split="train")
    rows = read_shards(run, "train")
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


def test_an_image_changed_after_ingest_stops_preprocessing_with_its_key(ingested, file_store):
    manifest, splits = ingested
    train = [t for t in plan_images(splits, manifest, augment_copies=0) if t.split == "train"]
    changed = train[1]
    file_store.put_bytes(changed.image["key"], file_store.get_bytes(train[0].image["key"]))
    shard = plan_shards(train, OUT, parallelism=1, tasks_per_core=1)[0]
    with pytest.raises(ArtifactCorruptError, match=changed.image["key"]):
        process_shard(file_store, shard, PreprocessConfig(size=48), seed=1)
    assert not file_store.exists(shard.key)


def test_the_training_resolution_is_the_median_long_side_of_the_training_images():
    def task(split: str, width: int, height: int) -> ImageTask:
        return ImageTask("ISIC_0000000", "L", "nv", 0, split, {}, None, width, height, 0)

    tasks = [task("train", 200, 150), task("train", 150, 200), task("train", 600, 450)]
    tasks += [task("test", 1024, 768), task("train", 0, 0)]  # another split; size unknown
    assert train_long_side(tasks) == 200
    assert train_long_side([task("train", 0, 0)]) is None


def test_preprocessing_brings_larger_images_to_the_training_resolution_as_predict_does(
    ingested, file_store
):
    manifest, splits = ingested
    tasks = [t for t in plan_images(splits, manifest, augment_copies=0) if t.split == "test"]
    shard = plan_shards(tasks, OUT, parallelism=1, tasks_per_core=1)[0]
    config = PreprocessConfig(size=48)
    run = Run(file_store, OUT)

    def rows(parity: ResolutionParity):
        result = process_shard(file_store, shard, config, 1, parity)
        with run.stage("preprocess") as stage:
            stage.record(
                "shard/test/0", result["key"], result["size"], result["sha256"], split="test"
            )
        return read_shards(run, "test").set_index("image_id")["image"]

    # The generated images are 120x90: at their own median nothing changes; with a smaller
    # training resolution each is shrunk (and saved at the training quality) first, exactly
    # as predict's path treats a new one.
    assert rows(ResolutionParity(120, 90)).equals(rows(NO_PARITY))
    shrunk = rows(ResolutionParity(60, 75))
    task = shard.tasks[0]
    data = file_store.get_bytes(task.image["key"])
    expected = preprocess_image(data, config, (120, 90), parity=ResolutionParity(60, 75))
    assert shrunk[task.image_id] == expected.tobytes()
    assert shrunk[task.image_id] != rows(ResolutionParity(60))[task.image_id]
    assert shrunk[task.image_id] != rows(NO_PARITY)[task.image_id]


def test_a_run_records_its_training_images_long_side_and_jpeg_quality(ingested, file_store):
    """From the manifest's sizes and the headers of the first training images (the
    generated archive saves JPEGs at quality 90); a training image missing from the store
    is left to its shard to reject."""
    manifest, splits = ingested
    tasks = plan_images(splits, manifest, augment_copies=0)
    assert training_parity(file_store, tasks) == ResolutionParity(120, 90)
    first = next(t for t in tasks if t.split == "train")
    file_store.delete(first.image["key"])
    assert training_parity(file_store, tasks) == ResolutionParity(120, 90)
    assert training_parity(file_store, [t for t in tasks if t.split == "test"]) == NO_PARITY


def test_a_failed_rerun_of_preprocessing_keeps_the_committed_shards_readable(preprocessed_run):
    """The executors write shards under the committed shards' keys; an attempt that dies
    after some of them were written leaves the last commit whole, byte for byte."""
    from melanoma.preprocess import run_preprocessing
    from melanoma.run import PREVIOUS
    from tests.trained_runs import copy_run

    run = copy_run(preprocessed_run, "t-preprocess-rerun")
    record = run.commit_record("preprocess")
    before = {split: read_shards(run, split) for split in ("train", "val", "test")}

    def dies_after_one_shard(process, shards):
        process(shards[0])  # written under a committed key, with another seed's bytes
        raise RuntimeError("executor lost")

    with pytest.raises(RuntimeError, match="executor lost"):
        run_preprocessing(
            run,
            PreprocessConfig(size=32),
            augment_copies=2,
            seed=7,
            parallelism=1,
            map_shards=dies_after_one_shard,
        )
    assert run.commit_record("preprocess") == record
    for split, rows in before.items():  # every shard verified against its recorded sha256
        pd.testing.assert_frame_equal(read_shards(run, split), rows)
    assert not [o.key for o in run.store.list(run.layout.prefix + "/") if o.key.endswith(PREVIOUS)]
