"""Training end to end on generated images: the model learns the visible signal, for each strategy."""

import io

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.training.conftest import FAST, copy_run
from training.data import split_arrays
from training.train import IMBALANCE_STRATEGIES, TrainConfig, class_weights, train_run


@pytest.mark.parametrize("strategy", [s for s in IMBALANCE_STRATEGIES if s != "none"])
def test_model_learns_the_pattern_with_each_imbalance_strategy(preprocessed_run, strategy):
    store, run = preprocessed_run
    prefix = copy_run(store, run, f"{run}-{strategy}")  # a run of its own per strategy

    key = train_run(store, prefix, TrainConfig(**FAST, imbalance=strategy))
    summary = store.get_json(key)["summary"]
    assert summary["val_auroc_final"] > 0.9, summary
    config = store.get_json(f"{prefix}/model/training_config.json")
    assert config["config"]["imbalance"] == strategy
    if strategy == "oversample":
        assert config["train_positives"] > 0 and config["train_images"] > len(
            store.get_json(f"{prefix}/preprocessed/stats.json")["splits"]["train"]
        )


def test_outputs_predictions_and_saved_model_agree(preprocessed_run):
    store, run = preprocessed_run
    key = train_run(store, run, TrainConfig(**FAST))
    outputs = store.get_json(key)["outputs"]
    history = store.get_json(outputs["history"])
    assert len(history["phase1"]["loss"]) >= 1 and len(history["phase2"]["val_auroc"]) >= 1
    manifest = store.get_json(f"{run}/preprocessed/MANIFEST.json")
    images, rows = split_arrays(store, manifest, "test")
    predictions = pd.read_csv(io.BytesIO(store.get_bytes(outputs["predictions_test"])))
    assert list(predictions.columns) == ["image_id", "lesion_id", "dx", "label", "probability"]
    assert list(predictions["image_id"]) == list(rows["image_id"])
    assert predictions["probability"].between(0, 1).all()
    assert roc_auc_score(predictions["label"], predictions["probability"]) > 0.9

    store.get_file(outputs["model"], store.root / "model.keras")
    model = keras.saving.load_model(store.root / "model.keras")
    np.testing.assert_allclose(
        model.predict(images, verbose=0).reshape(-1), predictions["probability"], atol=1e-5
    )

    # A retried task resumes from the store's checkpoints instead of training again.
    store.delete(key)
    train_run(store, run, TrainConfig(**FAST))
    assert store.get_json(outputs["history"])["summary"]["timing"] == {"phase1": {"resumed": True}}


def test_class_weights():
    labels = np.array([0] * 90 + [1] * 10)
    assert class_weights(TrainConfig(), labels) == pytest.approx({0: 100 / 180, 1: 5.0})
    assert class_weights(TrainConfig(class_weight="0.5,28.5"), labels) == {0: 0.5, 1: 28.5}
    assert class_weights(TrainConfig(imbalance="focal"), labels) is None
    with pytest.raises(ValueError, match="w0,w1"):
        TrainConfig(class_weight="heavy")
