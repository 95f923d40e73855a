"""No Docker engine runs here: check that the compose stack is consistent with the code instead."""

import re

import yaml

from melanoma.config import ENVIRONMENT
from tests.conftest import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (REPO_ROOT / ".env.example").read_text().splitlines()
    if line and not line.startswith("#")
)
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
            if line.startswith("COPY"):
                sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
                for source in sources:
                    assert (REPO_ROOT / source).exists(), (
                        f"{dockerfile}: COPY {source} does not exist"
                    )


def test_airflow_services_get_every_variable_the_code_reads():
    required = set(ENVIRONMENT.values()) | {
        "S3_ENDPOINT_URL",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "AIRFLOW_CONN_SPARK_DEFAULT",
    }
    required -= {"MELANOMA_PRETRAINED_SHA256"}  # optional: only for user-supplied weights files
    for name in ("airflow-scheduler", "airflow-api-server", "airflow-dag-processor"):
        env = SERVICES[name]["environment"]
        assert required <= set(env), f"{name} lacks {required - set(env)}"
    assert SERVICES["airflow-scheduler"]["environment"]["AIRFLOW_CONN_SPARK_DEFAULT"].startswith(
        "spark://spark-master:7077"
    )
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
    assert LOCK["pyspark"].startswith("4.3.")


def test_health_checks_gate_start_up():
    for name, service in SERVICES.items():
        if name not in ("minio-init", "airflow-init"):
            assert "healthcheck" in service or name == "spark-worker", f"{name} has no health check"
    assert (
        SERVICES["airflow-scheduler"]["depends_on"]["spark-master"]["condition"]
        == "service_healthy"
    )
    assert (
        SERVICES["airflow-scheduler"]["depends_on"]["minio-init"]["condition"]
        == "service_completed_successfully"
    )
