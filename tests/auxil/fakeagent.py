"""A stand-in Mini agent: an aiohttp app on loopback that follows the agent HTTP contract.

It runs no gateway; it holds claws in a dict (``claws``) so a test can assert nothing is left
behind, and it can misbehave on purpose (``fault``) or answer slowly (``latency``):

- ``"500"``: the create route answers 500 {"ok": false} — after creating the claw, the worst case;
- ``"not-ok"``: the create route answers 200 {"ok": false, "error"} — also after creating it;
- ``"never-ready"``: claws stay ``crashed`` and never ``ready``;

and ``refuse_delete`` makes DELETE answer 500 (a rollback or delete that cannot finish),
``refuse_backup`` makes a backup answer 500 (its store is down). Backups are only counted
(``backups``); a create with ``restore`` is remembered in the claw's ``restore``.

An agent that is down is simply one that was never started: ``down_url()``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.auxil.net import free_port, serve

CLAW_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def down_url() -> str:
    """The URL of an agent that is not running (nothing listens there)."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class FakeAgent:
    token: str = "agent-token-for-tests"
    port_low: int = 3001
    port_high: int = 3100
    max_claws: int = 100
    fault: str | None = None
    latency: float = 0.0
    refuse_delete: bool = False
    refuse_backup: bool = False
    backups: list[str] = field(default_factory=list)
    claws: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeAgent:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/claws", self._create)
        app.router.add_get("/claws", self._list)
        app.router.add_get("/claws/{id}/status", self._status)
        app.router.add_post("/claws/{id}/restart", self._status)
        app.router.add_delete("/claws/{id}", self._delete)
        app.router.add_post("/claws/{id}/backup", self._backup)
        app.router.add_get("/health", self._health)
        self._runner, self.url = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        await request.read()  # the whole request arrived: it is acted on even if the client goes
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _fail(401, "bad or missing bearer token")
        response: web.StreamResponse = await handler(request)
        return response

    def _info(self, claw_id: str) -> dict[str, Any]:
        claw = self.claws[claw_id]
        never = self.fault == "never-ready"
        return {
            "clawId": claw_id,
            "port": claw["port"],
            "status": "crashed" if never else "running",
            "pid": None if never else 4242,
            "restarts": 3 if never else 0,
            "ready": not never,
            "error": "gateway exited with code 1" if never else "",
        }

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        claw_id, port, token = body.get("clawId"), body.get("port"), body.get("token")
        if not isinstance(claw_id, str) or not CLAW_ID.match(claw_id):
            return _fail(400, "clawId must match ^[a-z0-9][a-z0-9-]{0,62}$")
        if not isinstance(port, int) or not isinstance(token, str) or len(token) < 32:
            return _fail(400, "port must be an integer and token 32+ characters")
        held = self.claws.get(claw_id)
        if held is not None:
            if held["port"] != port:
                return _fail(409, f"{claw_id} already runs on port {held['port']}")
            return self._created(claw_id, 200)
        if not self.port_low <= port <= self.port_high:
            return _fail(409, f"port {port} outside {self.port_low}-{self.port_high}")
        if any(c["port"] == port for c in self.claws.values()):
            return _fail(409, f"port {port} in use")
        if len(self.claws) >= self.max_claws:
            return _fail(507, f"at max_claws ({self.max_claws})")
        self.claws[claw_id] = {
            "port": port,
            "token": token,
            "bucket": body.get("bucket"),
            "restore": body.get("restore", False),
        }
        return self._created(claw_id, 201)

    def _created(self, claw_id: str, status: int) -> web.Response:
        if self.fault == "500":
            return _fail(500, "internal error while starting the gateway")
        if self.fault == "not-ok":
            return web.json_response({"ok": False, "error": "gateway binary missing"})
        return web.json_response({"ok": True, "claw": self._info(claw_id)}, status=status)

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "claws": [self._info(c) for c in self.claws]})

    async def _status(self, request: web.Request) -> web.Response:
        claw_id = request.match_info["id"]
        if claw_id not in self.claws:
            return _fail(404, f"no claw {claw_id}")
        return web.json_response({"ok": True, "claw": self._info(claw_id)})

    async def _delete(self, request: web.Request) -> web.Response:
        if self.refuse_delete:
            return _fail(500, "cannot stop the gateway")
        if self.claws.pop(request.match_info["id"], None) is None:
            return _fail(404, f"no claw {request.match_info['id']}")
        return web.json_response({"ok": True})

    async def _backup(self, request: web.Request) -> web.Response:
        claw_id = request.match_info["id"]
        if claw_id not in self.claws:
            return _fail(404, f"no claw {claw_id}")
        if self.refuse_backup:
            return _fail(500, "S3 store unreachable")
        key = f"backups/{claw_id}-{len(self.backups) + 1}.tar.gz"
        self.backups.append(key)
        return web.json_response(
            {
                "ok": True,
                "key": key,
                "size": 12 * 1024,
                "seconds": 1.3,
                "method": "tarball",
                "pruned": 0,
            }
        )

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "capacity": self.max_claws,
                "claws": len(self.claws),
                "load1": 0.5,
                "memoryPercent": 40.0,
                "diskPercent": 30.0,
            }
        )


def _fail(status: int, error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status)
