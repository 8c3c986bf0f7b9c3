"""A restarted agent stops the gateway a crashed agent left, and never a process that reused its
pid: real processes, the Fleet in-process, the stand-in gateway (tests/auxil/fakegateway.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from agent.claw import ProcessIdentity, identify
from agent.config import AgentConfig
from agent.fleet import Fleet
from tests.agent.conftest import FAKE_GATEWAY, claw_token, pid_alive
from tests.auxil.net import free_port


def config(tmp_path: Path) -> AgentConfig:
    low = free_port()
    low = low if low < 65000 else low - 20
    return AgentConfig(
        token_env="CLAWOPS_TEST_UNUSED",
        state_dir=tmp_path / "state",
        port_range=f"{low}-{low + 19}",
        gateway_command=FAKE_GATEWAY,
        stop_timeout=5,
    )


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process leading its own process group, as a gateway would."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
async def fleets() -> AsyncIterator[list[Fleet]]:
    made: list[Fleet] = []
    yield made
    for fleet in made:
        await fleet.shutdown()


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    # Polling: a process's end and a gateway's readiness announce themselves to nobody.
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_identify_reads_the_start_time_and_command_line_of_a_live_process(
    bystander: subprocess.Popen[bytes],
) -> None:
    identity = await identify(bystander.pid)
    assert identity is not None and identity.command == "sleep 300"
    assert len(identity.started.split()) == 5, identity.started  # "Mon Jan  6 10:00:00 2025"
    assert await identify(bystander.pid) == identity
    bystander.kill()
    bystander.wait()
    assert await identify(bystander.pid) is None


@pytest.mark.parametrize("recorded", ["none", "other start", "other command"])
async def test_a_recorded_pid_that_is_now_an_unrelated_process_is_never_signalled(
    tmp_path: Path,
    bystander: subprocess.Popen[bytes],
    fleets: list[Fleet],
    recorded: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = await identify(bystander.pid)
    assert live is not None
    row: dict[str, object] = {"clawId": "old", "port": 3001, "bucket": None, "pid": bystander.pid}
    if recorded == "other start":
        row |= {"started": "Mon Jan  6 10:00:00 2025", "command": live.command}
    elif recorded == "other command":
        row |= {"started": live.started, "command": " ".join(FAKE_GATEWAY)}
    fleet = Fleet(config(tmp_path))
    fleets.append(fleet)
    fleet.state_file.parent.mkdir(parents=True)
    fleet.state_file.write_text(json.dumps([row]))
    await fleet.load()
    assert bystander.poll() is None and pid_alive(bystander.pid)
    assert f"pid {bystander.pid} is now another process (sleep" in caplog.text


async def test_the_gateway_a_crashed_agent_left_is_killed_by_the_next_one(
    tmp_path: Path, fleets: list[Fleet]
) -> None:
    settings = config(tmp_path)
    crashed = Fleet(settings)
    port = settings.ports.start
    claw, _ = await crashed.create("alpha", port, claw_token(), None, restore=False)

    async def recorded() -> bool:
        rows = json.loads(crashed.state_file.read_text())
        return claw.ready and bool(rows[0].get("started"))

    await wait_until(recorded)
    left = claw.pid
    assert left is not None
    (row,) = json.loads(crashed.state_file.read_text())
    assert ProcessIdentity(row["started"], row["command"]) == await identify(left)
    # The agent dies without stopping its gateway: its supervisor is gone, the process is not.
    assert claw._task is not None
    claw._task.cancel()
    await asyncio.gather(claw._task, return_exceptions=True)
    assert pid_alive(left)

    again = Fleet(settings)
    fleets.append(again)
    await again.load()

    async def gone() -> bool:
        return not pid_alive(left)

    await wait_until(gone, timeout=5)
    await wait_until(lambda: _ready(again, "alpha", left))


async def _ready(fleet: Fleet, claw_id: str, old_pid: int) -> bool:
    claw = fleet.claws[claw_id]
    return claw.ready and claw.pid not in (None, old_pid)
