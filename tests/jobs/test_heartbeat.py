"""Heartbeat: a real sweep of this machine and an unreachable one, written atomically."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import pytest

from jobs.registry import builtin_jobs
from tests.auxil.net import free_port


@pytest.fixture
async def running_process(tmp_path):
    """The name of a real running process (a copy of sleep under a unique name)."""
    name = f"gw{uuid.uuid4().hex[:10]}"
    binary = tmp_path / name
    shutil.copy(shutil.which("sleep"), binary)
    process = await asyncio.create_subprocess_exec(str(binary), "60")
    yield name
    process.kill()
    await process.wait()


def fleet_with_a_dead_machine(gateway_unit):
    return {
        "machines": [
            {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True},
            {"name": "msi", "os": "linux", "address": "127.0.0.1", "timeout": "1s",
             "ssh": {"host": "127.0.0.1", "port": free_port()}},
        ],
        "services": [
            {"name": "gateway", "machine": "here", "manager": "process", "unit": gateway_unit,
             "health": {"type": "command", "argv": ["true"]}},
            {"name": "gateway-b", "machine": "here", "manager": "process", "unit": "no-such-gw"},
            {"name": "ollama", "machine": "msi", "manager": "process"},
        ],
    }  # fmt: skip


def load(h):
    for spec in builtin_jobs(h.config):
        if spec.name == "heartbeat":
            h.runner.add(spec)


async def test_it_writes_the_fleet_health_and_warns_about_an_unreachable_machine(
    harness, running_process
):
    h = harness(fleet_with_a_dead_machine(running_process))
    load(h)
    run, result = await h.runner.run("heartbeat")
    assert result.outcome == "warning"
    lines = result.summary.splitlines()
    assert lines[0].startswith("here: cpu ") and "disk " in lines[0] and " procs" in lines[0]
    assert lines[1].startswith("msi: unreachable (")
    assert lines[2] == "gateways: 1/2 healthy"
    assert run is not None and run.data is not None
    assert run.data["machines"]["msi"] is None
    assert 0 < run.data["machines"]["here"]["disk_percent"] <= 100

    path = h.ctx.data_dir / "heartbeat-data.json"
    doc = json.loads(path.read_text())
    assert set(doc) >= {"generatedAt", "node", "machines", "services", "gateways"}
    assert doc["node"] == "test"
    here, msi = doc["machines"]
    assert here["name"] == "here" and here["reachable"] is True and here["error"] == ""
    assert here["processCount"] > 1
    assert 0 < here["metrics"]["memoryPercent"] <= 100
    assert set(here["metrics"]) >= {"cpuPercent", "diskPercent", "swapPercent", "load1"}
    assert msi["reachable"] is False and msi["metrics"] is None and msi["error"]
    services = {s["name"]: s for s in doc["services"]}
    assert services["gateway"]["healthy"] is True
    assert services["gateway"]["detail"] == "exit 0; running"
    assert services["gateway"]["latencyMs"] is not None
    assert services["gateway-b"]["healthy"] is False
    assert services["gateway-b"]["detail"] == "stopped"
    assert services["ollama"] == {
        "name": "ollama", "machine": "msi", "healthy": False, "detail": "msi unreachable",
        "latencyMs": None,
    }  # fmt: skip
    assert doc["gateways"] == [services["gateway"], services["gateway-b"]]
    assert sorted(p.name for p in path.parent.iterdir()) == ["heartbeat-data.json"]


async def test_it_replaces_an_existing_file_whole_at_a_configured_path(harness, tmp_path):
    h = harness({"jobs": {"heartbeat": {"output_path": "dash/beat.json"}}})
    load(h)
    path = h.ctx.data_dir / "dash" / "beat.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"old": true, "padding": "' + "x" * 100_000 + '"}')
    before = path.stat().st_ino
    _, result = await h.runner.run("heartbeat")
    assert result.outcome == "ok" and result.summary.startswith("here: ")
    doc = json.loads(path.read_text())
    assert "old" not in doc and [m["name"] for m in doc["machines"]] == ["here"]
    assert doc["gateways"] == [] and doc["services"] == []
    # A new file was renamed over the old one (never truncated and rewritten in place).
    assert path.stat().st_ino != before
    assert sorted(p.name for p in path.parent.iterdir()) == ["beat.json"]


async def test_a_heartbeat_that_cannot_write_fails_and_leaves_no_temp_file(harness):
    h = harness({"jobs": {"heartbeat": {"output_path": "taken"}}})
    load(h)
    taken = h.ctx.data_dir / "taken"
    (taken / "inside").mkdir(parents=True)  # a directory where the file should go
    _, result = await h.runner.run("heartbeat")
    assert result.outcome == "failed"
    assert result.summary.startswith(f"cannot write {taken}: ")
    # The temp file was written, the rename failed, and the temp file is gone again.
    assert sorted(p.name for p in h.ctx.data_dir.iterdir()) == ["taken"]
    assert [p.name for p in taken.iterdir()] == ["inside"]
