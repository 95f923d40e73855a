"""The DAG end to end as `make run` runs it (`melanoma.embedded.run_dag`: a real
`airflow api-server` and `airflow dags test --use-executor` on a SQLite metadata DB, each
task in its own process), with the real Spark standalone cluster and an S3 store on moto's
server. What each task logged is read from its log file, where the UI reads it."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from melanoma.embedded import (
    DAG_ID,
    airflow_environment,
    latest_run_task_states,
    readable_log_tail,
    run_dag,
)
from melanoma.layout import DATASETS, RUNS, STAGES, RunLayout, champion_key
from melanoma.run import Run
from tests.conftest import MOTO_KEYS, REPO_ROOT, free_port


@pytest.fixture
def airflow_env(tmp_path, s3_store, moto_endpoint, spark_cluster, migrated_airflow_db):
    env = airflow_environment(
        REPO_ROOT, spark_cluster, s3_store.url, home=tmp_path / "airflow", ui_port=free_port()
    )
    env.update(
        MOTO_KEYS,
        S3_ENDPOINT_URL=moto_endpoint,
        MELANOMA_CACHE_DIR=str(tmp_path / "cache"),
        MELANOMA_SCHEDULE="@weekly",
    )
    migrated_airflow_db(env)
    return env


def run_pipeline(env: dict, conf: dict) -> tuple[str, dict[str, str]]:
    """One DAG run by `make run`'s path; returns its task logs (from their files, joined)
    and each task's state."""
    begun = datetime.now(UTC)
    code = run_dag(env, conf)
    found = latest_run_task_states(env, begun)
    assert found is not None, "airflow dags test made no run"
    run_id, states = found
    folder = Path(env["AIRFLOW_HOME"]) / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    logs = {
        path.parent.name.removeprefix("task_id="): path
        for path in sorted(folder.glob("task_id=*/attempt=*.log"))
    }
    if code:
        failed = [t for t, state in states.items() if state == "failed"]
        pytest.fail(
            f"DAG run failed: {states}\n"
            + "\n".join(f"--- {t}\n" + "\n".join(readable_log_tail(logs[t], 40)) for t in failed)
        )
    # Every task that ran left its log in Airflow's layout.
    assert {t for t, state in states.items() if state == "success"} <= set(logs)
    return "\n".join(path.read_text() for path in logs.values()), states


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
        "robustness_images": 30,
        "robustness_strengths": [0.8],
        # The generated archive's first image part, as if it were an external set.
        "external_validation": True,
        "external_images": str(mini_archive.root / "HAM10000_images_part_1.zip"),
        "external_labels": str(mini_archive.root / "HAM10000_metadata.csv"),
        "external_name": "part1",
    }

    first_log, first_states = run_pipeline(airflow_env, conf)
    manifests = [o.key for o in s3_store.list(f"{DATASETS}/") if o.key.endswith("MANIFEST.json")]
    assert len(manifests) == 1
    manifest = s3_store.get_json(manifests[0])
    assert manifest["counts"]["images"] == len(mini_archive.metadata)

    keys = sorted({o.key.split("/")[1] for o in s3_store.list(f"{RUNS}/")})
    assert len(keys) == 1
    run = Run(s3_store, RunLayout(keys[0]))
    # Every stage committed, each record listing what it wrote (checked on each read below).
    for stage in STAGES:
        assert run.committed(stage), stage
    # No GPU here: the cpu profile, its reason recorded; the params given won over it.
    assert run.config().profile == {
        "name": "cpu",
        "why": "TensorFlow on the training worker sees no GPU",
    }
    assert run.config().stages["train"]["phase1_epochs"] == 2
    assert run.config().stages["train"]["multiscale_features"] is True, "the profile's"
    assert run.external_sets() == ["part1"]
    split = run.splits()
    assert list(split.columns) == [
        "image_id",
        "lesion_id",
        "dx",
        "label",
        "split",
        *("dataset", "sex", "age", "localization"),  # the metadata, for subgroup metrics
    ]
    benchmark = run.promotion_benchmark()
    assert len(split) + len(benchmark) == len(mini_archive.metadata)
    assert not set(benchmark["lesion_id"]) & set(split["lesion_id"])
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    assert split["label"].eq(split["dx"].eq("mel").astype(int)).all()
    config = run.config()
    assert run.layout == RunLayout.for_run_id(config.run_id)
    assert config.dataset_version == manifest["dataset_version"]
    assert config.config["seed"] == 3
    assert "Research use only" in run.read_json("split", "config")["notice"]
    assert "dataset version" in first_log and "objects uploaded" in first_log

    # preprocess: submitted by SparkSubmitOperator, committed by its record
    stats = run.read_json("preprocess", "stats")
    assert run.preprocess_data()["image_size"] == 32
    positives_in_train = int(split.loc[split["split"] == "train", "label"].sum())
    assert stats["rows_written"] == len(split) + positives_in_train
    assert sum(s["rows"] for s in run.entries("preprocess", "shard/")) == stats["rows_written"]
    assert stats["augmented_copies"] == positives_in_train and stats["rejected"] == 0

    # train: model, history and predictions
    predictions = run.predictions("test")
    assert len(predictions) == (split["split"] == "test").sum()
    assert predictions["probability"].between(0, 1).all()
    assert run.read_bytes("train", "model")

    # calibrate on validation, evaluate on test, branch on the promotion decision, report
    calibration = run.read_json("calibrate", "calibration")
    assert calibration["fitted_on"] == "val"
    metrics = run.read_json("evaluate", "metrics")
    assert metrics["counts"]["images"] == len(predictions)
    assert metrics["source_confounding"]["sources"] == 2 and "body site" in metrics["subgroups"]
    assert (
        metrics["operating_points"]["youden"]["threshold"]
        == (calibration["thresholds"]["youden"]["threshold"])
    )
    promotion = run.read_json("promote", "promotion")
    champion = champion_key("mel_vs_rest")
    if promotion["promote"]:
        assert s3_store.get_json(champion)["run_id"] == config.run_id
        assert first_states["promote_model"] == "success"
    else:  # the only reason a first run is not promoted
        assert "below the floor" in promotion["reasons"][0]
        assert not s3_store.exists(champion)
    gradcam = run.read_json("explain", "summary")
    assert gradcam["overall"]["images"] > 0 and gradcam["layer"] == "tiny_block3_relu"
    external = run.read_json("external/part1", "metrics")
    assert external["labels_format"] == "ham10000" and external["counts"]["images"] > 0
    assert (
        external["operating_points"]["youden"]["threshold"]
        == calibration["thresholds"]["youden"]["threshold"]
    )
    report = run.read_bytes("report", "report").decode()
    assert "External validation" in report and "<h3>part1</h3>" in report
    assert "Research use only" in report and config.run_id in report
    assert "Explanations (Grad-CAM)" in report and "data:image/jpeg;base64," in report
    robustness = run.read_json("robustness", "robustness")
    assert set(robustness["config"]["strengths"]) == {0.8} and robustness["images"] > 0
    assert "Robustness to acquisition shift" in report

    second_log, _ = run_pipeline(
        airflow_env, {**conf, "label_task": "mel_vs_nv", "external_validation": False}
    )
    assert "external validation is off" in second_log
    assert f"dataset version {manifest['dataset_version']} already exists" in second_log
    assert [
        o.key for o in s3_store.list(f"{DATASETS}/") if o.key.endswith("MANIFEST.json")
    ] == manifests
    keys = sorted({o.key.split("/")[1] for o in s3_store.list(f"{RUNS}/")})
    assert len(keys) == 2
    second = next(Run(s3_store, RunLayout(k)) for k in keys if k != run.layout.key)
    assert set(second.splits()["dx"]) == {"mel", "nv"}
