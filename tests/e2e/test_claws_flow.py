"""The whole claws flow: the bot, the node's provisioning, a real agent process supervising
gateways (the stand-in, and once the real OpenClaw gateway), buckets on moto's S3 server."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from bot.node import Node
from core.buckets import Buckets
from core.crypto import generate_key
from core.minis import Minis
from core.openclaw import gateway_url, handshake
from tests.agent.conftest import CLAWOPS, TOKEN_ENV, Agent, pid_alive
from tests.agent.test_agent_backup import s3_table
from tests.agent.test_real_gateway import NODE, OPENCLAW
from tests.auxil.botnode import start_test_node
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, say
from tests.bot.test_fleet_commands import confirmed, only

KEY_ENV = "CLAWOPS_TEST_SECRET_KEY"


async def start_node(tmp_path, monkeypatch, tg, s3, extra_claws=None, **sections) -> Node:
    monkeypatch.setenv(KEY_ENV, generate_key())
    return await start_test_node(
        tmp_path, monkeypatch, tg,
        claws={"secret_key_env": KEY_ENV, "provision_timeout": "60s",
               "r2": {"endpoint_url": s3.endpoint_url, "region": "us-east-1",
                      "access_key_id_env": "CLAWOPS_TEST_S3_KEY",
                      "secret_access_key_env": "CLAWOPS_TEST_S3_SECRET"},
               **(extra_claws or {})},
        orgs=[{"slug": "acme", "name": "Acme", "members": [ADMIN]}], **sections,
    )  # fmt: skip


@pytest.fixture
async def node(tmp_path, monkeypatch, tg, s3) -> AsyncIterator[Node]:
    running = await start_node(tmp_path, monkeypatch, tg, s3)
    yield running
    await running.stop()


async def add_mini(node: Node, agent: Agent, monkeypatch, capacity: int = 4) -> None:
    monkeypatch.setenv(TOKEN_ENV, agent.token)
    ports = f"{agent.ports.start}-{agent.ports.stop - 1}"
    await Minis(node.db).add(
        "mini-1", agent.url, ports=ports, capacity=capacity, agent_token_env=TOKEN_ENV,
        gateway_host="127.0.0.1",
    )  # fmt: skip


async def test_a_claw_is_provisioned_used_and_deleted_from_telegram(
    node, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    agent = start_agent(extra_toml=s3_table(s3))
    await add_mini(node, agent, monkeypatch)
    assert "mini-1" in only(await say(tg, GROUP, VIEWER, "/minis"))
    result = await confirmed(tg, "/claw new acme support", wait=60)
    assert "Claw ready" in result and "acme/support" in result and "active" in result
    claw = await node.claws_service().get("acme", "support")
    assert claw.status == "active" and claw.mini == "mini-1" and claw.mini_port in agent.ports
    # The agent runs its gateway, which answers a real handshake with the stored token.
    held = agent.call("GET", "/claws").json()["claws"]
    assert [c["clawId"] for c in held] == [claw.agent_id] and held[0]["ready"]
    token = await node.claws_service().gateway_token("acme", "support")
    hello = await handshake(gateway_url(claw.mini_port), token, timeout=10)
    assert hello.protocol == 4
    assert await Buckets(s3).exists(claw.bucket)
    listing = only(await say(tg, GROUP, VIEWER, "/claws acme"))
    assert "🟢 <b>acme/support</b> · active · mini-1" in listing
    status = only(await say(tg, GROUP, VIEWER, "/claw status support"))
    assert "steps done: reserved, agent, bucket" in status
    deleted = await confirmed(tg, "/claw delete acme/support", wait=30)
    assert "deleted" in deleted and "final backup backups/" in deleted
    assert agent.call("GET", "/claws").json()["claws"] == []
    assert await Buckets(s3).exists(claw.bucket)  # kept for /claw restore until purged
    assert (await node.claws_service().get("acme", "support")).status == "deleted"
    assert not any(pid_alive(p) for p in agent.seen_pids)


async def test_a_bad_claw_request_is_refused_before_confirmation(node, tg):
    for text, reason in [
        ("/claw new nope support", "no org 'nope'"),
        ("/claw new acme Bad_Name", "claw name 'Bad_Name'"),
        ("/claw delete ghost", "no claw 'ghost'"),
        ("/claw frobnicate x", "Usage"),
    ]:
        (reply,) = await say(tg, GROUP, ADMIN, text)
        assert not reply.buttons and reason in reply.text, reply.text
    assert await node.claws_service().list() == []


async def test_provisioning_with_the_agent_down_leaves_an_error_and_nothing_held(
    node, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    agent = start_agent()
    await add_mini(node, agent, monkeypatch)
    agent.stop()
    result = await confirmed(tg, "/claw new acme support", wait=60)
    assert "❌" in result and "failed at agent" in result
    claw = await node.claws_service().get("acme", "support")
    assert claw.status == "error" and claw.mini_port is None and claw.bucket is None


def test_minis_are_managed_from_the_command_line(tmp_path):
    config = tmp_path / "clawops.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    env = {**os.environ, "CLAWOPS_CONFIG": str(config)}

    def clawops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CLAWOPS), *args], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    added = clawops(
        "minis",
        "add",
        "mini-1",
        "--agent-url",
        "http://127.0.0.1:7600",
        "--agent-token-env",
        "MINI_TOKEN",
        "--ports",
        "3001-3100",
        "--capacity",
        "6",
        "--offline",  # nothing listens there (tests/e2e/test_claws_watch.py asks a real agent)
    )
    assert added.returncode == 0, added.stderr
    bad = clawops("minis", "add", "mini-2", "--agent-url", "ftp://x", "--agent-token-env",
                  "MINI_TOKEN", "--ports", "3100-3001", "--capacity", "6")  # fmt: skip
    assert bad.returncode == 1 and "agent_url" in bad.stderr + bad.stdout
    assert clawops("minis", "drain", "mini-1").returncode == 0
    listed = clawops("minis", "list")
    assert "mini-1: draining, 0/6 claws, ports 3001-3100" in listed.stdout
    assert "mini-2" not in listed.stdout
    assert clawops("minis", "remove", "mini-1").returncode == 0
    # The token itself, from stdin, sealed: refused without a key, stored encrypted with one.
    sealed = ["minis", "add", "mini-3", "--agent-url", "http://127.0.0.1:7600", "--offline",
              "--agent-token-stdin", "--ports", "3001-3100", "--capacity", "6"]  # fmt: skip
    refused = subprocess.run([str(CLAWOPS), *sealed], env=env, input="tok-" + "x" * 40,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 1 and "CLAWOPS_SECRET_KEY" in refused.stderr
    keyed = {**env, "CLAWOPS_SECRET_KEY": generate_key()}
    stored = subprocess.run([str(CLAWOPS), *sealed], env=keyed, input="tok-" + "x" * 40,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    database = (tmp_path / "data" / "clawops.db").read_bytes()
    assert b"tok-xxxx" not in database and b"v1:" in database
    assert clawops("minis", "remove", "mini-3").returncode == 0
    assert "no Mac Minis yet" in clawops("minis", "list").stdout
    key = clawops("secrets", "generate").stdout.strip()
    assert len(key) >= 43
    no_key = clawops("secrets", "rotate")
    assert no_key.returncode == 1 and "CLAWOPS_SECRET_KEY is not set" in no_key.stderr
    env["CLAWOPS_SECRET_KEY"] = key
    assert "re-encrypted 0 secret(s)" in clawops("secrets", "rotate").stdout


@pytest.mark.slow
@pytest.mark.skipif(
    not (NODE.exists() and OPENCLAW.exists()),
    reason="the real OpenClaw gateway is not installed: run scripts/setup-openclaw",
)
async def test_a_claw_on_a_real_openclaw_gateway_becomes_active_and_answers_its_token(
    node, tg, s3, start_agent: Callable[..., Agent], monkeypatch
):
    before = set(glob.glob("/tmp/openclaw*"))
    agent = start_agent(gateway_command=[str(NODE), str(OPENCLAW), "gateway", "run"])
    try:
        await add_mini(node, agent, monkeypatch)
        claw = await node.claws_service().provision("acme", "real", created_by=ADMIN)
        assert claw.status == "active"
        token = await node.claws_service().gateway_token("acme", "real")
        hello = await handshake(gateway_url(claw.mini_port), token, timeout=20)
        assert hello.protocol == 4
        await node.claws_service().deprovision("acme", "real", force=True)
        await asyncio.sleep(0)
        assert agent.call("GET", "/claws").json()["claws"] == []
    finally:
        for path in set(glob.glob("/tmp/openclaw*")) - before:
            shutil.rmtree(path, ignore_errors=True)


async def test_the_bot_bounds_backups_and_restores_by_the_configured_backup_timeout(
    tmp_path, monkeypatch, tg, s3
):
    node = await start_node(
        tmp_path, monkeypatch, tg, s3, jobs={"claws_backup": {"timeout": "90s"}}
    )
    try:
        assert node.claws_service().backup_timeout == 90.0
    finally:
        await node.stop()
