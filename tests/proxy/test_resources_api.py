"""Shared resources and emergency mode through a real sidecar and real `clawops` processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from core.accounts import Accounts, EmergencyWatch
from core.config import ResourceConfig
from core.db import Database
from core.outbox import Outbox
from core.resources import Leases
from core.state import StateStore
from core.statuslog import StatusLog
from core.tables import leases as leases_table
from core.tables import status_log, utcnow
from proxy.sidecar import Sidecar, SidecarState, create_app
from tests.auxil.net import free_port

_SCRIPT = Path(sys.executable).with_name("clawops")
CLAWOPS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]
TOKEN = "resources-test-token-0123456789abcdef"
RESOURCES = [
    ResourceConfig(name="ollama", max_concurrent=2, lease_ttl=timedelta(seconds=30)),
    ResourceConfig(name="grok", max_concurrent=1, lease_ttl=timedelta(seconds=2)),
]
# Records its start and end (wall clock) and exits with the code it is given.
RECORDER = """
import sys, time
start = time.time()
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "a") as f:
    f.write(f"{start} {time.time()}\\n")
sys.exit(int(sys.argv[3]))
"""


@dataclass
class Running:
    url: str
    client: httpx.AsyncClient
    leases: Leases
    outbox: Outbox
    accounts: Accounts
    config: Path
    db: Database

    async def clawops(self, *args: str, at: int = 1) -> asyncio.subprocess.Process:
        """Run `clawops ARGS` with --config inserted after the first ``at`` words."""
        return await asyncio.create_subprocess_exec(
            *CLAWOPS, *args[:at], "--config", str(self.config), *args[at:],
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "CLAWOPS_TEST_API_TOKEN": TOKEN},
        )  # fmt: skip

    async def rows(self, table=leases_table) -> int:  # type: ignore[no-untyped-def]
        async with self.db.connect() as conn:
            found = await conn.execute(select(func.count()).select_from(table))
            return int(found.scalar_one())


@pytest.fixture
async def node(db: Database, tmp_path: Path) -> AsyncIterator[Running]:
    port = free_port()
    config = tmp_path / "clawops.toml"
    config.write_text(f'[sidecar]\nport = {port}\ntoken_env = "CLAWOPS_TEST_API_TOKEN"\n')
    statuslog = StatusLog(db, "test-node")
    await statuslog.start()
    outbox = Outbox(db, "test-node")
    accounts = Accounts(StateStore(db))
    watch = EmergencyWatch(accounts, ["claude-main", "claude-backup"], lambda t: outbox.put(t))
    leases = Leases(db, RESOURCES)
    state = SidecarState(statuslog=statuslog, node="test-node", token=TOKEN, leases=leases,
                         emergency=watch)  # fmt: skip
    sidecar = Sidecar(create_app(state), "127.0.0.1", port)
    await sidecar.start()
    client = httpx.AsyncClient(
        base_url=sidecar.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        yield Running(sidecar.url, client, leases, outbox, accounts, config, db)
    finally:
        watch.stop()
        await client.aclose()
        await sidecar.stop()
        await statuslog.stop()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


async def wait_until(check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_ten_clawops_with_commands_never_run_more_than_two_at_once(
    node: Running, tmp_path: Path
) -> None:
    script, record = tmp_path / "recorder.py", tmp_path / "intervals.txt"
    script.write_text(RECORDER)
    procs = [
        await node.clawops("with", "ollama", "--who", f"bot{n}", "--",
                           sys.executable, str(script), str(record), "0.5", str(n % 4))
        for n in range(10)
    ]  # fmt: skip
    results = await asyncio.gather(*(p.communicate() for p in procs))
    codes = [p.returncode for p in procs]
    assert codes == [n % 4 for n in range(10)], [err.decode() for _, err in results]
    intervals = [tuple(map(float, line.split())) for line in record.read_text().splitlines()]
    assert len(intervals) == 10
    peak = max_overlap(intervals)  # type: ignore[arg-type]
    print(f"max overlap observed: {peak} of 10 commands (max_concurrent 2)")
    assert peak == 2
    assert any(b"waiting for ollama: place" in err for _, err in results)
    assert await node.rows() == 0


async def held_by(node: Running, resource: str) -> list[str]:
    snap = await node.leases.snapshot()
    return [h["holder"] for h in snap[resource]["holders"]]  # type: ignore[index, union-attr]


async def test_a_holder_killed_with_sigkill_loses_its_slot_after_the_ttl(
    node: Running, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    code = f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(60)"
    holder = await node.clawops("with", "grok", "--who", "doomed", "--", sys.executable, "-c", code)
    await wait_until(lambda: asyncio.sleep(0, pidfile.exists()))
    assert await held_by(node, "grok") == ["doomed"]
    holder.kill()
    # Its orphaned child too (it holds the pipes, so wait() would wait for it): nobody releases.
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    await holder.wait()
    started = asyncio.get_running_loop().time()
    assert await held_by(node, "grok") == ["doomed"]  # not released: it expires
    after = await node.clawops("with", "grok", "--who", "next", "--timeout", "20", "--", "true")
    _, err = await after.communicate()
    waited = asyncio.get_running_loop().time() - started
    assert after.returncode == 0, err.decode()
    assert waited >= 1.0  # it had to wait for the TTL (2 s) of the dead holder
    reclaimed = await node.leases.reclaim_expired()
    assert [x.holder for x in reclaimed] == ["doomed"]
    assert await node.rows() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_an_interrupted_with_forwards_the_signal_and_releases(
    node: Running, tmp_path: Path, sig: int
) -> None:
    mark = tmp_path / "got-signal"
    child = (
        "import signal,sys,time\n"
        f"def bye(n, f): open({str(mark)!r},'w').write(str(n)); sys.exit(1)\n"
        "signal.signal(signal.SIGTERM, bye); signal.signal(signal.SIGINT, bye)\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    proc = await node.clawops("with", "ollama", "--who", "worker", "--", sys.executable, "-c",
                              child)  # fmt: skip
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"ready"
    assert await held_by(node, "ollama") == ["worker"]
    proc.send_signal(sig)
    await asyncio.wait_for(proc.wait(), 20)
    assert proc.returncode == 128 + sig
    assert mark.read_text() == str(int(sig))
    assert await node.rows() == 0


async def test_a_command_that_is_not_found_exits_127_and_releases(node: Running) -> None:
    proc = await node.clawops("with", "ollama", "--", "/nonexistent/command")
    _, err = await proc.communicate()
    assert proc.returncode == 127 and b"command not found" in err
    assert await node.rows() == 0


async def test_acquire_waits_up_to_its_timeout_then_answers_408_with_the_place(
    node: Running,
) -> None:
    first = await node.client.post("/api/resources/grok/acquire", json={"who": "a"})
    assert first.status_code == 200 and first.json()["resource"] == "grok"
    late = await node.client.post("/api/resources/grok/acquire",
                                  json={"who": "b", "timeout": 0.3})  # fmt: skip
    assert late.status_code == 408 and late.json()["place"] == 1
    lease = first.json()["lease"]
    assert (await node.client.post(f"/api/leases/{lease}/heartbeat")).status_code == 200
    snap = (await node.client.get("/api/resources")).json()["resources"]
    assert [h["holder"] for h in snap["grok"]["holders"]] == ["a"] and snap["grok"]["waiters"] == []
    assert (await node.client.post(f"/api/leases/{lease}/release")).status_code == 200
    assert (await node.client.post(f"/api/leases/{lease}/release")).status_code == 404
    assert await node.rows() == 0


async def test_emergency_mode_is_entered_by_the_last_limit_and_left_when_a_cooldown_ends(
    node: Running,
) -> None:
    soon = (utcnow() + timedelta(seconds=2)).isoformat()
    later = (utcnow() + timedelta(seconds=60)).isoformat()
    one = await node.client.post("/api/accounts/claude-main/limited", json={"until": soon})
    assert one.json()["mode"] == "normal"
    # The last one arrives on a normal status post, as a bot would send it.
    post = await node.client.post("/api/log", json={
        "jobId": "ios-dev", "status": "warning", "message": "rate limited",
        "account": "claude-backup", "limitedUntil": later,
    })  # fmt: skip
    assert post.status_code == 201
    mode = (await node.client.get("/api/mode")).json()
    assert mode["mode"] == "emergency"
    assert set(mode["cooldowns"]) == {"claude-main", "claude-backup"}
    assert await node.rows(status_log) == 1
    sent = [m.text for m in await node.outbox.pending()]
    assert len(sent) == 1 and sent[0].startswith("🚨 Emergency mode")
    await wait_until(lambda: _mode_is(node, "normal"), 10)
    sent = [m.text for m in await node.outbox.pending()]
    assert len(sent) == 2 and "claude-main is available again" in sent[1]
    # Reported again (by the CLI this time) with both limited: on again, announced once more.
    proc = await node.clawops("account", "limited", "claude-main", "--until", "45m", at=2)
    out, err = await proc.communicate()
    assert proc.returncode == 0 and b"mode: emergency" in out, err.decode()
    assert len(await node.outbox.pending()) == 3


async def _mode_is(node: Running, wanted: str) -> bool:
    return bool((await node.client.get("/api/mode")).json()["mode"] == wanted)


async def test_bad_input_is_refused_and_changes_nothing(node: Running) -> None:
    c = node.client
    checks = [
        (await c.post("/api/resources/gpu/enqueue", json={"who": "x"}), 404),
        (await c.post("/api/resources/ollama/enqueue", content=b"{nope",
                      headers={"Content-Type": "application/json"}), 400),
        (await c.post("/api/resources/ollama/enqueue", json={"who": 5}), 400),
        (await c.post("/api/resources/ollama/enqueue", json={"who": "x", "extra": 1}), 400),
        (await c.post("/api/resources/ollama/acquire", json={"timeout": -1}), 400),
        (await c.post("/api/resources/ollama/acquire", json={"timeout": "soon"}), 400),
        (await c.post("/api/leases/nosuch/poll"), 404),
        (await c.post("/api/leases/nosuch/heartbeat"), 404),
        (await c.post("/api/accounts/claude-main/limited", json={"until": "tomorrow"}), 400),
        (await c.post("/api/accounts/claude-main/limited",
                      json={"until": "2030-01-01T00:00:00"}), 400),
        (await c.post("/api/accounts/nobody/limited",
                      json={"until": "2030-01-01T00:00:00Z"}), 404),
        (await c.post("/api/log", json={"jobId": "j", "status": "ok", "message": "m",
                                        "account": "claude-main"}), 400),
        (await c.post("/api/log", json={"jobId": "j", "status": "ok", "message": "m",
                                        "account": "nobody", "limitedUntil": "2030-01-01T00:00Z"}),
         400),
        (await c.post("/api/log", json={"jobId": "j", "status": "bogus", "message": "m"}), 400),
        (await c.post("/api/resources/ollama/enqueue", json={"who": "x"},
                      headers={"Authorization": "Bearer wrong"}), 401),
    ]  # fmt: skip
    for response, status in checks:
        assert response.status_code == status, response.text
        assert "error" in response.json()
    assert await node.rows() == 0 and await node.rows(status_log) == 0
    assert await node.accounts.cooldowns() == {}
    assert (await c.get("/api/mode")).json()["mode"] == "normal"
    assert await node.outbox.pending() == []
