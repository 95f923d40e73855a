"""
# Melanoma pipeline (HAM10000)

**Research use only — not a diagnostic device.**

Turns the public HAM10000 dermoscopy archive into a versioned dataset and a
leakage-free, lesion-grouped split, every artifact in the object store
(`MELANOMA_STORE_URL`):

1. `store_pretrained_weights` — backbone ImageNet weights to `pretrained/`, verified by hash;
2. `download_dataset` — fetch (Dataverse, mirror or local directory), validate, version
   under `datasets/ham10000/<dataset_version>/` (a no-op when that version exists);
3. `split_dataset` — `runs/<run_id>/splits.csv`, grouped by lesion and stratified by diagnosis;
4. `preprocess` — a PySpark job submitted to the Spark standalone master (`spark_default`
   connection) writes Parquet shards to `runs/<run_id>/preprocessed/`, MANIFEST last;
5. `train` — Keras transfer learning (frozen backbone, then the last blocks fine-tuned; GPU
   with mixed precision when present) writes `runs/<run_id>/model/` and `predictions/`;
6. `calibrate` — thresholds (Youden's J, target sensitivity, max F1) and probability
   calibration, chosen on the **validation** split: `runs/<run_id>/calibration.json`;
7. `evaluate` — test metrics with lesion-bootstrap 95% intervals and figures:
   `runs/<run_id>/evaluation/metrics.json`;
8. `explain` — Grad-CAM on the most confident TP/FP/FN/TN and a random sample of the test
   split, with the share of attention inside the lesion mask: `runs/<run_id>/gradcam/`;
9. `external_validation` — off unless the `external_validation` param is on: the model on
   an external labelled set (the ISIC 2018 Task 3 test set by default) at the validation
   thresholds: `runs/<run_id>/external/<set>/metrics.json`;
10. `decide_promotion` — compares the run with the label task's champion on the same test
   split and branches to `promote_model` or `keep_champion`;
11. `write_report` — `runs/<run_id>/report.html`, the run's report and model card.

Each task takes and returns object-store keys; the logic lives in `include/melanoma/`.

**Retraining.** The DAG runs on `MELANOMA_SCHEDULE` (default `@weekly`, `none` to turn the
clock off) and whenever a new HAM10000 version lands: the `ham10000_new_version` DAG checks
the source on `MELANOMA_DATASET_CHECK_SCHEDULE` (default `@daily`) and its download task
emits the `ham10000` asset only when it stored a version the store did not have.
The runs are listed, with their metrics and promotion decisions, on the
*Melanoma runs* page of this UI.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    task,
)

from melanoma.config import BACKBONE_NAMES, PipelineConfig
from melanoma.ham10000 import LABEL_TASKS
from melanoma.images import INTERPOLATIONS
from melanoma.pipeline import run_prefix

# spark_jobs/ beside dags/ in a checkout; the Airflow image sets MELANOMA_SPARK_JOBS_DIR.
SPARK_JOBS = Path(
    os.environ.get("MELANOMA_SPARK_JOBS_DIR", Path(__file__).resolve().parents[1] / "spark_jobs")
)


def worker_address() -> str:
    """The address of the container running the task (a template macro: worker-side)."""
    return socket.gethostbyname(socket.gethostname())


# Under compose the driver runs in the Celery worker that runs the task, and executors must
# reach it: SPARK_DRIVER_HOST=auto renders that worker's address when the task runs.
_driver_host = os.environ.get("SPARK_DRIVER_HOST", "")
SPARK_DRIVER_CONF = (
    {"spark.driver.host": "{{ worker_address() }}" if _driver_host == "auto" else _driver_host}
    if _driver_host
    else {}
)


# A new dataset version in the store. Only ham10000_new_version emits it: if the pipeline
# emitted it too, every run that found a new version would queue a second, identical run.
HAM10000_DATASET = Asset(name="ham10000", uri="melanoma://datasets/ham10000")


def retraining_schedule(clock: str, asset: Asset) -> Asset | AssetOrTimeSchedule:
    """Retrain on the clock (a cron expression or preset; ``none`` for no clock) or on ``asset``."""
    if clock.strip().lower() in ("", "none"):
        return asset
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(clock, timezone="UTC"), assets=[asset]
    )


def _config(params: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig.from_env(
        source=params.get("source"),
        label_task=params.get("label_task"),
        seed=params.get("split_seed"),
        backbone=params.get("backbone"),
        pretrained_weights=params.get("pretrained_weights"),
    )


def _store(params: dict[str, Any]):
    from melanoma.store import open_store

    return open_store(_config(params).store_url)


def _evaluation_config(params: dict[str, Any]):
    from melanoma.evaluation import EvaluationConfig

    return EvaluationConfig(
        target_sensitivity=params["target_sensitivity"],
        probability_calibration=params["probability_calibration"],
        bootstrap_replicates=params["bootstrap_replicates"],
        seed=params["split_seed"],
    )


@dag(
    dag_id="melanoma_pipeline",
    schedule=retraining_schedule(os.environ.get("MELANOMA_SCHEDULE", "@weekly"), HAM10000_DATASET),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    user_defined_macros={"worker_address": worker_address},
    tags=["melanoma", "ham10000"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "source": Param(
            os.environ.get("HAM10000_SOURCE", "dataverse"),
            type="string",
            title="HAM10000 source",
            description="`dataverse`, `dataverse:<url>`, an http(s) mirror URL, or a local directory",
        ),
        "label_task": Param("mel_vs_rest", enum=sorted(LABEL_TASKS), title="Label task"),
        "split_seed": Param(42, type="integer", minimum=0, title="Split seed"),
        "backbone": Param(
            os.environ.get("MELANOMA_BACKBONE", "resnet50"),
            enum=list(BACKBONE_NAMES),
            title="Backbone",
        ),
        "image_size": Param(
            224, type="integer", minimum=32, maximum=1024, title="Model input size (pixels)"
        ),
        "interpolation": Param("area", enum=sorted(INTERPOLATIONS), title="Resize interpolation"),
        "hair_removal": Param(False, type="boolean", title="Hair removal (black-hat + inpainting)"),
        "lesion_crop": Param(False, type="boolean", title="Lesion-centred crop"),
        "augment_copies": Param(
            2,
            type="integer",
            minimum=0,
            maximum=20,
            title="Augmented copies per minority-class training image",
        ),
        "imbalance": Param(
            "class_weight",
            enum=["class_weight", "oversample", "undersample", "focal", "none"],
            title="Class-imbalance strategy",
            description="oversample uses preprocessing's augmented copies; the others ignore them",
        ),
        "class_weight": Param(
            "balanced", type="string", title="Class weights", description="`balanced` or `w0,w1`"
        ),
        "phase1_epochs": Param(
            10, type="integer", minimum=0, title="Epochs, phase 1 (frozen backbone)"
        ),
        "phase2_epochs": Param(
            20, type="integer", minimum=0, title="Epochs, phase 2 (fine-tuning)"
        ),
        "unfreeze_blocks": Param(
            3, type="integer", minimum=0, title="Backbone blocks unfrozen in phase 2"
        ),
        "phase2_learning_rate": Param(
            1e-5, type="number", exclusiveMinimum=0, title="Learning rate, phase 2"
        ),
        "batch_size": Param(32, type="integer", minimum=1, title="Batch size"),
        "early_stopping_patience": Param(
            10, type="integer", minimum=1, title="Early-stopping patience (epochs)"
        ),
        "target_sensitivity": Param(
            0.95,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            title="Target sensitivity",
            description="its threshold is the highest one reaching this sensitivity on validation",
        ),
        "probability_calibration": Param(
            "platt", enum=["none", "platt", "isotonic"], title="Probability calibration"
        ),
        "bootstrap_replicates": Param(
            2000, type="integer", minimum=100, title="Bootstrap replicates (lesion resampling)"
        ),
        "operating_point": Param(
            "target_sensitivity",
            enum=["target_sensitivity", "youden", "max_f1"],
            title="Operating threshold",
            description="the threshold the promotion rule and the report treat as the decision",
        ),
        "promotion_auroc_margin": Param(
            0.01,
            type="number",
            minimum=0,
            maximum=1,
            title="Promotion margin",
            description="promote when test AUROC is not below the champion's by more than this",
        ),
        "sensitivity_floor": Param(
            0.80,
            type="number",
            minimum=0,
            maximum=1,
            title="Sensitivity floor",
            description="the test sensitivity at the operating threshold a champion must reach",
        ),
        "gradcam_per_outcome": Param(
            4,
            type="integer",
            minimum=0,
            title="Grad-CAM: images per outcome",
            description="the most confident true/false positives/negatives explained",
        ),
        "gradcam_method": Param("gradcam", enum=["gradcam", "gradcam++"], title="Grad-CAM variant"),
        "gradcam_random": Param(8, type="integer", minimum=0, title="Grad-CAM: random test images"),
        "external_validation": Param(
            False,
            type="boolean",
            title="External validation",
            description="also evaluate the run's model on an external labelled set",
        ),
        "external_images": Param(
            "isic2018",
            type="string",
            title="External set: images",
            description="`isic2018` (the ISIC 2018 Task 3 test set from Dataverse), or a "
            "local folder or zip of images",
        ),
        "external_labels": Param(
            "",
            type="string",
            title="External set: labels CSV",
            description="for a local set: ISIC 2018 one-hot, HAM10000 metadata "
            "(image_id, dx) or binary (image_id, melanoma) format",
        ),
        "pretrained_weights": Param(
            os.environ.get("MELANOMA_PRETRAINED_WEIGHTS", "keras"),
            type="string",
            title="Pretrained weights",
            description="`keras` (download), `none`, a file path or an https URL",
        ),
    },
)
def melanoma_pipeline() -> None:
    @task
    def store_pretrained_weights(params: dict[str, Any] | None = None) -> str | None:
        from melanoma.pipeline import store_pretrained_weights

        return store_pretrained_weights(_config(params or {}))

    @task(retry_exponential_backoff=True)
    def download_dataset(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from melanoma.pipeline import download_dataset

        return download_dataset(_config(params or {}))

    @task
    def split_dataset(
        dataset: dict[str, Any], params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from melanoma.pipeline import write_split

        return write_split(_config(params or {}), str(run_id), dataset["manifest_key"])

    dataset = download_dataset()
    weights = store_pretrained_weights()
    weights >> dataset
    splits_key = split_dataset(dataset)

    preprocess = SparkSubmitOperator(
        task_id="preprocess",
        conn_id="spark_default",
        application=str(SPARK_JOBS / "preprocess.py"),
        name="melanoma-preprocess",
        application_args=[
            "--manifest-key",
            "{{ ti.xcom_pull(task_ids='download_dataset')['manifest_key'] }}",
            "--splits-key",
            "{{ ti.xcom_pull(task_ids='split_dataset') }}",
            "--run-id",
            "{{ run_id }}",
            "--image-size",
            "{{ params.image_size }}",
            "--interpolation",
            "{{ params.interpolation }}",
            "--augment-copies",
            "{{ params.augment_copies }}",
            "--seed",
            "{{ params.split_seed }}",
            "{{ '--hair-removal' if params.hair_removal else '--no-hair-removal' }}",
            "{{ '--lesion-crop' if params.lesion_crop else '--no-lesion-crop' }}",
        ],
        conf={"spark.ui.showConsoleProgress": "false", **SPARK_DRIVER_CONF},
        retries=2,
    )
    splits_key >> preprocess

    @task(queue="gpu")  # a GPU worker's queue under compose's Celery executor; ignored elsewhere
    def train(
        weights_key: str | None, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from training.train import TrainConfig, train_run

        p = params or {}
        config = TrainConfig(
            backbone=p["backbone"],
            batch_size=p["batch_size"],
            phase1_epochs=p["phase1_epochs"],
            phase2_epochs=p["phase2_epochs"],
            unfreeze_blocks=p["unfreeze_blocks"],
            phase2_learning_rate=p["phase2_learning_rate"],
            patience=p["early_stopping_patience"],
            imbalance=p["imbalance"],
            class_weight=p["class_weight"],
            seed=p["split_seed"],
        )
        return train_run(_store(p), run_prefix(str(run_id)), config, weights_key)

    model_key = train(weights)
    preprocess >> model_key

    @task
    def calibrate(
        model_key: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from melanoma.evaluation import calibrate_run

        p = params or {}
        return calibrate_run(_store(p), run_prefix(str(run_id)), _evaluation_config(p))

    @task
    def evaluate(
        calibration_key: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from melanoma.evaluation import evaluate_run

        p = params or {}
        return evaluate_run(_store(p), run_prefix(str(run_id)), _evaluation_config(p))

    @task.branch
    def decide_promotion(
        metrics_key: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from melanoma.evaluation import decide_run_promotion
        from melanoma.promotion import PromotionPolicy

        p = params or {}
        store = _store(p)
        policy = PromotionPolicy(
            auroc_margin=p["promotion_auroc_margin"],
            sensitivity_floor=p["sensitivity_floor"],
            operating_point=p["operating_point"],
        )

        def rescore(model_key: str, prefix: str):
            from training.predict import score_split

            return score_split(store, model_key, prefix, "test")

        decision = decide_run_promotion(store, run_prefix(str(run_id)), policy, rescore)
        return "promote_model" if decision["promote"] else "keep_champion"

    @task
    def promote_model(params: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        from melanoma.evaluation import promote_run

        return promote_run(_store(params or {}), run_prefix(str(run_id)))

    @task
    def keep_champion(params: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        # The reasons are in promotion.json (and the report); nothing in the store changes.
        return f"{run_prefix(str(run_id))}/promotion.json"

    @task(trigger_rule="none_failed_min_one_success")
    def write_report(params: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        from melanoma.report import write_report

        return write_report(_store(params or {}), run_prefix(str(run_id)))

    @task(queue="gpu")
    def explain(
        metrics_key: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from training.gradcam import ExplainConfig, explain_run

        p = params or {}
        config = ExplainConfig(
            per_outcome=p["gradcam_per_outcome"],
            random_count=p["gradcam_random"],
            method=p["gradcam_method"],
            operating_point=p["operating_point"],
            seed=p["split_seed"],
        )
        return explain_run(_store(p), run_prefix(str(run_id)), config)

    @task(queue="gpu")
    def external_validation(
        metrics_key: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        p = params or {}
        if not p["external_validation"]:
            raise AirflowSkipException("external validation is off (the external_validation param)")
        from melanoma.external import resolve_external_set
        from training.external import validate_external

        external = resolve_external_set(
            p["external_images"], p["external_labels"] or None, Path(_config(p).cache_dir)
        )
        return validate_external(
            _store(p), run_prefix(str(run_id)), external, _evaluation_config(p)
        )

    metrics_key = evaluate(calibrate(model_key))
    explanations = explain(metrics_key)
    branch = decide_promotion(metrics_key)
    report = write_report()
    external_validation(metrics_key) >> report
    branch >> [promote_model(), keep_champion()] >> report
    explanations >> report


pipeline_dag = melanoma_pipeline()


@dag(
    dag_id="ham10000_new_version",
    schedule=os.environ.get("MELANOMA_DATASET_CHECK_SCHEDULE", "@daily"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    # It reaches out to the source every day: paused until a user opts in (unpause it).
    is_paused_upon_creation=True,
    doc_md="""Checks `HAM10000_SOURCE` for a new HAM10000 version and versions it in the store.
When it stores a version the store did not have, its download task emits the `ham10000`
asset, which triggers `melanoma_pipeline`; otherwise the task is skipped and nothing is
emitted. Paused when it first appears: unpause it to opt in to the daily check.
**Research use only — not a diagnostic device.**""",
    tags=["melanoma", "ham10000"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
)
def ham10000_new_version() -> None:
    @task(outlets=[HAM10000_DATASET], retry_exponential_backoff=True)
    def download_dataset(outlet_events=None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from melanoma.pipeline import download_dataset

        dataset = download_dataset(PipelineConfig.from_env())
        if not dataset["created"]:
            raise AirflowSkipException(
                f"dataset version {dataset['dataset_version']} is already in the store"
            )
        outlet_events[HAM10000_DATASET].extra = {
            k: dataset[k] for k in ("dataset_version", "manifest_key", "images")
        }
        return dataset

    download_dataset()


new_version_dag = ham10000_new_version()
