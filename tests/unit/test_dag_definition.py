"""The DAG file's definitions, imported in-process (no metadata DB): schedule, asset,
queues, trigger form, and the Spark driver address under compose."""

import importlib.util
import ipaddress

import pytest
from airflow.sdk import AssetOrTimeSchedule

from tests.conftest import REPO_ROOT


def load_dag_module(monkeypatch, **environ):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(
        "melanoma_pipeline_under_test", REPO_ROOT / "dags" / "melanoma_pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dags(monkeypatch):
    monkeypatch.delenv("SPARK_DRIVER_HOST", raising=False)
    return load_dag_module(monkeypatch, MELANOMA_SCHEDULE="@weekly")


def test_pipeline_retrains_weekly_or_on_a_new_dataset_version(dags):
    schedule = dags.pipeline_dag.timetable
    assert isinstance(schedule, AssetOrTimeSchedule)
    assert schedule.timetable.expression == "0 0 * * 0"
    assert list(schedule.asset_condition.objects) == [dags.HAM10000_DATASET]
    assert dags.retraining_schedule("none", dags.HAM10000_DATASET) is dags.HAM10000_DATASET
    # Only the watcher emits the asset; the pipeline itself never does (no retrigger loop).
    watcher = dags.new_version_dag.get_task("download_dataset")
    assert watcher.outlets == [dags.HAM10000_DATASET]
    assert all(not task.outlets for task in dags.pipeline_dag.tasks)


def test_gpu_work_goes_to_the_gpu_queue_and_the_form_has_the_issue_params(dags):
    queues = {task.task_id: task.queue for task in dags.pipeline_dag.tasks}
    on_gpu = ("train", "explain", "external_validation")
    assert {queues[t] for t in on_gpu} == {"gpu"}
    assert {q for t, q in queues.items() if t not in on_gpu} == {"default"}
    params = dags.pipeline_dag.params
    for name in (
        "label_task",
        "backbone",
        "imbalance",
        "phase1_epochs",
        "phase2_epochs",
        "unfreeze_blocks",
        "target_sensitivity",
        "promotion_auroc_margin",
        "source",
    ):
        assert params.get_param(name).schema.get("title"), f"{name} has no form title"


def test_spark_driver_host_auto_renders_the_workers_own_address(monkeypatch):
    module = load_dag_module(monkeypatch, SPARK_DRIVER_HOST="auto")
    dag = module.pipeline_dag
    template = dag.get_task("preprocess").conf["spark.driver.host"]
    rendered = dag.get_template_env().from_string(template).render()
    assert ipaddress.ip_address(rendered) == ipaddress.ip_address(module.worker_address())
    fixed = load_dag_module(monkeypatch, SPARK_DRIVER_HOST="airflow-worker")
    assert fixed.pipeline_dag.get_task("preprocess").conf["spark.driver.host"] == ("airflow-worker")


def test_every_param_reaches_a_stage_config_through_from_params(dags):
    from melanoma.config import TrainConfig
    from melanoma.params import from_params

    read: set[str] = set()

    class Recorded(dict):
        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

    defaults = {name: param.value for name, param in dags.PARAMS.items()}
    from_params(Recorded({**defaults, "external_validation": True}))
    assert set(dags.PARAMS) <= read, "a param that no stage reads"
    stages = from_params(defaults)
    # The form's defaults are the configs' own (the CPU/GPU-neutral defaults in code).
    assert stages.train == TrainConfig(backbone=stages.pipeline.backbone, seed=42)
    assert stages.preprocess.config.size == 224 and stages.external is None
    assert stages.explain.operating_point == stages.promotion.operating_point
    custom = from_params({"phase2_epochs": 3, "external_validation": True, "external_name": "ph2"})
    assert custom.train.phase2_epochs == 3 and custom.external.name == "ph2"
    levers = from_params(
        {
            "head": "multiclass",
            "tta_views": 4,
            "color_constancy": True,
            "phase2_schedule": "cosine",
            "label_smoothing": 0.1,
            "holdout_source": "rosendahl",
            "metadata_fusion": True,
            "metadata_dropout": 0.5,
            "multiscale_features": True,
        }
    )
    assert levers.train.multiscale_features
    assert (levers.train.metadata_fusion, levers.train.metadata_dropout) == (True, 0.5)
    assert (levers.train.head, levers.train.tta_views) == ("multiclass", 4)
    assert (levers.train.phase2_schedule, levers.train.label_smoothing) == ("cosine", 0.1)
    assert levers.preprocess.config.color_constancy
    assert levers.pipeline.holdout_source == "rosendahl"
