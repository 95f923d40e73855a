"""A small preprocessed run (generated images, no Spark), and the same run trained: fixtures
for the training and fault tests (a pytest plugin: see tests/conftest.py)."""

import json

import pytest

from melanoma.config import PipelineConfig
from melanoma.images import PreprocessConfig
from melanoma.ingest import ingest
from melanoma.pipeline import write_split
from melanoma.preprocess import run_preprocessing
from melanoma.run import Run
from melanoma.sources import find_layout
from melanoma.store import FileStore
from tests.synthetic import write_archive

# A few seconds of training on the generated run: enough for the learning tests.
FAST = {
    "backbone": "tiny_cnn",
    "batch_size": 16,
    "phase1_epochs": 6,
    "phase2_epochs": 2,
    "unfreeze_blocks": 1,
    "phase1_learning_rate": 1e-2,
    "phase2_learning_rate": 1e-3,
    "patience": 6,
}

# Melanomas are drawn dark, the rest lighter: a visible pattern a small CNN can learn.
LESIONS = {"nv": 70, "mel": 30, "bkl": 20, "bcc": 10}


@pytest.fixture(scope="session")
def preprocessed_run(tmp_path_factory) -> Run:
    """Run ``t`` with 32x32 shards, two augmented copies per training melanoma."""
    root = tmp_path_factory.mktemp("training")
    store = FileStore(root / "store")
    # Some images without an official mask, as in HAM10000: Grad-CAM falls back to an automatic one.
    archive = write_archive(
        root / "ham10000", LESIONS, seed=1, size=(64, 48), images_without_mask=25
    )
    result = ingest(find_layout(archive.root), store, "test")
    run = Run.for_run_id(store, "t")
    write_split(run, PipelineConfig(split_ratios=(0.6, 0.2, 0.2), seed=0), result.manifest_key)
    run_preprocessing(
        run,
        PreprocessConfig(size=32),
        augment_copies=2,
        seed=0,
        parallelism=1,
        map_shards=lambda f, shards: list(map(f, shards)),
    )
    return run


def copy_run(run: Run, run_id: str) -> Run:
    """A run of its own, ``run_id``, with ``run``'s committed split and preprocessed shards."""
    copy = Run.for_run_id(run.store, run_id)
    old, new = run.layout.prefix, copy.layout.prefix
    for stage in ("split", "preprocess"):
        record = run.commit_record(stage)
        with copy.stage(stage) as writer:
            for name, entry in record["artifacts"].items():
                data = run.read_entry(stage, entry)
                if name == "config":
                    data = json.dumps({**json.loads(data), "run_id": run_id}).encode()
                meta = {k: v for k, v in entry.items() if k not in ("key", "size", "sha256")}
                writer.put_bytes(name, entry["key"].replace(old, new, 1), data, **meta)
            writer.data = record["data"]
    return copy


@pytest.fixture(scope="session")
def evaluated_run(preprocessed_run) -> Run:
    """A run trained with FAST, calibrated and evaluated."""
    from melanoma.evaluation import EvaluationConfig, calibrate_run, evaluate_run
    from training.train import TrainConfig, train_run

    run = copy_run(preprocessed_run, "t-evaluated")
    train_run(run, TrainConfig(**FAST))
    calibrate_run(run, EvaluationConfig(bootstrap_replicates=100))
    evaluate_run(run, EvaluationConfig(bootstrap_replicates=100))
    return run
