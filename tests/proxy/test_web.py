"""Web sign-in over real HTTP: login links, the session cookie, sign-out, API tokens, /web in the
real bot through the local Bot API, and `clawops tokens`."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.node import Node
from core.config import LoadedConfig, parse_config
from core.db import Database
from core.localtelegram import LocalTelegram, Sent
from core.statuslog import StatusLog
from core.tables import web_logins, web_sessions
from core.websessions import WebAuth
from proxy.sidecar import Sidecar, SidecarState, create_app
from proxy.web import COOKIE
from tests.auxil.net import free_port
from tests.bot.test_cli import clawops, write_config

USER, VIEWER, STRANGER, GROUP = 100, 200, 300, -500
INVALID = "this link is no longer valid, ask the bot for a new one with /web"


@dataclass
class Running:
    url: str
    auth: WebAuth
    client: httpx.AsyncClient


@pytest.fixture
async def start_sidecar(db: Database) -> AsyncIterator[Callable[..., object]]:
    started: list[tuple[Sidecar, StatusLog, httpx.AsyncClient]] = []

    async def start(token: str | None = None, public_url: str | None = None) -> Running:
        log = StatusLog(db, "test-node")
        await log.start()
        state = SidecarState(statuslog=log, node="test-node", token=token, public_url=public_url)
        sidecar = Sidecar(create_app(state), "127.0.0.1", 0)
        await sidecar.start()
        client = httpx.AsyncClient(base_url=sidecar.url, timeout=10)
        started.append((sidecar, log, client))
        return Running(sidecar.url, WebAuth(db), client)

    yield start
    for sidecar, log, client in started:
        await client.aclose()
        await sidecar.stop()
        await log.stop()


@pytest.fixture
async def sidecar(start_sidecar) -> Running:
    return await start_sidecar()


async def count(db: Database, table) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def set_cookie(response: httpx.Response) -> str:
    (header,) = response.headers.get_list("set-cookie")
    return header


async def sign_in(running: Running, user: int = USER) -> httpx.Response:
    secret = await running.auth.create_login(user)
    return await running.client.get(f"/login/{secret}")


async def test_a_login_link_sets_the_session_cookie_and_lands_on_the_claws_page(sidecar, db):
    response = await sign_in(sidecar)
    assert response.status_code == 303 and response.headers["location"] == "/claws"
    assert response.headers["cache-control"] == "no-store"
    cookie = set_cookie(response)
    assert cookie.startswith(f"{COOKIE}=")
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= set(flags)
    assert "secure" not in flags  # no https public URL here
    assert flags["samesite"].strip() == "SameSite=Lax" and flags["path"].strip() == "Path=/"
    assert flags["max-age"].strip() == f"Max-Age={7 * 24 * 3600}"
    page = await sidecar.client.get("/claws")  # httpx kept the cookie
    assert page.status_code == 200 and "Telegram user <b>100</b>" in page.text
    assert await count(db, web_sessions) == 1


async def test_the_cookie_is_secure_behind_an_https_public_url(start_sidecar):
    running = await start_sidecar(public_url="https://ops.example.org")
    cookie = set_cookie(await sign_in(running))
    parts = [p.strip() for p in cookie.split(";")]
    assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} <= set(parts)


async def test_a_used_link_gets_a_400_page_and_changes_nothing(sidecar, db):
    secret = await sidecar.auth.create_login(USER)
    assert (await sidecar.client.get(f"/login/{secret}")).status_code == 303
    fresh = httpx.AsyncClient(base_url=sidecar.url)
    async with fresh:
        again = await fresh.get(f"/login/{secret}")
        assert again.status_code == 400 and INVALID in again.text
        assert again.headers["content-type"].startswith("text/html")
        assert "set-cookie" not in again.headers
        assert (await fresh.get("/claws")).status_code == 401
    assert await count(db, web_sessions) == 1


async def test_an_expired_or_made_up_link_is_refused(sidecar, db):
    from datetime import timedelta

    expired = await sidecar.auth.create_login(USER, ttl=timedelta(milliseconds=10))
    await asyncio.sleep(0.05)
    for secret in (expired, "made-up"):
        response = await sidecar.client.get(f"/login/{secret}")
        assert response.status_code == 400 and INVALID in response.text
    assert await count(db, web_sessions) == 0


async def test_two_browsers_opening_one_link_at_once_get_one_session(sidecar, db):
    secret = await sidecar.auth.create_login(USER)
    clients = [httpx.AsyncClient(base_url=sidecar.url) for _ in range(8)]
    try:
        answers = await asyncio.gather(*(c.get(f"/login/{secret}") for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    assert sorted(a.status_code for a in answers) == [303] + [400] * 7
    assert await count(db, web_sessions) == 1


async def test_a_link_preview_fetcher_or_a_head_does_not_spend_the_link(sidecar, db):
    secret = await sidecar.auth.create_login(USER)
    preview = await sidecar.client.get(
        f"/login/{secret}", headers={"User-Agent": "TelegramBot (like TwitterBot)"}
    )
    head = await sidecar.client.head(f"/login/{secret}")
    assert preview.status_code == 200 and "set-cookie" not in preview.headers
    assert head.status_code == 405
    assert await count(db, web_sessions) == 0
    assert (await sidecar.client.get(f"/login/{secret}")).status_code == 303


async def test_sign_out_revokes_the_session_and_clears_the_cookie(sidecar, db):
    await sign_in(sidecar)
    session = sidecar.client.cookies[COOKIE]
    response = await sidecar.client.post("/logout")
    assert response.status_code == 200 and "signed out" in response.text
    cleared = set_cookie(response)
    assert cleared.startswith(f'{COOKIE}=""') and "Max-Age=0" in cleared
    assert await sidecar.auth.session_user(session) is None
    # The old cookie, replayed by hand, no longer signs in.
    async with httpx.AsyncClient(base_url=sidecar.url, cookies={COOKIE: session}) as replayer:
        assert (await replayer.get("/claws")).status_code == 401
    async with db.connect() as conn:
        revoked = (await conn.execute(select(web_sessions.c.revoked_at))).scalar_one()
    assert revoked is not None


async def test_an_api_token_works_as_a_bearer_until_revoked(sidecar):
    token = await sidecar.auth.create_token(USER, "script")
    headers = {"Authorization": f"Bearer {token}"}
    page = await sidecar.client.get("/claws", headers=headers)
    assert page.status_code == 200 and "<b>100</b>" in page.text
    await sidecar.auth.revoke_token("script")
    assert (await sidecar.client.get("/claws", headers=headers)).status_code == 401
    wrong = {"Authorization": "Bearer not-a-token"}
    assert (await sidecar.client.get("/claws", headers=wrong)).status_code == 401


async def test_the_sign_in_routes_need_no_sidecar_token_but_the_api_still_does(start_sidecar):
    running = await start_sidecar(token="sidecar-secret")
    assert (await sign_in(running)).status_code == 303
    assert (await running.client.get("/claws")).status_code == 200
    assert (await running.client.post("/logout")).status_code == 200
    assert (await running.client.get("/api/log")).status_code == 401
    assert (await running.client.get("/login")).status_code == 401  # not a public route


# -- GET /: what the seed's healer checks ----------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_healers_curl_of_the_root_succeeds_without_the_token(start_sidecar):
    running = await start_sidecar(token="sidecar-secret")
    port = httpx.URL(running.url).port
    # The seed's check, unchanged: `curl -sf http://localhost:9010` (-f fails on any 4xx/5xx).
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sf", "--max-time", "10", f"http://localhost:{port}", stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"/web" in out


async def test_the_home_page_says_how_to_sign_in_and_allows_nothing_to_run(start_sidecar):
    running = await start_sidecar(token="sidecar-secret")
    page = await running.client.get("/", headers={"Host": "127.0.0.1:9010"})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<b>test-node</b>" in page.text and "<code>/web</code>" in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "<script" not in page.text and "style=" not in page.text
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert (await running.client.head("/")).status_code == 200


async def test_the_home_page_refuses_a_host_it_does_not_serve(start_sidecar):
    running = await start_sidecar()
    rebound = await running.client.get("/", headers={"Host": "evil.example.net:9010"})
    assert rebound.status_code == 421 and "evil.example.net" in rebound.json()["error"]
    assert (await running.client.post("/", json={})).status_code == 405


# -- /web through the real bot --------------------------------------------------------------


@pytest.fixture
async def tg() -> AsyncIterator[LocalTelegram]:
    async with LocalTelegram() as server:
        yield server


@pytest.fixture
async def start_node(tmp_path, monkeypatch, tg) -> AsyncIterator[Callable[..., object]]:
    monkeypatch.setenv("TEST_BOT_TOKEN", "123456:test-token")
    started: list[Node] = []

    async def start(**sidecar: object) -> Node:
        config = parse_config(
            {
                "node": {"name": "test", "data_dir": str(tmp_path / "data")},
                "telegram": {
                    "token_env": "TEST_BOT_TOKEN",
                    "api_base_url": tg.base_url,
                    "allowed_chats": [GROUP],
                    "admins": [USER],
                    "viewers": [VIEWER],
                },
                "sidecar": {"port": free_port(), **sidecar},
                "machines": [
                    {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}
                ],
            }
        )
        running = Node(LoadedConfig(config, None))
        await running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


@pytest.fixture
async def node(start_node) -> Node:
    return await start_node()


async def say(tg: LocalTelegram, chat: int, user: int, text: str, wait: float = 5.0) -> list[Sent]:
    after = tg.sent[-1].seq if tg.sent else 0
    await tg.inject_message(chat, user, text, username=f"user{user}")
    return await tg.wait_sent(after, wait, chat_id=chat)


@pytest.mark.parametrize("user", [USER, VIEWER], ids=["admin", "viewer"])
async def test_web_in_a_private_chat_answers_a_link_that_signs_in_on_the_sidecar(node, tg, user):
    (reply,) = await say(tg, user, user, "/web")
    match = re.search(r"(http://\S+/login/[\w-]+)", reply.text)
    assert match, reply.text
    link = match.group(1)
    assert link.startswith(node.sidecar.url) and "10 minutes" in reply.text
    async with httpx.AsyncClient(timeout=10) as browser:
        landed = await browser.get(link, follow_redirects=True)
        assert landed.status_code == 200 and f"<b>{user}</b>" in landed.text
        assert [r.status_code for r in landed.history] == [303]
        again = await browser.get(link)
        assert again.status_code == 400 and INVALID in again.text


async def test_web_in_a_group_is_refused_and_makes_no_link(node, tg):
    (reply,) = await say(tg, GROUP, USER, "/web")
    assert "private chat" in reply.text and "/login/" not in reply.text
    assert await count(node.db, web_logins) == 0


async def test_web_uses_the_public_url_when_one_is_configured(start_node, tg):
    await start_node(public_url="https://ops.example.org/")
    (reply,) = await say(tg, USER, USER, "/web")
    assert re.search(r"https://ops\.example\.org/login/[\w-]{40,}", reply.text), reply.text


async def test_a_user_no_longer_admin_viewer_or_member_is_signed_out_at_the_next_start(
    start_node, caplog
):
    first = await start_node()
    auth = WebAuth(first.db)
    held = {
        user: (
            await auth.redeem_login(await auth.create_login(user)),
            await auth.create_token(user, f"script-{user}"),
        )
        for user in (VIEWER, STRANGER)  # STRANGER: a viewer once, no more in the config
    }
    await first.stop()
    with caplog.at_level("INFO", logger="clawops"):
        again = await start_node()
    auth = WebAuth(again.db)
    for user, (session, token) in held.items():
        assert session is not None
        kept = user == VIEWER
        assert (await auth.session_user(session) == user) is kept
        assert (await auth.token_user(token) == user) is kept
    assert "web: revoked 1 session(s), 0 login link(s), 1 API token(s)" in caplog.text


# -- clawops tokens -------------------------------------------------------------------------


async def test_the_cli_creates_lists_and_revokes_tokens(tmp_path: Path, db: Database, db_url):
    config = write_config(tmp_path / "clawops.toml", db_url, free_port())
    run = lambda *args: asyncio.to_thread(clawops, *args, "--config", str(config))  # noqa: E731
    created = await run("tokens", "create", "deploy", "--user", str(USER))
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert re.fullmatch(r"[\w-]{43}", secret) and "shown only now" in created.stderr
    auth = WebAuth(db)
    assert await auth.token_user(secret) == USER
    listed = await run("tokens", "list")
    assert listed.returncode == 0 and "deploy" in listed.stdout and "active" in listed.stdout
    assert secret not in listed.stdout
    duplicate = await run("tokens", "create", "deploy", "--user", "5")
    assert duplicate.returncode == 1 and "exists" in duplicate.stderr
    revoked = await run("tokens", "revoke", "deploy")
    assert revoked.returncode == 0 and "revoked API token 'deploy'" in revoked.stdout
    assert await auth.token_user(secret) is None
    gone = await run("tokens", "revoke", "deploy")
    assert gone.returncode == 1 and "no active API token" in gone.stderr
