"""The "Melanoma runs" page: the plugin in plugins/ loaded by a real `airflow standalone`
(SQLite metadata DB, the embedded stack's environment), opened over HTTP and in a real
headless Chromium."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from melanoma.embedded import SparkStandalone, airflow_environment
from melanoma.layout import RunLayout, run_key
from melanoma.store import FileStore
from tests.browser import Chromium, chromium_binary
from tests.conftest import REPO_ROOT, free_port
from tests.scored_run import write_reported_run

RUN_ID = "manual__2026-11-20T09:00:00+00:00"
RUN_KEY = run_key(RUN_ID)
PASSWORD = "runs-page-test"


@pytest.fixture(scope="module")
def standalone(tmp_path_factory, migrated_airflow_db):
    """`airflow standalone` on a free port, a store holding one reported run, an admin login."""
    root = tmp_path_factory.mktemp("runs_page")
    store = FileStore(root / "store")
    write_reported_run(store, RUN_ID)
    home = root / "airflow"
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    port = free_port()
    env = airflow_environment(REPO_ROOT, SparkStandalone(root / "spark"), store.url, home=home)
    env.update(
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__API_AUTH__JWT_SECRET="a-test-secret-that-is-long-enough-for-sha512-hmac-keys!!",
    )
    migrated_airflow_db(env)  # standalone's own migrate then only checks it
    log = root / "standalone.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["airflow", "standalone"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"airflow standalone did not come up:\n{log.read_text()[-5000:]}")
            time.sleep(1)
        token = requests.post(
            f"{base}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30
        ).json()["access_token"]
        yield base, token, store
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_runs_page_needs_a_login_and_serves_the_run_and_its_report(standalone):
    base, token, store = standalone
    assert requests.get(f"{base}/melanoma-runs/", timeout=30).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    page = requests.get(f"{base}/melanoma-runs/", headers=auth, timeout=30)
    assert page.status_code == 200 and "Research use only" in page.text
    assert RUN_KEY in page.text and "&#9733; champion" in page.text
    layout = RunLayout(RUN_KEY)
    auroc = store.get_json(layout.metrics)["threshold_free"]["auroc"]
    assert f"{auroc['value']:.3f}" in page.text
    report = requests.get(f"{base}/melanoma-runs/runs/{RUN_KEY}/report.html", headers=auth)
    assert report.headers["content-type"].startswith("text/html")
    assert report.content == store.get_bytes(layout.report)
    roc = requests.get(
        f"{base}/melanoma-runs/runs/{RUN_KEY}/evaluation/figures/roc.png", headers=auth
    )
    assert roc.headers["content-type"] == "image/png" and roc.content.startswith(b"\x89PNG")
    # models, data and anything outside the run stay private
    for path in (
        "model/model.keras",
        "predictions/test.csv",
        "commits/train.json",
        "../../champions",
    ):
        assert (
            requests.get(f"{base}/melanoma-runs/runs/{RUN_KEY}/{path}", headers=auth).status_code
            == 404
        )
    # A run's home redirects to its report, inside the page; nothing else is redirected.
    home = requests.get(
        f"{base}/melanoma-runs/runs/{RUN_KEY}", headers=auth, allow_redirects=False, timeout=30
    )
    assert home.status_code in (302, 307) and home.headers["location"] == f"./{RUN_KEY}/report.html"
    evil = requests.get(
        f"{base}/melanoma-runs/runs/https:evil.example", headers=auth, allow_redirects=False
    )
    assert evil.status_code == 404 and "location" not in evil.headers
    plugins = requests.get(f"{base}/api/v2/plugins", headers=auth).json()["plugins"]
    view = next(p for p in plugins if p["name"] == "melanoma_runs")["external_views"][0]
    assert (view["name"], view["href"], view["url_route"]) == (
        "Melanoma runs",
        "melanoma-runs/",
        "melanoma-runs",
    )


@pytest.mark.skipif(chromium_binary() is None, reason="needs Debian's chromium package")
def test_airflow_ui_shows_the_runs_page_and_opens_the_report(standalone, tmp_path):
    base, token, _ = standalone
    with Chromium(tmp_path / "profile") as browser:
        browser.set_cookie(base, "_token", token)  # what the UI's login form sets
        browser.open(f"{base}/plugin/melanoma-runs")
        frame = "document.querySelector('iframe')?.contentDocument"
        browser.wait_for(f"{frame}?.body?.innerText.includes('{RUN_KEY}')")
        assert browser.evaluate("document.querySelector('iframe').src").endswith("/melanoma-runs/")
        text = browser.evaluate(f"{frame}.body.innerText")
        assert "Research use only" in text and "champion" in text and "promoted" in text
        screenshot = Path(os.environ.get("MELANOMA_SCREENSHOT_DIR", tmp_path))
        browser.screenshot(screenshot / "runs_page.png")

        browser.evaluate(f"{frame}.querySelector(\"a[href$='report.html']\").click()")
        browser.wait_for(f"{frame}?.title?.startsWith('Melanoma classifier report')")
        report = browser.evaluate(f"{frame}.body.innerText")
        assert RUN_ID in report and "Research use only" in report and "Promotion" in report
        browser.screenshot(screenshot / "runs_page_report.png")
