"""The compose file's consistency with the code, in milliseconds (tests/compose runs it for real)."""

import re

import yaml
from airflow.models.connection import Connection

from melanoma.compose_env import SECRETS, parse_dotenv
from melanoma.config import ENVIRONMENT
from tests.conftest import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = parse_dotenv((REPO_ROOT / ".env.example").read_text())
LOCK = dict(
    line.split("==")
    for line in (REPO_ROOT / "requirements/lock-cpu.txt").read_text().splitlines()
    if "==" in line and not line.startswith(" ")
)


def test_every_build_context_and_copied_path_exists():
    for name, service in SERVICES.items():
        if "build" not in service:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), (
                f"{name}: pin the image tag"
            )
            continue
        dockerfile = REPO_ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        assert dockerfile.is_file(), name
        for line in dockerfile.read_text().splitlines():
            # COPY --from copies from an earlier stage, not from the build context.
            if line.startswith("COPY") and "--from=" not in line:
                sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
                for source in sources:
                    assert (REPO_ROOT / source).exists(), (
                        f"{dockerfile}: COPY {source} does not exist"
                    )


# Variables the Airflow image itself sets (ENV lines).
IMAGE_ENV = set(
    re.findall(r"^ENV (\w+)=", (REPO_ROOT / "docker/airflow/Dockerfile").read_text(), re.MULTILINE)
)


def test_airflow_services_get_every_variable_the_code_reads():
    required = set(ENVIRONMENT.values()) | {
        "S3_ENDPOINT_URL",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "AIRFLOW_CONN_SPARK_DEFAULT",
    }
    required -= {"MELANOMA_PRETRAINED_SHA256"}  # optional: only for user-supplied weights files
    airflow_services = [n for n in SERVICES if n.startswith("airflow-") and n != "airflow-init"]
    assert len(airflow_services) == 6
    for name in airflow_services:
        env = set(SERVICES[name]["environment"]) | IMAGE_ENV
        assert required <= env, f"{name} lacks {required - env}"
    # The DAG's connection, as Airflow parses it from the environment variable.
    uri = SERVICES["airflow-worker"]["environment"]["AIRFLOW_CONN_SPARK_DEFAULT"]
    spark = Connection(conn_id="spark_default", uri=uri)
    assert (spark.conn_type, spark.host, spark.port) == ("spark", "spark-master", 7077)
    assert spark.extra_dejson == {"deploy-mode": "client"}
    assert "spark-master" in SERVICES
    assert set(SERVICES["spark-worker"]["environment"]) >= {
        "S3_ENDPOINT_URL",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
    }


def test_every_required_variable_is_in_env_example_and_no_secret_is_inline():
    text = (REPO_ROOT / "docker-compose.yaml").read_text()
    for variable in re.findall(r"(?<!\$)\$\{(\w+)(?::?[-?][^}]*)?\}", text):
        assert variable in ENV_EXAMPLE, f"${{{variable}}} is not in .env.example"
    assert "PASSWORD: " not in text.replace("PASSWORD: ${", "")
    # Every secret is required by compose and checked by airflow-init (compose_env).
    for name in SECRETS:
        assert re.search(rf"\$\{{{name}:\?", text) or name == "MINIO_ROOT_PASSWORD", name
        assert "change-me" in ENV_EXAMPLE[name]
    env = SERVICES["airflow-scheduler"]["environment"]
    assert {"AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"} <= set(env)


def test_ports_are_published_on_loopback_by_default():
    assert ENV_EXAMPLE["PUBLISH_ADDRESS"] == "127.0.0.1"
    published = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("${PUBLISH_ADDRESS:-127.0.0.1}:") for p in published)


def test_celery_workers_shut_down_warm_after_the_api_server_is_up():
    for name in ("airflow-worker", "airflow-gpu-worker"):
        service = SERVICES[name]
        assert service["environment"]["DUMB_INIT_SETSID"] == "0", name
        assert service["depends_on"]["airflow-api-server"] == {"condition": "service_healthy"}


def test_airflow_and_spark_images_share_python_and_pyspark():
    airflow = (REPO_ROOT / "docker/airflow/Dockerfile").read_text()
    spark = (REPO_ROOT / "docker/spark/Dockerfile").read_text()
    assert f"FROM apache/airflow:{LOCK['apache-airflow']}-python3.11" in airflow
    assert "FROM python:3.11-" in spark
    # Both install pyspark from the same lock file, so the versions cannot drift.
    assert (
        "requirements/lock-cpu.txt" in airflow
        and "-c /opt/melanoma/requirements/lock-cpu.txt" in spark
    )
    # The Spark provider's pyspark-client writes pyspark's modules too: same version.
    assert LOCK["pyspark"] == LOCK["pyspark-client"]


def test_health_checks_gate_start_up():
    one_shot = {"minio-init", "airflow-init"}
    for name, service in SERVICES.items():
        if name not in one_shot:
            assert "healthcheck" in service, f"{name} has no health check"
        for needed, rule in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if needed in one_shot else "service_healthy"
            assert rule["condition"] == expected, f"{name} -> {needed}"
    worker = SERVICES["airflow-worker"]["depends_on"]
    assert {"postgres", "redis", "minio-init", "airflow-init", "spark-master"} <= set(worker)


