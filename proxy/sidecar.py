"""The sidecar: the node's HTTP surface (status API, health, metrics; later the claw proxy).

The app is built by ``create_app``; state lives on the app under typed ``AppKey``s; ``Sidecar``
starts it by hand (AppRunner/TCPSite) so it shares the event loop with the bot and scheduler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.db import DatabaseProbe
from core.httpedge import WILDCARD_BINDS, Edge, host_names, install_edge
from core.httplimits import EdgeServer, Limits
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
    # The open alerts and whether this node is active (GET /api/alerts): what the failover peer
    # mirrors so a takeover sends no alert twice (core.alerts.mirror).
    alerts: StatusProvider = _no_status
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
    # The HTTP edge (core.httpedge, core.httplimits): the bind address and the Host names
    # accepted besides loopback and public_url's host; whether a loopback cron script may
    # POST /api/log without the token; slow-client bounds and the connection cap.
    bind_host: str = "127.0.0.1"
    allowed_hosts: list[str] = field(default_factory=list)
    trust_loopback: bool = True
    limits: Limits = field(default_factory=Limits)


STATE = web.AppKey("state", SidecarState)
# Routes open without the sidecar's token, by canonical path: what a peer's watchdog, a load
# balancer and the seed's healer (`curl -sf http://localhost:9010`: the home page) probe (the
# failover state tells who polls Telegram, nothing more), and the browser's routes, which
# authenticate users themselves (proxy.web: session cookie or API token).
PUBLIC_ROUTES = frozenset(
    {"/", "/healthz", "/api/failover", "/login/{secret}", "/logout", "/claws",
     "/api/ws/claws/{org}/{claw}", "/claws/{org}/{claw}",
     "/claws/{org}/{claw}/check", "/static/chat/{name}"}
)  # fmt: skip


# What a loopback peer that came through no proxy may call without the token
# (sidecar.trust_loopback): the old clawd-status API let the seed's cron scripts report that way.
LOOPBACK_ROUTES = frozenset({("POST", "/api/log")})
# A browser's sign-out form; checked by Origin instead of by Content-Type.
FORM_ROUTES = frozenset({"/logout"})


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def edge_policy(state: SidecarState) -> Edge:
    return Edge(
        token=state.token,
        hosts=host_names(state.public_url, extra=[*state.allowed_hosts, state.bind_host]),
        any_ip=state.bind_host in WILDCARD_BINDS,
        public_routes=PUBLIC_ROUTES,
        trust_loopback=state.trust_loopback,
        loopback_routes=LOOPBACK_ROUTES,
        form_routes=FORM_ROUTES,
        max_body=state.max_body,
    )


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

    app = web.Application(client_max_size=state.max_body, middlewares=[_count_requests])
    install_edge(app, edge_policy(state))
    app[STATE] = state
    status_api.setup_routes(app)
    web_routes.setup_routes(app)
    chat_page.setup_routes(app)
    ws_proxy.setup_routes(app)
    resources_api.setup_routes(app)
    return app


class Sidecar(EdgeServer):
    """Runs the app on host:port inside the current event loop, with the state's limits."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        super().__init__(app, host, port, app[STATE].limits)
