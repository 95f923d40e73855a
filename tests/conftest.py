"""Shared fixtures. Integration fixtures start real services on 127.0.0.1 and stop them by pid."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from melanoma.embedded import SparkStandalone, airflow_environment, migrate_airflow_db
from melanoma.store import FileStore, S3Store
from tests.synthetic import SyntheticArchive, write_archive

# The trained-run fixtures, shared by tests/training and tests/faults (one instance a session).
pytest_plugins = ["tests.trained_runs"]

REPO_ROOT = Path(__file__).resolve().parents[1]
MOTO_KEYS = {"S3_ACCESS_KEY": "testing", "S3_SECRET_KEY": "testing"}


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_spark_cluster(state_dir: Path) -> SparkStandalone:
    """A (not yet started) 2-core standalone cluster on free 127.0.0.1 ports."""
    return SparkStandalone(
        state_dir,
        master_port=free_port(),
        master_webui_port=free_port(),
        worker_webui_port=free_port(),
        worker_cores=2,
        worker_memory="2g",
    )


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict], None]:
    """``airflow db migrate`` once a session (about 20 s here); each test that runs Airflow
    gets a copy of the migrated SQLite DB in its own AIRFLOW_HOME."""
    root = tmp_path_factory.mktemp("airflow-template")
    env = airflow_environment(
        REPO_ROOT,
        SparkStandalone(root / "spark"),
        FileStore(root / "store").url,
        home=root / "home",
    )
    migrate_airflow_db(env)
    template = root / "home" / "airflow.db"

    def copy_into(test_env: dict) -> None:
        home = Path(test_env["AIRFLOW_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, home / "airflow.db")

    return copy_into


@pytest.fixture
def mini_archive(tmp_path: Path) -> SyntheticArchive:
    return write_archive(tmp_path / "ham10000")


@pytest.fixture
def file_store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


def moto_server(log: Path, environ: dict[str, str] | None = None) -> Iterator[str]:
    """moto's S3 server as a separate process on 127.0.0.1; yields its endpoint."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(environ or {})},
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:  # stopped however this ends, a failed start included
        while True:
            try:
                requests.get(endpoint, timeout=5)
                break
            # Refused before it listens, or a timeout once it does but is still loading (on
            # a busy machine, `make test`'s other process beside it): both mean not up yet.
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server, standing in for MinIO."""
    yield from moto_server(tmp_path_factory.mktemp("moto") / "moto.log")


@pytest.fixture(scope="session")
def refusing_s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server that checks credentials (IAM enforced from the first request):
    every key it was not given is refused with a 403, as MinIO refuses a wrong one."""
    log = tmp_path_factory.mktemp("moto-refusing") / "moto.log"
    yield from moto_server(log, {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})


@pytest.fixture
def s3_store(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """A fresh bucket on the moto server; the environment points S3 clients at it."""
    monkeypatch.setenv("S3_ENDPOINT_URL", moto_endpoint)
    for key, value in MOTO_KEYS.items():
        monkeypatch.setenv(key, value)
    store = S3Store(f"s3://test-{uuid.uuid4().hex[:12]}")
    store.ensure_bucket()
    return store


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkStandalone]:
    """One real standalone master + worker on 127.0.0.1 for the session's Spark jobs."""
    cluster = local_spark_cluster(tmp_path_factory.mktemp("spark"))
    cluster.start()
    yield cluster
    cluster.stop()
