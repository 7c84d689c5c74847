"""The web view's routes (a FastAPI router) and `mount_view`, which adds them to the
catalog's app. The handlers are plain functions: FastAPI runs them on its thread pool,
so the Tiled client calls they make (back to this same server) never block its loop."""

from __future__ import annotations

import threading
from importlib import resources

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from ..schema.catalog import DERIVED_NODE, RAW_NODE
from .figures import NoFigureYet, has_figure, render_png
from .pages import run_page, runs_page

VIEW_PREFIX = "/view"
MAX_RUNS = 1000


class _CatalogClients:
    """One Tiled client per address the server is reached at (its own API over HTTP)."""

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()

    def nodes(self, request: Request):
        """The ``raw`` and ``derived`` nodes, read through the server that took ``request``."""
        from tiled.client import from_uri

        base = str(request.base_url).rstrip("/")
        with self._lock:
            if base not in self._clients:
                self._clients[base] = from_uri(f"{base}/api/v1", api_key=self.api_key)
            client = self._clients[base]
        return client[RAW_NODE], client[DERIVED_NODE]


def _page(name: str) -> HTMLResponse:
    html = resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


def view_router(api_key: str | None) -> APIRouter:
    """The view's routes, reading the catalog with ``api_key`` (None: anonymously)."""
    router = APIRouter()
    clients = _CatalogClients(api_key)

    @router.get("/", include_in_schema=False)
    def runs_html() -> HTMLResponse:
        return _page("runs.html")

    @router.get("/run/{uid}", include_in_schema=False)
    def run_html(uid: str) -> HTMLResponse:
        return _page("run.html")

    @router.get("/api/runs")
    def runs_json(request: Request, limit: int = Query(50, ge=1, le=MAX_RUNS)) -> list[dict]:
        raw, derived = clients.nodes(request)
        return runs_page(raw, derived, limit)

    @router.get("/api/run/{uid}")
    def run_json(request: Request, uid: str) -> dict:
        raw, derived = clients.nodes(request)
        if uid not in raw:
            raise HTTPException(404, f"No raw run {uid!r} in the catalog.")
        return run_page(raw[uid], derived)

    @router.get("/figure/{uid}.png", include_in_schema=False)
    def figure_png(request: Request, uid: str) -> Response:
        _, derived = clients.nodes(request)
        if uid not in derived:
            raise HTTPException(404, f"No derived run {uid!r} in the catalog.")
        run = derived[uid]
        if not has_figure(run.metadata["start"].get("analysis", "")):
            raise HTTPException(404, f"Derived run {uid!r}: its analysis has no figure.")
        try:
            png = render_png(run)
        except NoFigureYet as error:
            raise HTTPException(404, f"Nothing to draw yet: {error}") from error
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    return router


def mount_view(app: FastAPI, api_key: str | None, prefix: str = VIEW_PREFIX) -> None:
    """Serve the view at ``prefix`` in ``app`` (the catalog's app); it reads the catalog
    with ``api_key``. Figures are drawn off the main thread, so with matplotlib's
    non-interactive backend (this process is a server: it has no windows to show)."""
    import matplotlib

    matplotlib.use("Agg")
    app.include_router(view_router(api_key), prefix=prefix)
    app.mount(f"{prefix}/static", StaticFiles(packages=[(__package__, "static")]), name="nanostrain-view-static")
