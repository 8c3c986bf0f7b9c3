"""The claw proxy over real sockets: a real sidecar, real WebSocket clients, gateways on loopback
(an in-test gateway that checks the device signature, the stand-in process, and once the real
OpenClaw gateway with a streaming fake model)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import insert, update

from core.claws import Claws
from core.config import OrgConfig
from core.crypto import Keyring, generate_key
from core.db import Database
from core.minis import Minis
from core.orgs import sync_orgs
from core.provision import token_context
from core.statuslog import StatusLog
from core.tables import claws, mac_minis, utcnow, web_sessions
from core.websessions import WebAuth
from proxy.device import FILENAME, load_or_create
from proxy.sidecar import Sidecar, SidecarState, create_app
from proxy.web import COOKIE
from proxy.ws_proxy import LINKS
from tests.agent.conftest import TOKEN_ENV, Agent, claw_token, start_agent  # noqa: F401
from tests.agent.test_device_pairing import (
    REAL_GATEWAY,
    Forwarder,
    approve,
)
from tests.agent.test_real_gateway import NODE, OPENCLAW, clean_openclaw_tmp  # noqa: F401
from tests.auxil.fakegateway import check_connect
from tests.auxil.fakemodel import FakeModel
from tests.auxil.net import free_port

USER, OUTSIDER = 100, 300
FAKE_GATEWAY = Path(__file__).resolve().parents[1] / "auxil" / "fakegateway.py"
TOKEN = "gw-" + "s3cr3t" * 8


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def device_signature_ok(params: dict[str, Any], nonce: str, ts: int) -> bool:
    """Checks the proof as OPENCLAW.md describes it, independently of the proxy's code."""
    device, client = params["device"], params["client"]
    raw = b64url_decode(device["publicKey"])
    if device["id"] != hashlib.sha256(raw).hexdigest() or device["nonce"] != nonce:
        return False
    text = "|".join([
        "v3", device["id"], client["id"], client["mode"], params["role"],
        ",".join(params["scopes"]), str(ts), params["auth"]["token"], nonce,
        client["platform"].lower(), "",
    ])  # fmt: skip
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(
            b64url_decode(device["signature"]), text.encode()
        )
    except Exception:
        return False
    return device["signedAt"] == ts


