"""Shared resources and LLM accounts over HTTP (SPEC 7b): leases, rate limits, emergency mode.

- POST /api/resources/{name}/acquire {"who", "timeout"} -> 200 {"lease", "resource", "expiresAt",
  "ttl"} once held, 408 {"error", "place"} when the timeout passes first (the place is given up);
- POST /api/resources/{name}/enqueue {"who"} -> 201 {"lease", "ttl"}, then
  POST /api/leases/{id}/poll -> {"held", "place", "expiresAt"} (a poll is the waiter's heartbeat);
- POST /api/leases/{id}/heartbeat, POST /api/leases/{id}/release; GET /api/resources;
- POST /api/accounts/{name}/limited {"until": ISO time}; GET /api/mode.

A rate limit can also ride on a normal POST /api/log: the extra fields ``account`` and
``limitedUntil`` are taken off here (both or neither, checked before anything is stored), the
entry is stored by the status API as usual, then the limit is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from core.accounts import EmergencyWatch
from core.errors import InputError, NotFound, StorageError
from core.httpedge import read_object
from core.resources import Leases
from proxy.sidecar import STATE

POLL = 0.1
MAX_WAIT = 3600.0
LOG_EXTRAS = ("account", "limitedUntil")


def _leases(request: web.Request) -> Leases:
    found = request.app[STATE].leases
    if found is None:
        raise NotFound("no shared resources on this node")
    return found


def _watch(request: web.Request) -> EmergencyWatch:
    found = request.app[STATE].emergency
    if found is None:
        raise NotFound("no LLM accounts on this node")
    return found


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    return await read_object(request, allowed, empty_ok=True)


def _who(body: dict[str, Any]) -> str:
    who = body.get("who", "anonymous")
    if not isinstance(who, str):
        raise InputError("'who' must be a string")
    return who


def _until(value: object) -> datetime:
    if not isinstance(value, str):
        raise InputError("'until' must be an ISO time like 2026-01-29T15:00:00Z")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"'until' {value!r} is not an ISO time") from None
    if when.tzinfo is None:
        raise InputError("'until' needs a timezone (e.g. a trailing Z for UTC)")
    return when


async def acquire(request: web.Request) -> web.StreamResponse:
    leases = _leases(request)
    name = request.match_info["name"]
    config = leases.resource(name)
    body = await _body(request, {"who", "timeout"})
    timeout = body.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InputError("'timeout' must be a number of seconds")
    if not 0 <= timeout <= MAX_WAIT:
        raise InputError(f"'timeout' must be between 0 and {MAX_WAIT:g} seconds")
    lease = await leases.enqueue(name, _who(body))
    deadline = time.monotonic() + timeout
    try:
        while True:
            poll = await leases.try_acquire(lease.lease)
            if poll.held:
                return web.json_response({
                    "lease": lease.lease, "resource": name,
                    "expiresAt": poll.expires_at.isoformat(),
                    "ttl": config.lease_ttl.total_seconds(),
                })  # fmt: skip
            if time.monotonic() >= deadline:
                await leases.release(lease.lease)
                return web.json_response(
                    {"error": f"no slot of {name} within {timeout:g} s", "place": poll.place},
                    status=408,
                )
            await asyncio.sleep(POLL)
    except BaseException:  # the client went away (cancelled) or the database failed
        with contextlib.suppress(NotFound, StorageError):
            await leases.release(lease.lease)
        raise


async def enqueue(request: web.Request) -> web.StreamResponse:
    leases = _leases(request)
    name = request.match_info["name"]
    config = leases.resource(name)
    body = await _body(request, {"who"})
    lease = await leases.enqueue(name, _who(body))
    return web.json_response(
        {"lease": lease.lease, "resource": name, "ttl": config.lease_ttl.total_seconds()},
        status=201,
    )


async def poll(request: web.Request) -> web.StreamResponse:
    found = await _leases(request).try_acquire(request.match_info["lease"])
    return web.json_response(
        {"held": found.held, "place": found.place, "expiresAt": found.expires_at.isoformat()}
    )


async def heartbeat(request: web.Request) -> web.StreamResponse:
    expires = await _leases(request).heartbeat(request.match_info["lease"])
    return web.json_response(
        {"lease": request.match_info["lease"], "expiresAt": expires.isoformat()}
    )


async def release(request: web.Request) -> web.StreamResponse:
    gone = await _leases(request).release(request.match_info["lease"])
    return web.json_response({"released": gone.lease, "resource": gone.resource})


async def resources(request: web.Request) -> web.StreamResponse:
    return web.json_response({"resources": await _leases(request).snapshot()})


async def limited(request: web.Request) -> web.StreamResponse:
    watch = _watch(request)
    body = await _body(request, {"until"})
    mode = await watch.limited(request.match_info["name"], _until(body.get("until")))
    return web.json_response({"account": request.match_info["name"],
                              "mode": "emergency" if mode else "normal"})  # fmt: skip


async def mode(request: web.Request) -> web.StreamResponse:
    watch = _watch(request)
    current = await watch.accounts.emergency()
    cooldowns = await watch.accounts.cooldowns()
    return web.json_response({
        "mode": "emergency" if current.on else "normal",
        "since": current.since.isoformat() if current.since else None,
        "reason": current.reason, "manual": current.manual,
        "cooldowns": {n: t.isoformat() for n, t in cooldowns.items() if n in watch.names},
    })  # fmt: skip


def log_limit(request: web.Request, body: dict[str, Any]) -> Callable[[], Awaitable[None]] | None:
    """The ``account`` + ``limitedUntil`` fields of a POST /api/log, taken out of ``body`` and
    checked before the entry is stored; what records the limit once it is (None: no fields).
    Raises ``InputError`` (or ``NotFound``: no accounts) for a bad pair, so nothing is stored."""
    if not any(k in body for k in LOG_EXTRAS):
        return None
    if not all(k in body for k in LOG_EXTRAS):
        raise InputError("'account' and 'limitedUntil' go together")
    watch = _watch(request)
    account, until = body.pop("account"), _until(body.pop("limitedUntil"))
    if not isinstance(account, str) or account not in watch.names:
        known = ", ".join(watch.names)
        raise InputError(f"unknown LLM account {account!r} (known: {known})")

    async def record() -> None:
        await watch.limited(account, until)

    return record


def setup_routes(app: web.Application) -> None:
    add = app.router
    add.add_post("/api/resources/{name}/acquire", acquire)
    add.add_post("/api/resources/{name}/enqueue", enqueue)
    add.add_get("/api/resources", resources)
    add.add_post("/api/leases/{lease}/poll", poll)
    add.add_post("/api/leases/{lease}/heartbeat", heartbeat)
    add.add_post("/api/leases/{lease}/release", release)
    add.add_post("/api/accounts/{name}/limited", limited)
    add.add_get("/api/mode", mode)
