"""Proxy mode (``@fal-ai/server-proxy``'s protocol): calls to ``/fal/proxy`` carrying
``x-fal-target-url`` are served by openfal's own routes, and by nothing else."""

from __future__ import annotations

from tests.support import App, wait_status

PROXY = "/fal/proxy"


def target(url: str, auth: dict[str, str]) -> dict[str, str]:
    return {**auth, "x-fal-target-url": url}


async def test_queue_calls_are_served_from_the_target_path(app: App, auth: dict[str, str]) -> None:
    """Submit, status and result through the proxy, with the queue host's paths."""
    submitted = await app.client.post(PROXY, json={"n": 1}, headers=target("https://queue.fal.run/openfal/utils/echo", auth))
    assert submitted.status_code == 200
    request_id = submitted.json()["request_id"]
    status = await app.client.get(PROXY, headers=target(f"https://queue.fal.run/openfal/utils/requests/{request_id}/status?logs=1", auth))
    assert status.status_code in {200, 202} and status.json()["request_id"] == request_id
    await wait_status(app.client, submitted.json()["status_url"], auth)
    result = await app.client.get(PROXY, headers=target(f"https://queue.fal.run/openfal/utils/requests/{request_id}", auth))
    assert result.json() == {"echo": {"n": 1}} and result.headers["x-fal-request-id"] == request_id


async def test_fal_run_targets_are_synchronous_runs(app: App, auth: dict[str, str]) -> None:
    response = await app.client.post(PROXY, json={"n": 2}, headers=target("https://fal.run/openfal/utils/echo", auth))
    assert response.json() == {"echo": {"n": 2}}
    get = await app.client.get(PROXY, headers=target("https://fal.run/openfal/utils/echo?q=x", auth))
    assert get.json() == {"echo": {"q": "x"}}


async def test_the_servers_own_urls_are_served_too(app: App, auth: dict[str, str]) -> None:
    response = await app.client.post(PROXY, json={"n": 3}, headers=target("http://openfal.test/run/openfal/utils/echo", auth))
    assert response.json() == {"echo": {"n": 3}}


async def test_the_proxy_still_needs_a_key(app: App) -> None:
    response = await app.client.post(PROXY, json={}, headers={"x-fal-target-url": "https://fal.run/openfal/utils/echo"})
    assert response.status_code == 401


async def test_a_missing_target_is_400(app: App, auth: dict[str, str]) -> None:
    response = await app.client.post(PROXY, json={}, headers=auth)
    assert response.status_code == 400 and "x-fal-target-url" in response.json()["detail"]


async def test_other_hosts_are_refused_never_fetched(app: App, auth: dict[str, str]) -> None:
    """Not an open proxy: any host but fal's and this server's is 412, as the server proxy answers."""
    for url in ["https://example.com/openfal/utils/echo", "http://127.0.0.1:1/x", "https://fal.run.evil.com/a/b", "https://fal.run:444/a/b", "file:///etc/passwd", "not a url"]:
        response = await app.client.post(PROXY, json={}, headers=target(url, auth))
        assert response.status_code == 412, url


async def test_the_proxy_cannot_target_itself(app: App, auth: dict[str, str]) -> None:
    response = await app.client.post(PROXY, json={}, headers=target("http://openfal.test/fal/proxy", auth))
    assert response.status_code == 412
