"""The agent's HTTP API (THE AGENT HTTP CONTRACT): bearer token on every route, JSON, "ok" always.

Every failure is a non-2xx status with ``{"ok": false, "error"}`` — also aiohttp's own 404/405
and anything unexpected (500), so a client never reads a failure as success. The checks (token,
Host, JSON bodies, error statuses) are the shared edge's, core/httpedge.py, as on the sidecar.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.config import MIN_TOKEN
from agent.devices import approve_device, parse_device
from agent.fleet import Fleet, Refused
from core.buckets import check_bucket_name
from core.errors import InputError
from core.httpedge import Edge, error_response, host_names, install_edge, read_json
from core.version import clawops_version

log = logging.getLogger("clawops.agent")
FLEET = web.AppKey("fleet", Fleet)
TOKEN = web.AppKey("token", str)
CLAW_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The fleet's ``Refused`` carries the status of the agent contract (403, 409, 501, 507);
    every other error is mapped by the shared edge (core.httpedge.status_for)."""
    try:
        return await handler(request)
    except Refused as exc:
        return error_response(request, exc.status, str(exc))


def parse_create(body: Any) -> tuple[str, int, str, str | None, bool]:
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    claw_id, port, token = body.get("clawId"), body.get("port"), body.get("token")
    bucket, restore = body.get("bucket"), body.get("restore", False)
    if not isinstance(claw_id, str) or not CLAW_ID.match(claw_id):
        raise InputError("clawId must match ^[a-z0-9][a-z0-9-]{0,62}$")
    if not isinstance(port, int) or isinstance(port, bool):
        raise InputError("port must be an integer")
    if not isinstance(token, str) or len(token) < MIN_TOKEN:
        raise InputError(f"token must be a string of {MIN_TOKEN}+ characters")
    if bucket is not None and (not isinstance(bucket, str) or not check_bucket_name(bucket)):
        raise InputError("bucket must be a bucket name or null")
    if not isinstance(restore, bool):
        raise InputError("restore must be true or false")
    return claw_id, port, token, bucket, restore


async def create_claw(request: web.Request) -> web.Response:
    body = await read_json(request)
    claw, new = await request.app[FLEET].create(*parse_create(body))
    return web.json_response({"ok": True, "claw": claw.info()}, status=201 if new else 200)


async def list_claws(request: web.Request) -> web.Response:
    claws = [c.info() for c in request.app[FLEET].claws.values()]
    return web.json_response({"ok": True, "claws": claws})


async def claw_status(request: web.Request) -> web.Response:
    claw = request.app[FLEET].get(request.match_info["id"])
    return web.json_response({"ok": True, "claw": claw.info()})


async def restart_claw(request: web.Request) -> web.Response:
    claw = await request.app[FLEET].restart(request.match_info["id"])
    return web.json_response({"ok": True, "claw": claw.info()})


async def delete_claw(request: web.Request) -> web.Response:
    await request.app[FLEET].delete(request.match_info["id"])
    return web.json_response({"ok": True})


def parse_backup(body: Any) -> int | None:
    """The optional ``keep``: how many of the newest backups to keep (older ones deleted)."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    keep = body.get("keep")
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise InputError("keep must be a positive integer")
    return keep


async def backup_claw(request: web.Request) -> web.Response:
    keep = parse_backup(await read_json(request) if request.can_read_body else None)
    made = await request.app[FLEET].backup(request.match_info["id"], keep)
    return web.json_response({"ok": True, **made.answer()})


async def approve_claw_device(request: web.Request) -> web.Response:
    """Approve the node's device on the claw's gateway (agent/devices.py has the flow)."""
    body = await read_json(request)
    device_id, public_key = parse_device(body)
    fleet = request.app[FLEET]
    claw = fleet.get(request.match_info["id"])
    result = await approve_device(claw, fleet.config.cli, fleet.drop_env, device_id, public_key)
    return web.json_response({"ok": True, "deviceId": device_id, **result})


def memory_percent() -> float:
    """Used memory in percent from /proc/meminfo (0.0 where there is none, e.g. macOS)."""
    try:
        fields = dict(
            (line.split(":")[0], int(line.split()[1]))
            for line in Path("/proc/meminfo").read_text().splitlines()
        )
        return round(100.0 * (1 - fields["MemAvailable"] / fields["MemTotal"]), 1)
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return 0.0


async def health(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    disk = shutil.disk_usage(fleet.config.state_dir)
    return web.json_response({
        "ok": True, "version": clawops_version(), "portRange": fleet.config.port_range,
        "capacity": fleet.config.max_claws, "claws": len(fleet.claws),
        "load1": round(os.getloadavg()[0], 2), "memoryPercent": memory_percent(),
        "diskPercent": round(100.0 * disk.used / disk.total, 1),
    })  # fmt: skip


def make_app(
    fleet: Fleet, token: str, hosts: Iterable[str] = (), *, any_ip: bool = False
) -> web.Application:
    """The agent's app; ``hosts``: names the Host header may carry besides loopback (the bind
    host, agent.allowed_hosts); ``any_ip``: bound to a wildcard address (core.httpedge)."""
    app = web.Application(client_max_size=64 * 1024)
    edge = Edge(
        token=token, hosts=host_names(extra=hosts), any_ip=any_ip, error_fields={"ok": False}
    )
    install_edge(app, edge)
    app.middlewares.append(refusals)  # inside the edge's error answer, which would say 500
    app[FLEET], app[TOKEN] = fleet, token

    async def lifecycle(app: web.Application) -> Any:
        await fleet.load()
        yield
        await fleet.shutdown()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/claws", create_claw)
    app.router.add_get("/claws", list_claws)
    app.router.add_get("/claws/{id}/status", claw_status)
    app.router.add_post("/claws/{id}/restart", restart_claw)
    app.router.add_delete("/claws/{id}", delete_claw)
    app.router.add_post("/claws/{id}/backup", backup_claw)
    app.router.add_post("/claws/{id}/devices", approve_claw_device)
    app.router.add_get("/health", health)
    return app
