"""The healer: verified restarts on real PM2, the crash-loop guard, warnings, emergency mode."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core.accounts import Accounts
from core.config import MachineConfig, ServiceConfig
from core.errors import InputError
from core.executors import LocalExecutor
from core.services import manager_for
from core.tables import utcnow
from jobs.healer import healer
from jobs.registry import builtin_jobs

ROOT = Path(__file__).resolve().parents[2]
PM2_BIN = ROOT / ".tools" / "node_modules" / ".bin"
LOCAL = MachineConfig(name="here", os="linux", address="127.0.0.1", local=True)

needs_pm2 = pytest.mark.skipif(
    not (PM2_BIN / "pm2").exists() or shutil.which("node") is None,
    reason="PM2 is not installed (scripts/setup installs it with npm into .tools/)",
)
SERVER = "require('http').createServer((q, s) => s.end('ok')).listen(0);\n"
CRASHER = "setTimeout(() => process.exit(1), 300);\n"
QUIET = {"memory_warn_percent": 100, "disk_warn_percent": 100, "swap_warn_percent": 100}


@pytest.fixture
async def pm2(tmp_path, monkeypatch):
    """``start(name, script, *flags)`` starts a PM2 app in a PM2 daemon of this test's own."""
    monkeypatch.setenv("PM2_HOME", str(tmp_path / "pm2home"))
    monkeypatch.setenv("PATH", f"{PM2_BIN}:{os.environ['PATH']}")
    executor = LocalExecutor(LOCAL)

    async def start(name: str, script: str, *flags: str) -> None:
        app = tmp_path / f"{name}.js"
        app.write_text(script)
        result = await executor.run(["pm2", "start", str(app), "--name", name, *flags], timeout=60)
        assert result.ok, result.stderr

    async def stop(name: str) -> None:
        assert (await executor.run(["pm2", "stop", name], timeout=60)).ok

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    await executor.run(["pm2", "kill"], timeout=60)


def pm2_service(name: str) -> dict:
    return {"name": name, "machine": "here", "manager": "pm2", "auto_restart": True}


async def state_of(name: str) -> str:
    service = ServiceConfig(name=name, machine="here", manager="pm2")
    return (await manager_for(service, LocalExecutor(LOCAL)).status()).state


@needs_pm2
async def test_one_run_restarts_at_most_two_crashed_services_and_the_next_run_the_third(
    harness, pm2
):
    names = ["gw-a", "gw-b", "gw-c"]
    for name in names:
        await pm2(name, SERVER)
        await pm2.stop(name)
    h = harness({
        "services": [pm2_service(n) for n in names], "restart_settle": "1s",
        "jobs": {"healer": {"min_uptime": "1s", "memory_warn_percent": 100,
                            "disk_warn_percent": 100, "swap_warn_percent": 100}},
    })  # fmt: skip
    first = await healer(h.ctx)
    restarted = first.data["restarted"]
    assert [(r["service"], r["verified"]) for r in restarted] == [("gw-a", True), ("gw-b", True)]
    assert [await state_of(n) for n in names] == ["running", "running", "stopped"]
    assert first.outcome == "ok" and "2 restarted" in first.summary
    second = await healer(h.ctx)
    assert [(r["service"], r["verified"]) for r in second.data["restarted"]] == [("gw-c", True)]
    assert [await state_of(n) for n in names] == ["running"] * 3
    # Stable restarts leave no record behind.
    assert await h.ctx.state.get("healer:here/gw-a") is None


@needs_pm2
async def test_a_service_that_cannot_stay_up_is_given_up_on_alerted_once_and_left_alone(
    harness, pm2
):
    await pm2("flaky", CRASHER, "--no-autorestart")
    await asyncio.sleep(0.8)
    assert await state_of("flaky") != "running"
    h = harness({
        "services": [pm2_service("flaky")], "restart_settle": "1s",
        "jobs": {"healer": {"min_uptime": "2s", "max_unstable": 2, "memory_warn_percent": 100,
                            "disk_warn_percent": 100, "swap_warn_percent": 100}},
    })  # fmt: skip
    first = await healer(h.ctx)
    assert [r["verified"] for r in first.data["restarted"]] == [False]
    assert first.data["gave_up"] == [] and first.outcome == "warning"
    record = await h.ctx.state.get("healer:here/flaky")
    assert record["unstable"] == 1 and not record.get("gave_up")
    second = await healer(h.ctx)
    assert len(second.data["restarted"]) == 1
    assert [g["service"] for g in second.data["gave_up"]] == ["flaky"]
    assert "gave up on flaky" in second.summary
    record = await h.ctx.state.get("healer:here/flaky")
    assert record["gave_up"] is True and record["give_ups"] == 1
    third = await healer(h.ctx)
    assert third.data["restarted"] == [] and [g["service"] for g in third.data["gave_up"]] == [
        "flaky"
    ]
    flips = [(f.key, f.new_state) for f in await h.ctx.alerts.pending()]
    assert flips == [("healer:here/flaky", "down")]
    reason = (await h.ctx.alerts.pending())[0].reason
    assert "gave up after 2 unstable restarts" in reason


@needs_pm2
async def test_a_restart_whose_health_check_fails_is_not_verified(harness, pm2):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    await pm2("gw-deaf", SERVER)
    await pm2.stop("gw-deaf")
    service = {**pm2_service("gw-deaf"), "health": {"type": "tcp", "port": closed}}
    h = harness(
        {
            "services": [service],
            "restart_settle": "1s",
            "jobs": {"healer": {"min_uptime": "1s", "max_unstable": 3, **QUIET}},
        }
    )
    result = await healer(h.ctx)
    (restarted,) = result.data["restarted"]
    assert restarted["verified"] is False
    assert restarted["reason"].startswith(f"health check failed: 127.0.0.1:{closed}")
    assert await state_of("gw-deaf") == "running"  # restarted, but it does not answer
    assert result.outcome == "warning" and "1 not verified" in result.summary
    assert (await h.ctx.state.get("healer:here/gw-deaf"))["unstable"] == 1


