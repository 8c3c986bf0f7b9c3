"""A machine this node has no SSH to (the seed's Mini cannot reach the MacBook): it validates,
is watched by its services' HTTP/TCP checks against real servers, is never reported down for
want of SSH, and everything that would need a command there is refused with one error."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from core.alerts import Alerts
from core.config import parse_config
from core.db import Database
from core.errors import ConfigError, NoSSH
from core.executors import executor_for
from core.fleet import Fleet
from core.health import sweep
from core.health.observe import observe_sweep
from tests.auxil.net import free_port, serve

HERE = {"name": "mini", "os": "linux", "address": "127.0.0.1", "local": True}
MACBOOK = {"name": "macbook", "os": "macos", "address": "127.0.0.1"}  # no ssh, not local
MESSAGE = (
    "macbook has no SSH from this node ([machines.ssh] is not set): clawops watches it by its "
    "HTTP/TCP checks and the peer API, and cannot run commands there"
)


def config(services: list[dict[str, Any]] | None = None, **sections: Any) -> dict[str, Any]:
    return {"machines": [HERE, MACBOOK], "services": services or [], **sections}


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(p) for p in info.value.problems]


def test_a_remote_machine_without_ssh_validates_and_runs_no_commands():
    parsed = parse_config(config([{"name": "ollama", "machine": "macbook", "manager": "launchd"}]))
    macbook = parsed.machine("macbook")
    assert macbook is not None and macbook.ssh is None and not macbook.runs_commands
    assert parsed.machine("mini") is not None and parsed.machines[0].runs_commands


def test_what_would_need_a_command_there_is_refused_naming_each_key():
    data = config(
        [
            {
                "name": "gateway",
                "machine": "macbook",
                "manager": "launchd",
                "auto_restart": True,
                "health": {"type": "http", "url": "http://127.0.0.1:1/"},
            },
            {
                "name": "ollama",
                "machine": "macbook",
                "manager": "launchd",
                "health": {"type": "command", "argv": ["true"]},
            },
        ],
        jobs={
            "commands": [
                {"name": "git-sync", "machine": "macbook", "every": "15m", "argv": ["git", "pull"]}
            ],
            "system_cleanup": {"tasks": [{"machine": "macbook", "argv": ["cleanup.sh"]}]},
        },
    )
    problems = problems_of(data)
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    assert (
        "jobs.commands[0] (git-sync).machine: machine 'macbook' has no SSH from this node "
        "(no [machines.ssh] and not local): a scheduled command needs SSH or the local machine"
    ) in joined
    assert "jobs.system_cleanup.tasks[0].machine: machine 'macbook' has no SSH" in joined
    assert "services[0] (gateway).auto_restart: machine 'macbook' has no SSH" in joined
    assert "cannot be restarted from here" in joined
    assert "services[1] (ollama).health: machine 'macbook' has no SSH" in joined
    assert "use an http or tcp check" in joined


async def test_fleet_executor_of_a_machine_without_ssh_raises_nossh_not_a_lookup_error():
    parsed = parse_config(config([{"name": "ollama", "machine": "macbook", "manager": "pm2"}]))
    fleet = Fleet(parsed)
    try:
        with pytest.raises(NoSSH) as info:
            fleet.executor("macbook")
        assert str(info.value) == MESSAGE and info.value.machine == "macbook"
        with pytest.raises(NoSSH):  # every manager command goes through it
            fleet.manager(fleet.service("ollama"))
        with pytest.raises(NoSSH):
            executor_for(fleet.machine("macbook"))
        assert fleet.executor("mini").machine.local  # the others are untouched
    finally:
        await fleet.close()


class Ollama:
    """A real HTTP server standing in for the MacBook's Ollama; ``status`` is what it answers."""

    def __init__(self) -> None:
        self.status = 200
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def tags(request: web.Request) -> web.Response:
            return web.Response(status=self.status, text="models: qwen3-coder:30b")

        app = web.Application()
        app.router.add_get("/api/tags", tags)
        self.runner, self.url = await serve(app)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def ollama():
    server = Ollama()
    await server.start()
    yield server
    await server.stop()


def watched_fleet(url: str) -> Fleet:
    return Fleet(
        parse_config(
            config(
                [
                    {
                        "name": "ollama",
                        "machine": "macbook",
                        "manager": "launchd",
                        "health": {"type": "http", "url": f"{url}/api/tags", "timeout": "2s"},
                    },
                    {"name": "crabwalk", "machine": "macbook", "manager": "launchd"},
                ]
            )
        )
    )


async def test_a_sweep_watches_a_machine_without_ssh_by_its_http_check(ollama, db: Database):
    fleet = watched_fleet(ollama.url)
    alerts = Alerts(db)
    try:
        up = await sweep(fleet, ["macbook"])
        await observe_sweep(alerts, up)
        ollama.status = 500  # answers, but unhealthy: the machine is still reachable
        sick = await sweep(fleet, ["macbook"])
        await ollama.stop()  # nothing listens any more
        down = await sweep(fleet, ["macbook"])
        flips = await observe_sweep(alerts, down)
    finally:
        await fleet.close()

    (machine,) = up.machines
    assert machine.reachable is True and machine.no_ssh and machine.metrics is None
    assert machine.error == "no SSH; 1/1 HTTP/TCP check(s) answered"
    services = {s.service: s for s in up.services}
    # Healthy by its check; its manager was not asked (no SSH), and it says so.
    assert services["ollama"].healthy and services["ollama"].status is None
    assert services["ollama"].note == "manager state not read (no SSH)"
    # Without a check it is neither healthy nor down: skipped, with the reason.
    assert services["crabwalk"].skipped and not services["crabwalk"].healthy
    assert "no SSH to macbook and it has no check: not watched" in services["crabwalk"].error
    assert up.unhealthy == []

    assert sick.machines[0].reachable is True
    assert [s.service for s in sick.unhealthy] == ["ollama"]
    assert sick.unhealthy[0].reason == "HTTP 500, expected 200"

    # The server is gone: the service is down by its check, not skipped as "unreachable".
    assert down.machines[0].reachable is False
    assert down.machines[0].error == "no SSH; 0/1 HTTP/TCP check(s) answered"
    (failed,) = down.unhealthy
    assert failed.service == "ollama" and not failed.skipped
    assert failed.reason.startswith("cannot connect")
    # One alert, the service's: the machine is not also raised for what its check said.
    assert [f.key for f in flips] == ["service:macbook/ollama"]
    assert [a.key for a in await alerts.open_alerts()] == ["service:macbook/ollama"]


async def test_a_machine_without_ssh_or_checks_is_unknown_not_down(db: Database):
    port = free_port()  # a tcp check on a closed port would answer "down"; this one has none
    fleet = Fleet(
        parse_config(
            config(
                [
                    {"name": "gateway", "machine": "macbook", "manager": "launchd", "port": port},
                ]
            )
        )
    )
    alerts = Alerts(db)
    try:
        report = await sweep(fleet)
        flips = await observe_sweep(alerts, report)
    finally:
        await fleet.close()
    machines = {m.name: m for m in report.machines}
    assert machines["macbook"].reachable is None
    assert machines["macbook"].error == "no SSH and no HTTP/TCP check: not watched"
    assert machines["mini"].reachable is True and machines["mini"].metrics is not None
    (gateway,) = report.services
    assert gateway.skipped and report.unhealthy == []
    # Nothing claimed about it: no alert, not even a machine key.
    assert flips == [] and await alerts.open_alerts() == []
