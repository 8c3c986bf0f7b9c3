"""The agent as a real process, supervising stand-in gateways (tests/auxil/fakegateway.py)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from core.openclaw import TokenRefused, gateway_url, handshake
from tests.agent.conftest import CLAWOPS, TOKEN_ENV, Agent, claw_token, pid_alive

pytestmark = pytest.mark.slow
StartAgent = Callable[..., Agent]


def ready(info: dict[str, object]) -> bool:
    return info["status"] == "running" and info["ready"] is True


async def test_a_created_claw_runs_its_gateway_and_answers_a_real_handshake(
    start_agent: StartAgent,
) -> None:
    agent = start_agent()
    port, token = agent.free_port(), claw_token()
    answer = agent.call("POST", "/claws", {"clawId": "alpha", "port": port, "token": token})
    assert answer.status_code == 201
    assert answer.json()["ok"] is True
    assert answer.json()["claw"]["clawId"] == "alpha"

    info = agent.wait_for("alpha", ready)
    assert info["restarts"] == 0 and info["error"] == "" and pid_alive(info["pid"])
    hello = await handshake(gateway_url(port), token, timeout=5)
    assert hello.protocol == 4
    assert "operator.write" in hello.scopes
    with pytest.raises(TokenRefused, match="refused the token"):
        await handshake(gateway_url(port), claw_token(), timeout=5)


def test_the_token_stays_off_the_command_line_and_in_a_private_config_file(
    start_agent: StartAgent,
) -> None:
    agent = start_agent(
        extra_toml='[agent.gateway_config]\nlogging = {level = "debug"}\n'
        'gateway = {bind = "lan", trustedProxies = ["10.0.0.1"]}\n'
    )
    port, token = agent.free_port(), claw_token()
    agent.call("POST", "/claws", {"clawId": "beta", "port": port, "token": token})
    info = agent.wait_for("beta", ready)

    cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes().decode()
    assert token not in cmdline
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{info['pid']}/environ").read_text().split("\0")
        if "=" in item
    )  # fmt: skip
    home = agent.state_dir / "homes" / "beta"
    assert environ["OPENCLAW_GATEWAY_TOKEN"] == token
    assert environ["HOME"] == str(home) and environ["TMPDIR"] == str(home / "tmp")
    assert environ["OPENCLAW_DISABLE_BONJOUR"] == "1" and environ["OPENCLAW_NO_AUTO_UPDATE"] == "1"
    assert TOKEN_ENV not in environ, "the agent's own token leaked into the gateway"

    config_file = home / ".openclaw" / "openclaw.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    config = json.loads(config_file.read_text())
    assert config["gateway"]["mode"] == "local"
    assert config["gateway"]["port"] == port
    assert config["gateway"]["bind"] == "loopback", "the operator's table must not open the bind"
    assert config["gateway"]["auth"] == {"mode": "token", "token": token}
    assert config["gateway"]["trustedProxies"] == ["10.0.0.1"]
    assert config["logging"] == {"level": "debug"}
    state_file = agent.state_dir / "claws.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert token not in state_file.read_text()


def test_creating_the_same_claw_again_returns_the_existing_one(start_agent: StartAgent) -> None:
    agent = start_agent()
    port = agent.free_port()
    first = agent.create("gamma", port)
    pid = agent.wait_for("gamma", ready)["pid"]
    again = agent.create("gamma", port)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["claw"]["pid"] == pid
    assert len(agent.call("GET", "/claws").json()["claws"]) == 1


def test_list_and_status_show_every_claw(start_agent: StartAgent) -> None:
    agent = start_agent()
    agent.create("one", agent.free_port())
    agent.create("two", agent.free_port())
    agent.wait_for("one", ready)
    agent.wait_for("two", ready)
    listing = agent.call("GET", "/claws").json()
    assert listing["ok"] is True
    assert sorted(c["clawId"] for c in listing["claws"]) == ["one", "two"]
    assert all(set(c) == {"clawId", "port", "status", "pid", "restarts", "ready", "error"}
               for c in listing["claws"])  # fmt: skip
    status = agent.call("GET", "/claws/two/status").json()
    assert status["ok"] is True and status["claw"]["clawId"] == "two"
    health = agent.call("GET", "/health").json()
    assert health["ok"] is True and health["capacity"] == 4 and health["claws"] == 2
    assert 0 <= health["memoryPercent"] <= 100 and 0 <= health["diskPercent"] <= 100
    assert isinstance(health["load1"], float)


def test_restart_starts_a_new_gateway_process(start_agent: StartAgent) -> None:
    agent = start_agent()
    agent.create("delta", agent.free_port())
    old = agent.wait_for("delta", ready)["pid"]
    answer = agent.call("POST", "/claws/delta/restart")
    assert answer.status_code == 200 and answer.json()["ok"] is True
    new = agent.wait_for("delta", lambda i: ready(i) and i["pid"] != old)
    assert not pid_alive(old)
    assert new["restarts"] == 0


def test_a_killed_gateway_is_restarted_and_the_restart_is_counted(start_agent: StartAgent) -> None:
    agent = start_agent()
    agent.create("eps", agent.free_port())
    old = agent.wait_for("eps", ready)["pid"]
    os.kill(old, signal.SIGKILL)
    crashed = agent.wait_for(
        "eps", lambda i: i["status"] in ("crashed", "starting") or i["pid"] != old
    )
    assert crashed["ready"] is False or crashed["pid"] != old
    info = agent.wait_for("eps", lambda i: ready(i) and i["pid"] != old)
    assert info["restarts"] == 1
    os.kill(info["pid"], signal.SIGKILL)
    info = agent.wait_for("eps", lambda i: ready(i) and i["restarts"] == 2)
    assert pid_alive(info["pid"])


def test_delete_stops_the_gateway_and_removes_its_home(start_agent: StartAgent) -> None:
    agent = start_agent()
    agent.create("zeta", agent.free_port())
    pid = agent.wait_for("zeta", ready)["pid"]
    home = agent.state_dir / "homes" / "zeta"
    assert home.is_dir()
    answer = agent.call("DELETE", "/claws/zeta")
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    assert not pid_alive(pid)
    assert not home.exists()
    assert agent.call("GET", "/claws").json()["claws"] == []
    assert agent.call("DELETE", "/claws/zeta").status_code == 404


def test_a_restarted_agent_brings_its_claws_back(start_agent: StartAgent) -> None:
    agent = start_agent()
    port, token = agent.free_port(), claw_token()
    agent.call("POST", "/claws", {"clawId": "eta", "port": port, "token": token})
    first = agent.wait_for("eta", ready)["pid"]
    agent.stop()
    assert not pid_alive(first), "stopping the agent must stop its gateways"
    agent.start()
    second = agent.wait_for("eta", ready)
    assert second["pid"] != first and second["port"] == port

    agent.stop(signal.SIGKILL)  # a crash: the gateway outlives the agent ...
    assert pid_alive(second["pid"])
    agent.start()  # ... and the next agent replaces it
    third = agent.wait_for("eta", lambda i: ready(i) and i["pid"] != second["pid"])
    assert not pid_alive(second["pid"])
    assert third["port"] == port


@pytest.mark.parametrize(("value", "reason"), [(None, "set"), ("short", "32+")])
def test_the_agent_refuses_to_start_without_a_proper_token(
    tmp_path: Path, value: str | None, reason: str
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\ntoken_env = "{TOKEN_ENV}"\nstate_dir = "{tmp_path}/s"\n')
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if value is not None:
        env[TOKEN_ENV] = value
    done = subprocess.run([str(CLAWOPS), "agent", "--config", str(config)], env=env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 1
    assert TOKEN_ENV in done.stderr and reason in done.stderr
    assert not (tmp_path / "s").exists(), "nothing is created before the refusal"


def test_the_agent_refuses_a_config_without_token_env(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[agent]\nport = 7601\n")
    done = subprocess.run([str(CLAWOPS), "agent", "--config", str(config)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 1
    assert "agent.token_env" in done.stderr


def test_a_gateway_that_keeps_dying_is_crashed_with_its_exit_code(start_agent: StartAgent) -> None:
    agent = start_agent(gateway_command=["/bin/sh", "-c", "exit 3"])
    agent.create("dying", agent.free_port())
    info = agent.wait_for("dying", lambda i: i["restarts"] >= 2)
    assert info["ready"] is False and info["status"] in ("crashed", "starting")
    assert info["error"] == "gateway exited with code 3"
    assert agent.call("DELETE", "/claws/dying").json() == {"ok": True}


def test_a_gateway_command_that_does_not_exist_is_reported(start_agent: StartAgent) -> None:
    agent = start_agent(gateway_command=["/nonexistent/openclaw", "gateway", "run"])
    agent.create("ghostly", agent.free_port())
    info = agent.wait_for("ghostly", lambda i: i["status"] == "crashed")
    assert info["pid"] is None and "cannot start the gateway" in info["error"]


def test_the_agent_refuses_to_start_on_an_unreadable_state_file(start_agent: StartAgent) -> None:
    agent = start_agent()
    agent.stop()
    (agent.state_dir / "claws.json").write_text("{not json")
    assert agent.proc is not None
    done = subprocess.run(agent.proc.args, env=agent.env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 1
    assert "state file" in done.stderr and "unreadable" in done.stderr
