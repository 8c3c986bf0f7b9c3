"""core.clawwatch on both backends, against stand-in agents on loopback (the point is the
node's logic: thresholds, one parent alert, gateway states, silence, hostile answers, races)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import insert, select, update

from core.alerts import Alerts
from core.clawwatch import ClawWatch, WatchSettings
from core.db import Database
from core.minis import Minis
from core.provision import NoCapacity, _lock_with_room, reserve
from core.tables import alert_flips, claws, mac_minis, utcnow
from tests.auxil.net import serve

TOKEN_ENV = "CLAWWATCH_TEST_TOKEN"
TOKEN = "watch-token-for-tests-0123456789"


class StandIn:
    """An agent that answers /health and /claws as told: ``mode`` is ok, silent (accepts the
    request and never answers) or garbage (200 with a body that is not JSON)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.claws: dict[str, dict[str, Any]] = {}
        self.url = ""
        self.asked = 0
        self._runner: web.AppRunner | None = None
        self._never = asyncio.Event()

    async def start(self) -> StandIn:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/claws", self._list)
        self._runner, self.url = await serve(app, shutdown_timeout=0.1)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hold(self, claw_id: str, **info: Any) -> None:
        self.claws[claw_id] = {
            "clawId": claw_id,
            "port": 3001,
            "status": "running",
            "pid": 42,
            "restarts": 0,
            "ready": True,
            "error": "",
            **info,
        }

    async def _answer(self, body: dict[str, Any]) -> web.Response:
        self.asked += 1
        if self.mode == "silent":
            await self._never.wait()
        if self.mode == "garbage":
            return web.Response(text="<html>not json", content_type="application/json")
        return web.json_response({"ok": True, **body})

    async def _health(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        return await self._answer(
            {
                "version": "9.9.9",
                "portRange": "3001-3010",
                "capacity": 5,
                "claws": len(self.claws),
                "load1": 0.1,
                "memoryPercent": 10.0,
                "diskPercent": 10.0,
            }
        )

    async def _list(self, _request: web.Request) -> web.Response:
        return await self._answer({"claws": list(self.claws.values())})


@pytest.fixture
async def agent(monkeypatch) -> AsyncIterator[StandIn]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    running = await StandIn().start()
    yield running
    await running.stop()


def watcher(db: Database, **kwargs: Any) -> ClawWatch:
    settings = WatchSettings(**{"failures": 2, "successes": 2, "timeout": 1.0, **kwargs})
    return ClawWatch(db, Alerts(db), None, settings)


async def add_mini(db: Database, url: str, name: str = "mini1", **kwargs: Any) -> int:
    mini = await Minis(db).add(
        name, url, ports="3001-3010", capacity=5, agent_token_env=TOKEN_ENV, **kwargs
    )
    return mini.id


async def add_claw(db: Database, mini_id: int, org: str, slug: str, port: int) -> str:
    now = utcnow()
    async with db.begin() as conn:
        result = await conn.execute(
            insert(claws).values(
                org=org,
                slug=slug,
                status="active",
                mini_id=mini_id,
                mini_port=port,
                created_at=now,
                updated_at=now,
            )
        )
    key = result.inserted_primary_key
    assert key is not None
    return f"claw-{key[0]}"


async def mini_row(db: Database, name: str = "mini1") -> Any:
    async with db.connect() as conn:
        return (await conn.execute(select(mac_minis).where(mac_minis.c.hostname == name))).one()


async def claw_row(db: Database, slug: str) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(select(claws).where(claws.c.slug == slug))).one()


async def flips(db: Database, prefix: str = "") -> list[Any]:
    async with db.connect() as conn:
        rows = (await conn.execute(select(alert_flips).order_by(alert_flips.c.id))).all()
    return [r for r in rows if r.key.startswith(prefix)]


async def rounds(watch: ClawWatch, n: int) -> None:
    for _ in range(n):
        await watch.round()


async def test_no_minis_is_an_empty_round(db):
    summary = await watcher(db).round()
    assert summary.minis == [] and summary.text() == "no Mac Minis"


