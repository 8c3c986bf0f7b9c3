"""The failover watchdog: its state machine with explicit times, then the real dance of two
`clawops run` processes sharing one local Bot API (one token, never two pollers)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.failover import peer_base
from core.failover import FailoverMachine
from core.localtelegram import LocalTelegram
from tests.auxil.net import free_port
from tests.bot.test_cli import CLAWOPS

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TOKEN = "7000000002:failover-test"
ALERT_CHAT, ADMIN = -100, 1


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def machine(**overrides: Any) -> FailoverMachine:
    return FailoverMachine(**{"failures_needed": 3, "successes_needed": 5,
                              "min_dwell": timedelta(seconds=60), **overrides})  # fmt: skip


# -- the state machine ------------------------------------------------------------------------


def test_it_takes_over_after_three_consecutive_failures():
    m = machine()
    assert [m.observe(False, at(i), "refused") for i in range(3)] == ["none", "none", "takeover"]
    assert m.failures == 3 and m.last_error == "refused"
    m.took_over(at(3))
    assert (m.active, m.since, m.failures, m.successes) == (True, at(3), 0, 0)


def test_it_yields_after_five_successes_only_once_the_dwell_time_has_passed():
    m = machine()
    m.took_over(at(0))
    assert [m.observe(True, at(1 + i)) for i in range(5)] == ["none"] * 5  # 5 ok, dwell not over
    assert m.dwell_left(at(5)) == timedelta(seconds=55)
    assert m.observe(True, at(59)) == "none"
    assert m.observe(True, at(60)) == "yield"
    m.yielded(at(60))
    assert (m.active, m.failures, m.successes) == (False, 0, 0)


def test_a_flapping_primary_never_causes_a_takeover_and_resets_the_counters():
    m = machine()
    decisions = [m.observe(i % 2 == 0, at(i)) for i in range(100)]
    assert set(decisions) == {"none"} and not m.active
    m.observe(False, at(100))
    m.observe(False, at(101))
    assert m.observe(True, at(102)) == "none" and (m.failures, m.successes) == (0, 1)


def test_a_flapping_primary_never_makes_an_active_standby_yield():
    m = machine(min_dwell=timedelta(0))
    m.took_over(at(0))
    assert {m.observe(i % 2 == 0, at(i)) for i in range(50)} == {"none"} and m.active


def test_a_pinned_takeover_does_not_yield_on_its_own():
    m = machine(min_dwell=timedelta(0))
    m.took_over(at(0), pinned=True)
    assert {m.observe(True, at(i)) for i in range(10)} == {"none"} and m.state == "active (pinned)"


def test_its_state_survives_a_dump_and_restore_and_bad_values_are_ignored():
    m = machine()
    m.took_over(at(5))
    m.observe(True, at(6))
    again = machine()
    again.restore(m.dump())
    assert (again.active, again.since, again.successes, again.takeovers) == (True, at(5), 1, 1)
    junk = machine()
    junk.restore({"active": "yes", "since": "not a date", "failures": -4})
    assert (junk.active, junk.since, junk.failures) == (False, None, 0)


def test_thresholds_below_one_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        machine(failures_needed=0)


def test_peer_url_may_be_given_with_or_without_healthz():
    assert peer_base("http://10.0.0.2:9010/healthz") == "http://10.0.0.2:9010"
    assert peer_base("http://10.0.0.2:9010/") == "http://10.0.0.2:9010"


# -- two real nodes, one token ----------------------------------------------------------------


def write(
    tmp: Path,
    name: str,
    role: str,
    port: int,
    peer: int,
    api: str,
    extra: str = "",
    sidecar: str = "",
) -> Path:
    (tmp / name).mkdir()
    path = tmp / name / "clawops.toml"
    path.write_text(f"""
[node]
name = "{name}"
role = "{role}"
peer_url = "http://127.0.0.1:{peer}"
data_dir = "{tmp / name / "data"}"

[database]
url = "sqlite+aiosqlite:///{tmp / name / "clawops.db"}"

[telegram]
token_env = "TEST_FAILOVER_TOKEN"
api_base_url = "{api}"
allowed_chats = [{ALERT_CHAT}]
admins = [{ADMIN}]
alert_chat = {ALERT_CHAT}

[sidecar]
port = {port}
{sidecar}