@dataclass
class Gateway:
    """A protocol-4 gateway in the test's loop: handshake with device check, chat echo."""

    token: str = TOKEN
    unavailable_until: float = 0.0
    flood: bool = False
    connects: list[dict[str, Any]] = field(default_factory=list)
    signatures: list[bool] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    flood_sent: int = 0
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.socket)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        nonce, ts = uuid.uuid4().hex, int(time.time() * 1000)
        challenge = {"nonce": nonce, "ts": ts}
        await ws.send_json({"type": "event", "event": "connect.challenge", "payload": challenge})
        frame = json.loads((await ws.receive(timeout=15)).data)
        self.connects.append(frame["params"])
        if time.monotonic() < self.unavailable_until:
            await ws.send_json({"type": "res", "id": frame["id"], "ok": False, "error": {
                "code": "UNAVAILABLE", "message": "starting", "retryable": True,
                "retryAfterMs": 100}})  # fmt: skip
            await ws.close(code=1013)
            return ws
        bad, code = check_connect(frame, self.token)
        if bad is not None:
            await ws.send_json(bad)
            await ws.close(code=code)
            return ws
        params = frame["params"]
        signed = "device" in params and device_signature_ok(params, nonce, ts)
        self.signatures.append(signed)
        scopes = params["scopes"] if signed else []
        await ws.send_json({"type": "res", "id": frame["id"], "ok": True, "payload": {
            "type": "hello-ok", "protocol": 4, "server": {"version": "test", "connId": "c1"},
            "features": {"methods": ["chat.send"], "events": ["chat"]},
            "snapshot": {"sessionDefaults": {"mainSessionKey": "agent:main:main"}},
            "auth": {"role": "operator", "scopes": scopes},
            "policy": {"maxPayload": 1 << 20, "maxBufferedBytes": 1 << 22,
                       "tickIntervalMs": 30000}}})  # fmt: skip
        if self.flood:
            blob = "x" * 65536
            drain = asyncio.create_task(ws.receive())  # answers the proxy's close
            try:
                while not ws.closed and not drain.done():
                    frame_text = json.dumps({"type": "event", "event": "agent", "payload": blob})
                    await ws.send_str(frame_text)
                    self.flood_sent += 1
            finally:
                drain.cancel()
            return ws
        async for msg in ws:
            request_frame = json.loads(msg.data)
            self.received.append(request_frame)
            await self.answer(ws, request_frame)
        return ws

    async def answer(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        rid, params = frame.get("id"), frame.get("params") or {}
        if frame.get("method") != "chat.send":
            await ws.send_json({"type": "res", "id": rid, "ok": True, "payload": {"messages": []}})
            return
        run = uuid.uuid4().hex
        await ws.send_json({"type": "res", "id": rid, "ok": True,
                            "payload": {"runId": run, "status": "started"}})  # fmt: skip
        text, so_far = f"echo: {params['message']}", ""
        base = {"runId": run, "sessionKey": params["sessionKey"]}
        for seq, word in enumerate(text.split(" ")):
            so_far = f"{so_far} {word}".strip()
            await ws.send_json(
                {
                    "type": "event",
                    "event": "chat",
                    "payload": {
                        **base,
                        "seq": seq,
                        "state": "delta",
                        "deltaText": word,
                        "message": {
                            "role": "assistant",
                            "content": [{"type": "text", "text": so_far}],
                        },
                    },
                }
            )
        await ws.send_json({"type": "event", "event": "chat", "payload": {
            **base, "seq": 99, "state": "final", "stopReason": "stop"}})  # fmt: skip


@dataclass
class World:
    url: str
    sidecar: Sidecar
    state: SidecarState
    auth: WebAuth
    db: Database
    session: aiohttp.ClientSession
    cookie: str
    data_dir: Path

    async def open(self, path: str = "/api/ws/claws/acme/support", *, cookie: str | None = None,
                   origin: str | None = "", headers: dict[str, str] | None = None,
                   ) -> aiohttp.ClientWebSocketResponse:  # fmt: skip
        sent = dict(headers or {})
        if origin is not None:
            sent["Origin"] = origin or self.url
        value = self.cookie if cookie is None else cookie
        if value:
            sent["Cookie"] = f"{COOKIE}={value}"
        return await self.session.ws_connect(self.url + path, headers=sent)

    async def refused(self, path: str = "/api/ws/claws/acme/support", **kw: Any) -> tuple[int, str]:
        try:
            ws = await self.open(path, **kw)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, ""
        await ws.close()
        raise AssertionError("the upgrade was not refused")


async def set_claw(db: Database, slug: str, **values: Any) -> None:
    async with db.begin() as conn:
        await conn.execute(update(claws).where(claws.c.slug == slug).values(**values))


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}")
    await database.upgrade()
    yield database
    await database.close()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    running = Gateway()
    await running.start()
    yield running
    await running.stop()


WorldMaker = Callable[..., Awaitable[World]]


@pytest.fixture
async def make_world(sqlite_db: Database, tmp_path: Path) -> AsyncIterator[WorldMaker]:
    made: list[tuple[Sidecar, StatusLog, aiohttp.ClientSession]] = []

    async def make(gateway_port: int, token: str = TOKEN, **state_fields: Any) -> World:
        db = sqlite_db
        keyring = Keyring.parse(generate_key())
        await sync_orgs(db, [OrgConfig(slug="acme", name="Acme", members=[USER]),
                             OrgConfig(slug="beta", name="Beta", members=[OUTSIDER])])  # fmt: skip
        mini = await Minis(db).add(
            "mini-1", "http://127.0.0.1:9", ports="3000-3999", capacity=4,
            agent_token_env="X", gateway_host="127.0.0.1",
        )  # fmt: skip
        now = utcnow()
        async with db.begin() as conn:
            for slug, status in (("support", "active"), ("draft", "provisioning")):
                await conn.execute(insert(claws).values(
                    org="acme", slug=slug, status=status, mini_id=mini.id,
                    mini_port=gateway_port if slug == "support" else gateway_port + 1,
                    gateway_token_sealed=keyring.seal(token, token_context("acme", slug)),
                    steps="[]", error="", created_at=now, updated_at=now))  # fmt: skip
        log = StatusLog(db, "test-node")
        await log.start()
        data_dir = tmp_path / "data"
        state = SidecarState(statuslog=log, node="test-node", token="sidecar-only-token",
                             claws=lambda: Claws(db, keyring), data_dir=data_dir,
                             **state_fields)  # fmt: skip
        sidecar = Sidecar(create_app(state), "127.0.0.1", 0)
        await sidecar.start()
        auth = WebAuth(db)
        cookie = await auth.redeem_login(await auth.create_login(USER))
        assert cookie
        session = aiohttp.ClientSession()
        made.append((sidecar, log, session))
        return World(sidecar.url, sidecar, state, auth, db, session, cookie, data_dir)

    yield make
    for sidecar, log, session in made:
        await session.close()
        await sidecar.stop()
        await log.stop()