def test_celery_workers_serve_every_queue_the_dag_uses():
    env = SERVICES["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    dag_file = (REPO_ROOT / "dags/melanoma_pipeline.py").read_text()
    dag_queues = set(re.findall(r"queue=\"(\w+)\"", dag_file)) | {"default"}
    # Without the gpu profile, the default worker serves the gpu queue too.
    default_queues = ENV_EXAMPLE["AIRFLOW_WORKER_QUEUES"].split(",")
    assert "${AIRFLOW_WORKER_QUEUES:-default,gpu}" in SERVICES["airflow-worker"]["command"]
    assert dag_queues == set(default_queues) == {"default", "gpu"}
    gpu = SERVICES["airflow-gpu-worker"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["target"] == "trainer"
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "profiles" not in SERVICES["airflow-worker"]  # the stack starts without a GPU


def test_trainer_image_installs_the_gpu_lock_and_both_profiles_weights_are_baked_in():
    from melanoma.profiles import PROFILES

    dockerfile = (REPO_ROOT / "docker/airflow/Dockerfile").read_text()
    stages = dict(
        (name, base) for base, name in re.findall(r"^FROM (\S+) AS (\w+)$", dockerfile, re.M)
    )
    assert list(stages) == ["dependencies", "airflow", "trainer"]
    assert stages["airflow"] == stages["trainer"] == "dependencies"
    # No project code under either image's dependency layers: a code change must not
    # reinstall (and leave behind) the trainer's gigabytes of CUDA wheels.
    dependencies = dockerfile.split("AS dependencies", 1)[1].split("\nFROM ", 1)[0]
    copied = re.findall(r"^COPY .*?(\S+) /opt/\S+$", dependencies, re.M)
    assert copied == ["requirements/lock-cpu.txt"], copied
    trainer = dockerfile.split("AS trainer", 1)[1]
    gpu_install = "uv pip install --no-cache --no-deps -r /opt/melanoma/requirements/lock-gpu.txt"
    assert trainer.index(gpu_install) < trainer.index("COPY --from=airflow")
    assert re.findall(r"^COPY (?!--from=airflow).*$", trainer, re.M) == [
        "COPY --chown=airflow:root requirements/lock-gpu.txt /opt/melanoma/requirements/"
    ]
    assert "uv pip check" in trainer and "tensorflow[and-cuda]" not in trainer, "no resolving"
    weights_dir = re.search(r"^ENV MELANOMA_WEIGHTS_DIR=(\S+)$", dockerfile, re.MULTILINE)[1]
    for profile in PROFILES.values():
        assert f"python -m melanoma.pretrained {profile['backbone']} {weights_dir}" in dockerfile
    assert SERVICES["airflow-worker"]["environment"]["MELANOMA_PRETRAINED_WEIGHTS"].endswith(
        ":-keras}"
    )


def test_spark_workers_scale():
    worker = SERVICES["spark-worker"]
    assert "ports" not in worker and "container_name" not in worker and "hostname" not in worker


def test_the_locked_celery_provider_loads():
    # The stack's executor, imported from exactly the locked versions (Celery 5.7 broke it).
    from airflow.providers.celery.executors import celery_executor_utils
    from airflow.providers.celery.executors.celery_executor import CeleryExecutor

    assert CeleryExecutor.__name__ == "CeleryExecutor"
    assert callable(celery_executor_utils.execute_workload)


def test_the_development_override_mounts_the_checkout_into_every_service_that_runs_our_code():
    """docker-compose.dev.yaml: every service built from this repository's images gets the
    code it runs from the checkout, read-only, ahead of the installed copy."""
    override = yaml.safe_load((REPO_ROOT / "docker-compose.dev.yaml").read_text())["services"]
    ours = {
        name
        for name, service in COMPOSE["services"].items()
        if str(service.get("image", "")).startswith("melanoma-")
    }
    assert set(override) == ours
    for name, service in override.items():
        mounts = {v.split(":")[0]: v for v in service["volumes"]}
        assert {"./include", "./training"} <= set(mounts), name
        assert all(v.endswith(":ro") for v in mounts.values()), name
        assert all((REPO_ROOT / source).is_dir() for source in mounts), name
        assert service["environment"]["PYTHONPATH"].split(":")[0] == "/opt/melanoma/include"
        if name.startswith("airflow-"):
            assert {"./dags", "./plugins", "./spark_jobs"} <= set(mounts), name


def test_the_compose_test_runs_the_real_file_less_only_the_gpu_reservation(tmp_path):
    from tests.compose.test_stack import GPU_WORKER, without_gpu_reservation

    real = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    derived = without_gpu_reservation(REPO_ROOT / "docker-compose.yaml", tmp_path / "c.yaml")
    assert real["services"][GPU_WORKER]["deploy"]["resources"]["reservations"]["devices"]
    del real["services"][GPU_WORKER]["deploy"]
    assert yaml.safe_load(derived.read_text()) == real


def test_both_airflow_images_take_the_same_build_arguments():
    # The trainer's stage builds on the airflow stage: the same args, or an offline build
    # (FETCH_IMAGENET_WEIGHTS=0) would fetch weights for the trainer and fail.
    assert (
        SERVICES["airflow-gpu-worker"]["build"]["args"]
        == SERVICES["airflow-worker"]["build"]["args"]
    )
    assert SERVICES["airflow-gpu-worker"]["build"]["target"] == "trainer"
