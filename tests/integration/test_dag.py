"""The DAG end to end with `airflow dags test` (SQLite metadata DB), the real Spark standalone
cluster, and an S3 store on moto's server."""

import io
import json
import subprocess

import pandas as pd
import pytest

from melanoma.embedded import airflow_environment, migrate_airflow_db
from melanoma.store import read_manifest
from tests.conftest import MOTO_KEYS, REPO_ROOT


@pytest.fixture
def airflow_env(tmp_path, s3_store, moto_endpoint, spark_cluster):
    env = airflow_environment(REPO_ROOT, spark_cluster, s3_store.url, home=tmp_path / "airflow")
    env.update(
        MOTO_KEYS,
        S3_ENDPOINT_URL=moto_endpoint,
        MELANOMA_CACHE_DIR=str(tmp_path / "cache"),
        MELANOMA_SCHEDULE="@weekly",
    )
    migrate_airflow_db(env)
    return env


def dags_test(env, conf):
    done = subprocess.run(
        ["airflow", "dags", "test", "melanoma_pipeline", "--conf", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    return done.stdout + done.stderr


def test_dag_ingests_splits_and_second_run_reuses_the_version(
    airflow_env, mini_archive, s3_store, tmp_path
):
    conf = {
        "source": str(mini_archive.root),
        "backbone": "tiny_cnn",
        "pretrained_weights": "none",
        "phase1_epochs": 2,
        "phase2_epochs": 1,
        "unfreeze_blocks": 1,
        "batch_size": 16,
        "label_task": "mel_vs_rest",
        "split_seed": 3,
        "image_size": 32,
        "augment_copies": 1,
        "bootstrap_replicates": 200,
        "gradcam_per_outcome": 1,
        "gradcam_random": 2,
        # The generated archive's first image part, as if it were an external set.
        "external_validation": True,
        "external_images": str(mini_archive.root / "HAM10000_images_part_1.zip"),
        "external_labels": str(mini_archive.root / "HAM10000_metadata.csv"),
    }

    first_log = dags_test(airflow_env, conf)
    manifests = [
        o.key for o in s3_store.list("datasets/ham10000/") if o.key.endswith("MANIFEST.json")
    ]
    assert len(manifests) == 1
    manifest = s3_store.get_json(manifests[0])
    assert manifest["counts"]["images"] == len(mini_archive.metadata)

    runs = sorted({o.key.split("/")[1] for o in s3_store.list("runs/")})
    assert len(runs) == 1
    split = pd.read_csv(io.BytesIO(s3_store.get_bytes(f"runs/{runs[0]}/splits.csv")))
    assert list(split.columns) == ["image_id", "lesion_id", "dx", "label", "split"]
    assert len(split) == len(mini_archive.metadata)
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    assert split["label"].eq(split["dx"].eq("mel").astype(int)).all()
    config = s3_store.get_json(f"runs/{runs[0]}/config.json")
    assert config["dataset_version"] == manifest["dataset_version"]
    assert config["config"]["seed"] == 3
    assert "Research use only" in config["notice"]
    assert "dataset version" in first_log and "objects uploaded" in first_log

    # preprocess: submitted by SparkSubmitOperator, committed by its MANIFEST
    shards = read_manifest(s3_store, f"runs/{runs[0]}/preprocessed/MANIFEST.json")
    stats = s3_store.get_json(f"runs/{runs[0]}/preprocessed/stats.json")
    assert shards["image_size"] == 32
    positives_in_train = int(split.loc[split["split"] == "train", "label"].sum())
    assert stats["rows_written"] == len(split) + positives_in_train
    assert stats["augmented_copies"] == positives_in_train and stats["rejected"] == 0

    # train: model, history and predictions, committed by the model MANIFEST
    model = read_manifest(s3_store, f"runs/{runs[0]}/model/MANIFEST.json")
    predictions = pd.read_csv(io.BytesIO(s3_store.get_bytes(model["outputs"]["predictions_test"])))
    assert len(predictions) == (split["split"] == "test").sum()
    assert predictions["probability"].between(0, 1).all()
    assert s3_store.exists(f"runs/{runs[0]}/model/model.keras")

    # calibrate on validation, evaluate on test, branch on the promotion decision, report
    calibration = s3_store.get_json(f"runs/{runs[0]}/calibration.json")
    assert calibration["fitted_on"] == "val"
    metrics = s3_store.get_json(f"runs/{runs[0]}/evaluation/metrics.json")
    assert metrics["counts"]["images"] == len(predictions)
    assert (
        metrics["operating_points"]["youden"]["threshold"]
        == (calibration["thresholds"]["youden"]["threshold"])
    )
    promotion = s3_store.get_json(f"runs/{runs[0]}/promotion.json")
    champion = "champions/mel_vs_rest/champion.json"
    if promotion["promote"]:
        assert s3_store.get_json(champion)["run_id"] == config["run_id"]
        assert "promote_model" in first_log
    else:  # the only reason a first run is not promoted
        assert "below the floor" in promotion["reasons"][0]
        assert not s3_store.exists(champion)
    gradcam = s3_store.get_json(f"runs/{runs[0]}/gradcam/summary.json")
    assert gradcam["overall"]["images"] > 0 and gradcam["layer"] == "tiny_block3_relu"
    external = s3_store.get_json(f"runs/{runs[0]}/external/HAM10000_images_part_1/metrics.json")
    assert external["labels_format"] == "ham10000" and external["counts"]["images"] > 0
    assert (
        external["operating_points"]["youden"]["threshold"]
        == calibration["thresholds"]["youden"]["threshold"]
    )
    report = s3_store.get_bytes(f"runs/{runs[0]}/report.html").decode()
    assert "External validation" in report
    assert "Research use only" in report and config["run_id"] in report
    assert "Explanations (Grad-CAM)" in report and "data:image/jpeg;base64," in report

    second_log = dags_test(
        airflow_env, {**conf, "label_task": "mel_vs_nv", "external_validation": False}
    )
    assert "external validation is off" in second_log
    assert f"dataset version {manifest['dataset_version']} already exists" in second_log
    assert [
        o.key for o in s3_store.list("datasets/ham10000/") if o.key.endswith("MANIFEST.json")
    ] == manifests
    runs = sorted({o.key.split("/")[1] for o in s3_store.list("runs/")})
    assert len(runs) == 2
    nv_split = pd.read_csv(io.BytesIO(s3_store.get_bytes(f"runs/{runs[-1]}/splits.csv")))
    assert set(nv_split["dx"]) == {"mel", "nv"}
