"""`docker compose up`, for real: the stack builds, runs the DAG, and survives restarts.

`make test-compose` runs this on a Docker engine (it is not part of `make test`). Base images
that cannot be pulled are replaced by local stand-ins first (tests/compose/standins.py).
The compose file and the Dockerfiles are used as a user uses them: `.env` is written the way
the README says (`make env`), then edited for a small, offline run. The test drives the
stack only through what a user has: the REST API, the published ports and docker-compose.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from melanoma.compose_env import new_env, parse_dotenv
from melanoma.layout import STAGES, RunLayout
from tests.compose import standins
from tests.conftest import REPO_ROOT
from tests.synthetic import write_archive

pytestmark = pytest.mark.compose

PROJECT = "melanomaci"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
# The gpu-queue worker's service: built from the trainer target, run here without a GPU.
GPU_WORKER = "airflow-gpu-worker"
# Every task that runs a model, and the profile's choice: taken by the trainer image's worker.
GPU_TASKS = (
    "choose_profile",
    "train",
    "explain",
    "measure_robustness",
    "decide_promotion",
)


def without_gpu_reservation(compose_file: Path, out: Path) -> Path:
    """The compose file with the GPU worker's device reservation removed, nothing else:
    this machine has no NVIDIA runtime, and docker-compose 1.29's overrides can only add
    keys, not remove them. The trainer image then runs TensorFlow's CUDA build on the CPU."""
    import yaml

    spec = yaml.safe_load(compose_file.read_text())
    spec["services"][GPU_WORKER].pop("deploy")
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


