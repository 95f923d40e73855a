"""
# Melanoma pipeline (HAM10000)

**Research use only — not a diagnostic device.**

Turns the public HAM10000 dermoscopy archive into a versioned dataset and a
leakage-free, lesion-grouped split, every artifact in the object store
(`MELANOMA_STORE_URL`), under `runs/<run key>/` (the run id, made safe for a key):

0. `choose_profile` — the hardware profile (`cpu` or `gpu`: the defaults that fit the
   machine), from the `profile` param or from what TensorFlow on the training worker sees;
1. `store_pretrained_weights` — backbone ImageNet weights to `pretrained/`, verified by hash;
2. `download_dataset` — fetch (Dataverse, mirror or local directory), validate, version
   under `datasets/ham10000/<dataset_version>/` (a no-op when that version exists);
3. `split_dataset` — `config.json` and `splits.csv`, grouped by lesion and stratified by diagnosis;
   the dataset version's promotion benchmark (`promotion_benchmark.csv`) is in no split;
4. `preprocess` — a PySpark job submitted to the Spark standalone master (`spark_default`
   connection) writes Parquet shards to `preprocessed/`;
5. `train` — Keras transfer learning (frozen backbone, then the last blocks fine-tuned; GPU
   with mixed precision when present) writes `model/` and `predictions/`;
6. `calibrate` — thresholds (Youden's J, target sensitivity, max F1) and probability
   calibration, chosen on the **validation** split: `calibration.json`;
7. `evaluate` — test metrics with lesion-bootstrap 95% intervals and figures:
   `evaluation/metrics.json`;
8. `measure_robustness` — a sample of the test split re-rendered under each acquisition
   shift (scaling, JPEG, blur, noise, colour, brightness, contrast, gamma, vignetting),
   one AUROC per shift: `evaluation/robustness.json`;
9. `explain` — Grad-CAM on the most confident TP/FP/FN/TN and a random sample of the test
   split, with the share of attention inside the lesion mask: `gradcam/`;
10. `external_validation` — off unless the `external_validation` param is on: the model on
    an external labelled set (the ISIC 2018 Task 3 test set by default) at the validation
    thresholds: `external/<set name>/metrics.json`;
11. `decide_promotion` — compares the run with the label task's champion on the dataset
    version's promotion benchmark (images in no run's split, each model through its own
    preprocessing) and branches to `promote_model` or `keep_champion`;
12. `write_report` — `report.html`, the run's report and model card.

Each stage writes its artifacts, then `commits/<stage>.json` (each artifact's key, size
and sha256) last, and returns that key; every later read is checked against it. The
logic lives in `include/melanoma/` and `training/`. Each param, and the stage config
fields it sets, is declared once in `melanoma.settings`; `melanoma.params` makes each
stage's config from the params.

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
from typing import TYPE_CHECKING, Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    task,
)

from melanoma.config import PipelineConfig
from melanoma.settings import param_schemas

if TYPE_CHECKING:  # the tasks import these lazily: parsing the DAG stays cheap
    from melanoma.params import StageConfigs
    from melanoma.run import Run

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


def _stages(
    params: dict[str, Any] | None, run: Run | None = None, profile: str | None = None
) -> StageConfigs:
    """Each stage's config; after the split, params left empty take the run's recorded
    values; before it, ``profile`` is what ``choose_profile`` found."""
    from melanoma.params import from_params, run_stage_configs

    if run is not None and run.committed("split"):
        return run_stage_configs(params or {}, run)
    return from_params(params or {}, None, profile)


def _run(params: dict[str, Any] | None, run_id: str | None):
    from melanoma.run import Run
    from melanoma.store import open_store

    return Run.for_run_id(open_store(_stages(params).pipeline.store_url), str(run_id))


# A failed task (the store down, a lost Spark worker) is retried twice, this long after.
RETRY_DELAY = timedelta(seconds=float(os.environ.get("MELANOMA_RETRY_DELAY_S", 60)))

# The trigger form, grouped in sections, made from melanoma.settings: each setting (its
# default, bounds, title and the stage config fields it sets) is declared there once.
# Defaults are the same on every machine: nothing here reads the parsing machine's
# environment. An optional field left empty (None) means "the environment of the worker
# that runs the task, then the code's default".
PARAMS: dict[str, Param] = {
    name: Param(default, **schema) for name, (default, schema) in param_schemas().items()
}


@dag(
    dag_id="melanoma_pipeline",
    schedule=retraining_schedule(os.environ.get("MELANOMA_SCHEDULE", "@weekly"), HAM10000_DATASET),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    user_defined_macros={"worker_address": worker_address},
    tags=["melanoma", "ham10000"],
    default_args={"retries": 2, "retry_delay": RETRY_DELAY},
    params=PARAMS,
)
def melanoma_pipeline() -> None:
    # Each task: its stage's config from the params (melanoma.params), the run, one call.
    @task(queue="gpu")  # asks the TensorFlow of the worker that trains
    def choose_profile(params: dict[str, Any] | None = None) -> dict[str, str]:
        from training.device import choose_run_profile

        return choose_run_profile((params or {}).get("profile"))

    @task
    def store_pretrained_weights(
        profile: dict[str, str], params: dict[str, Any] | None = None
    ) -> str | None:
        from melanoma.pipeline import store_pretrained_weights

        return store_pretrained_weights(_stages(params, profile=profile["name"]).pipeline)

    @task(retry_exponential_backoff=True)
    def download_dataset(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from melanoma.pipeline import download_dataset

        return download_dataset(_stages(params).pipeline)

    @task
    def split_dataset(
        dataset: dict[str, Any],
        profile: dict[str, str],
        params: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        from melanoma.pipeline import write_split

        stages = _stages(params, profile=profile["name"])
        return write_split(
            _run(params, run_id),
            stages.pipeline,
            dataset["manifest_key"],
            stages.resolved(),
            profile,
        )

    profile = choose_profile()
    dataset = download_dataset()
    weights = store_pretrained_weights(profile)
    weights >> dataset
    split = split_dataset(dataset, profile)

    preprocess = SparkSubmitOperator(
        task_id="preprocess",
        conn_id="spark_default",
        application=str(SPARK_JOBS / "preprocess.py"),
        name="melanoma-preprocess",
        application_args=["--run-id", "{{ run_id }}", "--params", "{{ params | tojson }}"],
        conf={"spark.ui.showConsoleProgress": "false", **SPARK_DRIVER_CONF},
        retries=2,
    )
    split >> preprocess

    @task(queue="gpu")  # a GPU worker's queue under compose's Celery executor; ignored elsewhere
    def train(
        weights_key: str | None, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from training.train import train_run

        run = _run(params, run_id)
        return train_run(run, _stages(params, run).train, weights_key)

    trained = train(weights)
    preprocess >> trained

    @task
    def calibrate(
        trained: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from melanoma.evaluation import calibrate_run

        run = _run(params, run_id)
        return calibrate_run(run, _stages(params, run).evaluation)

    @task
    def evaluate(
        calibrated: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from melanoma.evaluation import evaluate_run

        run = _run(params, run_id)
        return evaluate_run(run, _stages(params, run).evaluation)

    @task.branch(queue="gpu")  # scores both models on the promotion benchmark
    def decide_promotion(
        evaluated: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from melanoma.evaluation import decide_run_promotion
        from training.scoring import score_stored_images

        run = _run(params, run_id)
        decision = decide_run_promotion(run, _stages(params, run).promotion, score_stored_images)
        return "promote_model" if decision["promote"] else "keep_champion"

    @task
    def promote_model(params: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        from melanoma.evaluation import promote_run

        return promote_run(_run(params, run_id))

    @task
    def keep_champion(params: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        # The reasons are in promotion.json (and the report); nothing in the store changes.
        return _run(params, run_id).layout.commit("promote")

    @task(trigger_rule="none_failed_min_one_success")
    def write_report(params: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        from melanoma.report import write_report

        return write_report(_run(params, run_id))

    @task(queue="gpu")
    def explain(
        evaluated: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from training.explain import explain_run

        run = _run(params, run_id)
        return explain_run(run, _stages(params, run).explain)

    @task(queue="gpu")
    def measure_robustness(
        evaluated: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        run = _run(params, run_id)
        config = _stages(params, run).robustness
        if config.images == 0:
            raise AirflowSkipException("the robustness section is off (robustness_images 0)")
        from training.robustness import measure_robustness

        return measure_robustness(run, config)

    @task(queue="gpu")
    def external_validation(
        evaluated: str, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        stages = _stages(params)
        if stages.external is None:
            raise AirflowSkipException("external validation is off (the external_validation param)")
        from melanoma.external import resolve_external_set
        from training.external import validate_external

        e = stages.external
        external = resolve_external_set(e.images, e.labels, e.cache_dir, e.name)
        return validate_external(_run(params, run_id), external, stages.evaluation)

    evaluated = evaluate(calibrate(trained))
    explanations = explain(evaluated)
    branch = decide_promotion(evaluated)
    report = write_report()
    external_validation(evaluated) >> report
    measure_robustness(evaluated) >> report
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
