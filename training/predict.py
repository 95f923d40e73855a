"""Score stored images with a stored model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import pandas as pd

import training.model  # noqa: F401  (registers BackbonePreprocess for deserialisation)
from melanoma.store import ObjectStore, read_manifest
from training.data import split_arrays


def load_model(store: ObjectStore, model_key: str) -> keras.Model:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        store.get_file(model_key, path)
        return keras.saving.load_model(path, compile=False)


def score_split(
    store: ObjectStore, model_key: str, run_prefix: str, split: str, batch_size: int = 64
) -> pd.DataFrame:
    """The model's probabilities for a run's preprocessed ``split`` (original images only).

    Columns: image_id, lesion_id, dx, label, probability, as in ``predictions/<split>.csv``.
    """
    model = load_model(store, model_key)
    manifest = read_manifest(store, f"{run_prefix}/preprocessed/MANIFEST.json")
    size = int(model.input_shape[1])
    if size != int(manifest["image_size"]):
        raise ValueError(
            f"{model_key} takes {size}px images; {run_prefix} was preprocessed at "
            f"{manifest['image_size']}px"
        )
    images, rows = split_arrays(store, manifest, split)
    probabilities = model.predict(images, batch_size=batch_size, verbose=0).reshape(-1)
    return rows[["image_id", "lesion_id", "dx", "label"]].assign(
        probability=probabilities.astype(float)
    )
