"""The ASGI adapter and the loopback server: real sockets on 127.0.0.1, clean shutdown."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest

from teams_ehr.testing.asgi import asgi_app_from_handler
from teams_ehr.testing.loopback import serve_on_loopback, serve_on_loopback_async


def echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        201,
        json={
            "method": request.method,
            "url": str(request.url),
            "body": request.content.decode(),
            "header": request.headers.get("x-test"),
        },
        headers={"X-Reply": "yes"},
    )


async def async_echo(request: httpx.Request) -> httpx.Response:
    await anyio.sleep(0)
    return echo(request)


def _port_closed(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_sync_loopback_round_trip_and_shutdown() -> None:
    with serve_on_loopback(asgi_app_from_handler(echo)) as url:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client() as client:
            response = client.post(
                url + "/a/b?x=1%202", content=b"payload", headers={"X-Test": "t"}
            )
        assert response.status_code == 201
        assert response.headers["x-reply"] == "yes"
        body = response.json()
        assert body == {
            "method": "POST",
            "url": url + "/a/b?x=1%202",
            "body": "payload",
            "header": "t",
        }
    assert _port_closed(url)


@pytest.mark.anyio
async def test_async_loopback_with_async_handler() -> None:
    async with serve_on_loopback_async(asgi_app_from_handler(async_echo)) as url:
        async with httpx.AsyncClient() as client:
            response = await client.get(url + "/x")
        assert response.json()["method"] == "GET"
    assert _port_closed(url)


@pytest.mark.anyio
async def test_asgi_app_in_process() -> None:
    transport = httpx.ASGITransport(app=asgi_app_from_handler(echo))
    async with httpx.AsyncClient(transport=transport, base_url="http://fake.test") as client:
        response = await client.put("/p", content=b"z")
    assert response.json()["url"] == "http://fake.test/p"
    assert response.json()["body"] == "z"


def test_two_servers_get_distinct_ports() -> None:
    app = asgi_app_from_handler(echo)
    with serve_on_loopback(app) as first, serve_on_loopback(app) as second:
        assert first != second


def test_listening_socket_is_tcp_so_asyncio_sets_nodelay() -> None:
    # asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP; without it
    # every keep-alive response is delayed by Nagle + delayed ACK.
    from teams_ehr.testing.loopback import LoopbackServer

    server = LoopbackServer(asgi_app_from_handler(echo))
    try:
        assert server._socket.proto == socket.IPPROTO_TCP
    finally:
        server.stop()
