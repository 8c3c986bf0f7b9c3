"""The agent as a real process (`clawops agent --config ...`) on a free loopback port."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.fleet import port_free
from tests.auxil.net import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
CLAWOPS = ROOT / ".venv" / "bin" / "clawops"
FAKE_GATEWAY = [sys.executable, str(ROOT / "tests" / "auxil" / "fakegateway.py"), "gateway", "run"]
TOKEN_ENV = "CLAWOPS_TEST_AGENT_TOKEN"


def claw_token() -> str:
    return secrets.token_hex(20)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def toml_value(value: Any) -> str:
    return json.dumps(value)  # a JSON string/number/list of strings is valid TOML too


@dataclass
class Agent:
    url: str
    token: str
    config_path: Path
    state_dir: Path
    ports: range
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    seen_pids: set[int] = field(default_factory=set)

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> httpx.Response:
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.url + path, json=body, headers=headers, timeout=30)

    def create(self, claw_id: str, port: int, **extra: Any) -> httpx.Response:
        body = {"clawId": claw_id, "port": port, "token": claw_token(), "bucket": None, **extra}
        return self.call("POST", "/claws", body)

    def free_port(self) -> int:
        used = {c["port"] for c in self.call("GET", "/claws").json()["claws"]}
        return next(p for p in self.ports if p not in used and port_free(p))

    def wait_for(
        self, claw_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = self.call("GET", f"/claws/{claw_id}/status").json()["claw"]
            if info.get("pid"):
                self.seen_pids.add(info["pid"])
            if check(info):
                return info
            time.sleep(0.1)
        raise AssertionError(f"claw {claw_id} never reached the state asked for; last: {info}")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(CLAWOPS), "agent", "--config", str(self.config_path)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_for_http(self.url + "/health", timeout=20)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Agents:
    """Starts agents in ``directory``: ``agents.start(max_claws=2, extra_toml="...")``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Agent] = []

    def start(
        self, *, max_claws: int = 4, gateway_command: list[str] | None = None,
        extra_toml: str = "", env: dict[str, str] | None = None,
    ) -> Agent:  # fmt: skip
        port, low = free_port(), free_port()
        ports = range(low, low + 20) if low < 65000 else range(low - 20, low)
        n = len(self.started)
        state, config = self.directory / f"state{n}", self.directory / f"agent{n}.toml"
        config.write_text(
            "[agent]\n"
            f"port = {port}\n"
            f'token_env = "{TOKEN_ENV}"\n'
            f"state_dir = {toml_value(str(state))}\n"
            f"max_claws = {max_claws}\n"
            f'port_range = "{ports.start}-{ports.stop - 1}"\n'
            f"stop_timeout = 5\n"
            f"gateway_command = {toml_value(gateway_command or FAKE_GATEWAY)}\n" + extra_toml
        )
        token = secrets.token_hex(24)
        full_env = {**os.environ, TOKEN_ENV: token, **(env or {})}
        agent = Agent(f"http://127.0.0.1:{port}", token, config, state, ports, full_env)
        agent.start()
        self.started.append(agent)
        return agent

    def stop_all(self) -> None:
        """Stop every agent, then check none left a gateway process behind."""
        for agent in self.started:
            agent.stop()
        for agent in self.started:
            leftovers = [pid for pid in agent.seen_pids if pid_alive(pid)]
            assert not leftovers, f"gateway processes left running: {leftovers}"


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start agents as real processes; all are stopped (and checked for leftovers) afterwards."""
    agents = Agents(tmp_path)
    yield agents.start
    agents.stop_all()
