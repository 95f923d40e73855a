"""The Airflow UI as users meet it: a real `airflow standalone` (SQLite metadata DB, the
embedded stack's environment, the plugin in plugins/), opened over HTTP and clicked through
in a real headless Chromium: the "Melanoma runs" page, the trigger form, a task's log."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from melanoma.embedded import DAG_ID, airflow_environment
from melanoma.layout import STAGES, RunLayout, run_key
from melanoma.run import Run, RunConfig
from melanoma.settings import SECTIONS
from melanoma.store import FileStore
from tests.browser import chromium_binary, chromium_page, sign_in_to_airflow
from tests.conftest import REPO_ROOT, free_port, local_spark_cluster
from tests.scored_run import write_external_set, write_reported_run
from tests.synthetic import write_archive
from tests.unit.test_dag_definition import load_dag_module

needs_chromium = pytest.mark.skipif(
    chromium_binary() is None, reason="needs Debian's chromium package"
)

RUN_ID = "manual__2026-11-20T09:00:00+00:00"
RUN_KEY = run_key(RUN_ID)
# A weaker run, triggered with another phase2_epochs: kept out, and told apart by it.
OTHER_ID = "manual__2026-11-21T09:00:00+00:00"
OTHER_KEY = run_key(OTHER_ID)
PASSWORD = "runs-page-test"


@pytest.fixture(scope="module")
def standalone(tmp_path_factory, migrated_airflow_db):
    """`airflow standalone` on a free port, a store holding one reported run, an admin login."""
    root = tmp_path_factory.mktemp("runs_page")
    store = FileStore(root / "store")
    write_external_set(write_reported_run(store, RUN_ID), "site_a")
    write_reported_run(store, OTHER_ID, strength=0.5, phase2_epochs=0)
    home = root / "airflow"
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    port = free_port()
    # A cluster on free ports, never started: a run the form starts fails at preprocess
    # instead of reaching a developer's own Spark.
    spark = local_spark_cluster(root / "spark")
    env = airflow_environment(REPO_ROOT, spark, store.url, home=home, ui_port=port)
    env.update(
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        # No clock: unpausing the DAG must not start a scheduled run before the user's.
        MELANOMA_SCHEDULE="none",
        # What the workers' environment gives a run whose form leaves these empty.
        MELANOMA_BACKBONE="tiny_cnn",
        MELANOMA_PRETRAINED_WEIGHTS="none",
        MELANOMA_CACHE_DIR=str(root / "cache"),
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
            except requests.RequestException:  # refused, or listening but not answering yet
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"airflow standalone did not come up:\n{log.read_text()[-5000:]}")
            time.sleep(1)
        token = requests.post(
            f"{base}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30
        ).json()["access_token"]
        yield base, token, store, home
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_runs_page_needs_a_login_and_serves_the_run_and_its_report(standalone):
    base, token, store, _ = standalone
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
    # Every committed artifact downloads, checked; a model as a file to save.
    model = requests.get(f"{base}/melanoma-runs/runs/{RUN_KEY}/model/model.keras", headers=auth)
    assert model.content == store.get_bytes(layout.model)
    assert model.headers["content-disposition"] == 'attachment; filename="model.keras"'
    # Commit records, and anything outside the run, stay private.
    for path in ("commits/train.json", "../../champions", "notes.txt"):
        assert (
            requests.get(f"{base}/melanoma-runs/runs/{RUN_KEY}/{path}", headers=auth).status_code
            == 404
        )
    tree = requests.get(f"{base}/melanoma-runs/runs/{RUN_KEY}/artifacts/", headers=auth)
    assert tree.ok and "model.keras" in tree.text
    script = requests.get(f"{base}/melanoma-runs/static/runs_page.js", headers=auth)
    assert script.headers["content-type"].startswith("text/javascript")
    states = requests.get(
        f"{base}/melanoma-runs/state.json", params={"run": [RUN_KEY]}, headers=auth
    ).json()
    assert states[RUN_KEY]["complete"] is True
    one = requests.get(f"{base}/melanoma-runs/compare", params={"run": RUN_KEY}, headers=auth)
    assert one.status_code == 400 and "tick 2 to 4 runs" in one.text
    both = requests.get(
        f"{base}/melanoma-runs/compare", params={"run": [RUN_KEY, OTHER_KEY]}, headers=auth
    )
    assert both.ok and "data-setting='train.phase2_epochs'" in both.text
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


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where the browser tests leave their screenshots (MELANOMA_SCREENSHOT_DIR to keep them)."""
    folder = Path(os.environ.get("MELANOMA_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stored_aurocs(store: FileStore) -> dict[tuple[str, str], float]:
    """(run key, series) -> the AUROC stored for it: test, and each external set."""
    found = {}
    for key in (RUN_KEY, OTHER_KEY):
        layout = RunLayout(key)
        found[key, "test"] = store.get_json(layout.metrics)["threshold_free"]["auroc"]["value"]
        external = layout.external_file("site_a", "metrics.json")
        if store.exists(external):
            auroc = store.get_json(external)["threshold_free"]["auroc"]["value"]
            found[key, "external site_a"] = auroc
    return found


@needs_chromium
def test_the_runs_page_sorts_filters_compares_and_charts_in_a_browser(standalone, screenshots):
    base, _, store, _ = standalone
    aurocs = stored_aurocs(store)
    by_test = sorted((RUN_KEY, OTHER_KEY), key=lambda k: aurocs[k, "test"], reverse=True)
    with chromium_page() as page:
        sign_in_to_airflow(page, base, "admin", PASSWORD)
        page.goto(f"{base}/plugin/melanoma-runs")
        frame = page.frame_locator("iframe")
        frame.locator("table#runs").wait_for()
        assert page.locator("iframe").evaluate("frame => frame.src").endswith("/melanoma-runs/")
        text = frame.locator("body").inner_text()
        assert "Research use only" in text and "champion" in text and "promoted" in text
        page.screenshot(path=screenshots / "runs_page.png", full_page=True)

        def order() -> list[str]:
            return frame.locator("table#runs tbody tr").evaluate_all(
                "rows => rows.map(row => row.dataset.run)"
            )

        # Sort: a heading's first click sorts descending, the second ascending.
        frame.get_by_role("link", name="Test AUROC (95% CI)").click()
        frame.locator("th a.sorted", has_text="Test AUROC").wait_for()
        assert order() == by_test
        frame.get_by_role("link", name="Test AUROC (95% CI)").click()
        frame.locator("th:has(a.sorted)", has_text="\u25b2").wait_for()
        assert order() == by_test[::-1]

        # Filter by a parameter as the table shows it.
        frame.get_by_label("filter runs").fill("phase2_epochs=0")
        frame.get_by_role("button", name="Filter").click()
        frame.get_by_text("1 of 2 run(s)").wait_for()
        assert order() == [OTHER_KEY]
        frame.get_by_role("link", name="clear").click()
        frame.get_by_text("2 of 2 run(s)").wait_for()

        # The trend chart's points are the stored AUROCs, a higher one drawn higher.
        points = frame.locator("circle.point").evaluate_all(
            "cs => cs.map(c => [c.dataset.run, c.dataset.series, +c.dataset.value,"
            " +c.getAttribute('cy')])"
        )
        assert {(run, series) for run, series, _, _ in points} == set(aurocs)
        for run, series, value, _ in points:
            assert value == pytest.approx(aurocs[run, series], abs=1e-6)
        heights = sorted(points, key=lambda p: p[2])
        assert [p[3] for p in heights] == sorted((p[3] for p in heights), reverse=True)

        # Compare: the button waits for two ticks; the differing parameter is highlighted.
        button = frame.get_by_role("button", name="Compare ticked runs")
        frame.get_by_label(f"compare {RUN_ID}").check()
        assert button.is_disabled()
        frame.get_by_label(f"compare {OTHER_ID}").check()
        assert button.is_enabled()
        button.click()
        differing = frame.locator("tr.differs[data-setting='train.phase2_epochs']")
        differing.wait_for()
        colour = differing.locator("td").first.evaluate(
            "td => getComputedStyle(td).backgroundColor"
        )
        assert colour == "rgb(255, 243, 196)"
        compared = frame.locator("table#config th code").all_inner_texts()
        values = differing.locator("td").all_inner_texts()
        assert values[0] == "train.phase2_epochs"
        assert dict(zip(compared, values[1:], strict=True)) == {RUN_ID: "1", OTHER_ID: "0"}
        assert frame.locator("polyline.curve").count() == 4
        page.screenshot(path=screenshots / "runs_compare.png", full_page=True)

        # The artifact tree, and a file opened through it.
        page.goto(f"{base}/plugin/melanoma-runs")
        frame.locator(f"tr[data-run='{RUN_KEY}'] a", has_text="artifacts").click()
        frame.get_by_role("heading", name="Artifacts").wait_for()
        page.screenshot(path=screenshots / "runs_artifacts.png", full_page=True)
        frame.locator("a[href='../evaluation/metrics.json']").click()
        frame.get_by_text('"threshold_free"').first.wait_for()

        page.goto(f"{base}/plugin/melanoma-runs")
        frame.locator(f"tr[data-run='{RUN_KEY}'] a", has_text="report").first.click()
        frame.get_by_role("heading", name="Promotion").first.wait_for()
        report = frame.locator("body").inner_text()
        assert RUN_ID in report and "Research use only" in report
        page.screenshot(path=screenshots / "runs_page_report.png", full_page=True)


@needs_chromium
def test_a_run_in_progress_shows_its_stages_live(standalone, screenshots):
    base, _, store, _ = standalone
    run = Run.for_run_id(store, "manual__2026-11-25T09:00:00+00:00")
    with run.stage("split") as stage:
        config = RunConfig(run.layout.key, "v1", "m", {"label_task": "mel_vs_rest"})
        stage.put_json("config", run.layout.config, config.to_json())
    with chromium_page() as page:
        sign_in_to_airflow(page, base, "admin", PASSWORD)
        page.goto(f"{base}/plugin/melanoma-runs")
        state = page.frame_locator("iframe").locator(f"[data-live='{run.layout.key}']")
        state.get_by_text(f"split (1 of {len(STAGES)} stages)").wait_for()
        # The next stage commits while the page is open: the page's poll shows it.
        with run.stage("preprocess") as stage:
            stage.put_json("stats", run.layout.preprocess_stats, {"rejected": 0})
        state.get_by_text(f"preprocessed (2 of {len(STAGES)} stages)").wait_for()


def newest_run(base: str, token: str) -> dict:
    runs = requests.get(
        f"{base}/api/v2/dags/{DAG_ID}/dagRuns",
        params={"order_by": "-run_after", "limit": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()["dag_runs"]
    return runs[0] if runs else {}


def wait_for_task(base: str, token: str, run_id: str, task_id: str, timeout_s: float = 240):
    deadline = time.monotonic() + timeout_s
    url = f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}"
    while time.monotonic() < deadline:
        state = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        if state.get("state") in ("success", "failed", "upstream_failed", "skipped"):
            return state["state"]
        time.sleep(2)
    pytest.fail(f"{task_id} did not finish in {timeout_s:.0f}s")


# Runs last in this module: the run it starts writes to the store the tests above read.
@needs_chromium
def test_the_trigger_form_starts_a_run_with_only_the_source_and_its_log_opens(
    standalone, tmp_path, screenshots, monkeypatch
):
    base, token, _, home = standalone
    archive = write_archive(tmp_path / "ham10000")
    dag_file = load_dag_module(monkeypatch)
    defaults = {name: param.value for name, param in dag_file.PARAMS.items()}
    assert newest_run(base, token) == {}
    with chromium_page() as page:
        sign_in_to_airflow(page, base, "admin", PASSWORD)
        page.goto(f"{base}/dags/{DAG_ID}")
        page.get_by_role("button", name="Trigger").first.click()
        form = page.locator("[role=dialog][data-state=open]")
        for section in SECTIONS:
            form.get_by_role("button", name=section, exact=True).wait_for()
        form.get_by_role("button", name="Data").click()
        form.locator("input[name=element_source]").fill(str(archive.root))
        page.screenshot(path=screenshots / "trigger_form.png")
        form.get_by_role("button", name="Trigger").click()
        page.wait_for_url(re.compile(rf".*/dags/{DAG_ID}/runs/.+"))

        run = newest_run(base, token)
        assert run["conf"] == {**defaults, "source": str(archive.root)}
        run_id = run["dag_run_id"]

        # The run goes ahead (the form unpaused the DAG), and its task log opens in the UI.
        assert wait_for_task(base, token, run_id, "download_dataset") == "success"
        log_file = (
            home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=download_dataset"
        ) / "attempt=1.log"
        assert "objects uploaded to" in log_file.read_text()
        page.goto(f"{base}/dags/{DAG_ID}/runs/{run_id}/tasks/download_dataset")
        page.get_by_text(re.compile("objects uploaded to")).first.wait_for()
        page.screenshot(path=screenshots / "task_log.png")

        # Once its split commits, the run is on the runs page, in progress, and its link
        # opens the run in Airflow's UI.
        assert wait_for_task(base, token, run_id, "split_dataset") == "success"
        page.goto(f"{base}/plugin/melanoma-runs")
        row = page.frame_locator("iframe").locator(f"tr[data-run='{run_key(run_id)}']")
        row.locator("[data-live]", has_text="split").wait_for()
        page.screenshot(path=screenshots / "runs_page_in_progress.png", full_page=True)
        link = row.get_by_role("link", name="Airflow run")
        assert unquote(link.get_attribute("href")) == f"../dags/{DAG_ID}/runs/{run_id}"
        link.click()
        # The UI may show the run id in the address bar encoded or not.
        page.wait_for_url(lambda url: unquote(url) == f"{base}/dags/{DAG_ID}/runs/{run_id}")
        page.get_by_text("split_dataset").first.wait_for()
        page.screenshot(path=screenshots / "runs_page_airflow_run.png")

    # Stop the run here: its later tasks would retry against a Spark that is not there.
    stopped = requests.patch(
        f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}",
        json={"state": "failed"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert stopped.ok, stopped.text
    # The store cannot tell a stopped run from a running one; the page asks Airflow.
    page = requests.get(
        f"{base}/melanoma-runs/",
        params={"q": run_id},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).text
    row = page.split(f"<tr data-run='{run_key(run_id)}'>")[1].split("</tr>")[0]
    assert "stopped at" in row and "Airflow run failed" in row and "data-live" not in row
