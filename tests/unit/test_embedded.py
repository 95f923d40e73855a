"""The embedded stack's pure parts: its settings, read once and checked, and task logs made
readable for the end of a failed `make run`."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from melanoma.embedded import (
    API_SERVER_PID_FILE,
    DEFAULT_UI_PORT,
    StackError,
    local_url,
    main,
    readable_log_tail,
    stack_lock,
    stop_stale_api_server,
    ui_port_from_env,
)


def test_the_ui_port_comes_from_the_environment_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.delenv("MELANOMA_UI_PORT", raising=False)
    assert ui_port_from_env() == DEFAULT_UI_PORT
    monkeypatch.setenv("MELANOMA_UI_PORT", "8181")
    assert ui_port_from_env() == 8181
    for bad in ("abc", "-1", "70000", "80.5"):
        monkeypatch.setenv("MELANOMA_UI_PORT", bad)
        with pytest.raises(StackError, match=f"MELANOMA_UI_PORT='{bad}' is not a port"):
            ui_port_from_env()


def test_a_bad_setting_or_conf_is_one_line_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("MELANOMA_UI_PORT", "eighty")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "melanoma-stack: MELANOMA_UI_PORT='eighty' is not a port number (1-65535)"
    monkeypatch.delenv("MELANOMA_UI_PORT")
    with pytest.raises(SystemExit) as usage:
        main(["run", "--conf", "{phase1_epochs: 3}"])
    assert usage.value.code == 2 and "--conf is not JSON" in capsys.readouterr().err


def test_task_processes_reach_the_api_server_where_it_listens():
    assert local_url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert local_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"  # every interface
    assert local_url("192.168.1.5", 8080) == "http://192.168.1.5:8080"
    assert local_url("::1", 8080) == "http://[::1]:8080"


def test_a_task_log_tail_reads_as_lines_with_the_exception_named(tmp_path):
    records = [
        {"timestamp": "2026-12-04T08:01:15.6Z", "level": "info", "event": "Filling up the DagBag"},
        {
            "timestamp": "2026-12-04T08:01:18.4Z",
            "level": "error",
            "event": "Task failed with exception",
            "error_detail": [
                {
                    "exc_type": "FileNotFoundError",
                    "exc_value": "/data/x does not exist",
                    "frames": [],
                }
            ],
        },
    ]
    log = tmp_path / "attempt=1.log"
    log.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    assert readable_log_tail(log) == [
        "08:01:15 INFO    Filling up the DagBag",
        "08:01:18 ERROR   Task failed with exception",
        "         FileNotFoundError: /data/x does not exist",
        "not json",
    ]
    assert readable_log_tail(log, lines=1) == ["not json"]


def test_the_run_summary_gives_the_configuration_and_headline_figures(file_store):
    from melanoma.embedded import run_summary
    from tests.scored_run import write_reported_run

    run = write_reported_run(file_store, "summarised")
    lines = run_summary(run)
    assert lines[0] == f"Run summarised: {run.layout.prefix} in {file_store.url}"
    assert lines[1] == "  hardware profile gpu: the profile param is gpu"
    assert lines[2] == '  configuration: {"label_task": "mel_vs_rest", "seed": 0}'
    auroc = run.read_json("evaluate", "metrics")["threshold_free"]["auroc"]["value"]
    assert lines[3].startswith('  training: {"backbone": "tiny_cnn"')
    assert f"test AUROC {auroc:.4f}" in lines[4]
    assert any(line.startswith("  promotion benchmark AUROC ") for line in lines)
    assert any("promoted: " in line for line in lines)
    assert lines[-1].endswith(run.layout.report)


def test_one_make_run_at_a_time_per_airflow_home(tmp_path):
    first, second = stack_lock(tmp_path), stack_lock(tmp_path)
    with first, pytest.raises(StackError, match="another `make run` is using"), second:
        pass
    with stack_lock(tmp_path):  # released when the first run ended
        pass


def test_the_api_server_an_interrupted_make_run_left_is_stopped_and_nothing_else(tmp_path):
    def process(*argv: str) -> subprocess.Popen:
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)", *argv]
        started = subprocess.Popen(sleeper, start_new_session=True)
        # /proc shows the command line a moment after Popen returns (an empty one before).
        cmdline = Path(f"/proc/{started.pid}/cmdline")
        deadline = time.monotonic() + 30
        while not cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        return started

    pid_file = tmp_path / API_SERVER_PID_FILE
    stale = process("airflow", "api_server")
    pid_file.write_text(str(stale.pid))
    assert stop_stale_api_server(tmp_path) == stale.pid
    assert stale.wait(timeout=30) is not None and not pid_file.exists()

    other = process("not-the-server")  # the pid now belongs to something else
    pid_file.write_text(str(other.pid))
    assert stop_stale_api_server(tmp_path) is None
    assert other.poll() is None
    other.kill()
    assert stop_stale_api_server(tmp_path) is None  # no pid file: nothing to do


def test_the_dag_runs_output_passes_through_without_the_waiting_warnings_repeats(capsys):
    from melanoma.embedded import WAITING_WARNING, run_without_repeats

    script = (
        "import sys\n"
        "print('task split started')\n"
        f"for _ in range(50): print('[warning] {WAITING_WARNING} {{<TaskInstance train>}}')\n"
        "print('task split succeeded', file=sys.stderr)\n"
        f"print('[warning] {WAITING_WARNING} {{<TaskInstance report>}}')\n"
        "sys.exit(3)\n"
    )
    assert run_without_repeats([sys.executable, "-c", script], dict(os.environ)) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "task split started",
        f"[warning] {WAITING_WARNING} {{<TaskInstance train>}}",
        "task split succeeded",
        f"[warning] {WAITING_WARNING} {{<TaskInstance report>}}",
    ]


def test_an_interrupted_dag_run_is_killed_not_waited_for(monkeypatch):
    """Ctrl-C while ``dags test`` runs: the command is killed, as subprocess.run would."""
    from melanoma import embedded

    script = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    pids = []

    class Interrupting:
        def write(self, line: str) -> None:
            pids.append(int(line))
            raise KeyboardInterrupt

        def flush(self) -> None:
            pass

    killed = []
    kill = subprocess.Popen.kill
    monkeypatch.setattr(
        subprocess.Popen, "kill", lambda self: (killed.append(self.pid), kill(self))
    )
    monkeypatch.setattr(embedded.sys, "stdout", Interrupting())
    with pytest.raises(KeyboardInterrupt):
        embedded.run_without_repeats([sys.executable, "-c", script], dict(os.environ))
    assert killed == pids
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pids[0], 0)
