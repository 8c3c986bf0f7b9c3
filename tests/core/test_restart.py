"""The verified-restart policy: crash counting on recorded states, and real PM2 apps judged."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from core.config import parse_config
from core.errors import InputError, RemoteError, Unreachable
from core.fleet import Fleet
from core.health import restart_verified
from core.health.restart import Watch
from core.services import ServiceStatus, State
from tests.auxil.net import free_port
from tests.auxil.pm2apps import CRASHES_AFTER_A_SECOND, serves, start_app
from tests.auxil.sshd import start_sshd
from tests.core.test_services import needs_pm2

HERE = {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}
SETTLE = timedelta(seconds=2)


def seen(*states: tuple[State, int | None, int | None], before: int | None = None) -> int:
    """The crashes a Watch counts over reads of (state, pid, restart count)."""
    watch = Watch(before=before)
    for state, pid, restarts in states:
        watch.see(ServiceStatus("web", "here", state, pid=pid, restarts=restarts))
    return watch.crashes


def test_reads_that_find_it_up_with_one_pid_and_one_count_are_no_crash():
    assert seen(("running", 7, 1), ("running", 7, 1), ("running", 7, 1), before=0) == 0


def test_not_running_before_it_first_came_up_is_no_crash():
    assert seen(("stopped", None, 0), ("failed", None, 0), ("running", 9, 0), before=0) == 0


def test_a_new_pid_after_it_came_up_is_a_crash_even_without_a_restart_count():
    assert seen(("running", 7, None), ("running", 8, None), ("running", 9, None)) == 2


def test_going_down_and_being_started_again_counts_once():
    assert seen(("running", 7, 1), ("failed", None, 1), ("running", 8, 2), before=0) == 1


def test_crashes_between_two_reads_show_in_the_restart_count():
    assert seen(("running", 7, 1), ("running", 7, 4), before=0) == 3


def test_crashes_before_the_first_read_show_against_the_count_before_the_restart():
    # Our restart adds at most one; the other two are crashes nobody saw happen.
    assert seen(("running", 7, 3), ("running", 7, 3), before=0) == 2


def test_a_manager_that_resets_its_count_on_restart_is_no_crash():
    assert seen(("running", 7, 0), ("running", 7, 0), before=5) == 0


# -- real PM2 apps -------------------------------------------------------------------------


def fleet_with(*services: dict[str, Any]) -> Fleet:
    return Fleet(parse_config({"machines": [HERE], "services": list(services)}))


def pm2_service(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "machine": "here", "manager": "pm2", **extra}


@needs_pm2
async def test_an_app_that_stays_up_and_answers_is_healthy_and_progress_is_told(pm2, tmp_path):
    port = free_port()
    await start_app(tmp_path, "web", serves(port))
    health = {"type": "http", "url": f"http://127.0.0.1:{port}/", "expect_body": "ok"}
    fleet = fleet_with(pm2_service("web", health=health))
    told: list[str] = []

    async def progress(text: str) -> None:
        told.append(text)

    verdict = await restart_verified(fleet, fleet.service("web"), SETTLE, progress=progress)
    assert verdict.healthy and verdict.reason == "" and verdict.crashes == 0
    assert verdict.check is not None and verdict.check.ok
    assert verdict.status is not None and verdict.status.running and verdict.status.restarts == 1
    assert told[0] == "restarting web@here…" and told[-1] == "checking its health…"
    waits = told[1:-1]
    assert waits[0] == "waiting for it to settle (0/2 s)" and len(waits) == len(set(waits))
    assert all(w.startswith("waiting for it to settle (") for w in waits)


@needs_pm2
async def test_an_app_that_crashes_a_second_after_start_is_not_healthy(pm2, tmp_path):
    await start_app(tmp_path, "crasher", CRASHES_AFTER_A_SECOND)
    fleet = fleet_with(pm2_service("crasher"))
    verdict = await restart_verified(fleet, fleet.service("crasher"), SETTLE)
    assert not verdict.healthy and verdict.crashes >= 1
    assert verdict.reason.startswith("crashed ") and "within 2 s" in verdict.reason


@needs_pm2
async def test_an_app_that_crashes_and_stays_down_is_not_running(pm2, tmp_path):
    await start_app(tmp_path, "once", CRASHES_AFTER_A_SECOND, "--no-autorestart")
    fleet = fleet_with(pm2_service("once"))
    manager = fleet.manager(fleet.service("once"))
    deadline = asyncio.get_running_loop().time() + 10
    while (await manager.status()).running:  # its first run ends: PM2 leaves it stopped
        assert asyncio.get_running_loop().time() < deadline, "it did not exit"
        await asyncio.sleep(0.1)
    verdict = await restart_verified(fleet, fleet.service("once"), SETTLE)
    assert not verdict.healthy and verdict.status is not None
    assert verdict.status.state == "stopped"
    # Seen up first (then "crashed once within 2 s, ..."), or already gone at the first read.
    assert verdict.reason.endswith("not running (stopped)"), verdict.reason


@needs_pm2
async def test_an_app_whose_health_check_fails_is_not_healthy_and_says_the_check(pm2, tmp_path):
    closed = free_port()
    await start_app(tmp_path, "deaf", serves(free_port()))
    fleet = fleet_with(pm2_service("deaf", health={"type": "tcp", "port": closed}))
    verdict = await restart_verified(fleet, fleet.service("deaf"), timedelta(seconds=1))
    assert not verdict.healthy and verdict.crashes == 0
    assert verdict.status is not None and verdict.status.running
    assert verdict.reason.startswith(f"health check failed: 127.0.0.1:{closed}: "), verdict.reason


@needs_pm2
async def test_an_app_pm2_does_not_know_cannot_be_restarted(pm2):
    fleet = fleet_with(pm2_service("ghost"))
    with pytest.raises(RemoteError, match="ghost"):
        await restart_verified(fleet, fleet.service("ghost"), SETTLE)


async def test_a_plain_process_cannot_be_restarted_and_the_error_says_why():
    sleeper = {"name": "sleeper", "machine": "here", "manager": "process", "unit": "sleep"}
    fleet = fleet_with(sleeper)
    with pytest.raises(InputError, match="can stop it but not start it"):
        await restart_verified(fleet, fleet.service("sleeper"), SETTLE)


async def test_a_service_on_an_unreachable_machine_is_refused_before_any_restart(tmp_path):
    ssh = {"host": "127.0.0.1", "port": free_port()}
    away = {"name": "away", "os": "linux", "address": "127.0.0.1", "timeout": "2s", "ssh": ssh}
    gw = {"name": "gw", "machine": "away", "manager": "pm2"}
    fleet = Fleet(parse_config({"machines": [HERE, away], "services": [gw]}))
    try:
        with pytest.raises(Unreachable):
            await restart_verified(fleet, fleet.service("gw"), SETTLE)
    finally:
        await fleet.close()


@needs_pm2
async def test_a_machine_that_stops_answering_within_the_window_is_not_called_healthy(
    pm2, tmp_path
):
    await start_app(tmp_path, "web", serves(free_port()))
    sshd = await start_sshd(tmp_path)
    keys = {"key": str(sshd.client_key), "known_hosts": str(sshd.known_hosts)}
    ssh = {"host": sshd.host, "port": sshd.port, **keys}
    mini = {"name": "mini", "os": "linux", "address": "127.0.0.1", "timeout": "1s", "ssh": ssh}
    web = {"name": "web", "machine": "mini", "manager": "pm2"}
    fleet = Fleet(parse_config({"machines": [HERE, mini], "services": [web]}))

    async def silence(text: str) -> None:
        if text.startswith("waiting"):  # restarted and read once: now the machine goes quiet
            sshd.delay = 3.0

    try:
        verdict = await restart_verified(fleet, fleet.service("web"), SETTLE, progress=silence)
    finally:
        await fleet.close()
        await sshd.close()
    assert not verdict.healthy and verdict.status is None
    assert verdict.reason.startswith("cannot read its state: mini: "), verdict.reason
