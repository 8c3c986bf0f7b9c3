"""The sidecar: the node's HTTP surface (status API, health, metrics; later the claw proxy).

The app is built by ``create_app``; state lives on the app under typed ``AppKey``s; ``Sidecar``
starts it by hand (AppRunner/TCPSite) so it shares the event loop with the bot and scheduler.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.db import DatabaseProbe
from core.errors import StorageError
from core.metrics import Registry
from core.statuslog import Entry, StatusLog

if TYPE_CHECKING:
    from core.accounts import EmergencyWatch
    from core.claws import Claws
    from core.resources import Leases

log = logging.getLogger(__name__)

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]
EntryHook = Callable[[Entry], Awaitable[None]]


async def _no_status() -> dict[str, Any]:
    return {}


@dataclass
class SidecarState:
    """What the routes need; the node fills it in."""

    statuslog: StatusLog
    node: str
    token: str | None = None
    max_body: int = 64 * 1024
    status: StatusProvider = _no_status
    # The failover watchdog's state (GET /api/failover), what the peer asks before it polls.
    failover: StatusProvider = _no_status
    # Called after an entry is stored (alerts, check-ins); a failing hook is logged, not fatal.
    on_entry: list[EntryHook] = field(default_factory=list)
    metrics: Registry = field(default_factory=Registry)
    # The sidecar's public URL (config sidecar.public_url): https makes the session cookie Secure.
    public_url: str | None = None
    # The claw proxy (proxy.ws_proxy): the claws service, the data dir holding the node's
    # device key, and its limits (sockets per user, seconds without a frame, credential rechecks).
    claws: Callable[[], Claws] | None = None
    data_dir: Path | None = None
    ws_max_per_user: int = 8
    ws_idle_timeout: float = 600.0
    ws_recheck: float = 30.0
    # Shared resource queues and LLM account cooldowns (proxy.resources_api, SPEC 7b).
    leases: Leases | None = None
    emergency: EmergencyWatch | None = None
    # The database round-trip /healthz includes (None: /healthz proves only the loop is alive).
    database: DatabaseProbe | None = None


STATE = web.AppKey("state", SidecarState)
# Routes open without the sidecar's token, by canonical path: what a peer's watchdog and a load
# balancer probe (the failover state tells who polls Telegram, nothing more), and the browser's
# routes, which authenticate users themselves (proxy.web: session cookie or API token).
PUBLIC_ROUTES = frozenset(
    {"/healthz", "/api/failover", "/login/{secret}", "/logout", "/claws",
     "/api/ws/claws/{org}/{claw}", "/claws/{org}/{claw}",
     "/claws/{org}/{claw}/check", "/static/chat/{name}"}
)  # fmt: skip


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own 4xx (404, 405, 413) become JSON ``{"error": ...}`` like ours; a database
    that failed a route which did not handle it is a 503."""
    try:
        return await handler(request)
    except StorageError as exc:
        return json_error(503, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        if exc.status == 413:
            reason = f"request body is larger than {request.app[STATE].max_body} bytes"
        return json_error(exc.status, reason or "error")


@web.middleware
async def _bearer_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    token = request.app[STATE].token
    resource = request.match_info.route.resource
    if token is None or (resource is not None and resource.canonical in PUBLIC_ROUTES):
        return await handler(request)
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return json_error(401, "missing bearer token (Authorization: Bearer TOKEN)")
    if not hmac.compare_digest(value.strip().encode(), token.encode()):
        return json_error(401, "wrong bearer token")
    return await handler(request)


@web.middleware
async def _count_requests(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        labels = {"route": name, "method": request.method, "status": str(status)}
        state.metrics.counter(
            "clawops_http_requests_total", "HTTP requests answered by the sidecar"
        ).inc(**labels)
        state.metrics.counter(
            "clawops_http_request_seconds_total", "Time spent answering HTTP requests"
        ).inc(time.perf_counter() - started, route=name)


def create_app(state: SidecarState) -> web.Application:
    from proxy import chat_page, resources_api, status_api, ws_proxy
    from proxy import web as web_routes

    app = web.Application(
        client_max_size=state.max_body,
        middlewares=[_count_requests, _errors_as_json, _bearer_token],
    )
    app[STATE] = state
    status_api.setup_routes(app)
    web_routes.setup_routes(app)
    chat_page.setup_routes(app)
    ws_proxy.setup_routes(app)
    resources_api.setup_routes(app)
    return app


class Sidecar:
    """Runs an app on host:port inside the current event loop."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
