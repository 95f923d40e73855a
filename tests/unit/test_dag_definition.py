"""The DAG file's definitions, imported in-process (no metadata DB): schedule, asset,
queues, trigger form, and the Spark driver address under compose."""

import importlib.util
import ipaddress

import pytest
from airflow.sdk import AssetOrTimeSchedule

from melanoma.settings import SECTIONS
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
    on_gpu = (
        "choose_profile",  # asks the TensorFlow of the worker that trains
        "train",
        "measure_robustness",
        "explain",
        "external_validation",
        "decide_promotion",
    )
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


def test_the_profile_is_chosen_before_the_weights_and_the_split(dags):
    dag = dags.pipeline_dag
    chosen = dag.get_task("choose_profile")
    assert {"store_pretrained_weights", "split_dataset"} <= chosen.downstream_task_ids
    assert dag.params.get_param("profile").value == "auto"


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

    # Each param reaching every field it declares: tests/unit/test_settings.py.
    defaults = {name: param.value for name, param in dags.PARAMS.items()}
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
            "feature_depth": "mid",
        }
    )
    assert levers.train.multiscale_features and levers.train.feature_depth == "mid"
    assert (levers.train.metadata_fusion, levers.train.metadata_dropout) == (True, 0.5)
    assert (levers.train.head, levers.train.tta_views) == ("multiclass", 4)
    assert (levers.train.phase2_schedule, levers.train.label_smoothing) == ("cosine", 0.1)
    assert levers.preprocess.config.color_constancy
    assert levers.pipeline.holdout_source == "rosendahl"


def test_every_param_default_validates_against_its_own_schema_and_has_a_section(dags):
    import jsonschema

    sections = []
    for name, param in dags.PARAMS.items():
        jsonschema.validate(param.value, param.schema)  # the form's Trigger button needs this
        assert param.schema.get("section"), f"{name} has no form section"
        assert "description" not in param.schema, f"{name}: description_md renders Markdown"
        if param.schema["section"] not in sections:
            sections.append(param.schema["section"])
    # Every section is used, and the fields come section by section, in the form's order.
    assert sections == list(SECTIONS) and len(sections) == 8
    # Every field left empty on the form is null, never "": the form marks only
    # non-nullable fields required, and a stage reads None as "not given".
    for name in ("source", "holdout_source", "backbone", "pretrained_weights"):
        assert dags.PARAMS[name].value is None and "null" in dags.PARAMS[name].schema["type"]
    for name in ("external_labels", "external_name"):
        assert dags.PARAMS[name].value is None and "null" in dags.PARAMS[name].schema["type"]
    dags.pipeline_dag.params.validate()  # what a scheduled run, with no form, starts from


def test_form_defaults_never_come_from_the_parsing_machine(monkeypatch):
    plain = {n: p.value for n, p in load_dag_module(monkeypatch).PARAMS.items()}
    parsed_elsewhere = load_dag_module(
        monkeypatch,
        HAM10000_SOURCE="/home/someone/ham10000",
        MELANOMA_BACKBONE="mobilenet_v2",
        MELANOMA_PRETRAINED_WEIGHTS="/home/someone/weights.h5",
    )
    assert {n: p.value for n, p in parsed_elsewhere.PARAMS.items()} == plain
    assert not any("/home/someone" in str(p.schema) for p in parsed_elsewhere.PARAMS.values())


def test_a_param_left_empty_is_resolved_by_the_split_and_read_back_after_it(monkeypatch, dags):
    from melanoma.params import from_params

    defaults = {name: param.value for name, param in dags.PARAMS.items()}
    for variable in ("HAM10000_SOURCE", "MELANOMA_BACKBONE", "MELANOMA_PRETRAINED_WEIGHTS"):
        monkeypatch.delenv(variable, raising=False)
    bare = from_params(defaults).pipeline
    assert (bare.source, bare.backbone, bare.pretrained_weights) == (
        "dataverse",
        "resnet50",
        "keras",
    )
    monkeypatch.setenv("HAM10000_SOURCE", "/data/ham10000")
    monkeypatch.setenv("MELANOMA_BACKBONE", "mobilenet_v2")
    on_worker = from_params(defaults)
    assert (on_worker.pipeline.source, on_worker.train.backbone) == (
        "/data/ham10000",
        "mobilenet_v2",
    )
    given = from_params({**defaults, "source": "/elsewhere", "backbone": "tiny_cnn"}).pipeline
    assert (given.source, given.backbone) == ("/elsewhere", "tiny_cnn")
    # After the split, every task reads what the split recorded, not its own environment
    # (a GPU worker whose MELANOMA_BACKBONE differs must still train the recorded backbone).
    recorded = on_worker.pipeline.to_dict()
    monkeypatch.setenv("MELANOMA_BACKBONE", "resnet50")
    monkeypatch.setenv("HAM10000_SOURCE", "/another/worker")
    later = from_params(defaults, recorded)
    assert (later.train.backbone, later.pipeline.source) == ("mobilenet_v2", "/data/ham10000")


def test_the_runs_page_links_each_stage_to_the_task_that_commits_it(dags):
    from melanoma.embedded import DAG_ID
    from melanoma.layout import STAGES
    from melanoma.runs_index import STAGE_TASKS

    assert dags.pipeline_dag.dag_id == DAG_ID
    assert set(STAGE_TASKS) == set(STAGES)
    assert set(STAGE_TASKS.values()) <= {task.task_id for task in dags.pipeline_dag.tasks}
