"""Jobs that visit every machine, on a fleet with one this node has no SSH to: they skip it with
a note (heartbeat: what its TCP check saw), never fail or alert because of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from jobs.heartbeat import output_file
from jobs.registry import builtin_jobs

MACBOOK = {"name": "macbook", "os": "linux", "address": "127.0.0.1"}  # no ssh, not local


@pytest.fixture
async def gateway_port() -> AsyncIterator[int]:
    """A real listener standing in for the MacBook's gateway port."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


def fleet(port: int) -> dict:
    return {
        "machines": [
            {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True},
            MACBOOK,
        ],
        "services": [
            {
                "name": "gateway",
                "machine": "macbook",
                "manager": "launchd",
                "port": port,
                "health": {"type": "tcp", "timeout": "2s"},
            },
        ],
        "jobs": {"system_cleanup": {"tasks": [{"machine": "here", "argv": ["true"]}]}},
    }


def load(h, *names: str) -> None:
    for spec in builtin_jobs(h.config):
        if spec.name in names:
            h.runner.add(spec)


async def test_jobs_over_every_machine_skip_one_without_ssh_with_a_note(harness, gateway_port):
    h = harness(fleet(gateway_port))
    load(h, "heartbeat", "cleaner", "healer", "system_cleanup")

    _, beat = await h.runner.run("heartbeat")
    assert beat.outcome == "ok", beat.summary
    assert "macbook: no SSH; 1/1 HTTP/TCP check(s) answered" in beat.summary.splitlines()
    document = json.loads(output_file(h.ctx).read_text())
    macbook = next(m for m in document["machines"] if m["name"] == "macbook")
    assert (macbook["ssh"], macbook["reachable"], macbook["metrics"]) == (False, True, None)
    (gateway,) = document["services"]
    assert gateway["healthy"] and "open" in gateway["detail"]

    _, clean = await h.runner.run("cleaner")
    assert clean.outcome != "failed", clean.summary
    assert "macbook: skipped (no SSH)" in clean.summary and clean.data["no_ssh"] == ["macbook"]
    assert "macbook" not in clean.data["machines"]

    _, heal = await h.runner.run("healer")
    assert heal.outcome == "ok" and heal.data["no_ssh"] == ["macbook"], heal.summary

    _, tidy = await h.runner.run("system_cleanup")
    assert tidy.outcome == "ok" and tidy.summary == "here: 1/1 ok"

    # Nothing alerted about the machine without SSH.
    assert not [a for a in await h.ctx.alerts.open_alerts() if "macbook" in a.key]