WEIGHTS_DIR = REPO_ROOT / "docker" / "weights"
SHARED_WEIGHTS = REPO_ROOT.parent / "shared/data/weights/mobilenet_v2_1.0_224_no_top.weights.h5"
WEIGHTS_FILE = "mobilenet_v2_1.0_224_no_top.weights.h5"
ONE_SHOTS = {"minio-init", "airflow-init"}
MIRROR_ALIAS = "ham10000-mirror"
# A small, fast run: MobileNetV2 (the image's offline weights) at 64 px, one epoch per phase.
RUN_CONF = {
    "source": "/data/ham10000",
    "image_size": 64,
    "phase1_epochs": 1,
    "phase2_epochs": 1,
    "unfreeze_blocks": 1,
    "batch_size": 16,
    "augment_copies": 0,
    "bootstrap_replicates": 200,
    "gradcam_per_outcome": 1,
    "gradcam_random": 2,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Compose:
    """docker-compose on the repository's compose file (``compose_file``: the same without
    the GPU reservation) with the `gpu` profile, the test's .env and project name."""

    def __init__(self, env_file: Path, compose_file: Path = COMPOSE_FILE) -> None:
        self.env_file = env_file
        self.compose_file = compose_file
        self.env = parse_dotenv(env_file.read_text())

    def __call__(
        self, *args: str, timeout: float = 900, check: bool = True, stdout_only: bool = False
    ) -> str:
        command = ["docker-compose", "-p", PROJECT, "--env-file", str(self.env_file)]
        command += ["--project-directory", str(REPO_ROOT), "--profile", "gpu"]
        done = subprocess.run(
            [*command, "-f", str(self.compose_file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: {done.stderr[-4000:]}")
        return done.stdout if stdout_only else done.stdout + done.stderr

    def containers(self) -> dict[str, dict]:
        """Every container of the project (running or not): name -> docker inspect."""
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not ids:
            return {}
        inspected = json.loads(
            subprocess.run(
                ["docker", "inspect", *ids], capture_output=True, text=True, check=True
            ).stdout
        )
        return {c["Name"].lstrip("/"): c for c in inspected}

    def wait_healthy(self, timeout: float = 900) -> None:
        """Every service healthy (or, for the one-shots, exited 0); fail fast on a dead one."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = []
            for name, c in self.containers().items():
                service = c["Config"]["Labels"]["com.docker.compose.service"]
                state = c["State"]
                if service in ONE_SHOTS:
                    if state["Status"] == "exited" and state["ExitCode"] != 0:
                        raise AssertionError(f"{name} failed:\n{self.logs(service)}")
                    if state["Status"] != "exited":
                        waiting.append(name)
                elif state.get("Health", {}).get("Status", "healthy") != "healthy" or (
                    state["Status"] != "running"
                ):
                    waiting.append(
                        f"{name} ({state.get('Health', {}).get('Status', state['Status'])})"
                    )
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy after {timeout} s: {waiting}")
            time.sleep(5)

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", "--tail", "60", service, check=False)

    def exec(self, service: str, command: str, index: int = 1, stdout_only: bool = False) -> str:
        return self(
            "exec",
            "-T",
            "--index",
            str(index),
            service,
            "bash",
            "-c",
            command,
            stdout_only=stdout_only,
        )


class Api:
    """Airflow's REST API as a user reaches it: a JWT from /auth/token, then /api/v2."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        response = requests.post(
            f"{self.base}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        assert response.status_code in (200, 201), response.text
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)

    def json(self, method: str, path: str, **kwargs) -> dict:
        response = self(method, path, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json()

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        found = self.json("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> requests.Response:
        return self(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            headers={"Accept": "application/json"},
        )

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self("GET", f"/dags/{dag_id}").status_code != 200:
            assert time.monotonic() < deadline, f"{dag_id} was not parsed within {timeout} s"
            time.sleep(3)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1800, on_poll=None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if on_poll:
                on_poll(run)
            if run["state"] in ("success", "failed"):
                return run
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {run['state']}"
            time.sleep(5)


def log_text(response: requests.Response) -> str:
    content = response.json().get("content", [])
    return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)


def sha256sums(root: Path) -> str:
    return "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(root.iterdir())
    )


def place_weights() -> tuple[Path | None, str]:
    """The image's offline weights: the shared MobileNetV2 file, else generated ones.

    Returns the file placed (None when one was there already) and its sha256, which the
    run is told to expect (a generated file is not a known ImageNet file).
    """
    target = WEIGHTS_DIR / WEIGHTS_FILE
    if target.exists():
        return None, hashlib.sha256(target.read_bytes()).hexdigest()
    if SHARED_WEIGHTS.is_file():
        shutil.copy(SHARED_WEIGHTS, target)
    else:  # a user's machine without the shared data: random weights of the same shape
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import keras, sys; keras.applications.MobileNetV2(include_top=False, "
                "weights=None, input_shape=(224, 224, 3)).save_weights(sys.argv[1])",
                str(target),
            ],
            check=True,
        )
    return target, hashlib.sha256(target.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack, built and started from the README's steps, with a generated archive."""
    assert shutil.which("docker-compose"), (
        "make test-compose needs docker-compose (apt-get install docker-compose)"
    )
    assert standins.main() == 0, "a base image could be neither pulled nor stood in for"
    work = tmp_path_factory.mktemp("compose")
    archive = write_archive(work / "ham10000", seed=0)
    placed, weights_sha256 = place_weights()

    # The README's steps: `make env` (fresh secrets), then the settings of a small offline run.
    settings = {
        "HAM10000_HOST_DIR": str(archive.root),
        # The pipeline run reads the mounted archive (RUN_CONF); the dataset check reads a mirror.
        "HAM10000_SOURCE": f"http://{MIRROR_ALIAS}:8000/",
        "MELANOMA_BACKBONE": "mobilenet_v2",
        "MELANOMA_PRETRAINED_WEIGHTS": f"/opt/melanoma/weights/{WEIGHTS_FILE}",
        "FETCH_IMAGENET_WEIGHTS": "0",
        "MELANOMA_PRETRAINED_SHA256": weights_sha256,
        "MELANOMA_SCHEDULE": "none",
        # With the gpu profile's worker up, the default worker leaves the gpu queue to it.
        "AIRFLOW_WORKER_QUEUES": "default",
        "SPARK_WORKER_CORES": "1",
        "SPARK_WORKER_MEMORY": "1g",
        "AIRFLOW_PORT": str(free_port()),
        "MINIO_API_PORT": str(free_port()),
        "MINIO_CONSOLE_PORT": str(free_port()),
        "SPARK_MASTER_UI_PORT": str(free_port()),
    }
    dotenv = new_env((REPO_ROOT / ".env.example").read_text())
    for name, value in settings.items():
        dotenv = re.sub(rf"^{name}=.*$", f"{name}={value}", dotenv, flags=re.MULTILINE)
    env_file = work / ".env"
    env_file.write_text(dotenv)
    compose = Compose(env_file, without_gpu_reservation(COMPOSE_FILE, work / "compose.yaml"))
    compose("down", "-v", "--remove-orphans", check=False)
    try:
        started = time.monotonic()
        compose("build", timeout=3600)
        build_seconds = time.monotonic() - started
        sizes = {
            image: int(
                subprocess.run(
                    ["docker", "image", "inspect", "-f", "{{.Size}}", image],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            for image in ("melanoma-airflow:latest", "melanoma-trainer:latest")
        }
        print(
            f"\ndocker-compose build: {build_seconds:.0f} s; image sizes: "
            + ", ".join(f"{image} {size / 1e9:.2f} GB" for image, size in sizes.items())
        )
        if placed:
            placed.unlink()

        yield compose, archive, work, build_seconds
    finally:
        if placed and placed.exists():
            placed.unlink()
        if os.environ.get("MELANOMA_COMPOSE_KEEP") != "1":
            subprocess.run(["docker", "rm", "-f", f"{PROJECT}-mirror"], capture_output=True)
            compose("down", "-v", "--remove-orphans", check=False)


def test_placeholder_secrets_stop_the_stack_before_airflow_starts(stack):
    _, _, work, _ = stack
    example = work / "placeholders.env"
    text = (REPO_ROOT / ".env.example").read_text()
    example.write_text(
        re.sub(r"^HAM10000_HOST_DIR=.*$", f"HAM10000_HOST_DIR={work}", text, flags=re.M)
    )
    placeholder = Compose(example, stack[0].compose_file)
    out = placeholder("run", "--rm", "--no-deps", "airflow-init", check=False)
    assert "refusing to start: AIRFLOW_JWT_SECRET in .env is the placeholder" in out, out
    assert "refusing to start: AIRFLOW_FERNET_KEY" in out


def test_the_stack_runs_the_dag_end_to_end_and_survives_restarts(stack):
    compose, _, work, _ = stack
    started = time.monotonic()
    compose("up", "-d", "--scale", "spark-worker=2", timeout=1800)
    compose.wait_healthy()
    print(f"up, all healthy: {time.monotonic() - started:.0f} s")
    env = compose.env
    api = Api(int(env["AIRFLOW_PORT"]), env["AIRFLOW_ADMIN_USER"], env["AIRFLOW_ADMIN_PASSWORD"])

    # Ports are published on loopback only (PUBLISH_ADDRESS).
    for c in compose.containers().values():
        for bindings in (c["HostConfig"]["PortBindings"] or {}).values():
            assert all(b["HostIp"] == "127.0.0.1" for b in bindings), c["Name"]

    # Images: exactly the lock, no test tooling; the weights directory writable by group 0.
    image_check = compose.exec(
        "airflow-worker",
        "uv pip check && (python -c 'import pytest' 2>/dev/null && echo HAS-PYTEST || true)"
        " && pip list 2>/dev/null | grep -iE '^pyspark' ; stat -c '%a %u:%g' /opt/melanoma/weights"
        " && ls /opt/melanoma/weights",
    )
    assert (
        "All installed packages are compatible" in image_check and "HAS-PYTEST" not in image_check
    )
    assert re.search(r"^775 50000:0$", image_check, re.M), image_check
    assert WEIGHTS_FILE in image_check
    # The trainer image: exactly the GPU lock (TensorFlow's CUDA build), no test tooling.
    trainer_check = compose.exec(
        GPU_WORKER,
        "uv pip check && (python -c 'import pytest' 2>/dev/null && echo HAS-PYTEST || true)"
        " && python -c 'import tensorflow as tf; print(\"cuda build:\", tf.test.is_built_with_cuda())'"
        " 2>/dev/null",
    )
    assert "All installed packages are compatible" in trainer_check, trainer_check
    assert "HAS-PYTEST" not in trainer_check and "cuda build: True" in trainer_check
    gpu_host = compose.exec(GPU_WORKER, "hostname", stdout_only=True).strip()

    # Trigger the pipeline through the REST API and follow it.
    api.wait_for_dag("melanoma_pipeline")
    run = api.json(
        "POST", "/dags/melanoma_pipeline/dagRuns", json={"logical_date": None, "conf": RUN_CONF}
    )
    run_id = run["dag_run_id"]
    seen: dict[str, object] = {}
    restart = threading.Thread(
        target=lambda: seen.update(
            restart=compose(
                "restart",
                "-t",
                "600",
                "airflow-scheduler",
                "airflow-worker",
                GPU_WORKER,
                timeout=900,
            )
        )
    )

    def on_poll(_run):
        tis = api.task_instances("melanoma_pipeline", run_id)
        train = tis.get("train", {})
        if train.get("state") == "running" and "running_log" not in seen:
            # A running task's log comes from the worker's log server (signed with [api] secret_key).
            response = api.log("melanoma_pipeline", run_id, "train", train["try_number"])
            seen["running_log"] = (
                response.status_code,
                log_text(response) if response.ok else response.text,
            )
            seen["done_before_restart"] = {
                t: ti["end_date"] for t, ti in tis.items() if ti["state"] == "success"
            }
            restart.start()

    run = api.wait_for_run("melanoma_pipeline", run_id, on_poll=on_poll)
    if restart.is_alive():
        restart.join()
    tis = api.task_instances("melanoma_pipeline", run_id)
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}

    status, text = seen["running_log"]
    # Served by the worker's log server (port 8793), which checks the [api] secret_key token.
    assert status == 200 and ":8793/log/" in text, text[-2000:]
    assert "Forbidden" not in text and "Could not read served logs" not in text, text[-2000:]
    assert "restart" in seen, "the scheduler and worker were not restarted mid-run"
    # Nothing re-done: every task ran once; those finished before the restart kept their end.
    assert {t: ti["try_number"] for t, ti in tis.items() if ti["state"] == "success"} == {
        t: 1 for t, ti in tis.items() if ti["state"] == "success"
    }
    for task_id, end in seen["done_before_restart"].items():
        assert tis[task_id]["end_date"] == end, task_id
    finished_log = api.log("melanoma_pipeline", run_id, "split_dataset", 1)
    split_commit = RunLayout.for_run_id(run_id).commit("split")
    assert finished_log.status_code == 200 and split_commit in log_text(finished_log)

    # Every task that runs a model was taken by the trainer image's worker, on the gpu
    # queue, running TensorFlow's CUDA build on this machine's CPU; the rest by the default
    # worker. No GPU here, so the run took the cpu profile, and the log says why.
    for task_id in GPU_TASKS:
        assert tis[task_id]["state"] == "success" and tis[task_id]["queue"] == "gpu", task_id
    hosts = {t: (ti["queue"], ti["hostname"]) for t, ti in tis.items() if ti["hostname"]}
    # external_validation is on the gpu queue too: it ran there and skipped (it is off).
    assert all((host == gpu_host) == (queue == "gpu") for queue, host in hosts.values()), hosts
    profile_log = log_text(api.log("melanoma_pipeline", run_id, "choose_profile", 1))
    assert "hardware profile cpu: TensorFlow on the training worker sees no GPU" in profile_log

    # preprocess ran on the containerised Spark master, with executors on both workers.
    master = json.loads(compose.exec("spark-master", "curl -fsS http://localhost:8080/json/"))
    [app] = master["completedapps"]
    assert app["name"].startswith("melanoma-preprocess"), app
    assert len(master["workers"]) == 2 and master["url"] == "spark://spark-master:7077"
    app_id = app["id"]
    for index in (1, 2):
        worker = json.loads(
            compose.exec("spark-worker", "curl -fsS http://localhost:8081/json/", index)
        )
        assert app_id in {e["appid"] for e in worker["finishedexecutors"]}, f"worker {index}"

    # The run's artifacts are in the MinIO bucket, every stage committed.
    layout = RunLayout.for_run_id(run_id)
    keys = bucket_keys(env, layout.prefix + "/")
    for key in (
        layout.config,
        layout.splits,
        layout.model,
        layout.calibration,
        layout.metrics,
        layout.gradcam_summary,
        layout.report,
        *(layout.commit(stage) for stage in STAGES),
    ):
        assert key in keys, key
    assert any(k.startswith(layout.preprocessed + "/") and k.endswith(".parquet") for k in keys)
    assert any(k.startswith(layout.gradcam + "/") and k.endswith(".png") for k in keys)

    check_runs_page(api, env, layout, work)

    # The dataset check: unpaused, it downloads a new version from a mirror into the cache
    # volume and emits the asset. The pipeline is paused first so that the asset queues no run.
    api.json("PATCH", "/dags/melanoma_pipeline", json={"is_paused": True})
    mirror = write_archive(work / "mirror", seed=1)
    (mirror.root / "SHA256SUMS").write_text(sha256sums(mirror.root))
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            f"{PROJECT}-mirror",
            "--network",
            f"{PROJECT}_default",
            "--network-alias",
            MIRROR_ALIAS,
            "-v",
            f"{mirror.root}:/srv:ro",
            "-w",
            "/srv",
            "python:3.11-slim-bookworm",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
        check=True,
        capture_output=True,
    )
    api.wait_for_dag("ham10000_new_version")
    assert api.json("GET", "/dags/ham10000_new_version")["is_paused"] is True
    api.json("PATCH", "/dags/ham10000_new_version", json={"is_paused": False})
    # Unpaused, the scheduler may start its latest daily run too; either run may be the one
    # that finds the new version: exactly one stores it, any other is skipped.
    manual = api.json("POST", "/dags/ham10000_new_version/dagRuns", json={"logical_date": None})
    api.wait_for_run("ham10000_new_version", manual["dag_run_id"], timeout=600)
    downloads = {}
    for check in api.json("GET", "/dags/ham10000_new_version/dagRuns")["dag_runs"]:
        check_id = check["dag_run_id"]
        assert api.wait_for_run("ham10000_new_version", check_id, timeout=600)["state"] == "success"
        ti = api.task_instances("ham10000_new_version", check_id)["download_dataset"]
        downloads[check_id] = ti["state"]
        if ti["state"] == "success":
            log = log_text(api.log("ham10000_new_version", check_id, "download_dataset", 1))
            assert "/opt/airflow/cache/mirror/" in log, log
    states = list(downloads.values())
    assert states.count("success") == 1 and set(states) <= {"success", "skipped"}, downloads
    events = api.json("GET", "/assets/events", params={"source_dag_id": "ham10000_new_version"})
    assert events["total_entries"] >= 1

    subprocess.run(["docker", "rm", "-f", f"{PROJECT}-mirror"], check=True, capture_output=True)

    # down and up again: the run's history and its artifacts are still there (named volumes).
    compose("down", timeout=900)
    compose("up", "-d", "--scale", "spark-worker=2", timeout=1800)
    compose.wait_healthy()
    api = Api(int(env["AIRFLOW_PORT"]), env["AIRFLOW_ADMIN_USER"], env["AIRFLOW_ADMIN_PASSWORD"])
    assert api.json("GET", f"/dags/melanoma_pipeline/dagRuns/{run_id}")["state"] == "success"
    assert bucket_keys(env, layout.prefix + "/") == keys
    assert api.log("melanoma_pipeline", run_id, "train", 1).status_code == 200


def check_runs_page(api: Api, env: dict[str, str], layout: RunLayout, work: Path) -> None:
    """The "Melanoma runs" page of the compose stack's API server, reading MinIO: the run
    listed with its stored AUROC, its artifact tree, and its model downloaded byte for byte
    as its commit record lists it; then the page in a real Chromium, where there is one."""
    base, session = f"{api.base}/melanoma-runs", api.session
    metrics = json.loads(bucket_object(env, layout.metrics))
    auroc = metrics["threshold_free"]["auroc"]["value"]
    page = session.get(f"{base}/", timeout=60)
    assert page.ok and "Research use only" in page.text, page.text[:2000]
    row = page.text.split(f"<tr data-run='{layout.key}'>")[1].split("</tr>")[0]
    assert "reported" in row and f"{auroc:.3f}" in row and "&#9733; champion" in row
    point = f"data-run='{layout.key}' data-value='{auroc:.6f}'"
    assert point in page.text  # the trend chart's test point
    tree = session.get(f"{base}/runs/{layout.key}/artifacts/", timeout=60)
    assert tree.ok and "model.keras" in tree.text
    model = session.get(f"{base}/runs/{layout.key}/model/model.keras", timeout=300)
    record = json.loads(bucket_object(env, layout.commit("train")))["artifacts"]["model"]
    assert hashlib.sha256(model.content).hexdigest() == record["sha256"]
    assert model.headers["content-disposition"] == 'attachment; filename="model.keras"'
    states = session.get(f"{base}/state.json", params={"run": layout.key}, timeout=60).json()
    assert states[layout.key]["complete"] is True
    one = session.get(f"{base}/compare", params={"run": layout.key}, timeout=60)
    assert one.status_code == 400 and "tick 2 to 4 runs" in one.text
    assert session.get(f"{base}/static/runs_page.js", timeout=60).ok

    from tests.browser import chromium_binary, chromium_page, sign_in_to_airflow

    if chromium_binary() is None:
        print("runs page: no chromium here, so no browser check under compose")
        return
    with chromium_page() as browser:
        sign_in_to_airflow(
            browser, api.base, env["AIRFLOW_ADMIN_USER"], env["AIRFLOW_ADMIN_PASSWORD"]
        )
        browser.goto(f"{api.base}/plugin/melanoma-runs")
        frame = browser.frame_locator("iframe")
        frame.locator(f"tr[data-run='{layout.key}']", has_text="reported").wait_for()
        browser.screenshot(path=work / "compose_runs_page.png", full_page=True)


def bucket_client(env: dict[str, str]):
    from minio import Minio

    return Minio(
        f"127.0.0.1:{env['MINIO_API_PORT']}",
        access_key=env["MINIO_ROOT_USER"],
        secret_key=env["MINIO_ROOT_PASSWORD"],
        secure=False,
    )


def bucket_object(env: dict[str, str], key: str) -> bytes:
    response = bucket_client(env).get_object(env["MELANOMA_BUCKET"], key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def bucket_keys(env: dict[str, str], prefix: str) -> set[str]:
    objects = bucket_client(env).list_objects(env["MELANOMA_BUCKET"], prefix=prefix, recursive=True)
    return {o.object_name for o in objects}
