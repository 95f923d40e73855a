"""What the embedded stack exposes (issue 16): the Airflow UI on loopback unless asked.

The runs page's open redirect is tested where the page runs for real:
tests/integration/test_airflow_ui.py (``/runs/https:evil.example`` is a 404).
"""

from __future__ import annotations

import subprocess

import pytest

from melanoma.embedded import airflow_environment
from tests.conftest import REPO_ROOT, local_spark_cluster


@pytest.mark.parametrize(("asked", "host"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_the_airflow_ui_listens_on_loopback_unless_asked(asked, host, tmp_path, monkeypatch):
    if asked:
        monkeypatch.setenv("MELANOMA_UI_HOST", asked)
    else:
        monkeypatch.delenv("MELANOMA_UI_HOST", raising=False)
    env = airflow_environment(
        REPO_ROOT, local_spark_cluster(tmp_path / "spark"), "file:///tmp/s", home=tmp_path / "a"
    )
    # What `airflow api-server` (started by `airflow standalone`, i.e. `make ui`) binds to.
    done = subprocess.run(
        ["airflow", "config", "get-value", "api", "host"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == host