async def test_a_mini_goes_offline_after_failures_and_back_after_successes_with_one_alert(
    db, agent
):
    mini_id = await add_mini(db, agent.url)
    ids = [
        await add_claw(db, mini_id, org, slug, 3001 + n)
        for n, (org, slug) in enumerate([("acme", "a"), ("acme", "b"), ("beta", "c")])
    ]
    for claw_id in ids:
        agent.hold(claw_id)
    watch = watcher(db)
    await watch.round()
    row = await mini_row(db)
    assert row.reachable and row.hits == 1 and row.last_seen is not None
    assert row.agent_version == "9.9.9" and row.health_error == ""
    assert {(await claw_row(db, s)).gateway_state for s in "abc"} == {"running"}
    await agent.stop()
    await watch.round()  # one miss: still reachable, nothing said, claws not observed
    row = await mini_row(db)
    assert row.reachable and row.misses == 1 and "not reachable" in row.health_error
    assert await flips(db) == []
    await rounds(watch, 3)  # the second miss flips it; later ones change nothing
    row = await mini_row(db)
    assert not row.reachable and row.misses == 4
    (down,) = await flips(db)
    assert down.key == "mini:mini1" and down.new_state == "down"
    assert down.reason.startswith("mini1 offline: GET /")
    assert "3 claw(s) affected: acme/a, acme/b, beta/c" in down.reason
    # Placement skips it while offline.
    with pytest.raises(NoCapacity):
        await reserve(db, "acme", "new", None, "sealed")
    await agent.start()  # on a new port: point the Mini there
    async with db.begin() as conn:
        await conn.execute(update(mac_minis).values(agent_url=agent.url))
    await watch.round()  # one answer of two: no verdict yet
    row = await mini_row(db)
    assert not row.reachable and row.hits == 1 and row.last_seen is not None
    assert len(await flips(db)) == 1
    await watch.round()
    assert (await mini_row(db)).reachable
    down, up = await flips(db)
    assert up.key == "mini:mini1" and up.new_state == "up"
    assert up.reason == "mini1 back online (agent 9.9.9); 3 claw(s): acme/a, acme/b, beta/c"
    assert (await reserve(db, "acme", "new", None, "sealed")).mini.hostname == "mini1"


async def test_gateway_states_restarts_missing_and_handshake_after_grace(db, agent):
    mini_id = await add_mini(db, agent.url)
    ok, crashy, _gone, slow, stopped = [
        await add_claw(db, mini_id, "acme", slug, 3001 + n)
        for n, slug in enumerate(["ok", "crashy", "gone", "slow", "stopped"])
    ]
    agent.hold(ok)
    agent.hold(crashy, restarts=1)
    agent.hold(slow, status="starting", ready=False)
    agent.hold(stopped, status="stopped", ready=False, pid=None)
    watch = watcher(db, start_grace=timedelta(minutes=2))
    summary = await watch.round()
    assert summary.minis[0].claws == {
        "acme/ok": "running",
        "acme/crashy": "running",
        "acme/gone": "missing",
        "acme/slow": "starting",
        "acme/stopped": "stopped",
    }
    first = {f.key: f.reason for f in await flips(db, "claw:")}
    assert set(first) == {"claw:acme/gone", "claw:acme/stopped"}  # starting is not observed
    assert "does not hold it (on mini1)" in first["claw:acme/gone"]
    # The gateway crashed and was restarted between rounds: its count grew.
    agent.hold(crashy, restarts=3, error="gateway exited with code 1")
    summary = await watch.round()
    assert summary.minis[0].claws["acme/crashy"] == "restarting"
    row = await claw_row(db, "crashy")
    assert row.gateway_restarts == 3 and row.gateway_error == "gateway exited with code 1"
    (restart,) = [f for f in await flips(db, "claw:acme/crashy")]
    assert "restarted 3 time(s)" in restart.reason and "code 1" in restart.reason
    # No further growth: running again, recovered.
    summary = await watch.round()
    assert summary.minis[0].claws["acme/crashy"] == "running"
    assert [f.new_state for f in await flips(db, "claw:acme/crashy")] == ["down", "up"]
    # Not ready for longer than start_grace: failing the handshake.
    async with db.begin() as conn:
        await conn.execute(
            update(claws)
            .where(claws.c.slug == "slow")
            .values(gateway_since=utcnow() - timedelta(minutes=3))
        )
    summary = await watch.round()
    assert summary.minis[0].claws["acme/slow"] == "handshake"
    (handshake,) = await flips(db, "claw:acme/slow")
    assert "failing the handshake: not ready for 3m" in handshake.reason
    assert (await claw_row(db, "slow")).gateway_state == "handshake"
    assert "acme/slow handshake" in summary.text()


async def test_an_agent_restart_makes_no_claw_alert(db, agent):
    mini_id = await add_mini(db, agent.url)
    claw_id = await add_claw(db, mini_id, "acme", "a", 3001)
    agent.hold(claw_id, restarts=2)
    watch = watcher(db)
    await watch.round()
    agent.hold(claw_id, status="starting", ready=False, restarts=0)  # a fresh agent process
    assert (await watch.round()).minis[0].claws == {"acme/a": "starting"}
    agent.hold(claw_id, restarts=0)
    assert (await watch.round()).minis[0].claws == {"acme/a": "running"}
    assert await flips(db) == []


async def test_a_silent_agent_is_a_miss_within_the_timeout(db, agent):
    mini_id = await add_mini(db, agent.url)
    agent.hold(await add_claw(db, mini_id, "acme", "a", 3001))
    agent.mode = "silent"
    watch = watcher(db, timeout=0.3, failures=1)
    started = time.monotonic()
    summary = await watch.round()
    took = time.monotonic() - started
    assert 0.3 <= took < 10, took  # the timeout, not a hang (generous for a loaded machine)
    assert agent.asked >= 1 and not summary.minis[0].answered
    row = await mini_row(db)
    assert not row.reachable and row.misses == 1 and "no answer within" in row.health_error
    (down,) = await flips(db)
    assert "1 claw(s) affected: acme/a" in down.reason
    assert (await claw_row(db, "a")).gateway_state is None  # its claws are not observed


