"""Small helpers for tests that start servers and processes on loopback."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
from aiohttp import web


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, timeout: float = 20.0) -> httpx.Response:
    """Poll ``url`` until it answers (any status) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


async def serve(app: web.Application, **runner: Any) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free loopback port: its runner (``cleanup()`` stops it) and URL."""
    started = web.AppRunner(app, access_log=None, **runner)
    await started.setup()
    port = free_port()
    await web.TCPSite(started, "127.0.0.1", port).start()
    return started, f"http://127.0.0.1:{port}"