async def frames_until(ws: aiohttp.ClientWebSocketResponse, done: Callable[[dict[str, Any]], bool],
                       seen: list[str], timeout: float = 10.0) -> dict[str, Any]:  # fmt: skip
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT, (msg.type, ws.close_code, msg.extra)
            seen.append(msg.data)
            frame = json.loads(msg.data)
            if done(frame):
                return frame


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> tuple[int, str]:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return int(ws.close_code or 0), str(msg.extra or "")


async def ready(ws: aiohttp.ClientWebSocketResponse, seen: list[str]) -> dict[str, Any]:
    return await frames_until(ws, lambda f: f.get("event") == "proxy.ready", seen)


async def test_a_member_chats_through_the_proxy_with_a_signed_device_and_never_sees_the_token(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    world = await make_world(gateway.port)
    seen: list[str] = []
    ws = await world.open()
    hello = await ready(ws, seen)
    assert hello["payload"] == {
        "claw": "acme/support", "sessionKey": "agent:main:main",
        "scopes": ["operator.read", "operator.write"],
        "server": {"version": "test", "connId": "c1"},
    }  # fmt: skip
    await ws.send_str(
        json.dumps(
            {
                "type": "req",
                "id": "r1",
                "method": "chat.send",
                "params": {
                    "sessionKey": "agent:main:main",
                    "message": "hello there",
                    "idempotencyKey": "k1",
                },
            }
        )
    )
    final = await frames_until(ws, lambda f: f.get("payload", {}).get("state") == "final", seen)
    await ws.close()
    frames = [json.loads(s) for s in seen]
    assert frames[1] == {
        "type": "res",
        "id": "r1",
        "ok": True,
        "payload": {"runId": final["payload"]["runId"], "status": "started"},
    }
    deltas = [f["payload"]["deltaText"] for f in frames if f["payload"].get("state") == "delta"]
    assert " ".join(deltas) == "echo: hello there"
    # The gateway got the browser's request unchanged and a connect with a valid device proof.
    assert gateway.received[0]["params"]["message"] == "hello there"
    assert gateway.signatures == [True]
    assert gateway.connects[0]["client"] == {"id": "gateway-client", "version": "0.1.0",
                                             "platform": gateway.connects[0]["client"]["platform"],
                                             "mode": "backend"}  # fmt: skip
    # Nothing the browser received carries the token or the device key.
    key_pem = (world.data_dir / FILENAME).read_text()
    secret_lines = [line for line in key_pem.splitlines() if "-----" not in line]
    for text in seen:
        assert TOKEN not in text and not any(line in text for line in secret_lines)
        assert "signature" not in text and "device" not in text


async def test_the_device_key_is_private_and_stable_across_restarts(tmp_path: Path) -> None:
    first = load_or_create(tmp_path / "data")
    again = load_or_create(tmp_path / "data")
    assert first.device_id == again.device_id and len(first.device_id) == 64
    mode = stat.S_IMODE((tmp_path / "data" / FILENAME).stat().st_mode)
    assert mode == 0o600


async def test_every_refusal_before_the_upgrade_is_plain_http_with_a_reason(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    world = await make_world(gateway.port)
    expired = await world.auth.redeem_login(await world.auth.create_login(USER))
    past = utcnow() - timedelta(days=1)
    async with world.db.begin() as conn:
        await conn.execute(
            update(web_sessions).where(web_sessions.c.id == 2).values(expires_at=past)
        )
    revoked = await world.auth.create_token(USER, "laptop")
    await world.auth.revoke_token("laptop")
    outsider = await world.auth.redeem_login(await world.auth.create_login(OUTSIDER))
    good_token = await world.auth.create_token(USER, "script")
    member = {"Cookie": f"{COOKIE}={world.cookie}"}
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("acme/support", {}, 401, "not signed in"),
        ("acme/support", {"Cookie": f"{COOKIE}={expired}"}, 401, "not signed in"),
        ("acme/support", {"Authorization": f"Bearer {revoked}"}, 401, "not signed in"),
        (
            "acme/support",
            {"Cookie": f"{COOKIE}={outsider}", "Origin": world.url},
            403,
            "not a member of acme",
        ),
        ("acme/support", {**member, "Origin": "https://evil.example"}, 403, "bad Origin"),
        ("acme/support", {**member, "Origin": "null"}, 403, "bad Origin"),
        ("acme/support", {**member, "Origin": ""}, 403, "bad Origin"),
        ("acme/support", member, 403, "needs an API token"),
        ("nope/support", {"Authorization": f"Bearer {good_token}"}, 404, "no org nope"),
        ("acme/ghost", {"Authorization": f"Bearer {good_token}"}, 404, "no claw acme/ghost"),
        ("acme/draft", {"Authorization": f"Bearer {good_token}"}, 409, "is provisioning"),
    ]
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as client:
        for path, headers, status, reason in cases:
            answer = await client.get(f"/api/ws/claws/{path}", headers=headers)
            assert answer.status_code == status, (path, headers, answer.text)
            assert reason in answer.json()["error"], (path, answer.text)
            assert TOKEN not in answer.text
    # A real upgrade attempt is refused the same way, and a script with its token gets in.
    assert await world.refused(cookie="-", origin=None) == (401, "")
    assert await world.refused(origin="http://127.0.0.1:1") == (403, "")
    script_auth = {"Authorization": f"Bearer {good_token}"}
    ws = await world.open(cookie="-", origin=None, headers=script_auth)
    assert (await ready(ws, []))["payload"]["claw"] == "acme/support"
    await ws.close()
    assert gateway.connects and len(gateway.connects) == 1  # only the admitted one went upstream


async def test_a_user_over_the_connection_limit_is_refused_with_429(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    world = await make_world(gateway.port, ws_max_per_user=2)
    held = [await world.open() for _ in range(2)]
    for ws in held:
        await ready(ws, [])
    assert await world.refused() == (429, "")
    await held[0].close()
    await asyncio.sleep(0.2)
    again = await world.open()
    await ready(again, [])
    for ws in (again, held[1]):
        await ws.close()


async def test_concurrent_upgrades_over_the_limit_are_refused_all_but_the_limit(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    world = await make_world(gateway.port, ws_max_per_user=2)
    attempts = await asyncio.gather(*(world.open() for _ in range(12)), return_exceptions=True)
    opened = [a for a in attempts if isinstance(a, aiohttp.ClientWebSocketResponse)]
    refused = [a.status for a in attempts if isinstance(a, aiohttp.WSServerHandshakeError)]
    try:
        assert (len(opened), refused) == (2, [429] * 10), attempts
        for ws in opened:
            await ready(ws, [])
    finally:
        for ws in opened:
            await ws.close()


async def test_a_member_removed_from_the_org_while_connected_is_closed_with_4403(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    world = await make_world(gateway.port, ws_recheck=0.2)
    ws = await world.open()
    await ready(ws, [])
    # The session stays good; only the membership goes (as a restart with a new config does).
    await sync_orgs(world.db, [OrgConfig(slug="acme", name="Acme", members=[OUTSIDER])])
    assert await closed_with(ws) == (4403, "no longer a member of acme")
    assert await world.auth.session_user(world.cookie) == USER


@pytest.fixture
def stand_in_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The stand-in gateway as a real process (tests/auxil/fakegateway.py), to kill -9."""
    port = free_port()
    env = {**os.environ, "OPENCLAW_GATEWAY_TOKEN": TOKEN, "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, str(FAKE_GATEWAY), "--port", str(port)], env=env)
    yield proc, port
    proc.kill()
    proc.wait()


async def test_an_upstream_killed_mid_chat_closes_the_browser_within_a_second_with_4504(
    make_world: WorldMaker, stand_in_process: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = stand_in_process
    world = await make_world(port)
    async with asyncio.timeout(15):
        while True:  # the process starts listening after a moment; retries are the proxy's
            ws = await world.open()
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                break
            await asyncio.sleep(0.2)
    assert json.loads(msg.data)["event"] == "proxy.ready"
    await ws.send_str(json.dumps({"type": "req", "id": "1", "method": "chat.history",
                                  "params": {"sessionKey": "agent:main:main"}}))  # fmt: skip
    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    code, reason = await closed_with(ws)
    assert (code, reason) == (4504, "gateway closed")
    assert time.monotonic() - killed < 1.0


async def test_a_browser_that_stops_reading_pauses_the_upstream_instead_of_buffering(
    make_world: WorldMaker,
) -> None:
    flooder = Gateway(flood=True)
    await flooder.start()
    try:
        world = await make_world(flooder.port)
        ws = await world.open()
        await ready(ws, [])
        # The browser reads nothing more; the gateway keeps trying to send 64 KiB frames.
        await asyncio.sleep(1.5)
        stalled_at = flooder.flood_sent
        await asyncio.sleep(1.5)
        assert flooder.flood_sent == stalled_at, "the upstream kept sending: nothing pushed back"
        # Everything in flight (socket buffers both sides, aiohttp queues) stays small.
        assert stalled_at * 65536 < 64 * 1024 * 1024, stalled_at
        (link,) = world.sidecar.app[LINKS].active
        assert link.upstream is not None and link.upstream._reader._size < 1 << 20  # type: ignore[attr-defined]
        # Reading again resumes the flow.
        for _ in range(stalled_at + 50):
            await ws.receive()
        assert flooder.flood_sent > stalled_at
        await ws.close()
    finally:
        await flooder.stop()


@pytest.mark.parametrize(
    "frame, reason",
    [
        ('{"type":"req","id":"x","method":"connect","params":{}}', "connect is the proxy's"),
        ("not json", "not JSON"),
        (b"\x00\x01", "binary"),
    ],
)
async def test_a_bad_frame_from_the_browser_closes_with_4400(
    make_world: WorldMaker, gateway: Gateway, frame: str | bytes, reason: str
) -> None:
    world = await make_world(gateway.port)
    ws = await world.open()
    await ready(ws, [])
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    else:
        await ws.send_str(frame)
    code, text = await closed_with(ws)
    assert code == 4400 and reason in text
    assert gateway.received == []


async def test_an_idle_socket_is_closed_with_4408(make_world: WorldMaker, gateway: Gateway) -> None:
    world = await make_world(gateway.port, ws_idle_timeout=0.6)
    ws = await world.open()
    await ready(ws, [])
    started = time.monotonic()
    assert await closed_with(ws) == (4408, "idle timeout")
    assert 0.5 < time.monotonic() - started < 3


async def test_a_session_revoked_while_connected_closes_with_4401(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    world = await make_world(gateway.port, ws_recheck=0.2)
    ws = await world.open()
    await ready(ws, [])
    await world.auth.revoke_session(world.cookie)
    assert await closed_with(ws) == (4401, "session ended")


async def test_a_gateway_starting_up_is_retried_until_it_says_hello(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    gateway.unavailable_until = time.monotonic() + 1.0
    world = await make_world(gateway.port)
    ws = await world.open()
    assert (await ready(ws, []))["payload"]["claw"] == "acme/support"
    assert len(gateway.connects) >= 2 and gateway.signatures[-1] is True
    await ws.close()


async def test_handshake_failures_and_unreachable_gateways_close_with_their_codes(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    world = await make_world(gateway.port)
    gateway.token = "another-token"
    ws = await world.open()
    code, reason = await closed_with(ws)
    assert code == 4503 and reason.startswith("gateway handshake failed: ")
    assert "AUTH_TOKEN_MISMATCH" in reason and TOKEN not in reason
    await set_claw(world.db, "support", mini_port=free_port())
    ws = await world.open()
    assert await closed_with(ws) == (4502, "gateway unreachable")


async def test_node_shutdown_closes_browsers_with_1001(
    make_world: WorldMaker, gateway: Gateway
) -> None:
    world = await make_world(gateway.port)
    ws = await world.open()
    await ready(ws, [])
    stopping = asyncio.create_task(world.sidecar.stop())
    assert await closed_with(ws) == (1001, "node shutting down")
    await stopping


def real_gateway_toml(model_url: str) -> str:
    """The agent's [agent.gateway_config]: an OpenAI-compatible provider on loopback."""
    return (
        "[agent.gateway_config.models.providers.fake]\n"
        f'baseUrl = "{model_url}"\napiKey = "test-key"\napi = "openai-completions"\n'
        "[[agent.gateway_config.models.providers.fake.models]]\n"
        'id = "echo-1"\nname = "Echo"\ninput = ["text"]\ncontextWindow = 32000\n'
        "maxTokens = 4096\ncost = {input = 0, output = 0, cacheRead = 0, cacheWrite = 0}\n"
        "[agent.gateway_config.agents.defaults.model]\n"
        'primary = "fake/echo-1"\n'
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not (NODE.exists() and OPENCLAW.exists()),
    reason="the real OpenClaw gateway is not installed: run scripts/setup-openclaw",
)
async def test_a_message_through_the_proxy_streams_a_real_reply_from_a_real_gateway(
    make_world: WorldMaker,
    start_agent: Callable[..., Agent],  # noqa: F811
    clean_openclaw_tmp: None,  # noqa: F811
) -> None:
    model = FakeModel()
    model_url = await model.start()
    try:
        agent = start_agent(gateway_command=[str(NODE), str(OPENCLAW), "gateway", "run"],
                            extra_toml=real_gateway_toml(model_url))  # fmt: skip
        port, token = agent.free_port(), claw_token()
        created = await asyncio.to_thread(
            agent.call, "POST", "/claws", {"clawId": "real", "port": port, "token": token}
        )
        assert created.status_code == 201, created.text
        await asyncio.to_thread(agent.wait_for, "real", lambda i: i["ready"] is True, 90)
        world = await make_world(port, token=token)
        seen: list[str] = []
        ws = await world.open()
        hello = await ready(ws, seen)
        # The signed device identity kept the scopes asked for.
        assert {"operator.read", "operator.write"} <= set(hello["payload"]["scopes"])
        session_key = hello["payload"]["sessionKey"]
        await ws.send_str(json.dumps({"type": "req", "id": "s1", "method": "chat.send", "params": {
            "sessionKey": session_key, "message": "ping through the proxy",
            "idempotencyKey": uuid.uuid4().hex}}))  # fmt: skip

        def chat_end(frame: dict[str, Any]) -> bool:
            state = (frame.get("payload") or {}).get("state")
            return frame.get("event") == "chat" and state in ("final", "error", "aborted")

        final = await frames_until(ws, chat_end, seen, timeout=90)
        await ws.close()
        frames = [json.loads(text) for text in seen]
        ack = next(f for f in frames if f.get("type") == "res" and f.get("id") == "s1")
        assert ack["ok"] and ack["payload"]["status"] == "started", ack
        assert final["payload"]["state"] == "final", final
        deltas = [f for f in frames
                  if f.get("event") == "chat" and f["payload"].get("state") == "delta"]  # fmt: skip
        assert deltas, "no streamed delta events"
        streamed = json.dumps(deltas[-1]["payload"].get("message")) + json.dumps(final)
        assert "echo: " in streamed and "ping through the proxy" in streamed
        assert model.requests and model.requests[-1]["stream"] is True
        assert not any(token in text for text in seen)
    finally:
        await model.stop()


@pytest.mark.slow
@pytest.mark.skipif(
    not (NODE.exists() and OPENCLAW.exists()),
    reason="the real OpenClaw gateway is not installed: run scripts/setup-openclaw",
)
async def test_through_a_tunnel_the_proxy_has_the_agent_approve_its_device_and_then_connects(
    make_world: WorldMaker,
    start_agent: Callable[..., Agent],  # noqa: F811
    clean_openclaw_tmp: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = start_agent(gateway_command=REAL_GATEWAY)  # trusts loopback by default
    port, token = agent.free_port(), claw_token()
    tunnel = Forwarder(port)  # adds cloudflared's forwarded headers: not a direct-local peer
    try:
        world = await make_world(await tunnel.start(), token=token)
        monkeypatch.setenv(TOKEN_ENV, agent.token)
        async with world.db.begin() as conn:
            await conn.execute(update(mac_minis).values(agent_url=agent.url,
                                                        agent_token_env=TOKEN_ENV))  # fmt: skip
        claw = await Claws(world.db, None).get("acme", "support")
        body = {"clawId": claw.agent_id, "port": port, "token": token}
        created = await asyncio.to_thread(agent.call, "POST", "/claws", body)
        assert created.status_code == 201, created.text
        await asyncio.to_thread(agent.wait_for, claw.agent_id, lambda i: i["ready"] is True, 90)

        ws = await world.open()
        seen: list[str] = []
        hello = await frames_until(ws, lambda f: f.get("event") == "proxy.ready", seen, 60)
        assert {"operator.read", "operator.write"} <= set(hello["payload"]["scopes"])
        assert tunnel.forwarded == 2, "refused as not paired once, then admitted once"
        params = {"sessionKey": hello["payload"]["sessionKey"]}
        await ws.send_str(json.dumps({"type": "req", "id": "h1", "method": "chat.history",
                                      "params": params}))  # fmt: skip
        history = await frames_until(ws, lambda f: f.get("id") == "h1", seen, 20)
        assert history["ok"] is True, history
        await ws.close()
        assert not any(token in text for text in seen)

        # The node's own (stable) device is now paired on that claw: the next socket goes
        # straight through, and the agent says so.
        device = load_or_create(world.data_dir)
        assert await approve(agent, claw.agent_id, device) == (
            200, {"ok": True, "deviceId": device.device_id, "status": "paired"})  # fmt: skip
        again = await world.open()
        await frames_until(again, lambda f: f.get("event") == "proxy.ready", [], 30)
        await again.close()
        assert tunnel.forwarded == 3
    finally:
        await tunnel.stop()


async def test_a_device_the_agent_cannot_approve_closes_the_browser_with_4503_after_one_try(
    make_world: WorldMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[dict[str, Any]] = []

    async def not_paired(request: web.Request) -> web.WebSocketResponse:
        """Answers every connect as the real gateway answers an unknown device via a tunnel."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        challenge = {"nonce": uuid.uuid4().hex, "ts": int(time.time() * 1000)}
        await ws.send_json({"type": "event", "event": "connect.challenge", "payload": challenge})
        frame = json.loads((await ws.receive(timeout=15)).data)
        connects.append(frame["params"])
        await ws.send_json({"type": "res", "id": frame["id"], "ok": False, "error": {
            "code": "NOT_PAIRED", "message": "pairing required: device is not approved yet",
            "details": {"code": "PAIRING_REQUIRED", "reason": "not-paired", "requestId": "r-1",
                        "deviceId": frame["params"]["device"]["id"]}}})  # fmt: skip
        await ws.close(code=1008, message=b"pairing required")
        return ws

    app = web.Application()
    app.router.add_get("/", not_paired)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        monkeypatch.setenv("X", "agent-token-of-a-mini-whose-agent-is-down")  # the Mini's env
        world = await make_world(int(runner.addresses[0][1]))
        ws = await world.open()
        assert await closed_with(ws, timeout=20) == (
            4503, "gateway handshake failed: device not approved")  # fmt: skip
        assert len(connects) == 1, "no second handshake without an approval"
        assert connects[0]["device"]["id"] == load_or_create(world.data_dir).device_id
    finally:
        await runner.cleanup()
