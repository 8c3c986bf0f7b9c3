"""Serving an aiohttp app so that slow or too many clients cannot starve it.

aiohttp (3.x) has an idle keep-alive timeout but no bound on how long a client may take to send
its headers and body, and no connection cap. ``EdgeServer`` adds both around aiohttp's own
protocol, with public aiohttp API only:

1. Every accepted connection gets a ``_Conn`` wrapper that forwards to aiohttp's handler.
2. A connection must deliver a complete request (headers and body) within ``read_timeout`` of
   its first byte (or of being accepted); otherwise it is answered 408 and closed. A request
   counts as complete once a handler runs and its body stream has reached its end (the tracking
   middleware tells); a WebSocket upgrade is exempt from then on.
3. Between requests aiohttp's ``keepalive_timeout`` closes an idle connection.
4. At ``max_connections``, a new connection first evicts the oldest one that is not inside a
   handler (a half-sent request or an idle keep-alive): a flood of half-open connections then
   only churns among itself and a real request still gets in (a refused /healthz would make the
   standby take over). Only when every slot runs a handler is the newcomer answered a raw
   ``503 {"error": "too many connections"}`` with Connection: close.
5. The cap never exceeds the open-file limit minus ``FD_HEADROOM`` (database, logs, outgoing
   sockets), so accept() does not fail with EMFILE; ``raise_open_file_limit`` lifts the soft
   limit toward the hard one first (launchd's default soft limit is 256).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader

log = logging.getLogger(__name__)

FD_HEADROOM = 64
MIN_CONNECTIONS = 16
# macOS refuses a soft limit above kern.maxfilesperproc even when the hard limit is "unlimited".
FD_TARGETS = (65536, 24576, 10240, 4096, 1024)


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE toward the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in FD_TARGETS:
        if hard != resource.RLIM_INFINITY:
            target = min(target, hard)
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        log.info("open files: soft limit raised from %d to %d", soft, target)
        return target
    return soft


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    read_timeout: float = 10.0  # headers and body of one request
    keepalive_timeout: float = 15.0  # idle between requests

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.read_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("connection limits and timeouts must be positive")


def raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Conn(asyncio.Protocol):
    """One client connection: aiohttp's handler inside, the read deadline outside."""

    def __init__(self, tracker: _Tracker, make: Callable[[], asyncio.Protocol]) -> None:
        self.tracker = tracker
        self.make = make
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.accepted = time.monotonic()
        self.deadline: asyncio.TimerHandle | None = None
        self.busy = False  # a handler runs for the current request
        self.body: StreamReader | None = None
        self.exempt = False  # upgraded to a WebSocket

    # -- asyncio.Protocol, forwarded to aiohttp --------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.tracker.admit(self):
            transport.write(raw_response(503, "Service Unavailable", "too many connections"))
            transport.close()
            return
        self.inner = self.make()
        self.inner.connection_made(transport)
        self.arm()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        self.inner.data_received(data)
        if self.exempt:
            return
        if self.busy and self.body is not None and self.body.is_eof():
            self.disarm()
        else:
            self.arm()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.tracker.conns.discard(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    # -- the read deadline ----------------------------------------------------------------
    def arm(self) -> None:
        if self.deadline is None and not self.exempt:
            loop = asyncio.get_running_loop()
            self.deadline = loop.call_later(self.tracker.limits.read_timeout, self.expire)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def expire(self) -> None:
        if self.exempt or (self.busy and self.body is not None and self.body.is_eof()):
            self.deadline = None
            return
        seconds = self.tracker.limits.read_timeout
        self.close(408, "Request Timeout", f"request not received within {seconds:g} s")

    def close(self, status: int, reason: str, message: str) -> None:
        """Answer a request that is being sent (a connection idle between requests is closed
        without a word: a response nobody asked for would confuse its client), then close."""
        if self.transport is not None and not self.transport.is_closing():
            if self.deadline is not None or self.busy:
                self.transport.write(raw_response(status, reason, message))
            self.disarm()
            self.transport.close()

    @property
    def idle(self) -> bool:
        return not self.busy and not self.exempt

    # -- what the middleware reports ------------------------------------------------------
    def request_started(self, request: web.Request) -> None:
        self.busy, self.body = True, request.content
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.exempt = True
            self.disarm()
        elif request.content.is_eof():
            self.disarm()

    def request_done(self) -> None:
        self.busy, self.body = False, None


class _Tracker:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.conns: set[_Conn] = set()
        self.cap = limits.max_connections
        self.evicted = 0
        self.refused = 0

    def admit(self, conn: _Conn) -> bool:
        if len(self.conns) >= self.cap:
            idle = [c for c in self.conns if c.idle]
            if not idle:
                self.refused += 1
                return False
            oldest = min(idle, key=lambda c: c.accepted)
            self.conns.discard(oldest)
            self.evicted += 1
            oldest.close(503, "Service Unavailable", "too many connections")
        self.conns.add(conn)
        return True


_TRACKER = web.AppKey("edge_tracker", _Tracker)


@web.middleware
async def _track(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    conn = _find(request)
    if conn is None:
        return await handler(request)
    conn.request_started(request)
    try:
        return await handler(request)
    finally:
        conn.request_done()


def _find(request: web.Request) -> _Conn | None:
    transport = request.transport
    tracker = request.app.get(_TRACKER)
    if transport is None or tracker is None:
        return None
    protocol = transport.get_protocol()
    return protocol if isinstance(protocol, _Conn) else None


class EdgeServer:
    """Serves ``app`` on host:port in the running loop, bounded by ``limits`` (see module doc).

    Must be created before the app is frozen (it adds a middleware)."""

    def __init__(self, app: web.Application, host: str, port: int, limits: Limits) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits
        self.tracker = _Tracker(limits)
        app[_TRACKER] = self.tracker
        app.middlewares.insert(0, _track)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        soft = raise_open_file_limit()
        self.tracker.cap = max(
            MIN_CONNECTIONS, min(self.limits.max_connections, soft - FD_HEADROOM)
        )
        if self.tracker.cap < self.limits.max_connections:
            log.warning(
                "at most %d connections (open-file limit %d), not max_connections %d",
                self.tracker.cap,
                soft,
                self.limits.max_connections,
            )
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.limits.keepalive_timeout,
        )
        await runner.setup()
        self._runner = runner
        make = runner.server
        assert make is not None
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            return _Conn(self.tracker, make)

        try:
            self._server = await loop.create_server(
                factory, self.host, self.port, reuse_address=True
            )
        except BaseException:
            await self.stop()
            raise
        if self.port == 0:
            self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self.tracker.conns)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stats(self) -> dict[str, Any]:
        tracker = self.tracker
        return {
            "connections": self.connections,
            "cap": tracker.cap,
            "evicted": tracker.evicted,
            "refused": tracker.refused,
        }
