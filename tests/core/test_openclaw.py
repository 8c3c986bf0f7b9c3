"""The gateway handshake client against the stand-in gateway run as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from core.errors import RemoteError, Unreachable
from core.openclaw import (
    GatewayUnavailable,
    TokenRefused,
    connect_request,
    gateway_url,
    handshake,
    handshake_on,
    probe,
)
from tests.auxil.net import free_port

FAKE = Path(__file__).resolve().parents[1] / "auxil" / "fakegateway.py"
TOKEN = secrets.token_hex(20)


def wait_listening(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def gateway() -> Iterator[Callable[..., str]]:
    """Start stand-in gateways: ``gateway("--unavailable", "1")`` -> its ws:// URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, wait: bool = True) -> str:
        port = free_port()
        env = {**os.environ, "OPENCLAW_GATEWAY_TOKEN": TOKEN}
        procs.append(subprocess.Popen([sys.executable, str(FAKE), "--port", str(port), *args],
                                      env=env))  # fmt: skip
        if wait:
            wait_listening(port)
        return gateway_url(port)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def mute_server() -> AsyncIterator[str]:
    """A WebSocket server that accepts and never says a word."""

    async def mute(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await asyncio.sleep(5)
        return ws

    app = web.Application()
    app.router.add_get("/", mute)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield gateway_url(port)
    await runner.cleanup()


def test_the_connect_request_carries_exactly_the_protocol_4_fields() -> None:
    frame = connect_request("tok", request_id="r1", scopes=["operator.read"], platform="linux")
    assert frame == {
        "type": "req", "id": "r1", "method": "connect",
        "params": {
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "gateway-client", "version": "0.1.0", "platform": "linux",
                       "mode": "backend"},
            "role": "operator", "scopes": ["operator.read"], "auth": {"token": "tok"},
        },
    }  # fmt: skip


async def test_a_handshake_with_the_right_token_gets_hello_ok(gateway: Callable[..., str]) -> None:
    hello = await handshake(gateway(), TOKEN, scopes=("operator.read", "operator.admin"))
    assert hello.protocol == 4
    assert hello.role == "operator"
    assert hello.scopes == ("operator.read", "operator.admin")
    assert hello.main_session_key == "agent:main:main"
    assert hello.payload["type"] == "hello-ok"


async def test_a_wrong_token_is_refused_as_such(gateway: Callable[..., str]) -> None:
    with pytest.raises(TokenRefused, match="refused the token"):
        await handshake(gateway(), "not-" + TOKEN)


async def test_a_starting_gateway_is_unavailable_and_says_when_to_retry(
    gateway: Callable[..., str],
) -> None:
    url = gateway("--unavailable", "1.0")
    with pytest.raises(GatewayUnavailable) as caught:
        await handshake(url, TOKEN)
    assert caught.value.retry_after_ms == 200
    await asyncio.sleep(1.1)
    assert (await handshake(url, TOKEN)).protocol == 4


async def test_nothing_listening_is_unreachable() -> None:
    with pytest.raises(Unreachable, match="unreachable"):
        await handshake(gateway_url(free_port()), TOKEN, timeout=2)


async def test_a_server_that_sends_no_challenge_is_unreachable(mute_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(Unreachable, match=r"no connect\.challenge within 0\.5s"):
        await handshake(mute_server, TOKEN, timeout=0.5)
    assert time.monotonic() - started < 3


async def test_probe_is_true_only_for_a_good_handshake(gateway: Callable[..., str]) -> None:
    url = gateway()
    assert await probe(url, TOKEN) is True
    assert await probe(url, "wrong" * 8) is False
    assert await probe(gateway_url(free_port()), TOKEN, timeout=1) is False


async def test_probe_waits_for_a_gateway_that_starts_late(gateway: Callable[..., str]) -> None:
    url = gateway("--delay", "0.5", wait=False)
    assert await probe(url, TOKEN, timeout=1) is False
    deadline = time.monotonic() + 10
    while not await probe(url, TOKEN, timeout=1):
        assert time.monotonic() < deadline, "the late gateway never became ready"
        await asyncio.sleep(0.1)


async def test_a_handshake_on_an_open_socket_leaves_it_open_for_the_caller(
    gateway: Callable[..., str],
) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(gateway()) as ws:
        hello = await handshake_on(ws, TOKEN)
        assert hello.protocol == 4
        assert not ws.closed
        await ws.send_str(json.dumps({"type": "req", "id": "2", "method": "health"}))
        assert not ws.closed


async def test_a_refused_connect_names_the_code(gateway: Callable[..., str]) -> None:
    with pytest.raises(RemoteError, match="INVALID_REQUEST"):
        await handshake(gateway(), TOKEN, client_id="made-up")
