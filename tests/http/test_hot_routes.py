"""Submits and status polls are answered ahead of FastAPI's router (http/hot_routes.py);
every other call is routed as before."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.routing import BaseRoute, Match

from openfal.http import queue_routes
from openfal.http.app import ROUTERS
from openfal.http.hot_routes import HotRoutes
from tests.support import App, wait_status

ROUTES: list[BaseRoute] = [route for router in ROUTERS for route in router.routes]


def _sample(route: BaseRoute) -> str:
    return re.sub(r"\{[^}]+\}", "x", getattr(route, "path", "/"))


SAMPLES = sorted(
    {_sample(route) for route in ROUTES}
    | {"/", "/fal-ai/flux-1/dev", "/openfal/utils/echo", "/fal-ai/flux-1/dev/stream", "/run/fal-ai/flux-1/dev", "/tokens/", "/api"}
)


def _routed_to_submit(path: str) -> bool:
    """What the router picks for a POST of ``path``: the first route that fully matches."""
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "query_string": b"", "headers": []}
    for route in ROUTES:
        if route.matches(scope)[0] is Match.FULL:
            return isinstance(route, APIRoute) and route.endpoint is queue_routes.submit
    return False


@pytest.mark.parametrize("path", SAMPLES)
def test_a_post_is_taken_as_a_submit_exactly_when_the_router_would_route_it_to_submit(path: str) -> None:
    assert HotRoutes(app=None, routers=ROUTERS).takes_submit(path) is _routed_to_submit(path)  # type: ignore[arg-type]


def test_routers_without_the_queues_submit_are_refused() -> None:
    with pytest.raises(ValueError):
        HotRoutes(app=None, routers=ROUTERS[:-1])  # type: ignore[arg-type]


async def test_a_submit_answered_ahead_of_the_router_carries_its_request_id(app: App, auth: dict[str, str]) -> None:
    response = await app.client.post("/openfal/utils/echo", json={"i": 1}, headers=auth)
    assert response.status_code == 200
    assert response.headers["x-fal-request-id"] == response.json()["request_id"]


async def test_a_refused_submit_keeps_fals_error_shape(app: App, auth: dict[str, str]) -> None:
    unknown = await app.client.post("/nobody/nothing", json={}, headers=auth)
    malformed = await app.client.post("/openfal/utils/echo", content=b"{", headers={**auth, "Content-Type": "application/json"})
    anonymous = await app.client.post("/openfal/utils/echo", json={})
    assert unknown.status_code == 404 and "detail" in unknown.json()
    assert malformed.status_code == 422 and isinstance(malformed.json()["detail"], list)
    assert anonymous.status_code == 401


async def test_the_routers_own_status_route_answers_as_the_hot_route_does(app: App, auth: dict[str, str]) -> None:
    """The router's documented ``GET …/status`` (the route OpenAPI lists; HotRoutes answers
    it first) gives the same answer, not the 405 it once fell through to."""
    body = (await app.client.post("/openfal/utils/echo", json={"i": 1}, headers=auth)).json()
    hot = await wait_status(app.client, body["status_url"], auth)
    routed = await queue_routes.read(
        f"openfal/utils/requests/{body['request_id']}/status", _request(app, body["status_url"]), logs=None, key=await app.runtime.auth.authenticate(auth["Authorization"])
    )
    assert (routed.status_code, routed.body) == (hot.status_code, hot.content)


def _request(app: App, url: str) -> Request:
    """A request as the router hands it to a route: the app it reached carries the runtime."""

    class State:
        runtime = app.runtime

    class Application:
        state = State()

    return Request({"type": "http", "method": "GET", "path": url, "query_string": b"", "headers": [], "app": Application()})
