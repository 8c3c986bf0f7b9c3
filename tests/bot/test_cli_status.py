"""The everyday CLI as a user runs it: ``clawops --version``, ``--config`` on either side of the
subcommand, and ``clawops status`` against a real ``clawops run`` node and misbehaving peers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from core.version import clawops_version
from tests.auxil.net import free_port, serve
from tests.bot.test_cli import CLAWOPS, ROOT, Node, clawops, write_config

TOKEN = "status-test-token-" + "x" * 30
ENV = {"TEST_STATUS_TOKEN": TOKEN}
EXTRA = """token_env = "TEST_STATUS_TOKEN"

[[machines]]
name = "here"
os = "linux"
address = "127.0.0.1"
local = true

[[services]]
name = "web"
machine = "here"
manager = "process"
port = {port}
log_path = "{log}"
health = {{ type = "tcp", timeout = "2s" }}
"""


def status_config(tmp_path: Path, port: int) -> Path:
    extra = EXTRA.format(port=free_port(), log=tmp_path / "web.log")
    return write_config(
        tmp_path / "clawops.toml", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", port, extra
    )


@pytest.fixture(scope="module")
def status_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for the module's tests (each starts in seconds on two shared cores)."""
    port = free_port()
    running = Node(status_config(tmp_path_factory.mktemp("node"), port), port, env=ENV)
    running.wait_up()
    yield running
    running.stop()


