"""The agent client against a stand-in agent over real HTTP on loopback, and against a liar."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from core.agent_client import AgentClient, NotFound, NotReached
from core.errors import RemoteError, Unreachable
from tests.auxil.fakeagent import FakeAgent, down_url
from tests.auxil.net import free_port

TOKEN = "t" * 40


@pytest.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    fake = await FakeAgent().start()
    yield fake
    await fake.stop()


def client(agent: FakeAgent, **kwargs: Any) -> AgentClient:
    kwargs.setdefault("backoff", 0.01)
    return AgentClient(agent.url, agent.token, **kwargs)


async def test_a_claw_is_created_listed_queried_and_deleted(agent):
    async with client(agent) as c:
        info = await c.create("claw-1", 3001, TOKEN, "claw-1")
        assert (info.claw_id, info.port, info.status, info.ready) == (
            "claw-1",
            3001,
            "running",
            True,
        )
        assert [i.claw_id for i in await c.list()] == ["claw-1"]
        assert (await c.status("claw-1")).pid == 4242
        held = {"port": 3001, "token": TOKEN, "bucket": "claw-1", "restore": False}
        assert agent.claws["claw-1"] == held
        await c.delete("claw-1")
    assert agent.claws == {}


async def test_creating_the_same_claw_twice_is_idempotent(agent):
    async with client(agent) as c:
        await c.create("claw-1", 3001, TOKEN, None)
        again = await c.create("claw-1", 3001, TOKEN, None)
    assert again.port == 3001 and list(agent.claws) == ["claw-1"]


async def test_deleting_a_claw_the_agent_does_not_hold_is_done(agent):
    async with client(agent) as c:
        await c.delete("claw-404")
    assert agent.calls == ["DELETE /claws/claw-404"]


async def test_a_status_of_an_unknown_claw_is_not_found_with_the_agents_text(agent):
    async with client(agent) as c:
        with pytest.raises(NotFound, match="404: no claw claw-9"):
            await c.status("claw-9")


async def test_a_refusal_carries_the_agents_error_text_and_is_not_retried(agent):
    async with client(agent) as c:
        await c.create("claw-1", 3001, TOKEN, None)
        with pytest.raises(RemoteError, match=r"409: claw-1 already runs on port 3001"):
            await c.create("claw-1", 3002, TOKEN, None)
    assert agent.calls.count("POST /claws") == 2


async def test_a_wrong_token_is_refused_with_the_agents_text(agent):
    async with AgentClient(agent.url, "wrong") as c:
        with pytest.raises(RemoteError, match="401: bad or missing bearer token"):
            await c.health()


async def test_a_500_is_retried_then_raised_with_the_agents_text(agent):
    agent.fault = "500"
    async with client(agent, retries=2) as c:
        with pytest.raises(RemoteError, match="500: internal error while starting the gateway"):
            await c.create("claw-1", 3001, TOKEN, None)
    assert agent.calls.count("POST /claws") == 3


async def test_a_200_that_says_ok_false_is_a_failure(agent):
    agent.fault = "not-ok"
    async with client(agent) as c:
        with pytest.raises(RemoteError, match="200 without ok: gateway binary missing"):
            await c.create("claw-1", 3001, TOKEN, None)


async def test_an_agent_that_is_down_is_not_reached_after_the_retries():
    async with AgentClient(down_url(), "x", retries=1, backoff=0.01) as c:
        with pytest.raises(NotReached, match="not reachable"):
            await c.health()


async def test_an_agent_too_slow_to_answer_is_unreachable(agent):
    agent.latency = 0.5
    async with client(agent, timeout=0.1, retries=0) as c:
        with pytest.raises(Unreachable, match="timed out"):
            await c.health()


async def test_health_reports_capacity_and_load(agent):
    async with client(agent) as c:
        health = await c.health()
    assert (health.capacity, health.claws, health.load1) == (100, 0, 0.5)


@pytest.fixture
async def liar() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """An agent answering whatever ``answer["body"]`` holds, with ``answer["status"]``."""
    answer: dict[str, Any] = {"status": 200, "body": {}}

    async def handler(_request: web.Request) -> web.Response:
        if isinstance(answer["body"], str):
            return web.Response(text=answer["body"], status=answer["status"])
        return web.json_response(answer["body"], status=answer["status"])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", answer
    await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, "<html>hello</html>", "answer is not a JSON object"),
        (200, {"ok": True}, "malformed claw"),
        (200, {"ok": True, "claw": {"clawId": "c", "port": "3001", "status": "running"}},
         "malformed claw"),
        (200, {"ok": True, "claw": {"clawId": "c", "port": 1, "status": "dancing", "ready": True}},
         "malformed claw"),
        (201, {"claw": {}}, "201 without ok: no error text"),
        (200, {"ok": "true"}, "without ok"),
    ],
)  # fmt: skip
async def test_an_answer_of_the_wrong_shape_is_a_failure(liar, status, body, message):
    url, answer = liar
    answer.update(status=status, body=body)
    async with AgentClient(url, "x", retries=0) as c:
        with pytest.raises(RemoteError, match=message):
            await c.create("c", 3001, TOKEN, None)


async def test_a_health_answer_without_its_fields_is_a_failure(liar):
    url, answer = liar
    answer.update(body={"ok": True, "capacity": 3})
    async with AgentClient(url, "x") as c:
        with pytest.raises(RemoteError, match="GET /health: malformed answer"):
            await c.health()
