"""Who may drive the local Bot API of the no-token mode: only a process that read the node's
control secret, never a web page the operator happens to have open."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from telegram import Bot

from bot.commands import Reply
from bot.node import LOCAL_OPERATOR, Node
from bot.working import send_reply
from core.config import LoadedConfig, parse_config
from core.localtelegram import ACCESS_FILE, LocalTelegram, loopback_host, read_access_file
from tests.auxil.net import free_port


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LocalTelegram(token="7000000001:the-right-token") as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        client.server = server  # type: ignore[attr-defined]
        yield client


def secret_of(client: httpx.AsyncClient) -> dict[str, str]:
    server: LocalTelegram = client.server  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {server.control_secret}"}


KILL = json.dumps({"chat_id": 1, "user_id": 1, "text": "/kill claw-1"})


async def test_a_cross_site_text_plain_post_cannot_speak_as_the_operator(api):
    # What any web page can send to loopback without a CORS preflight.
    page = await api.post("/control/message", content=KILL, headers={"Content-Type": "text/plain"})
    assert page.status_code == 401
    with_secret = await api.post(
        "/control/message", content=KILL, headers={"Content-Type": "text/plain", **secret_of(api)}
    )
    assert with_secret.status_code == 415
    assert api.server.updates == []  # type: ignore[attr-defined]


async def test_control_routes_need_the_secret_even_to_read(api):
    assert (await api.get("/control/sent")).status_code == 401
    wrong = {"Authorization": "Bearer not-the-secret"}
    assert (await api.get("/control/state", headers=wrong)).status_code == 401
    web = await api.post("/control/message", json={"chat_id": 1, "user_id": 1, "text": "/web"})
    assert web.status_code == 401
    ok = await api.post(
        "/control/message",
        content=KILL,
        headers={"Content-Type": "application/json", **secret_of(api)},
    )
    assert ok.status_code == 200 and ok.json()["update_id"] == 1


async def test_every_route_refuses_a_host_that_is_not_loopback(api):
    rebound = {"Host": f"evil.example:{api.server.port}"}  # type: ignore[attr-defined]
    control = await api.get("/control/sent", headers={**rebound, **secret_of(api)})
    assert control.status_code == 421
    bot = await api.get("/bot7000000001:the-right-token/getMe", headers=rebound)
    assert bot.status_code == 421 and bot.json()["ok"] is False
    for host in ("localhost:9011", "127.0.0.1", "[::1]:9011", "LOCALHOST"):
        answer = await api.get("/bot7000000001:the-right-token/getMe", headers={"Host": host})
        assert answer.status_code == 200, host


def test_only_loopback_names_pass_the_host_check():
    assert not loopback_host("127.0.0.1.evil.example")
    assert not loopback_host("localhost.evil.example:80")
    assert not loopback_host("")
    assert not loopback_host("[::2]:80")


async def test_the_bot_api_answers_only_its_own_token(api):
    guessed = await api.get("/bot7000000001:clawops-local/getUpdates")
    assert guessed.status_code == 401 and guessed.json()["description"] == "Unauthorized"
    assert (await api.get("/bot7000000001:the-right-token/getMe")).status_code == 200


@pytest.fixture
async def local_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    monkeypatch.delenv("NO_SUCH_BOT_TOKEN", raising=False)
    raw = {
        "node": {"name": "local", "data_dir": str(tmp_path / "data")},
        "telegram": {"token_env": "NO_SUCH_BOT_TOKEN", "local_api_port": free_port()},
        "sidecar": {"port": free_port()},
    }
    node = Node(LoadedConfig(parse_config(raw), None))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_the_node_writes_a_private_access_file_and_removes_it_at_stop(local_node: Node):
    data_dir = local_node.loaded.data_dir
    path = data_dir / ACCESS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    # Every file the node wrote there (the SQLite database and its -wal/-shm files too).
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in data_dir.iterdir()}
    assert "clawops.db" in modes and set(modes.values()) == {0o600}, modes
    assert local_node.local_api is not None
    url, secret = read_access_file(path)
    assert url == local_node.local_api.url and secret == local_node.local_api.control_secret
    assert len(secret) >= 32
    # The bot's token is made per start: a page cannot guess it to read updates.
    token = local_node.local_api.token
    assert token is not None and token.startswith("7000000001:") and len(token) > 40
    async with httpx.AsyncClient(base_url=url) as client:
        sent = await client.post(
            "/control/message",
            json={"chat_id": LOCAL_OPERATOR, "user_id": LOCAL_OPERATOR, "text": "/help"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert sent.status_code == 200
    items = await local_node.local_api.wait_sent(timeout=10, chat_id=LOCAL_OPERATOR)
    assert items and "/status" in items[0].text
    await local_node.stop()
    assert not path.exists()


async def test_a_reply_whose_link_buttons_telegram_refuses_still_arrives_with_its_links(tg):
    async with Bot("123:abc", base_url=tg.base_url) as bot:
        good = Reply("<b>acme/a</b>", links=(("Web chat", "https://ops.example/claws/acme/a"),))
        await send_reply(bot, 42, good)
        bad = Reply("<b>acme/b</b>", links=(("Web chat", "ftp://ops.example/claws/acme/b"),))
        await send_reply(bot, 42, bad)
    first, second = [s for s in tg.sent if s.kind == "message"]
    assert first.buttons == [[{"text": "Web chat", "url": "https://ops.example/claws/acme/a"}]]
    assert second.text == "<b>acme/b</b>\nWeb chat: ftp://ops.example/claws/acme/b"
    assert second.buttons == []