@needs_pm2
async def test_a_restart_that_comes_up_and_crashes_within_the_settle_window_is_not_verified(
    harness, pm2
):
    # PM2 starts it again after each crash, so it is "online" whenever it is looked at now and
    # then: only watching the whole window tells it from a service that stays up.
    await pm2("looper", "setTimeout(() => process.exit(1), 1000);\n")
    await pm2.stop("looper")
    healer_job = {"min_uptime": "1s", "max_unstable": 3, **QUIET}
    config = {"services": [pm2_service("looper")], "restart_settle": "2s"}
    h = harness({**config, "jobs": {"healer": healer_job}})
    result = await healer(h.ctx)
    (restarted,) = result.data["restarted"]
    assert restarted["verified"] is False
    assert restarted["reason"].startswith("crashed ") and "within 2 s" in restarted["reason"]
    assert result.outcome == "warning" and "1 not verified" in result.summary
    assert (await h.ctx.state.get("healer:here/looper"))["unstable"] == 1


async def test_machine_metrics_over_the_thresholds_make_a_warning_run(harness):
    h = harness({"jobs": {"healer": {"memory_warn_percent": 0.1, "disk_warn_percent": 0.1}}})
    result = await healer(h.ctx)
    assert result.outcome == "warning"
    assert any(w.startswith("here: memory") for w in result.data["warnings"])
    assert any(w.startswith("here: disk") for w in result.data["warnings"])
    assert "here: memory" in result.summary and result.data["restarted"] == []


async def test_emergency_mode_turns_on_once_when_every_account_is_limited_and_off_after(harness):
    h = harness({
        "llm_accounts": [{"name": "claude-main", "provider": "anthropic"},
                         {"name": "claude-backup", "provider": "anthropic"}],
        "jobs": {"healer": QUIET},
    })  # fmt: skip
    accounts = Accounts(h.ctx.state)
    await accounts.limit("claude-main", utcnow() + timedelta(seconds=1))
    first = await healer(h.ctx)
    assert first.data["emergency"] is False and await h.ctx.outbox.pending() == []
    await accounts.limit("claude-backup", utcnow() + timedelta(seconds=1))
    on = await healer(h.ctx)
    assert on.data["emergency"] is True and "emergency mode" in on.summary
    sent = [m.text for m in await h.ctx.outbox.pending()]
    assert len(sent) == 1 and sent[0].startswith("🚨 Emergency mode") and h.woken == 1
    again = await healer(h.ctx)
    assert again.data["emergency"] is True and len(await h.ctx.outbox.pending()) == 1
    await asyncio.sleep(1.2)
    off = await healer(h.ctx)
    assert off.data["emergency"] is False and (await accounts.emergency()).on is False
    sent = [m.text for m in await h.ctx.outbox.pending()]
    assert len(sent) == 2 and "Emergency mode over" in sent[1]


async def test_emergency_mode_is_switched_by_one_node_only(harness):
    h = harness()
    accounts = Accounts(h.ctx.state)
    results = await asyncio.gather(*(accounts.switch_emergency(True, "all limited") for _ in "ab"))
    assert sorted(results) == [False, True]
    assert (await accounts.emergency()).on is True


async def test_account_cooldowns_keep_the_later_end_and_refuse_bad_input(harness):
    h = harness()
    accounts = Accounts(h.ctx.state)
    now = utcnow()
    await accounts.limit("claude-main", now + timedelta(minutes=10))
    await accounts.limit("claude-main", now + timedelta(minutes=1))
    assert await accounts.cooldowns(now) == {"claude-main": now + timedelta(minutes=10)}
    assert await accounts.all_limited([], now) is False
    assert await accounts.cooldowns(now + timedelta(hours=1)) == {}
    with pytest.raises(InputError, match="timezone"):
        await accounts.limit("claude-main", datetime(2030, 1, 1))
    with pytest.raises(InputError, match="name"):
        await accounts.limit(" ", now)


async def test_services_on_an_unreachable_machine_are_not_restarted(harness):
    away = {"name": "away", "os": "linux", "address": "127.0.0.1", "timeout": "2s",
            "ssh": {"host": "127.0.0.1", "port": 1}}  # fmt: skip
    h = harness({
        "machines": [{"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}, away],
        "services": [{"name": "gw", "machine": "away", "manager": "pm2", "auto_restart": True}],
        "jobs": {"healer": QUIET},
    })  # fmt: skip
    result = await healer(h.ctx)
    assert result.data["restarted"] == [] and await h.ctx.state.get("healer:away/gw") is None


async def test_the_healer_is_a_builtin_job(harness):
    h = harness()
    assert "healer" in {spec.name for spec in builtin_jobs(h.config)}


async def test_the_healer_reclaims_leases_whose_holders_stopped_heartbeating(harness):
    from core.resources import Leases

    h = harness({
        "resources": [{"name": "ollama", "max_concurrent": 2, "lease_ttl": "1s"}],
        "jobs": {"healer": QUIET},
    })  # fmt: skip
    leases = Leases(h.ctx.db, h.ctx.config.resources)
    stale = await leases.enqueue("ollama", "crashed-bot")
    assert (await leases.try_acquire(stale.lease)).held
    await asyncio.sleep(1.2)
    result = await healer(h.ctx)
    assert [x["holder"] for x in result.data["reclaimed"]] == ["crashed-bot"]
    assert "reclaimed stale leases: ollama (crashed-bot)" in result.summary
    assert (await healer(h.ctx)).data["reclaimed"] == []
