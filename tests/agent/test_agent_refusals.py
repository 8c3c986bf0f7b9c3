"""Every refusal of the agent: a non-2xx status with {"ok": false, "error"}, and nothing changed."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.agent.conftest import Agent, Agents, claw_token

pytestmark = pytest.mark.slow
StartAgent = Callable[..., Agent]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One agent holding one claw, shared: every refusal here must leave it as it was."""
    agents = Agents(tmp_path_factory.mktemp("refusals"))
    agent = agents.start(max_claws=2)
    assert agent.create("taken", agent.ports.start).status_code == 201
    yield agent
    agents.stop_all()


def assert_refused(agent: Agent, answer: Any, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["ok"] is False
    assert words in body["error"]
    claws = agent.call("GET", "/claws").json()["claws"]
    assert [c["clawId"] for c in claws] == ["taken"], "a refusal must change nothing"


@pytest.mark.parametrize("token", ["", "wrong-token-" + "x" * 40])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/claws"), ("POST", "/claws"), ("GET", "/claws/taken/status"),
     ("POST", "/claws/taken/restart"), ("DELETE", "/claws/taken"),
     ("POST", "/claws/taken/backup"), ("GET", "/health"), ("GET", "/nowhere")],
)  # fmt: skip
def test_every_route_wants_the_bearer_token(
    agent: Agent, method: str, path: str, token: str
) -> None:
    body = {"clawId": "new", "port": agent.ports.start + 1, "token": claw_token()}
    answer = agent.call(method, path, body if method == "POST" else None, token=token)
    assert_refused(agent, answer, 401, "bearer token")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"clawId": "Bad_Id", "port": 0, "token": "t" * 40}, "clawId"),
        ({"clawId": "-lead", "port": 0, "token": "t" * 40}, "clawId"),
        ({"clawId": "a" * 64, "port": 0, "token": "t" * 40}, "clawId"),
        ({"clawId": "ok", "port": "3001", "token": "t" * 40}, "port"),
        ({"clawId": "ok", "port": True, "token": "t" * 40}, "port"),
        ({"clawId": "ok", "port": 0, "token": "short"}, "token"),
        ({"clawId": "ok", "port": 0, "token": "t" * 40, "bucket": "No Bucket"}, "bucket"),
        ({"clawId": "ok", "port": 0, "token": "t" * 40, "restore": "yes"}, "restore"),
        (["not", "an", "object"], "object"),
    ],
)
def test_bad_input_is_refused_with_400(agent: Agent, body: Any, words: str) -> None:
    if isinstance(body, dict) and body.get("port") == 0:
        body["port"] = agent.ports.start + 1
    assert_refused(agent, agent.call("POST", "/claws", body), 400, words)


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b"{nope", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"[" * 30000, {"Content-Type": "application/json"}, 400, "nested deeper than 32"),
        (b'{"clawId": "x"}', {}, 415, "application/json"),  # what a cross-site form can send
        (b'{"clawId": "x"}', {"Content-Type": "text/plain"}, 415, "application/json"),
        (b"{}", {"Content-Type": "application/json", "Host": "evil.example.net"}, 421, "Host"),
    ],
)
def test_a_body_that_is_not_json_or_a_foreign_host_is_refused(
    agent: Agent, content: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    import httpx

    auth = {"Authorization": f"Bearer {agent.token}", **headers}
    answer = httpx.post(agent.url + "/claws", content=content, headers=auth)
    assert_refused(agent, answer, status, words)


def test_a_port_outside_the_range_is_refused(agent: Agent) -> None:
    answer = agent.create("new", agent.ports.stop + 5)
    assert_refused(agent, answer, 409, "outside this agent's range")


def test_a_port_of_another_claw_is_refused(agent: Agent) -> None:
    assert_refused(agent, agent.create("new", agent.ports.start), 409, "in use")


def test_a_port_held_by_another_program_is_refused(agent: Agent) -> None:
    with socket.socket() as holder:
        port = agent.free_port()
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert_refused(agent, agent.create("new", port), 409, "in use")


def test_the_same_claw_on_another_port_is_refused(agent: Agent) -> None:
    answer = agent.create("taken", agent.free_port())
    assert_refused(agent, answer, 409, "exists on port")


def test_a_full_agent_refuses_with_507(start_agent: StartAgent) -> None:
    agent = start_agent(max_claws=2)
    assert agent.create("taken", agent.free_port()).status_code == 201
    assert agent.create("second", agent.free_port()).status_code == 201
    answer = agent.create("third", agent.free_port())
    assert answer.status_code == 507
    assert answer.json() == {"ok": False, "error": "this agent is full (2 claws)"}
    assert len(agent.call("GET", "/claws").json()["claws"]) == 2


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/claws/ghost/status"), ("POST", "/claws/ghost/restart"),
     ("DELETE", "/claws/ghost"), ("POST", "/claws/ghost/backup")],
)  # fmt: skip
def test_an_unknown_claw_is_404(agent: Agent, method: str, path: str) -> None:
    assert_refused(agent, agent.call(method, path), 404, "no claw ghost")


def test_an_unknown_route_is_a_json_404(agent: Agent) -> None:
    assert_refused(agent, agent.call("GET", "/nowhere"), 404, "Not Found")


def test_a_backup_without_s3_settings_is_refused(agent: Agent) -> None:
    assert_refused(agent, agent.call("POST", "/claws/taken/backup"), 400, "no bucket")
