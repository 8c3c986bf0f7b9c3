"""The status API (SPEC section 5): POST/GET /api/log, /api/status, /api/alerts, /api/failover,
/healthz, /metrics."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from core.errors import InputError, StorageError
from core.httpedge import read_object
from core.statuslog import STATUSES
from proxy.resources_api import log_limit
from proxy.sidecar import STATE, json_error

log = logging.getLogger(__name__)
MAX_LIMIT = 500


async def post_log(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # The edge has checked the Content-Type; aiohttp answers 413 past client_max_size.
    body = await read_object(request)
    # A bot reporting a rate limit with its entry (README, "Shared resources").
    record_limit = log_limit(request, body)
    unknown = set(body) - {"jobId", "message", "status"}
    if unknown:
        return json_error(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    try:
        entry = await state.statuslog.append(
            body.get("jobId"), body.get("status"), body.get("message")
        )
    except InputError as exc:
        return json_error(400, str(exc))
    except StorageError as exc:
        return json_error(503, str(exc))
    state.metrics.counter(
        "clawops_status_log_entries_total", "Entries stored through POST /api/log"
    ).inc(status=entry.status)
    for hook in state.on_entry:
        try:
            await hook(entry)
        except Exception:  # the entry is stored; a hook's failure must not turn 201 into 500
            log.exception("status log hook %r failed for entry %d", hook, entry.id)
    if record_limit is not None:
        try:
            await record_limit()
        except (InputError, StorageError) as exc:
            return json_error(503, f"entry {entry.id} stored, rate limit not recorded: {exc}")
    return web.json_response({"id": entry.id}, status=201)


async def get_log(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = request.query
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        return json_error(400, f"status must be one of {', '.join(STATUSES)}")
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        return json_error(400, "limit must be a whole number")
    if not 1 <= limit <= MAX_LIMIT:
        return json_error(400, f"limit must be between 1 and {MAX_LIMIT}")
    try:
        entries = await state.statuslog.recent(
            job_id=query.get("jobId") or None, status=status, limit=limit
        )
    except StorageError as exc:
        return json_error(503, str(exc))
    return web.json_response({"entries": [e.as_json() for e in entries]})


async def get_status(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        summary: dict[str, Any] = await state.status()
    except StorageError as exc:
        return json_error(503, str(exc))
    return web.json_response({"node": state.node, **summary})


async def get_alerts(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        summary: dict[str, Any] = await state.alerts()
    except StorageError as exc:
        return json_error(503, str(exc))
    return web.json_response({"node": state.node, **summary})


async def get_failover(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"node": state.node, **(await state.failover())})


async def healthz(request: web.Request) -> web.Response:
    # Answering at all proves the loop is alive; the database round-trip (cached a few seconds,
    # bounded by the database timeout) proves the node can do its work, so a peer's watchdog
    # takes over from a node whose database has gone silent.
    state = request.app[STATE]
    problem = await state.database.problem() if state.database is not None else None
    if problem is not None:
        return web.json_response({"ok": False, "node": state.node, "error": problem}, status=503)
    return web.json_response({"ok": True, "node": state.node})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(
        text=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/log", post_log)
    app.router.add_get("/api/log", get_log)
    app.router.add_get("/api/status", get_status)
    app.router.add_get("/api/alerts", get_alerts)
    app.router.add_get("/api/failover", get_failover)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