def wait_status(node: Node, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GET /api/status until ``done`` holds for it (bounded)."""
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while True:
        answer: dict[str, Any] = httpx.get(
            f"{node.url}/api/status", headers=headers, timeout=10
        ).json()
        if done(answer):
            return answer
        assert time.monotonic() < deadline, f"status never got there: {answer}"
        time.sleep(0.1)


def test_version_prints_the_installed_version():
    result = clawops("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"clawops {clawops_version()}\n"


def test_status_prints_the_nodes_machines_services_jobs_and_alerts_as_tables(status_node):
    config = str(status_node.config)
    posted = clawops("log", "--config", config, "nightly", "critical", "disk full on /", env=ENV)
    assert posted.returncode == 0, posted.stderr
    swept = clawops("chat", "--config", config, "-c", "/status", env=ENV)  # runs a sweep
    assert swept.returncode == 0, swept.stderr
    wait_status(status_node, lambda s: bool(s["alerts"]) and s["checked_at"] is not None)

    result = clawops("status", "--config", config, env=ENV)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("node test-node · role primary · telegram local Bot API, polling")
    assert "failover off, active, polling" in out.splitlines()[0]
    assert "│ name │ os    │ reachable │ error │" in out
    assert "│ here │ linux │ ✓         │       │" in out
    web_row = next(line for line in out.splitlines() if line.startswith("│ web "))
    assert "│ here    │ process │" in web_row and "│ ✗      │" in web_row  # nothing listens
    assert "│ heartbeat " in out  # a built-in job, with its next run
    alert_row = next(line for line in out.splitlines() if line.startswith("│ job:nightly "))
    assert "disk full on /" in alert_row and " ago)" in alert_row


def test_status_json_prints_the_answer_as_received(status_node):
    result = clawops("status", "--json", "--config", str(status_node.config), env=ENV)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["node"] == "test-node" and answer["role"] == "primary"
    assert [s["name"] for s in answer["services"]] == ["web"]
    assert result.stdout.startswith('{\n  "node": "test-node",')  # pretty, in the node's order


def test_config_is_taken_before_or_after_the_subcommand(status_node, tmp_path):
    config = str(status_node.config)
    for args in (
        ("check-config",),
        ("status",),
        ("log", "cli-config", "ok", "fine"),
        ("db", "upgrade"),
    ):
        before = clawops("--config", config, *args, env=ENV, cwd=tmp_path)
        after = clawops(*args, "--config", config, env=ENV, cwd=tmp_path)
        for result in (before, after):
            assert result.returncode == 0, (args, result.stderr)
    assert "test-node" in clawops("--config", config, "check-config", cwd=tmp_path).stdout


def test_given_both_places_the_config_after_the_subcommand_wins(tmp_path):
    good = str(ROOT / "config.example.toml")
    missing = str(tmp_path / "missing.toml")
    result = clawops("--config", missing, "check-config", "--config", good)
    assert result.returncode == 0, result.stderr
    assert "config OK: " in result.stdout and "missing.toml" not in result.stdout
    result = clawops("--config", good, "check-config", "--config", missing)
    assert result.returncode == 1
    assert "missing.toml' does not exist" in result.stderr


def test_agent_refuses_a_node_config_given_before_it(tmp_path):
    result = clawops("--config", str(ROOT / "config.example.toml"), "agent", "--config", "a.toml")
    assert result.returncode == 1
    assert "`clawops agent` takes its own --config (agent.toml)" in result.stderr


def test_status_with_no_node_running_says_so(tmp_path):
    port = free_port()  # nothing listens: connection refused
    result = clawops("status", "--config", str(status_config(tmp_path, port)), env=ENV)
    assert result.returncode == 1
    assert result.stderr == (
        f"clawops status: no node answers at http://127.0.0.1:{port} (is `clawops run` running?)\n"
    )


def test_status_against_a_silent_sidecar_gives_up_after_its_timeout(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = clawops("status", "--url", url, "--timeout", "0.3", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"clawops status: the sidecar at {url} did not answer within 0.3 s\n"


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("not-the-token-" + "y" * 30, "refused the token in TEST_STATUS_TOKEN"),
        ("", "wants a token: TEST_STATUS_TOKEN is not set here"),
    ],
)
def test_status_with_a_wrong_or_missing_token_names_the_variable(status_node, token, says):
    env = {"TEST_STATUS_TOKEN": token}
    result = clawops("status", "--config", str(status_node.config), env=env)
    assert result.returncode == 1
    assert f"clawops status: the sidecar at {status_node.url} {says}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_timeout_is_refused_before_asking():
    result = clawops("status", "--timeout", "0", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "'0' is not a number of seconds in (0, 3600]" in result.stderr


async def status_against(
    cwd: Path, body: str, content_type: str, *args: str
) -> tuple[int, str, str]:
    """Run ``clawops status`` against a server answering ``body`` to GET /api/status."""

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(text=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/api/status", answer)
    runner, url = await serve(app)
    try:
        proc = await asyncio.create_subprocess_exec(
            *CLAWOPS,
            "status",
            "--url",
            url,
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "CLAWOPS_CONFIG": ""},
            cwd=cwd,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode().replace(url, "URL")


async def test_status_from_a_server_that_is_not_a_sidecar_is_a_clear_error(tmp_path):
    code, out, err = await status_against(tmp_path, "<html>hello</html>", "text/html")
    assert code == 1 and out == ""
    assert err == (
        "clawops status: URL answered 200 with something that is not JSON: "
        "'<html>hello</html>' (is it a clawops sidecar?)\n"
    )


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ([1, 2], "it is not a JSON object"),
        ({"node": "n"}, "failover is missing"),
        (
            {
                "node": "n",
                "role": "primary",
                "telegram": "off",
                "failover": {},
                "checked_at": None,
                "machines": [{"name": "m", "os": "linux", "reachable": "yes", "error": ""}],
            },
            'machines[0].reachable is "yes", not a bool',
        ),
    ],
)
async def test_status_from_an_answer_of_another_shape_names_the_field(tmp_path, answer, says):
    code, out, err = await status_against(tmp_path, json.dumps(answer), "application/json")
    assert code == 1 and out == ""
    assert err == (
        "clawops status: URL/api/status answered, but its answer is not a clawops status: "
        f"{says} (another clawops version?)\n"
    )
    code, out, _ = await status_against(tmp_path, json.dumps(answer), "application/json", "--json")
    assert code == 0 and json.loads(out) == answer  # --json shows it as it came