[jobs.failover]
every = "1s"
failures = 3
successes = 5
min_dwell = "2s"
timeout = "1s"  # durations are whole units; a dead port is refused at once anyway
{extra}""")
    return path


class Proc:
    def __init__(self, config: Path, port: int) -> None:
        self.config, self.url = config, f"http://127.0.0.1:{port}"
        self.log = config.parent / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:  # a file, not a pipe: a full pipe would block the node
            self.proc = subprocess.Popen(
                [*CLAWOPS, "run", "--config", str(self.config)], stdout=log, stderr=log,
                env={**os.environ, "TEST_FAILOVER_TOKEN": TOKEN},
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    async def failover(self) -> dict[str, Any] | None:
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                answer: dict[str, Any] = (await client.get(f"{self.url}/api/failover")).json()
                return answer
        except httpx.HTTPError:
            return None

    async def polling(self) -> bool | None:
        state = await self.failover()
        return None if state is None else bool(state["polling"])


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float,
                *procs: Proc) -> float:  # fmt: skip
    """Poll ``check`` until true; the seconds it took (fails with ``what`` past ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        if any(p.proc is not None and p.proc.poll() is not None for p in procs):
            break
        await asyncio.sleep(0.1)
    logs = "".join(f"\n--- {p.log.parent.name}:\n{p.log.read_text()[-3000:]}" for p in procs)
    raise AssertionError(f"not within {timeout}s (or a node exited): {what}{logs}")


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Proc, Proc, LocalTelegram]]:
    """A primary (alpha) and a standby (beta), not started, on one local Bot API and token."""
    async with LocalTelegram() as api:
        p_port, s_port = free_port(), free_port()
        primary = Proc(write(tmp_path, "alpha", "primary", p_port, s_port, api.base_url), p_port)
        standby = Proc(write(tmp_path, "beta", "standby", s_port, p_port, api.base_url), s_port)
        try:
            yield primary, standby, api
        finally:
            primary.kill()
            standby.kill()


@pytest.mark.slow
async def test_the_standby_takes_over_from_a_dead_primary_and_hands_back_without_two_pollers(
    nodes: tuple[Proc, Proc, LocalTelegram],
):
    primary, standby, api = nodes
    primary.start()
    standby.start()
    await until("both nodes answer", lambda: _both_up(primary, standby), 20, primary, standby)
    await until("the primary polls", primary.polling, 10, primary, standby)
    await asyncio.sleep(1.5)  # the standby sees a healthy primary for a check or two
    assert (await primary.polling(), await standby.polling()) == (True, False)
    state = await standby.failover()
    assert state is not None and state["state"] == "standby" and state["successes"] >= 1

    primary.kill()  # kill -9: no goodbye, the standby notices from failed checks
    took = await until("the standby polls", standby.polling, 3 * 1.0 + 4, standby)
    assert took >= 2.0  # three failed checks one second apart, not a hasty takeover
    announced = await api.wait_sent(chat_id=ALERT_CHAT, timeout=5)
    assert any("beta</b> took over Telegram polling" in s.text for s in announced)
    assert (await _ask_status(api)).startswith("<b>beta</b>")
    shown = await _ask_status(api, "/failover", "Failover on")
    assert "Failover on beta</b> (standby)" in shown and "State: active · polling: yes" in shown
    confirm = await _ask_status(api, "/failover yield", "Run <code>")
    assert confirm.startswith("Run <code>/failover yield</code>?")  # mutating: confirmed first

    primary.start()  # back: it must wait while the standby is active
    await until("the primary's watchdog runs", lambda: _watching(primary), 20, primary)
    waiting = await primary.failover()
    assert waiting is not None and waiting["polling"] is False and waiting["active"] is False
    assert waiting["state"].startswith("waiting: beta is active")
    await until("the primary polls again", primary.polling, 15, primary, standby)
    assert await standby.polling() is False
    handed = [s.text for s in api.sent if s.chat_id == ALERT_CHAT]
    assert any("beta</b> hands Telegram back" in text for text in handed)
    assert (await _ask_status(api)).startswith("<b>alpha</b>")
    assert api.conflicts == 0


async def _up(proc: Proc) -> bool:
    return await proc.failover() is not None


async def _watching(proc: Proc) -> bool:
    state = await proc.failover()
    return state is not None and state["state"] != "off"  # "off": the bot is not up yet