@pytest.mark.parametrize("hostile", ["garbage", "bad-claws"])
async def test_a_hostile_answer_is_a_miss_with_its_reason(db, agent, hostile):
    mini_id = await add_mini(db, agent.url)
    claw_id = await add_claw(db, mini_id, "acme", "a", 3001)
    if hostile == "garbage":
        agent.mode = "garbage"
    else:
        agent.hold(claw_id, status="exploded", restarts="many")
    summary = await watcher(db, failures=1).round()
    assert not summary.minis[0].answered
    row = await mini_row(db)
    assert not row.reachable and row.misses == 1
    expected = "not a JSON object" if hostile == "garbage" else "malformed claw"
    assert expected in row.health_error
    assert expected in (await flips(db))[0].reason
    assert (await claw_row(db, "a")).gateway_state is None


async def test_a_mini_added_offline_takes_no_claw_until_it_answered_successes_times(db, agent):
    await add_mini(db, agent.url, reachable=False)
    with pytest.raises(NoCapacity):
        await reserve(db, "acme", "a", None, "sealed")
    watch = watcher(db, successes=2)
    await watch.round()
    assert not (await mini_row(db)).reachable
    assert await flips(db) == []  # it answered: no offline alert while it comes up
    await watch.round()
    assert (await mini_row(db)).reachable
    assert await flips(db) == []  # never announced down: its "up" tells nothing
    assert (await reserve(db, "acme", "a", None, "sealed")).mini.hostname == "mini1"


async def test_two_watchers_racing_count_a_round_once_and_flip_the_mini_once(db, agent):
    """Two nodes' rounds at the same moment (each waits on a silent agent, so both read the
    counts before either writes): one records the miss, the other leaves it."""
    mini_id = await add_mini(db, agent.url)
    await add_claw(db, mini_id, "acme", "a", 3001)
    agent.mode = "silent"
    one, two = watcher(db, failures=2, timeout=0.3), watcher(db, failures=2, timeout=0.3)
    first = await asyncio.gather(one.round(), two.round())
    assert sorted(s.minis[0].claimed for s in first) == [False, True]
    assert (await mini_row(db)).misses == 1 and (await mini_row(db)).reachable
    second = await asyncio.gather(one.round(), two.round())
    assert sorted(s.minis[0].claimed for s in second) == [False, True]
    row = await mini_row(db)
    assert row.misses == 2 and not row.reachable
    assert sum(s.minis[0].flipped == "offline" for s in first + second) == 1
    assert [f.key for f in await flips(db)] == ["mini:mini1"]


async def test_the_locking_placement_step_also_refuses_an_unreachable_mini(db, agent):
    """``_lock_with_room`` re-reads the Mini under its lock (PostgreSQL's path): a Mini that
    became unreachable between the candidates' read and the lock is not taken."""
    mini_id = await add_mini(db, agent.url)
    async with db.begin() as conn:
        assert await _lock_with_room(conn, mini_id, skip_locked=False) is not None
        await conn.execute(update(mac_minis).values(reachable=False))
        assert await _lock_with_room(conn, mini_id, skip_locked=True) is None


async def test_the_alerts_of_a_claw_deleted_or_a_mini_removed_are_let_go_silently(db, agent):
    mini_id = await add_mini(db, agent.url)
    await add_claw(db, mini_id, "acme", "gone", 3001)  # the agent does not hold it: missing
    watch = watcher(db)
    await watch.round()
    alerts = Alerts(db)
    assert [s.key for s in await alerts.open_alerts()] == ["claw:acme/gone"]
    await alerts.observe("mini:old-mini", "critical", "offline")  # a Mini since removed
    async with db.begin() as conn:
        await conn.execute(update(claws).values(status="deleted", mini_id=None, mini_port=None))
    await watch.round()
    assert await alerts.open_alerts() == []
    settled = [f for f in await flips(db) if f.new_state == "up"]
    assert {f.key for f in settled} == {"claw:acme/gone", "mini:old-mini"}
    assert all(f.suppressed for f in settled), "nothing to tell: nobody waits for a recovery"


async def test_a_drained_mini_that_dies_and_comes_back_is_still_draining(db, agent):
    await add_mini(db, agent.url)
    await Minis(db).drain("mini1")
    watch = watcher(db, failures=1, successes=1)
    await agent.stop()
    await watch.round()
    mini = await Minis(db).get("mini1")
    assert (mini.state, mini.status, mini.reachable) == ("offline", "draining", False)
    await agent.start()
    async with db.begin() as conn:
        await conn.execute(update(mac_minis).values(agent_url=agent.url))
    await watch.round()
    mini = await Minis(db).get("mini1")
    assert (mini.state, mini.reachable) == ("draining", True)
    with pytest.raises(NoCapacity):  # draining still takes no claw
        await reserve(db, "acme", "new", None, "sealed")
