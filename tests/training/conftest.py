"""A small preprocessed run (generated images, no Spark) for the training tests."""

import io

import pandas as pd
import pytest

from melanoma.ham10000 import apply_label_task
from melanoma.images import PreprocessConfig
from melanoma.ingest import dataset_prefix, ingest
from melanoma.preprocess import run_preprocessing
from melanoma.sources import find_layout
from melanoma.splits import split_by_lesion, split_summary
from melanoma.store import FileStore
from melanoma.synthetic import write_archive

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
def preprocessed_run(tmp_path_factory) -> tuple[FileStore, str]:
    """(store, run prefix) with 32x32 shards, two augmented copies per training melanoma."""
    root = tmp_path_factory.mktemp("training")
    store = FileStore(root / "store")
    # Some images without an official mask, as in HAM10000: Grad-CAM falls back to an automatic one.
    archive = write_archive(
        root / "ham10000", LESIONS, seed=1, size=(64, 48), images_without_mask=25
    )
    result = ingest(find_layout(archive.root), store, "test")
    meta = pd.read_csv(
        io.BytesIO(store.get_bytes(f"{dataset_prefix(result.dataset_version)}/metadata.csv"))
    )
    splits = split_by_lesion(apply_label_task(meta, "mel_vs_rest"), ratios=(0.6, 0.2, 0.2), seed=0)
    store.put_bytes("runs/t/splits.csv", splits.to_csv(index=False).encode())
    store.put_json(
        "runs/t/splits_summary.json",
        {
            "label_task": "mel_vs_rest",
            "seed": 0,
            "ratios": [0.6, 0.2, 0.2],
            "splits": split_summary(splits),
        },
    )
    store.put_json(
        "runs/t/config.json",
        {
            "run_id": "t",
            "dataset_version": result.dataset_version,
            "manifest_key": result.manifest_key,
            "config": {"label_task": "mel_vs_rest", "seed": 0},
        },
    )
    run_preprocessing(
        store,
        result.manifest_key,
        "runs/t/splits.csv",
        "runs/t/preprocessed",
        PreprocessConfig(size=32),
        augment_copies=2,
        seed=0,
        parallelism=1,
        map_shards=lambda f, shards: list(map(f, shards)),
    )
    return store, "runs/t"


def copy_run(store: FileStore, run: str, prefix: str) -> str:
    """A run of its own at ``prefix`` with ``run``'s config and preprocessed shards."""
    for obj in store.list(f"{run}/"):
        if obj.key.startswith((f"{run}/preprocessed/", f"{run}/config.json", f"{run}/splits")):
            store.put_bytes(obj.key.replace(run, prefix, 1), store.get_bytes(obj.key))
    manifest = store.get_json(f"{prefix}/preprocessed/MANIFEST.json")
    manifest["shards"] = [
        {**s, "key": s["key"].replace(run, prefix, 1)} for s in manifest["shards"]
    ]
    store.put_json(f"{prefix}/preprocessed/MANIFEST.json", manifest)
    return prefix


@pytest.fixture(scope="session")
def evaluated_run(preprocessed_run) -> tuple[FileStore, str]:
    """(store, prefix) of a run trained with FAST, calibrated and evaluated."""
    from melanoma.evaluation import EvaluationConfig, calibrate_run, evaluate_run
    from training.train import TrainConfig, train_run

    store, run = preprocessed_run
    prefix = copy_run(store, run, f"{run}-evaluated")
    train_run(store, prefix, TrainConfig(**FAST))
    calibrate_run(store, prefix, EvaluationConfig(bootstrap_replicates=100))
    evaluate_run(store, prefix, EvaluationConfig(bootstrap_replicates=100))
    return store, prefix
