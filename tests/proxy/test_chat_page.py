"""The web chat page: its HTTP behaviour, and the page itself in headless chromium talking to a
stand-in gateway (tests/auxil/fakegateway.py) through the real claw proxy."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from sqlalchemy import insert, update

from core.claws import Claws
from core.config import OrgConfig
from core.crypto import Keyring, generate_key
from core.db import Database
from core.orgs import sync_orgs
from core.provision import token_context
from core.statuslog import StatusLog
from core.tables import claws, mac_minis, utcnow
from core.websessions import WebAuth
from proxy.sidecar import Sidecar, SidecarState, create_app
from tests.auxil import cdp, fakegateway
from tests.auxil.net import free_port

USER, OUTSIDER = 100, 300
GATEWAY_TOKEN = "gateway-token-" + "x" * 40
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
STATIC = ROOT / "proxy" / "static"
CHAT = "/claws/acme/bob"


@dataclass
class Running:
    url: str
    auth: WebAuth
    client: httpx.AsyncClient
    state: SidecarState


async def add_claw(db: Database, keyring: Keyring, gateway_port: int) -> None:
    """Claw acme/bob, active, its gateway on 127.0.0.1:gateway_port; acme has USER only."""
    await sync_orgs(db, [OrgConfig(slug="acme", name="Acme", members=[USER]),
                         OrgConfig(slug="beta", name="Beta", members=[OUTSIDER])])  # fmt: skip
    now = utcnow()
    async with db.begin() as conn:
        mini = await conn.execute(
            insert(mac_minis).values(
                hostname="mini-1", agent_url="http://127.0.0.1:9", gateway_host="127.0.0.1",
                port_low=gateway_port, port_high=gateway_port, capacity=4, status="online",
                created_at=now,
            )
        )  # fmt: skip
        await conn.execute(
            insert(claws).values(
                org="acme", slug="bob", status="active", mini_id=mini.inserted_primary_key[0],
                mini_port=gateway_port, created_at=now, updated_at=now,
                gateway_token_sealed=keyring.seal(GATEWAY_TOKEN, token_context("acme", "bob")),
            )
        )  # fmt: skip


class Gateway:
    """The stand-in gateway in this process: the handshake and a streamed echo chat."""

    def __init__(self) -> None:
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = fakegateway.make_app(GATEWAY_TOKEN, stream_delay=0.25)
        # Stopping drops its sockets at once, as a gateway that dies would.
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gateway = Gateway()
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
async def running(db: Database, gateway: Gateway, tmp_path: Path) -> AsyncIterator[Running]:
    keyring = Keyring.parse(generate_key())
    await add_claw(db, keyring, gateway.port)
    log = StatusLog(db, "test-node")
    await log.start()
    state = SidecarState(
        statuslog=log, node="test-node", token="sidecar-secret", data_dir=tmp_path / "data",
        claws=lambda: Claws(db, keyring), ws_recheck=0.5,
    )  # fmt: skip
    sidecar = Sidecar(create_app(state), "127.0.0.1", 0)
    await sidecar.start()
    state.public_url = sidecar.url  # the Origin the proxy admits
    client = httpx.AsyncClient(base_url=sidecar.url, timeout=10)
    yield Running(sidecar.url, WebAuth(db), client, state)
    await client.aclose()
    await sidecar.stop()
    await log.stop()


async def set_status(db: Database, status: str) -> None:
    async with db.begin() as conn:
        await conn.execute(update(claws).where(claws.c.slug == "bob").values(status=status))


async def sign_in(running: Running, user: int = USER) -> None:
    secret = await running.auth.create_login(user)
    assert (await running.client.get(f"/login/{secret}")).status_code == 303


# -- HTTP ------------------------------------------------------------------------------------


async def test_the_chat_page_sends_a_visitor_without_a_session_to_sign_in(running):
    answer = await running.client.get(CHAT)
    assert answer.status_code == 303 and answer.headers["location"] == "/claws"
    landing = await running.client.get("/claws")
    assert landing.status_code == 401 and "/web" in landing.text


async def test_a_member_gets_the_page_with_a_strict_content_security_policy(running):
    await sign_in(running)
    answer = await running.client.get(CHAT)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert 'data-org="acme" data-claw="bob"' in answer.text
    assert "<title>acme/bob" in answer.text
    policy = dict(
        part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    host = running.url.removeprefix("http://")
    assert policy["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert policy["frame-ancestors"] == "'none'"
    assert answer.headers["cache-control"] == "no-store"
    for name, kind in (("chat.js", "text/javascript"), ("chat.css", "text/css")):
        asset = await running.client.get(f"/static/chat/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert (await running.client.get("/static/chat/chat.html")).status_code == 404


async def test_a_user_outside_the_org_gets_a_403_and_an_unknown_claw_a_404(running):
    await sign_in(running, OUTSIDER)
    other = await running.client.get(CHAT)
    assert other.status_code == 403 and "not a member" in other.text
    assert "data-org" not in other.text
    await sign_in(running, USER)
    ghost = await running.client.get("/claws/acme/ghost")
    assert ghost.status_code == 404 and "no claw acme/ghost" in ghost.text


async def test_the_check_route_tells_why_the_socket_would_be_refused(running, db):
    check = f"{CHAT}/check"
    assert (await running.client.get(check)).status_code == 401
    await sign_in(running, OUTSIDER)
    assert (await running.client.get(check)).json() == {"error": "you are not a member of acme"}
    await sign_in(running)
    assert (await running.client.get(check)).json() == {"ok": True, "status": "active"}
    assert (await running.client.get("/claws/acme/ghost/check")).status_code == 404
    await set_status(db, "provisioning")
    refused = await running.client.get(check)
    assert refused.status_code == 409
    assert refused.json() == {"error": "claw acme/bob is provisioning, not active"}


async def test_the_claws_list_links_only_the_claws_of_the_users_orgs(running, db):
    now = utcnow()
    async with db.begin() as conn:
        await conn.execute(
            insert(claws).values(org="beta", slug="secret", status="active",
                                 created_at=now, updated_at=now)
        )  # fmt: skip
    await sign_in(running)
    page = await running.client.get("/claws")
    assert page.status_code == 200 and "Telegram user <b>100</b>" in page.text
    assert '<a href="/claws/acme/bob">acme/bob</a> · active' in page.text
    assert "beta" not in page.text
    await sign_in(running, OUTSIDER)
    assert '<a href="/claws/beta/secret">' in (await running.client.get("/claws")).text


async def test_the_page_and_its_assets_need_no_sidecar_token(running):
    assert running.state.token == "sidecar-secret"
    assert (await running.client.get(CHAT)).status_code == 303  # not a 401 from the token
    assert (await running.client.get("/static/chat/chat.js")).status_code == 200
    assert (await running.client.get("/api/log")).status_code == 401


def test_the_page_loads_nothing_from_elsewhere_and_writes_data_only_as_text():
    sources = {p.name: p.read_text() for p in STATIC.iterdir()}
    assert set(sources) >= {"chat.html", "chat.js", "chat.css"}
    for name, text in sources.items():
        assert not re.search(r"(?<![\w.])(https?:)?//[\w-]+\.[\w.-]+", text), name
        assert "@import" not in text and "url(" not in text, name
    script = sources["chat.js"]
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "eval(" not in script and "document.write" not in script
    page = sources["chat.html"]
    assert "<script>" not in page and "style=" not in page and " on" not in page.split("<body")[1]


# -- the page in headless chromium ------------------------------------------------------------

chromium = pytest.mark.skipif(
    cdp.find_chromium() is None,
    reason="no chromium on PATH: scripts/setup installs Debian's chromium when run as root",
)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[cdp.Page]:
    async with cdp.launch(tmp_path / "chromium") as page:
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2,
            mobile=True,
        )  # fmt: skip
        yield page


async def open_chat(running: Running, page: cdp.Page) -> None:
    """Sign in through a /web-style link in the browser, then open the chat."""
    secret = await running.auth.create_login(USER)
    await page.navigate(f"{running.url}/login/{secret}")
    assert await page.evaluate("location.pathname") == "/claws"
    assert "acme/bob" in await page.evaluate("document.body.innerText")
    await page.evaluate("document.querySelector('a[href=\"/claws/acme/bob\"]').click()")
    await page.wait_for("location.pathname === '/claws/acme/bob'")
    await page.wait_for("document.readyState === 'complete'")
    await page.wait_for("document.getElementById('status').textContent.startsWith('connected')")


async def type_and_send(page: cdp.Page, text: str) -> None:
    await page.wait_for("!document.getElementById('send').disabled")
    await page.evaluate(
        f"document.getElementById('input').value = {text!r}; "
        "document.getElementById('send').click()"
    )


def bubbles(kind: str) -> str:
    return f"[...document.querySelectorAll('#log .{kind}')].map(b => b.textContent)"


def keep(shot: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)


def csp_violations(page: cdp.Page) -> list[str]:
    entries = [e["params"]["entry"]["text"] for e in page.events if e["method"] == "Log.entryAdded"]
    return [text for text in entries if "Content Security Policy" in text]


@chromium
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_in_chromium_a_signed_in_user_sends_a_message_and_sees_the_reply_stream(
    running, browser, tmp_path
):
    await open_chat(running, browser)
    assert await browser.evaluate(bubbles("notice")) == ["No messages yet. Say hello."]
    await type_and_send(browser, "hello <b>claw</b> & co")
    assert await browser.evaluate(bubbles("notice")) == []  # the hint goes with the first message
    # The reply streams: a partial text shows while the bubble is still marked streaming.
    partial = await browser.wait_for(
        "(() => { const b = document.querySelector('#log .assistant.streaming');"
        " return b && b.textContent.length > 0 && b.textContent; })()"
    )
    full = "You said: hello <b>claw</b> & co"
    assert full.startswith(partial) and len(partial) < len(full)
    assert await browser.evaluate("!document.getElementById('stop').hidden")
    keep(await browser.screenshot(tmp_path / "chat-page-streaming.png"))
    await browser.wait_for("document.querySelector('#log .assistant[data-done]')")
    assert await browser.evaluate(bubbles("user")) == ["hello <b>claw</b> & co"]
    assert await browser.evaluate(bubbles("assistant")) == [full]
    assert await browser.evaluate("document.querySelectorAll('#log b').length") == 0  # as text
    assert await browser.evaluate("document.getElementById('stop').hidden")
    shot = await browser.screenshot(tmp_path / "chat-page.png")
    keep(shot)
    assert shot.stat().st_size > 5000
    # A reload shows the same conversation from chat.history.
    await browser.navigate(f"{running.url}{CHAT}")
    await browser.wait_for(f"{bubbles('assistant')}.length === 1")
    assert await browser.evaluate(bubbles("user")) == ["hello <b>claw</b> & co"]
    assert csp_violations(browser) == []


@chromium
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_in_chromium_stop_aborts_the_reply_and_a_failed_reply_shows_its_error(
    running, browser, tmp_path
):
    await open_chat(running, browser)
    await type_and_send(browser, "one two three four five six seven eight nine ten")
    await browser.wait_for("document.querySelector('#log .assistant.streaming')?.textContent")
    await browser.evaluate("document.getElementById('stop').click()")
    await browser.wait_for("document.querySelector('#log .assistant[data-done] .note')")
    stopped = await browser.evaluate("document.querySelector('#log .assistant').textContent")
    assert stopped.endswith("stopped") and "ten" not in stopped
    await type_and_send(browser, "/fail please")
    await browser.wait_for(
        "document.querySelectorAll('#log .assistant.error[data-done]').length === 1"
    )
    error = await browser.evaluate("document.querySelector('#log .assistant.error').textContent")
    assert error.endswith("Error: the model failed <on purpose>")
    keep(await browser.screenshot(tmp_path / "chat-page-stop-and-error.png"))


@chromium
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_in_chromium_the_page_reconnects_after_the_gateway_drops_and_stops_when_signed_out(
    running, browser, gateway, tmp_path
):
    await open_chat(running, browser)
    status = "document.getElementById('status').textContent"
    await gateway.stop()  # the proxy closes the page's socket: 4504, then 4502 while it is down
    await browser.wait_for(f"{status}.includes('reconnecting')", timeout=5)
    shown = await browser.evaluate(status)
    assert "gateway" in shown, shown
    await gateway.start()
    await browser.wait_for(f"{status}.startsWith('connected')", timeout=20)
    await type_and_send(browser, "after the drop")
    await browser.wait_for("document.querySelector('#log .assistant[data-done]')")
    assert await browser.evaluate(bubbles("assistant")) == ["You said: after the drop"]
    # Signing out elsewhere ends the session: the page says so and does not retry.
    cookie = next(c for c in (await browser.send("Network.getAllCookies"))["cookies"])
    await running.auth.revoke_session(cookie["value"])
    await browser.wait_for(f"{status}.includes('session ended')", timeout=10)
    keep(await browser.screenshot(tmp_path / "chat-page-signed-out.png"))
    await asyncio.sleep(1.5)
    assert "session ended" in await browser.evaluate(status)
    assert await browser.evaluate("document.querySelectorAll('#log button').length") == 0
    assert await browser.evaluate("document.getElementById('send').disabled")


@chromium
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_in_chromium_a_refused_socket_shows_the_reason_and_retries_until_the_claw_is_up(
    running, browser, db
):
    await set_status(db, "provisioning")
    secret = await running.auth.create_login(USER)
    await browser.navigate(f"{running.url}/login/{secret}")
    await browser.navigate(f"{running.url}{CHAT}")
    status = "document.getElementById('status').textContent"
    shown = await browser.wait_for(f"{status}.includes('reconnecting in') && {status}")
    assert shown.startswith("claw acme/bob is provisioning, not active · reconnecting in")
    await set_status(db, "active")
    await browser.wait_for(f"{status}.startsWith('connected')", timeout=10)


async def test_the_claws_list_has_web_chat_and_gateway_links_escaped_and_hides_deleted(running, db):
    now = utcnow()
    async with db.begin() as conn:
        await conn.execute(
            update(claws).where(claws.c.slug == "bob").values(tunnel_hostname="claw-1-m1.ex.com")
        )
        await conn.execute(
            insert(claws).values(
                org="acme",
                slug="gone",
                status="deleted",
                deleted_at=now,
                created_at=now,
                updated_at=now,
                tunnel_hostname='x"><script>alert(1)</script>',
            )
        )
    await sign_in(running)
    page = (await running.client.get("/claws")).text
    assert '<a href="/claws/acme/bob">Web chat</a>' in page
    assert '<a href="https://claw-1-m1.ex.com" rel="noopener noreferrer">OpenClaw Gateway</a>' in (
        page
    )
    assert "gone" not in page and "<script>" not in page
    async with db.begin() as conn:  # without a tunnel: no gateway link
        await conn.execute(update(claws).values(tunnel_hostname=None))
        await conn.execute(
            update(claws)
            .where(claws.c.slug == "gone")
            .values(status="active", deleted_at=None, tunnel_hostname='a"b<c')
        )
    page = (await running.client.get("/claws")).text
    assert "OpenClaw Gateway" in page and 'href="https://a&quot;b&lt;c"' in page
    assert page.count("OpenClaw Gateway") == 1