async def _both_up(a: Proc, b: Proc) -> bool:
    return await _up(a) and await _up(b)


async def _ask_status(api: LocalTelegram, command: str = "/status", marker: str = "sidecar") -> str:
    last = max((s.seq for s in api.sent), default=0)
    await api.inject_message(ALERT_CHAT, ADMIN, command, chat_type="supergroup")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for sent in await api.wait_sent(after=last, chat_id=ALERT_CHAT, timeout=1):
            if sent.kind == "message" and marker in sent.text:
                return sent.text
            last = max(last, sent.seq)
    raise AssertionError(f"nobody answered {command}")


@pytest.mark.slow
async def test_a_409_conflict_stops_polling_alerts_and_polls_again_once_alone(
    nodes: tuple[Proc, Proc, LocalTelegram],
):
    primary, _, api = nodes  # its standby never starts: the peer is unreachable
    primary.start()
    await until("the primary polls", primary.polling, 20, primary)
    async with httpx.AsyncClient(timeout=5) as rogue:  # another process polling with our token
        await rogue.get(f"{api.base_url}{TOKEN}/getUpdates", params={"timeout": "1"})
    assert api.conflicts >= 1
    await until("the primary stops polling", _split_brain_seen(primary), 5, primary)
    await until("the primary polls again", primary.polling, 10, primary)
    alerts = await api.wait_sent(chat_id=ALERT_CHAT, timeout=5)
    assert any("failover:split-brain" in s.text and "409 Conflict" in s.text for s in alerts)


def _split_brain_seen(proc: Proc) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        state = await proc.failover()
        return state is not None and "split brain" in state["state"]

    return check


# -- no alert twice after a takeover or a yield (separate databases, alerts mirrored) ----------

SIDECAR_TOKEN = "mirror-test-sidecar-token-0123456789abcdef"


@pytest.fixture
async def watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Proc, Proc, LocalTelegram, int]]:
    """Like ``nodes``, each with its own SQLite database, both checking one service (a running
    process whose TCP port nobody listens on yet) every second, and a shared sidecar token."""
    monkeypatch.setenv("TEST_FAILOVER_SIDECAR", SIDECAR_TOKEN)
    unit = f"mirrorgw{os.getpid() % 10000}"
    shutil.copy(str(shutil.which("sleep")), tmp_path / unit)
    gateway = await asyncio.create_subprocess_exec(str(tmp_path / unit), "120")
    service_port = free_port()
    sidecar = 'token_env = "TEST_FAILOVER_SIDECAR"'
    extra = f"""
[jobs.heartbeat]
every = "1s"

[[machines]]
name = "here"
os = "linux"
address = "127.0.0.1"
local = true

[[services]]
name = "gw"
machine = "here"
manager = "process"
unit = "{unit}"
port = {service_port}
health = {{ type = "tcp", timeout = "1s" }}
"""
    async with LocalTelegram() as api:
        p_port, s_port = free_port(), free_port()
        alpha = write(tmp_path, "alpha", "primary", p_port, s_port, api.base_url, extra, sidecar)
        beta = write(tmp_path, "beta", "standby", s_port, p_port, api.base_url, extra, sidecar)
        primary, standby = Proc(alpha, p_port), Proc(beta, s_port)
        try:
            yield primary, standby, api, service_port
        finally:
            primary.kill()
            standby.kill()
            gateway.kill()
            await gateway.wait()


GW = "service:here/gw"
DOWN, RECOVERED = f"{GW}</b> is down", f"{GW}</b> recovered"


def sent_count(api: LocalTelegram, text: str) -> int:
    return sum(1 for s in api.sent if s.chat_id == ALERT_CHAT and text in s.text)


async def sidecar_get(proc: Proc, path: str) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {SIDECAR_TOKEN}"}
    try:
        async with httpx.AsyncClient(timeout=2.0, headers=headers) as client:
            response = await client.get(f"{proc.url}{path}")
    except httpx.HTTPError:
        return None
    body = response.json() if response.status_code == 200 else None
    return body if isinstance(body, dict) else None


