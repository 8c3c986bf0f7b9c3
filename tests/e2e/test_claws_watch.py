"""The claws watch end to end: a node with a short claws_health job, a REAL agent process with
stand-in gateways, the bot's alert chat; and ``clawops minis add`` asking the agent first."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from bot.node import Node
from core.crypto import generate_key
from core.tables import mac_minis
from tests.agent.conftest import CLAWOPS, TOKEN_ENV, Agent
from tests.auxil.botnode import start_test_node
from tests.bot.test_bot import ADMIN, GROUP, VIEWER, say
from tests.bot.test_fleet_commands import confirmed, only
from tests.e2e.test_claws_flow import KEY_ENV, add_mini

ALERTS = -900
WATCH = {"every": "1s", "failures": 2, "successes": 1, "timeout": "2s"}


async def start_watching_node(tmp_path, monkeypatch, tg, s3) -> Node:
    monkeypatch.setenv(KEY_ENV, generate_key())
    return await start_test_node(
        tmp_path,
        monkeypatch,
        tg,
        telegram={"alert_chat": ALERTS},
        claws={
            "secret_key_env": KEY_ENV,
            "provision_timeout": "60s",
            "r2": {
                "endpoint_url": s3.endpoint_url,
                "region": "us-east-1",
                "access_key_id_env": "CLAWOPS_TEST_S3_KEY",
                "secret_access_key_env": "CLAWOPS_TEST_S3_SECRET",
            },
        },
        orgs=[{"slug": "acme", "name": "Acme", "members": [ADMIN]}],
        jobs={"claws_health": WATCH},
    )


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll an async ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alert_texts(tg, after: int = 0) -> list[str]:
    return [s.text for s in tg.sent if s.chat_id == ALERTS and s.seq > after and s.kind != "action"]


async def test_a_killed_agent_is_one_offline_alert_naming_its_claws_then_one_online(
    tmp_path, monkeypatch, tg, s3, start_agent: Callable[..., Agent]
):
    node = await start_watching_node(tmp_path, monkeypatch, tg, s3)
    try:
        agent = start_agent()
        await add_mini(node, agent, monkeypatch)
        for name in ("a", "b"):
            assert "Claw ready" in await confirmed(tg, f"/claw new acme {name}", wait=60)
        service = node.claws_service()

        async def gateways(state: str) -> bool:
            return all(c.gateway_state == state for c in await service.list()) and bool(
                await service.list()
            )

        await until(lambda: gateways("running"), 15, "both gateways seen running")
        listing = only(await say(tg, GROUP, VIEWER, "/minis"))
        assert "🟢 <b>mini-1</b> · online" in listing and "claws 2 up, 0 down" in listing
        assert "agent " in listing and "seen " in listing
        status = only(await say(tg, GROUP, VIEWER, "/claw status acme/a"))
        assert "gateway: 🟢 running" in status and "0 restart(s)" in status
        before = tg.sent[-1].seq if tg.sent else 0

        assert agent.proc is not None
        agent.stop(signal.SIGKILL)

        async def offline_alert() -> list[str]:
            return [t for t in alert_texts(tg, before) if "mini:mini-1" in t]

        (down,) = await until(offline_alert, 20, "the offline alert")
        assert "is down" in down and "mini-1 offline" in down
        assert "2 claw(s) affected: acme/a, acme/b" in down
        # Two more rounds: still exactly one message, and no claw alert.
        mini = (await node.claws_service().list())[0].mini
        assert mini == "mini-1"

        async def misses_at_least(n: int) -> bool:
            async with node.db.connect() as conn:
                misses = (await conn.execute(select(mac_minis.c.misses))).scalar_one()
            return bool(misses >= n)

        await until(lambda: misses_at_least(WATCH["failures"] + 2), 15, "two more rounds")
        assert alert_texts(tg, before) == [down]
        listing = only(await say(tg, GROUP, VIEWER, "/minis"))
        assert "🔴 <b>mini-1</b> · offline" in listing and "not reachable" in listing
        after_down = tg.sent[-1].seq

        agent.start()  # the same config and state dir: it starts its gateways again

        async def online_alert() -> list[str]:
            return [t for t in alert_texts(tg, after_down) if "mini:mini-1" in t]

        (up,) = await until(online_alert, 20, "the online alert")
        assert "recovered" in up and "mini-1 back online" in up and "acme/a, acme/b" in up
        await until(lambda: gateways("running"), 20, "both gateways running again")
        assert [t for t in alert_texts(tg, before) if "mini:" in t] == [down, up]
        assert not [t for t in alert_texts(tg, 0) if "claw:" in t]
    finally:
        await node.stop()


def clawops(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    return subprocess.run(
        [str(CLAWOPS), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_minis_add_asks_the_agent_first_and_refuses_what_does_not_answer(
    tmp_path, start_agent: Callable[..., Agent]
):
    agent = start_agent(max_claws=3)
    config = tmp_path / "clawops.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n')
    env = {**os.environ, "CLAWOPS_CONFIG": str(config), TOKEN_ENV: agent.token}
    ports = f"{agent.ports.start}-{agent.ports.stop - 1}"

    def add(name: str, url: str, *extra: str, token_env: str = TOKEN_ENV) -> Any:
        return clawops(
            env,
            "minis",
            "add",
            name,
            "--agent-url",
            url,
            "--agent-token-env",
            token_env,
            "--ports",
            ports,
            "--capacity",
            "3",
            *extra,
        )

    # Nothing listens there: refused within the bound, nothing saved.
    down = f"http://127.0.0.1:{agent.ports.stop + 50}"
    started = time.monotonic()
    refused = add("mini-down", down)
    assert refused.returncode == 1 and "not reachable" in refused.stderr, refused.stderr
    assert time.monotonic() - started < 30
    # The wrong token: the agent answers 401.
    env["WRONG_TOKEN"] = "not-the-token-" + "x" * 20
    wrong = add("mini-wrong", agent.url, token_env="WRONG_TOKEN")
    assert wrong.returncode == 1 and "refused the token (401)" in wrong.stderr, wrong.stderr
    assert "no Mac Minis yet" in clawops(env, "minis", "list").stdout
    # It answers: added, with its version and capacity; a capacity beyond its own is warned.
    added = add("mini-1", agent.url)
    assert added.returncode == 0, added.stderr
    assert "agent " in added.stdout and "capacity 3" in added.stdout
    assert f"ports {ports}" in added.stdout and "warning" not in added.stdout
    bigger = clawops(
        env,
        "minis",
        "add",
        "mini-2",
        "--agent-url",
        agent.url,
        "--agent-token-env",
        TOKEN_ENV,
        "--ports",
        "1100-1109",
        "--capacity",
        "5",
    )
    assert bigger.returncode == 0, bigger.stderr
    assert "warning: --capacity 5 is more than the agent's max_claws (3)" in bigger.stdout
    assert "warning: --ports 1100-1109 is outside the agent's port_range" in bigger.stdout
    # --offline: saved without asking, and not reachable until the watch sees it answer.
    offline = add("mini-3", down, "--offline")
    assert offline.returncode == 0, offline.stderr
    assert "not contacted (--offline)" in offline.stdout
    listed = clawops(env, "minis", "list").stdout
    assert "mini-1: online, 0/3" in listed and "mini-3: online, 0/3" in listed
    assert listed.count("agent not reachable") == 1
    assert "mini-3" in next(line for line in listed.splitlines() if "not reachable" in line)
    assert "mini-down" not in listed and "mini-wrong" not in listed
