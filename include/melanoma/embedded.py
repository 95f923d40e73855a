"""The embedded stack: the same DAG without Docker.

* a Spark standalone master and one worker, started from the installed pyspark
  distribution with ``spark-class`` (exactly as the Spark image starts them), bound
  to 127.0.0.1, health-checked through the master's JSON status page, stopped by pid;
* Airflow with its home in ``.airflow/`` (SQLite metadata DB), connections from
  environment variables. ``run`` starts ``airflow api-server`` (the UI, and the execution
  API that task processes report to) and runs the DAG once with ``airflow dags test
  --use-executor``: each task runs in its own process, as under the scheduler, and writes
  its log under ``.airflow/logs/`` in Airflow's own layout, where the UI reads it;
* a ``file://`` object store in ``.store/``.

Command line (``melanoma-stack``): ``run`` (start, run the DAG once, stop),
``start`` / ``stop`` / ``status``, ``env`` (print the environment as shell exports,
for ``airflow standalone``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from melanoma.run import Run

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The embedded stack cannot start: one line for the user, no traceback."""


PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "melanoma_pipeline"


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package."""
    spec = find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyspark is not installed in this environment")
    return Path(spec.origin).parent


@dataclass(frozen=True)
class SparkStandalone:
    """A Spark standalone master and ``workers`` workers (one by default) on 127.0.0.1."""

    state_dir: Path
    master_port: int = 7077
    master_webui_port: int = 8080
    worker_webui_port: int = 8081
    worker_cores: int = max(1, os.cpu_count() or 1)
    worker_memory: str = "4g"
    workers: int = 1  # more than one only to test losing a worker mid-job

    @property
    def roles(self) -> list[str]:
        return ["master", "worker", *(f"worker-{i}" for i in range(2, self.workers + 1))]

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def _pid_file(self, role: str) -> Path:
        return self.state_dir / f"spark-{role}.pid"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SPARK_HOME": str(spark_home()),
                "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_LOG_DIR": str(self.log_dir),
                "SPARK_WORKER_DIR": str(self.state_dir / "work"),
                "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable,
            }
        )
        return env

    def start(self, timeout_s: float = 90.0) -> None:
        if self.running():
            log.info("Spark standalone already running at %s", self.master_url)
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        spark_class = str(spark_home() / "bin" / "spark-class")
        self._launch(
            "master",
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.master_port),
                "--webui-port",
                str(self.master_webui_port),
            ],
        )
        for number, role in enumerate(self.roles[1:]):
            self._launch(role, self._worker_command(spark_class, number))
        self._wait_until_healthy(timeout_s)

    def _worker_command(self, spark_class: str, number: int) -> list[str]:
        return [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            self.master_url,
            "--host",
            "127.0.0.1",
            "--cores",
            str(self.worker_cores),
            "--memory",
            self.worker_memory,
            "--webui-port",
            str(self.worker_webui_port if number == 0 else 0),  # 0: any free port
            "--work-dir",
            str(self.state_dir / "work"),
        ]

    def _wait_until_healthy(self, timeout_s: float) -> None:
        """Until the master is ALIVE with every worker; stops everything if a role dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.master_status()
            alive = status.get("aliveworkers", 0) if status else 0
            if status and status.get("status") == "ALIVE" and alive >= self.workers:
                log.info(
                    "Spark standalone up: %s, %d worker(s), %s cores; UI http://127.0.0.1:%d",
                    self.master_url,
                    status["aliveworkers"],
                    status.get("cores"),
                    self.master_webui_port,
                )
                return
            for role in self.roles:
                if not _alive(self.read_pid(role)):
                    self.stop()
                    raise RuntimeError(
                        f"Spark {role} exited during start-up; see {self.log_dir}/spark-{role}.out"
                    )
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"Spark standalone not healthy after {timeout_s:.0f}s; see {self.log_dir}"
        )

    def _launch(self, role: str, command: list[str]) -> None:
        # spark-class execs java, so this pid is the JVM's; a new session lets stop() reach any children.
        with open(self.log_dir / f"spark-{role}.out", "ab") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                cwd=self.state_dir,
            )
        self._pid_file(role).write_text(str(process.pid))

    def master_status(self) -> dict | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.master_webui_port}/json/", timeout=2
            ) as r:
                return json.load(r)
        except (OSError, ValueError):
            return None

    def read_pid(self, role: str) -> int | None:
        try:
            return int(self._pid_file(role).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        return all(_alive(self.read_pid(r)) for r in self.roles)

    def stop(self, timeout_s: float = 20.0) -> None:
        for role in reversed(self.roles):
            pid = self.read_pid(role)
            if _alive(pid):
                _terminate(pid, timeout_s)  # type: ignore[arg-type]
                log.info("Spark %s (pid %d) stopped", role, pid)
            self._pid_file(role).unlink(missing_ok=True)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers kill(0).
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _terminate(pid: int, timeout_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


# The Airflow UI's port on the embedded stack (`make ui`, and `make run` while it runs).
DEFAULT_UI_PORT = 8080


def ui_port_from_env() -> int:
    """MELANOMA_UI_PORT, checked (StackError names a value that is not a port)."""
    text = os.environ.get("MELANOMA_UI_PORT", "").strip() or str(DEFAULT_UI_PORT)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise StackError(f"MELANOMA_UI_PORT={text!r} is not a port number (1-65535)")
    return int(text)


def local_url(host: str, port: int) -> str:
    """The API server as this machine reaches it: on loopback when it listens everywhere."""
    reachable = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"http://{f'[{reachable}]' if ':' in reachable else reachable}:{port}"


def airflow_environment(
    root: Path,
    spark: SparkStandalone,
    store_url: str,
    home: Path | None = None,
    ui_port: int | None = None,
) -> dict[str, str]:
    """Environment for Airflow commands on the embedded stack (home, DB, connections, store,
    the UI's port and the execution API that task processes report to)."""
    home = home or root / ".airflow"
    port = ui_port or ui_port_from_env()
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ)
    host = env.get("MELANOMA_UI_HOST", "127.0.0.1")
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW_CONN_SPARK_DEFAULT": f"spark://127.0.0.1:{spark.master_port}?deploy-mode=client",
            "MELANOMA_STORE_URL": store_url,
            "MELANOMA_CACHE_DIR": env.get("MELANOMA_CACHE_DIR", str(root / ".cache")),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            # The UI (`make ui`) on loopback only; MELANOMA_UI_HOST=0.0.0.0 opens it up.
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            # Task processes report to the API server on this machine.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{local_url(host, port)}/execution/",
            # spark-submit and airflow from this environment, whatever the caller's PATH.
            "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    # Relative local paths given by the user mean relative to where they ran the command.
    for name in ("HAM10000_SOURCE", "MELANOMA_PRETRAINED_WEIGHTS"):
        if env.get(name) and Path(env[name]).expanduser().exists():
            env[name] = str(Path(env[name]).expanduser().resolve())
    return env


def migrate_airflow_db(env: dict[str, str]) -> None:
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


# Run in the stack's environment (its Airflow DB): mark the DAG's unfinished runs, and
# their running task instances, failed; print each run's id.
_FAIL_INTERRUPTED_RUNS = """
import sys
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState, TaskInstanceState
active = (TaskInstanceState.RUNNING, TaskInstanceState.QUEUED, TaskInstanceState.SCHEDULED,
          TaskInstanceState.UP_FOR_RETRY, TaskInstanceState.RESTARTING)
with create_session() as session:
    runs = session.query(DagRun).filter(
        DagRun.dag_id == sys.argv[1], DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED])
    )
    for run in runs.all():
        for ti in run.get_task_instances(state=active, session=session):
            ti.state = TaskInstanceState.FAILED
        run.set_state(DagRunState.FAILED)
        print("failed-run", run.run_id)
"""


def fail_interrupted_runs(env: dict[str, str]) -> list[str]:
    """Mark failed the DAG runs an interrupted ``make run`` left running, and return their
    ids. With the stack's lock held (``stack_lock``) no other run can be alive; left as
    running, such a run would hold the DAG's one active run (``max_active_runs=1``) and
    the next ``dags test`` would wait on it, or finish it with a stale configuration."""
    done = subprocess.run(
        [sys.executable, "-c", _FAIL_INTERRUPTED_RUNS, DAG_ID],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise StackError(f"could not clear the runs an interrupted make run left: {last}")
    # Only the lines the script prints: Airflow may print warnings of its own.
    return [line.split()[1] for line in done.stdout.splitlines() if line.startswith("failed-run ")]


@contextlib.contextmanager
def stack_lock(home: Path) -> Iterator[None]:
    """Hold ``AIRFLOW_HOME/make-run.lock`` for the block: one ``make run`` per Airflow home.
    The kernel releases it when the process dies, however it dies."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "make-run.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another `make run` is using {home}; wait for it, or stop it"
            ) from None
        yield


# make run's API server records its pid here; an interrupted make run leaves it behind.
API_SERVER_PID_FILE = "make-run-api-server.pid"


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def api_server(env: dict[str, str], timeout_s: float = 180.0) -> Iterator[str]:
    """``airflow api-server`` on the environment's port for the duration of the block: the
    UI, and the execution API that each task's process reports to. Yields its URL."""
    port = int(env["AIRFLOW__API__PORT"])
    if _port_in_use(port):
        raise StackError(
            f"port {port} is in use (is `make ui` running? stop it, or set MELANOMA_UI_PORT)"
        )
    home = Path(env["AIRFLOW_HOME"])
    log_path = home / "api-server.log"
    host = env["AIRFLOW__API__HOST"]
    command = ["airflow", "api-server", "--host", host, "--port", str(port), "--workers", "1"]
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file = home / API_SERVER_PID_FILE
    pid_file.write_text(str(process.pid))
    url = local_url(host, port)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(f"{url}/api/v2/monitor/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"airflow api-server did not come up on {url}; see {log_path}")
            time.sleep(1)
        yield url
    finally:
        _terminate(process.pid, 30)
        process.wait()
        pid_file.unlink(missing_ok=True)


def stop_stale_api_server(home: Path) -> int | None:
    """Stop the API server an interrupted ``make run`` left running in this Airflow home
    (its pid file names it), and return its pid; None when there is none. Called with the
    stack's lock held, so no live ``make run`` owns it. A pid now used by a process that
    is not Airflow's API server is left alone."""
    pid_file = home / API_SERVER_PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    pid_file.unlink(missing_ok=True)
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # Airflow's process title ("airflow api_server -- …") or its command line before that.
    if b"airflow" not in command or not (b"api_server" in command or b"api-server" in command):
        return None
    _terminate(pid, 30)
    return pid


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def run_dag(env: dict[str, str], conf: dict | None = None) -> int:
    """Run the DAG once through the executor, so that every task writes its log file."""
    command = ["airflow", "dags", "test", DAG_ID, "--use-executor"]
    if conf:
        command += ["--conf", json.dumps(conf)]
    with api_server(env) as url:
        log.info("Airflow UI while the run lasts: %s", url)
        log.info("running: %s", shlex.join(command))
        return run_without_repeats(command, env)


# ``dags test`` logs this once a second while a task runs (the rest wait on it), with
# every waiting task named: hundreds of long lines a run that say nothing new.
WAITING_WARNING = "No tasks to run. unrunnable tasks:"


def run_without_repeats(command: list[str], env: dict[str, str]) -> int:
    """Run ``command``, its output (stdout and stderr) passed through, but a
    ``WAITING_WARNING`` line only when the line before it was not one; its exit status.
    Interrupted (Ctrl-C), it kills the command, as ``subprocess.run`` does; the next
    ``make run`` marks the run it leaves failed (``fail_interrupted_runs``)."""
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        waiting = False
        try:
            for line in process.stdout:
                repeat = waiting and WAITING_WARNING in line
                waiting = WAITING_WARNING in line
                if not repeat:
                    sys.stdout.write(line)
                    sys.stdout.flush()
        except BaseException:
            process.kill()
            raise
    return process.returncode


def run_summary(run: Run) -> list[str]:
    """What a finished run was and gave, for the end of ``make run``: its configuration as
    run (``config.json``) and its headline figures, each from its committed artifact."""
    config = run.config()
    lines = [f"Run {config.run_id}: {run.layout.prefix} in {run.store.url}"]
    if config.profile:
        lines.append(f"  hardware profile {config.profile['name']}: {config.profile['why']}")
    lines.append("  configuration: " + json.dumps(config.config, sort_keys=True))
    if run.committed("train"):
        training = run.training_record().config
        lines.append("  training: " + json.dumps(training, sort_keys=True))
    auroc = run.metrics().auroc
    lines.append(
        f"  test AUROC {auroc['value']:.4f} ({auroc['ci_low']:.4f}-{auroc['ci_high']:.4f})"
    )
    if run.committed("robustness"):
        robustness = run.read_json("robustness", "robustness")
        lines.append(
            f"  mean AUROC under acquisition shift {robustness['mean_auroc']:.4f} on "
            f"{robustness['images']} test images (clean {robustness['clean_auroc']['value']:.4f})"
        )
    promotion = run.promotion()
    if promotion is not None:
        benchmark = promotion.candidate.get("benchmark_auroc")
        if benchmark:
            lines.append(f"  promotion benchmark AUROC {benchmark['value']:.4f}")
        verdict = "promoted" if promotion.promote else "not promoted"
        lines.append(f"  {verdict}: {promotion.reasons[-1]}")
    if run.committed("report"):
        lines.append(f"  report: {run.store.url}/{run.layout.report}")
    return lines


def print_run_summary(env: dict[str, str], since: datetime, store_url: str) -> None:
    """Print ``run_summary`` of the run that just succeeded (nothing if it cannot be found)."""
    from melanoma.run import Run
    from melanoma.store import open_store

    found = latest_run_task_states(env, since)
    if found is None:
        return
    try:
        run = Run.find(open_store(store_url, create=False), found[0])
        print("\n" + "\n".join(run_summary(run)))
    except (LookupError, KeyError, ValueError, OSError) as error:
        print(f"(no summary of run {found[0]}: {error})")


def airflow_cli_json(env: dict[str, str], *args: str) -> list[dict[str, str]]:
    """The rows an ``airflow … --output json`` command prints; none if it fails."""
    done = subprocess.run(
        ["airflow", *args, "--output", "json"], env=env, capture_output=True, text=True
    )
    if done.returncode:
        return []
    # The JSON comes after any warnings Airflow prints while it loads.
    lines = done.stdout.splitlines()
    for start, line in enumerate(lines):
        if line.startswith(("[{", "[]")):
            try:
                return json.loads("\n".join(lines[start:]))
            except ValueError:
                continue
    return []


def latest_run_task_states(
    env: dict[str, str], since: datetime
) -> tuple[str, dict[str, str]] | None:
    """The DAG's newest run id and its tasks' states, from the Airflow CLI; None when no run
    started at ``since`` or later (``dags test`` failed before it made one)."""
    runs = airflow_cli_json(env, "dags", "list-runs", DAG_ID)
    runs = [r for r in runs if _after(r.get("run_after"), since)]
    if not runs:
        return None
    run_id = runs[0]["run_id"]  # newest first
    states = airflow_cli_json(env, "tasks", "states-for-dag-run", DAG_ID, run_id)
    return run_id, {row["task_id"]: row["state"] for row in states}


def task_log_file(env: dict[str, str], run_id: str, task_id: str) -> Path | None:
    """The task's last attempt's log file, in Airflow's default layout under AIRFLOW_HOME."""
    folder = (
        Path(env["AIRFLOW_HOME"]) / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    ) / f"task_id={task_id}"
    attempts = sorted(folder.glob("attempt=*.log"), key=lambda p: int(p.stem.split("=")[1]))
    return attempts[-1] if attempts else None


def readable_log_tail(path: Path, lines: int = 25) -> list[str]:
    """The last ``lines`` of a task log, its JSON records as ``time level message`` (with an
    exception's type and message, not its frames)."""
    out: list[str] = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            out.append(raw)
            continue
        if not isinstance(record, dict):
            out.append(raw)
            continue
        stamp = str(record.get("timestamp", ""))[11:19]
        out.append(f"{stamp} {str(record.get('level', '')).upper():<7} {record.get('event', '')}")
        for error in record.get("error_detail") or []:
            if isinstance(error, dict):
                out.append(f"         {error.get('exc_type')}: {error.get('exc_value')}")
    return out[-lines:]


def _after(stamp: str | None, since: datetime) -> bool:
    try:
        return stamp is not None and datetime.fromisoformat(stamp) >= since
    except ValueError:
        return False


def print_failed_task_logs(env: dict[str, str], since: datetime) -> None:
    """The end of each failed task's log, for the run that started at ``since`` or later."""
    found = latest_run_task_states(env, since)
    if found is None:
        return
    run_id, states = found
    for task_id, state in states.items():
        path = task_log_file(env, run_id, task_id) if state == "failed" else None
        if path is None:
            continue
        print(f"\n--- {task_id} failed; the end of its log ({path}):")
        print("\n".join(readable_log_tail(path)))


def default_stack(root: Path = PROJECT_ROOT) -> tuple[SparkStandalone, str]:
    spark = SparkStandalone(
        root / ".stack",
        master_port=int(os.environ.get("SPARK_MASTER_PORT", 7077)),
        master_webui_port=int(os.environ.get("SPARK_MASTER_WEBUI_PORT", 8090)),
        worker_webui_port=int(os.environ.get("SPARK_WORKER_WEBUI_PORT", 8091)),
    )
    store_url = os.environ.get("MELANOMA_STORE_URL") or (root / ".store").as_uri()
    return spark, store_url


# What `melanoma-stack env` exports, for `airflow standalone` on the same stack.
EXPORTED_VARIABLES = (
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW_CONN_SPARK_DEFAULT",
    "MELANOMA_STORE_URL",
    "MELANOMA_CACHE_DIR",
    "PYSPARK_PYTHON",
    "PYSPARK_DRIVER_PYTHON",
    "SPARK_HOME",
    "SPARK_LOCAL_IP",
    "AIRFLOW__API__HOST",
    "AIRFLOW__API__PORT",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "PATH",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="melanoma-stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "start", "stop", "status", "env"])
    parser.add_argument("--conf", default=None, help="DAG params as JSON, for run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        conf = json.loads(args.conf) if args.conf else None
    except ValueError as error:
        parser.error(f"--conf is not JSON: {error}")
    spark, store_url = default_stack()
    try:
        env = airflow_environment(PROJECT_ROOT, spark, store_url)
    except StackError as error:
        print(f"melanoma-stack: {error}", file=sys.stderr)
        return 2
    if args.command == "env":
        print("\n".join(f"export {k}={shlex.quote(env[k])}" for k in EXPORTED_VARIABLES))
        return 0
    if args.command == "status":
        return print_status(spark, store_url)
    if args.command == "stop":
        spark.stop()
        return 0
    spark.start()
    if args.command == "start":
        return 0
    return run_once(spark, env, conf, store_url)


def print_status(spark: SparkStandalone, store_url: str) -> int:
    """The Spark master's state and the store, as JSON; 0 when Spark is running."""
    status = spark.master_status()
    summary = status and {k: status.get(k) for k in ("url", "status", "aliveworkers", "cores")}
    print(json.dumps({"spark": summary, "store": store_url}, indent=2))
    return 0 if spark.running() else 1


def run_once(spark: SparkStandalone, env: dict[str, str], conf: dict | None, store_url: str) -> int:
    """Run the DAG once on the started stack, stop Spark, and say how it went and where
    to look: the run's summary, or the end of each failed task's log."""
    try:
        home = Path(env["AIRFLOW_HOME"])
        with stack_lock(home):
            stale = stop_stale_api_server(home)
            if stale:
                print(f"stopped the API server (pid {stale}) of an interrupted make run")
            migrate_airflow_db(env)
            for run_id in fail_interrupted_runs(env):
                print(f"run {run_id} was left running by an interrupted make run: marked failed")
            started, begun = time.monotonic(), datetime.now(UTC)
            code = run_dag(env, conf)
            elapsed = time.monotonic() - started
    except StackError as error:
        print(f"melanoma-stack: {error}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    if code != 0:
        print_failed_task_logs(env, begun)
    else:
        print_run_summary(env, begun, store_url)
    logs = Path(env["AIRFLOW_HOME"]) / "logs"
    print(f"\nDAG {DAG_ID} {'succeeded' if code == 0 else 'FAILED'} in {elapsed:.0f}s.")
    print(f"Artifacts: {store_url}  (datasets/ham10000/<version>/, runs/<run_id>/)")
    print(f"Task logs: {logs}/dag_id={DAG_ID}/ (and in the UI: make ui)")
    print(f"Spark logs: {spark.log_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
