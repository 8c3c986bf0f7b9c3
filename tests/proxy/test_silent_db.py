"""The sidecar over a PostgreSQL whose TCP link goes silent (issue 11): clear 503s within the
database timeout, /healthz reports it, and everything resumes when the link comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from core.db import Database, DatabaseProbe
from core.statuslog import StatusLog
from core.tables import status_log
from proxy.sidecar import Sidecar, SidecarState, create_app
from tests.auxil.tcpproxy import TcpProxy, through

TIMEOUT = 1.0
WITHIN = TIMEOUT + 3  # generous: a loaded 2-core machine must not make it flake
UNAVAILABLE = "database unavailable: no answer within 1s"
ENTRY = {"jobId": "cron", "message": "ran", "status": "ok"}


@dataclass
class Running:
    client: httpx.AsyncClient
    proxy: TcpProxy
    direct: Database  # the same database, not through the proxy: what is really stored


@pytest.fixture
async def running(pg_url: str) -> AsyncIterator[Running]:
    direct = Database(pg_url)
    await direct.upgrade()
    async with direct.begin() as conn:
        await conn.execute(text("TRUNCATE status_log RESTART IDENTITY"))
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    db = Database(through(pg_url, proxy), timeout=TIMEOUT)
    log = StatusLog(db, "test-node")
    await log.start()

    async def status() -> dict[str, Any]:
        return {"jobs": [e.as_json() for e in await log.latest_per_job()]}

    state = SidecarState(
        statuslog=log, node="test-node", status=status, database=DatabaseProbe(db, max_age=0.2)
    )
    sidecar = Sidecar(create_app(state), "127.0.0.1", 0)
    await sidecar.start()
    client = httpx.AsyncClient(base_url=sidecar.url, timeout=30)
    try:
        yield Running(client, proxy, direct)
    finally:
        proxy.resume()
        await client.aclose()
        await sidecar.stop()
        await log.stop()
        await db.close()
        await proxy.stop()
        await direct.close()


async def timed(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    started = time.monotonic()
    response = await client.request(method, path, **kw)
    response.extensions["took"] = time.monotonic() - started
    return response


async def stored_ids(db: Database) -> set[int]:
    async with db.connect() as conn:
        return set((await conn.execute(select(status_log.c.id))).scalars())


async def test_a_silent_database_answers_503_within_the_timeout_and_resumes_losing_nothing(
    running,
):
    client = running.client
    acknowledged = {(await client.post("/api/log", json=ENTRY)).json()["id"] for _ in range(3)}
    assert (await client.get("/healthz")).json() == {"ok": True, "node": "test-node"}

    running.proxy.silence()
    answers = await asyncio.gather(
        *(timed(client, "POST", "/api/log", json=ENTRY) for _ in range(10)),
        timed(client, "GET", "/api/log"),
        timed(client, "GET", "/api/status"),
    )
    # The probe's last answer (ok) is older than its max age by now, so /healthz asks again.
    health = await timed(client, "GET", "/healthz")
    for response in [*answers, health]:
        assert response.status_code == 503, (response.request.url, response.text)
        assert UNAVAILABLE in response.json()["error"]
        assert response.extensions["took"] < WITHIN, response.request.url
    assert health.json() == {"ok": False, "node": "test-node", "error": UNAVAILABLE}

    running.proxy.resume()
    for _ in range(100):  # the cached probe answer is at most 0.2 s old here
        if (await client.get("/healthz")).status_code == 200:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("/healthz did not recover")
    after = await client.post("/api/log", json=ENTRY)
    assert after.status_code == 201
    acknowledged.add(after.json()["id"])
    assert (await client.get("/api/status")).status_code == 200
    # Every 201 is stored, and no entry answered 503 turned up afterwards.
    assert await stored_ids(running.direct) == acknowledged


async def test_healthz_answers_200_again_within_the_probe_age_without_a_restart(running):
    running.proxy.silence()
    assert (await running.client.get("/healthz")).status_code == 503
    running.proxy.resume()
    started = time.monotonic()
    for _ in range(100):
        if (await running.client.get("/healthz")).status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < WITHIN
