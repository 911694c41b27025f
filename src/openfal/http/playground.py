"""The playground: a single page at ``/`` that drives the queue API from a browser.

Plain HTML, CSS and ES modules under ``static/``, served from the package (no build
step, nothing fetched from elsewhere). The page itself needs no key; it calls the API
with the key the user enters, kept in the browser's localStorage. Mount this router
before the queue's catch-all ``GET /{path:path}``, which would otherwise answer ``/``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from openfal.http.errors import error_response

STATIC = Path(__file__).parent / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# the page changes with the server: revalidate rather than cache stale modules
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> Response:
    return FileResponse(STATIC / "index.html", media_type=TYPES[".html"], headers=HEADERS)


@router.get("/console")
async def console() -> Response:
    """The operator's console (an admin key; built on the Platform API)."""
    return FileResponse(STATIC / "console.html", media_type=TYPES[".html"], headers=HEADERS)


@router.get("/playground")
async def playground_root() -> Response:
    return RedirectResponse("/", status_code=307)


@router.get("/playground/{name}")
async def asset(name: str) -> Response:
    """One file of the page; flat folder, known types only, no path segments."""
    path = STATIC / name
    media_type = TYPES.get(path.suffix)
    if media_type is None or "/" in name or name.startswith(".") or not path.is_file():
        return error_response({"detail": f"Path /playground/{name} not found"}, 404)
    return FileResponse(path, media_type=media_type, headers=HEADERS)