def count_is(api: LocalTelegram, text: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sent_count(api, text) == n

    return check


def holds_announced(proc: Proc) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        body = await sidecar_get(proc, "/api/alerts")
        return body is not None and any(a["key"] == GW and a["announced"] for a in body["alerts"])

    return check


async def swept(proc: Proc, times: int) -> dict[str, Any]:
    """Wait for ``times`` more health sweeps of ``proc`` (its own heartbeat); its last status."""
    seen: list[str | None] = []

    async def check() -> bool:
        status = await sidecar_get(proc, "/api/status")
        at = status["checked_at"] if status else None
        if at is not None and (not seen or seen[-1] != at):
            seen.append(at)
        return len(seen) > times

    await until(f"{times} sweep(s) of {proc.log.parent.name}", check, 10, proc)
    status = await sidecar_get(proc, "/api/status")
    assert status is not None
    return status


@pytest.mark.slow
async def test_after_a_takeover_the_standby_sends_no_alert_the_primary_already_sent(
    watched: tuple[Proc, Proc, LocalTelegram, int],
):
    primary, standby, api, port = watched
    primary.start()
    standby.start()
    await until("both nodes answer", lambda: _both_up(primary, standby), 20, primary, standby)
    await until("the primary polls", primary.polling, 10, primary, standby)
    await until("the primary says gw is down", count_is(api, DOWN, 1), 10, primary, standby)
    await until("the standby mirrors it", holds_announced(standby), 10, primary, standby)

    primary.kill()
    await until("the standby polls", standby.polling, 10, standby)
    status = await swept(standby, 2)  # its own sweeps see the service down too
    assert [s["healthy"] for s in status["services"]] == [False]
    assert sent_count(api, DOWN) == 1  # no second "down", not even from a pending flip

    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", port)
    try:
        await until("gw recovered is sent", count_is(api, RECOVERED, 1), 10, standby)
        await swept(standby, 2)
    finally:
        server.close()
        await server.wait_closed()
    assert (sent_count(api, DOWN), sent_count(api, RECOVERED)) == (1, 1)
    assert api.conflicts == 0


@pytest.mark.slow
async def test_after_a_yield_the_primary_knows_what_the_standby_announced(
    watched: tuple[Proc, Proc, LocalTelegram, int],
):
    primary, standby, api, _ = watched
    standby.start()  # the primary is not up: the standby takes over and alerts itself
    await until("the standby polls", standby.polling, 20, standby)
    await until("the standby says gw is down", count_is(api, DOWN, 1), 10, standby)

    primary.start()  # it waits while the standby is active, mirroring what it announced
    await until("the primary polls", primary.polling, 25, primary, standby)
    assert await standby.polling() is False
    status = await swept(primary, 2)  # its own sweeps see the service down
    assert [s["healthy"] for s in status["services"]] == [False]
    assert sent_count(api, DOWN) == 1
    assert await holds_announced(primary)()
    assert "mirrored beta's alerts: down: service:here/gw" in primary.log.read_text()


@pytest.mark.slow
async def test_a_peer_that_refuses_its_alerts_is_logged_once_and_the_watchdog_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Each node has its own sidecar token: the standby's bearer is wrong at the primary (401).
    monkeypatch.setenv("TEST_FAILOVER_SIDECAR_A", SIDECAR_TOKEN)
    monkeypatch.setenv("TEST_FAILOVER_SIDECAR_B", SIDECAR_TOKEN[::-1])
    async with LocalTelegram() as api:
        p_port, s_port = free_port(), free_port()
        token_a, token_b = (
            'token_env = "TEST_FAILOVER_SIDECAR_A"',
            'token_env = "TEST_FAILOVER_SIDECAR_B"',
        )
        a = write(tmp_path, "alpha", "primary", p_port, s_port, api.base_url, sidecar=token_a)
        b = write(tmp_path, "beta", "standby", s_port, p_port, api.base_url, sidecar=token_b)
        primary, standby = Proc(a, p_port), Proc(b, s_port)
        try:
            primary.start()
            standby.start()
            await until("the primary polls", primary.polling, 20, primary, standby)

            async def refused_a_few_times() -> bool:
                state = await standby.failover()
                return state is not None and state.get("successes", 0) >= 3

            await until("the standby checks the primary", refused_a_few_times, 10, standby)
            logged = standby.log.read_text()
            assert logged.count("cannot mirror the peer's alerts (HTTP 401)") == 1
            assert (await primary.polling(), await standby.polling()) == (True, False)
        finally:
            primary.kill()
            standby.kill()
