"""The "Melanoma runs" page in the Airflow UI (Airflow 3 plugin).

A FastAPI app mounted on the API server at ``/melanoma-runs/`` renders every run in the
object store (``MELANOMA_STORE_URL``) with its metrics and promotion decision, and
serves the run's report, figures and Grad-CAM overlays from the store. An external view
puts the page in the UI's navigation (``/plugin/melanoma-runs``). Every route needs an
Airflow login, as the UI's own pages do. Research use only, not a diagnostic device.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

URL_PREFIX = "/melanoma-runs"


def _store():
    from melanoma.store import open_store

    return open_store(os.environ.get("MELANOMA_STORE_URL"))


def _page() -> str:
    from melanoma.runs_page import list_runs, render_runs_page

    store = _store()
    return render_runs_page(list_runs(store), store.url)


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
async def runs_page() -> str:
    return await asyncio.to_thread(_page)


@app.get("/runs/{run_key}/gradcam/", response_class=HTMLResponse)
async def gradcam_gallery(run_key: str) -> str:
    try:
        return await asyncio.to_thread(_gallery, run_key)
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise HTTPException(404, f"no Grad-CAM gallery for run {run_key}") from error


@app.get("/runs/{run_key}/{artifact:path}")
async def run_artifact(run_key: str, artifact: str) -> Response:
    from melanoma.store import ArtifactCorruptError

    try:
        content, media = await asyncio.to_thread(_artifact, run_key, artifact)
    except ArtifactCorruptError as error:
        raise HTTPException(500, str(error)) from error
    except ValueError as error:
        raise HTTPException(404, str(error)) from error
    except (FileNotFoundError, KeyError) as error:
        raise HTTPException(404, f"{run_key}/{artifact} is not in the store") from error
    return Response(content, media_type=media)


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
