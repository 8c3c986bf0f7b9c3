"""The HTTP edge shared by the sidecar and the agent: who may ask, from where, in what form.

Each app gets ``install_edge(app, Edge(...))``; the checks run outermost first:

1. ``answer_errors``: every failure leaves as JSON ``{"error": ...}`` (plus ``Edge.error_fields``,
   e.g. the agent's ``"ok": false``): a ``ClawopsError`` with ``status_for`` (the one mapping from
   the core error tree to HTTP statuses), aiohttp's own 4xx with its status, anything else as a
   logged 500.
2. ``check_host``: a Host header that names neither this machine's loopback (``localhost``,
   ``*.localhost``, 127.0.0.0/8, ``[::1]``) nor a configured name (public_url's host, the
   allowed hosts, the bind address) answers 421 Misdirected Request. That stops DNS rebinding,
   which always carries the attacker's *name* in Host. A server bound to a wildcard address
   (``0.0.0.0``, ``::``) also accepts any IP literal, so it stays reachable by its LAN or
   Tailscale address without listing each one (a literal cannot be rebound).
3. ``check_bearer``: ``Authorization: Bearer TOKEN`` compared in constant time, except on the
   public routes and, when ``trust_loopback`` is on, the listed routes asked from a loopback peer
   that came through no proxy (no X-Forwarded-For, Forwarded or X-Real-IP header).
4. ``require_json``: a POST/PUT/PATCH/DELETE that carries a body must say application/json
   (415 otherwise). A cross-site page can send text/plain or a form without a CORS preflight, but
   not JSON; routes in ``form_routes`` (a browser's sign-out form) check Origin instead.

``read_json`` parses a body with a nesting bound (Python's decoder recurses, so 30,000 brackets
would raise RecursionError, a 500): deeper than ``MAX_DEPTH`` is a 400 like any malformed body.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.errors import (
    ClawopsError,
    Conflict,
    InputError,
    NotFound,
    RemoteError,
    StorageError,
    Unavailable,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_DEPTH = 32
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORWARDED = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
LOOPBACK_NAMES = frozenset({"localhost"})
# The most specific class first: NotFound and Conflict are InputErrors.
STATUSES: tuple[tuple[type[ClawopsError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InputError, 400),
    (StorageError, 503),
    (Unavailable, 503),
    (RemoteError, 502),
)


def status_for(exc: ClawopsError) -> int:
    """The HTTP status that answers a core error (500 for one that is not the client's fault
    nor a dependency's: a config or startup problem reaching a request is a bug)."""
    for cls, status in STATUSES:
        if isinstance(exc, cls):
            return status
    return 500


@dataclass(frozen=True)
class Edge:
    """One app's edge policy. Route names are aiohttp canonical paths (``/claws/{id}``)."""

    token: str | None = None
    # Extra names the Host header may carry (lower case, no port): public_url's host, the
    # configured allowed_hosts, a specific bind address.
    hosts: frozenset[str] = frozenset()
    public_routes: frozenset[str] = frozenset()
    trust_loopback: bool = False
    # (method, canonical path) pairs a loopback peer may call without the token.
    loopback_routes: frozenset[tuple[str, str]] = frozenset()
    form_routes: frozenset[str] = frozenset()
    # Bound to a wildcard address: any IP literal names this server (see check_host).
    any_ip: bool = False
    max_body: int | None = None  # the app's client_max_size, named in a 413
    error_fields: Mapping[str, Any] = field(default_factory=dict)


EDGE = web.AppKey("edge", Edge)


def host_names(*urls_or_names: str | None, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host names, lower case and without port, from URLs (``https://h:1/x``) or bare names."""
    found = set()
    for value in [*urls_or_names, *extra]:
        if not value:
            continue
        rest = value.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        found.add(_strip_port(rest))
    return frozenset(n for n in found if n)


def _strip_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:9010
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def host_allowed(header: str, names: frozenset[str] = frozenset(), *, any_ip: bool = False) -> bool:
    """Whether a Host header (any port) names this server: a loopback name or address, one of
    ``names``, or with ``any_ip`` any IP literal."""
    name = _strip_port(header)
    if name in LOOPBACK_NAMES or name.endswith(".localhost") or name in names:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return any_ip or address.is_loopback


WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (scheme case-insensitive)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def from_loopback(request: web.Request) -> bool:
    """The peer is this machine and no proxy stands between (a proxy on loopback would make
    every remote client look local: its forwarding headers say it is one)."""
    if any(h in request.headers for h in FORWARDED):
        return False
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        return ipaddress.ip_address(str(peer[0]).partition("%")[0]).is_loopback
    except ValueError:
        return False


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    extra = request.app[EDGE].error_fields if EDGE in request.app else {}
    return web.json_response({**extra, "error": message}, status=status)


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClawopsError as exc:
        return error_response(request, status_for(exc), str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text or ""
        reason = text if text and not text.startswith(str(exc.status)) else exc.reason
        limit = request.app[EDGE].max_body if EDGE in request.app else None
        if exc.status == 413 and limit is not None:
            reason = f"request body is larger than {limit} bytes"
        return error_response(request, exc.status, reason or "error")
    except Exception as exc:  # answered as a failure, never as success, and recorded
        log.exception("%s %s failed", request.method, request.path)
        return error_response(request, 500, f"internal error: {type(exc).__name__}")


@web.middleware
async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    header = request.headers.get("Host")
    edge = request.app[EDGE]
    if header is not None and not host_allowed(header, edge.hosts, any_ip=edge.any_ip):
        return error_response(
            request, 421, f"this server does not answer for Host {_strip_port(header)!r}"
        )
    return await handler(request)


@web.middleware
async def check_bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
    edge = request.app[EDGE]
    route = _route(request)
    if edge.token is None or route in edge.public_routes:
        return await handler(request)
    given = bearer_token(request)
    if given is None:
        trusted = edge.trust_loopback and (request.method, route) in edge.loopback_routes
        if trusted and from_loopback(request):
            return await handler(request)
        return error_response(request, 401, "missing bearer token (Authorization: Bearer TOKEN)")
    if not token_matches(given, edge.token):
        return error_response(request, 401, "wrong bearer token")
    return await handler(request)


@web.middleware
async def require_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in STATE_CHANGING and request.body_exists:
        if _route(request) in request.app[EDGE].form_routes:
            if not same_origin(request):
                return error_response(request, 403, "cross-site request refused")
        elif request.content_type != "application/json":
            return error_response(request, 415, "Content-Type must be application/json")
    return await handler(request)


def same_origin(request: web.Request) -> bool:
    """No Origin header (not a browser, or a same-origin navigation of an old one), or one whose
    host is the Host this request was sent to."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return host_names(origin) == host_names(request.headers.get("Host", ""))


def install_edge(app: web.Application, edge: Edge) -> None:
    """Store ``edge`` on ``app`` and add its checks after the app's own middlewares."""
    app[EDGE] = edge
    for middleware in (answer_errors, check_host, check_bearer, require_json):
        app.middlewares.append(middleware)


# Strings are blanked before brackets are counted, so a "[" inside one does not count.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting_depth(raw: bytes) -> int:
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``raw`` decoded, or ``InputError``: not JSON, or nested deeper than ``max_depth``."""
    if nesting_depth(raw) > max_depth:
        raise InputError(f"body is nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InputError("body is not valid JSON") from None


async def read_json(request: web.Request, max_depth: int = MAX_DEPTH) -> Any:
    return parse_json(await request.read(), max_depth)


async def read_object(
    request: web.Request, allowed: Iterable[str] | None = None, *, empty_ok: bool = False
) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys (any if None); ``{}`` for an empty
    body when ``empty_ok``."""
    raw = await request.read()
    if not raw and empty_ok:
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InputError("body must be a JSON object")
    if allowed is not None:
        unknown = set(body) - set(allowed)
        if unknown:
            raise InputError(f"unknown field(s): {', '.join(sorted(unknown))}")
    return body
