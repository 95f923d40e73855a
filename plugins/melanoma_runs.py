"""The "Melanoma runs" page in the Airflow UI (Airflow 3 plugin).

A FastAPI app mounted on the API server at ``/melanoma-runs/`` renders every run in the
object store (``MELANOMA_STORE_URL``): a sortable, filterable table, trends and champion
history (``/``), 2-4 runs side by side (``/compare?run=…``), each run's committed
artifacts as a tree (``/runs/<key>/artifacts/``), and every committed artifact itself,
checked against its commit record. Its one script is served from here
(``/static/runs_page.js``). An external view puts the page in the UI's navigation
(``/plugin/melanoma-runs``). Every route needs an Airflow login, as the UI's own pages
do. The HTML comes from ``melanoma.runs_page``. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Annotated, Any, ClassVar

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

log = logging.getLogger(__name__)

URL_PREFIX = "/melanoma-runs"
PAGE_LIMIT = 200  # run keys one request may name (the script polls one page's runs)


def _store():
    from melanoma.store import open_store

    return open_store(os.environ.get("MELANOMA_STORE_URL"))


def _index(store):
    """The store's runs, with the Airflow state of those not yet reported."""
    from melanoma.runs_index import index_runs

    index = index_runs(store)
    return dataclasses.replace(index, airflow_states=_airflow_states(index.in_progress()))


def _airflow_states(run_ids: list[str]) -> dict[str, str]:
    """run id -> its DAG run's state, from Airflow's metadata DB (the API server's own)."""
    if not run_ids:
        return {}
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from melanoma.embedded import DAG_ID

    try:
        with create_session() as session:
            found = session.execute(
                select(DagRun.run_id, DagRun.state).where(
                    DagRun.dag_id == DAG_ID, DagRun.run_id.in_(run_ids)
                )
            ).all()
    except Exception as error:  # the page still lists the runs, from the store alone
        log.warning("runs page: Airflow's run states are unavailable (%s)", error)
        return {}
    return {run_id: str(getattr(state, "value", state)) for run_id, state in found}


def _page(params: dict[str, str]) -> str:
    from melanoma.runs_page import PageQuery, render_runs_page

    store = _store()
    return render_runs_page(store, _index(store), PageQuery.parse(params))


def _states(keys: list[str]) -> dict:
    from melanoma.runs_page import run_states

    return run_states(_index(_store()), keys)


def _compare(keys: list[str]) -> str:
    from melanoma.runs_page import render_compare_page

    store = _store()
    return render_compare_page(store, _index(store), keys)


def _artifacts(run_key: str) -> str:
    from melanoma.layout import check_run_key
    from melanoma.runs_page import render_artifact_tree

    return render_artifact_tree(_store(), check_run_key(run_key))


def _gallery(run_key: str) -> str:
    from melanoma.runs_page import render_gradcam_gallery

    return render_gradcam_gallery(_store(), run_key)


def _artifact(run_key: str, artifact: str) -> tuple[bytes, str]:
    from melanoma.runs_page import media_type, read_served_artifact

    return read_served_artifact(_store(), run_key, artifact), media_type(artifact)


app = FastAPI(
    title="Melanoma runs",
    dependencies=[Depends(requires_authenticated())],
    redirect_slashes=False,
)


# The store client is synchronous: run it off the API server's event loop.
@app.get("/", response_class=HTMLResponse)
async def runs_page(request: Request) -> str:
    return await asyncio.to_thread(_page, dict(request.query_params))


@app.get("/state.json")
async def run_states(run: Annotated[list[str], Query()] = []) -> dict:  # noqa: B006
    return await asyncio.to_thread(_states, run[:PAGE_LIMIT])


@app.get("/compare", response_class=HTMLResponse)
async def compare_runs(run: Annotated[list[str], Query()] = []) -> str:  # noqa: B006
    try:
        return await asyncio.to_thread(_compare, run[:PAGE_LIMIT])
    except KeyError as error:
        raise HTTPException(404, str(error).strip("'\"")) from error
    except ValueError as error:
        raise HTTPException(400, str(error)) from error


@app.get("/static/runs_page.js")
async def script() -> Response:
    from melanoma.runs_page import script

    return Response(script(), media_type="text/javascript; charset=utf-8")


@app.get("/runs/{run_key}/artifacts/", response_class=HTMLResponse)
async def artifact_tree(run_key: str) -> str:
    try:
        return await asyncio.to_thread(_artifacts, run_key)
    except ValueError as error:
        raise HTTPException(404, str(error)) from error


@app.get("/runs/{run_key}/gradcam/", response_class=HTMLResponse)
async def gradcam_gallery(run_key: str) -> str:
    try:
        return await asyncio.to_thread(_gallery, run_key)
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise HTTPException(404, f"no Grad-CAM gallery for run {run_key}") from error


@app.get("/runs/{run_key}/{artifact:path}")
async def run_artifact(run_key: str, artifact: str) -> Response:
    from melanoma.runs_page import DOWNLOAD_TYPE
    from melanoma.store import ArtifactCorruptError

    try:
        content, media = await asyncio.to_thread(_artifact, run_key, artifact)
    except ArtifactCorruptError as error:
        raise HTTPException(500, str(error)) from error
    except ValueError as error:
        raise HTTPException(404, str(error)) from error
    except (FileNotFoundError, KeyError) as error:
        raise HTTPException(404, f"{run_key}/{artifact} is not in the store") from error
    headers = {"X-Content-Type-Options": "nosniff"}
    if media == DOWNLOAD_TYPE:  # a model, shard or archive: saved, never shown
        name = artifact.rsplit("/", 1)[-1]
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(content, media_type=media, headers=headers)


@app.get("/runs/{run_key}")
async def run_home(run_key: str) -> RedirectResponse:
    from melanoma.layout import RUN_KEY

    # Only a run key, and only a path relative to this page: never a redirect elsewhere.
    if not RUN_KEY.match(run_key):
        raise HTTPException(404, f"{run_key!r} is not a run key")
    return RedirectResponse(f"./{run_key}/report.html")


class MelanomaRunsPlugin(AirflowPlugin):
    name = "melanoma_runs"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": URL_PREFIX, "name": "Melanoma runs"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Melanoma runs",
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "melanoma-runs",
            "destination": "nav",
            "category": "browse",
        }
    ]
