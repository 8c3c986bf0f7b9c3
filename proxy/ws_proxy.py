"""The browser's WebSocket to a claw (SPEC 7): GET /api/ws/claws/{org}/{claw}.

Before the upgrade (plain HTTP refusals, JSON ``{"error"}``):

1. Authenticate (session cookie or API token): 401.
2. Origin: a browser's ``Origin`` must be the public URL's origin (or this sidecar's own
   ``http://host``); no ``Origin`` is a script, admitted only with a valid API token: 403.
3. The org exists (404) and the user is a member (403); the claw exists (404) and is active
   (409); the user holds fewer than ``ws_max_per_user`` sockets (429: the slot is counted and
   reserved in one step, with no await between, so concurrent upgrades cannot overshoot it);
   its token opens.

After it: connect upstream, handshake with the node's device identity (retrying a gateway that
answers UNAVAILABLE for up to ``HANDSHAKE_RETRY`` seconds; a device the gateway does not know
yet — ``NOT_PAIRED``, as through a tunnel, where connects are not direct-local — is approved by
the claw's agent, ``POST /claws/{id}/devices``, and the handshake tried once more), require the
scopes asked, send
``proxy.ready``, then relay frames unchanged both ways. Backpressure comes from aiohttp: a
``send_str`` to a slow side awaits its drain, so that direction stops reading from the other,
whose reader queue pauses its TCP socket — the buffering per direction stays bounded.
Every ``ws_recheck`` seconds the socket re-checks its session or token (gone: 4401) and the
user's membership of the claw's org (gone: 4403), so a user removed from the org is cut off
without waiting for the socket to end. Close codes are the contract's (4400, 4401, 4403, 4408,
4502, 4503, 4504, 1001).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp._websocket.helpers import websocket_mask

from core.claws import Claw, Claws
from core.errors import ClawopsError, InputError, StorageError
from core.minis import Minis, agent_client
from core.openclaw import (
    DEFAULT_SCOPES,
    DeviceIdentity,
    GatewayUnavailable,
    Hello,
    PairingRequired,
    handshake_on,
)
from core.orgs import is_member, org_exists
from proxy.device import load_or_create
from proxy.sidecar import STATE, json_error
from proxy.web import AUTH, COOKIE, authenticate

log = logging.getLogger(__name__)

ROUTE = "/api/ws/claws/{org}/{claw}"
MAX_FRAME = 8 * 1024 * 1024
HANDSHAKE_RETRY = 20.0
HANDSHAKE_TIMEOUT = 10.0
APPROVE_TIMEOUT = 30.0  # the agent runs the gateway CLI (a second or two per call)
# Upstream events that are keepalive noise: they do not keep an idle socket open.
KEEPALIVE_EVENTS = frozenset({"tick", "health", "presence", "heartbeat"})
_EVENT_PREFIX = '{"type":"event","event":"'
# Frames already read that are relayed in one write, at most.
BATCH = 64
_Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


@dataclass(eq=False)
class Link:
    """One browser <-> gateway pair, for limits, idle checks and shutdown."""

    user: int
    browser: web.WebSocketResponse
    upstream: aiohttp.ClientWebSocketResponse | None = None
    last_frame: float = field(default_factory=time.monotonic)
    closing: tuple[int, str] | None = None


@dataclass
class Links:
    active: set[Link] = field(default_factory=set)
    session: aiohttp.ClientSession | None = None
    device: DeviceIdentity | None = None

    def count(self, user: int) -> int:
        return sum(1 for link in self.active if link.user == user)


LINKS = web.AppKey("ws_links", Links)


def setup_routes(app: web.Application) -> None:
    app[LINKS] = Links()
    app.router.add_get(ROUTE, claw_socket)
    app.cleanup_ctx.append(_client_session)
    app.on_shutdown.append(_close_all)


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    # No pool limit: every relayed socket holds its upstream connection for its whole life.
    app[LINKS].session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=HANDSHAKE_TIMEOUT),
    )
    yield
    await app[LINKS].session.close()  # type: ignore[union-attr]


async def _close_all(app: web.Application) -> None:
    links = list(app[LINKS].active)
    await asyncio.gather(
        *(_end(link, 1001, "node shutting down") for link in links), return_exceptions=True
    )


def allowed_origin(request: web.Request) -> str:
    public_url = request.app[STATE].public_url
    if public_url:
        parts = urlsplit(public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()
    return f"http://{request.host}".lower()


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def claw_socket(request: web.Request) -> web.StreamResponse:
    state, links = request.app[STATE], request.app[LINKS]
    org, slug = request.match_info["org"], request.match_info["claw"]
    try:
        user = await authenticate(request)
        if user is None:
            return json_error(401, "not signed in (or the session expired): /web in the bot")
        origin = request.headers.get("Origin")
        if origin is None:
            token = _bearer(request)
            if token is None or await request.app[AUTH].token_user(token) != user:
                return json_error(403, "a connection without an Origin needs an API token")
        elif origin.rstrip("/").lower() != allowed_origin(request):
            return json_error(403, "bad Origin")
        db = state.statuslog.db
        if not await org_exists(db, org):
            return json_error(404, f"no org {org}")
        if not await is_member(db, org, user):
            return json_error(403, f"you are not a member of {org}")
        if state.claws is None:
            return json_error(503, "claws are not configured on this node")
        service = state.claws()
        try:
            claw = await service.get(org, slug)
        except InputError:
            return json_error(404, f"no claw {org}/{slug}")
        if claw.status != "active" or not claw.gateway_url:
            return json_error(409, f"claw {org}/{slug} is {claw.status}, not active")
    except (StorageError, ClawopsError) as exc:
        log.warning("ws proxy: cannot admit a connection to %s/%s: %s", org, slug, exc)
        return json_error(503, "the claw cannot be reached right now; try again")
    # No permessage-deflate: frames are relayed as they are (and batched, see ``_send``).
    browser = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=30.0, compress=False)
    link = Link(user, browser)
    # Count and reserve with no await between: concurrent upgrades cannot all see a free slot.
    if links.count(user) >= state.ws_max_per_user:
        return json_error(429, f"too many connections (at most {state.ws_max_per_user})")
    links.active.add(link)
    try:
        try:
            gateway_token = await service.gateway_token(org, slug)
        except (StorageError, ClawopsError) as exc:
            log.warning("ws proxy: cannot admit a connection to %s/%s: %s", org, slug, exc)
            return json_error(503, "the claw cannot be reached right now; try again")
        await browser.prepare(request)
        hello = await _open_upstream(
            request.app, link, claw.gateway_url, gateway_token,
            approve=lambda device: approve_device(service, claw, device),
        )  # fmt: skip
        if hello is None:
            return browser
        ready = {
            "type": "event", "event": "proxy.ready",
            "payload": {
                "claw": f"{org}/{slug}",
                "sessionKey": hello.main_session_key or "agent:main:main",
                "scopes": list(hello.scopes),
                "server": hello.payload.get("server") or {},
            },
        }  # fmt: skip
        await browser.send_str(json.dumps(ready))
        await _relay(link, state.ws_idle_timeout, state.ws_recheck, _rechecker(request, user))
        return browser
    finally:
        links.active.discard(link)
        if link.upstream is not None:
            await link.upstream.close()
        if not browser.closed and browser.prepared:
            code, reason = link.closing or (1000, "")
            await browser.close(code=code, message=reason.encode()[:120])


Recheck = Callable[[], Awaitable[tuple[int, str] | None]]


def _rechecker(request: web.Request, user: int) -> Recheck:
    """Why the socket must close now, or None: the credentials that opened it ended (4401), or
    the user is no longer a member of the claw's org (4403)."""
    auth, cookie, token = request.app[AUTH], request.cookies.get(COOKIE), _bearer(request)
    db, org = request.app[STATE].statuslog.db, request.match_info["org"]

    async def why_close() -> tuple[int, str] | None:
        live = bool(cookie) and await auth.session_user(cookie or "") == user
        if not live and not (token and await auth.token_user(token) == user):
            return 4401, "session ended"
        if not await is_member(db, org, user):
            return 4403, f"no longer a member of {org}"
        return None

    return why_close


async def approve_device(service: Claws, claw: Claw, device: DeviceIdentity) -> None:
    """Ask the agent on the claw's Mini to approve this node's device on the claw's gateway."""
    if claw.mini is None:
        raise InputError(f"claw {claw.org}/{claw.slug} has no Mini")
    mini = await Minis(service.db, service.keyring).get(claw.mini)
    public_key = base64.urlsafe_b64encode(device.public_raw).rstrip(b"=").decode()
    async with agent_client(mini, service.keyring, timeout=APPROVE_TIMEOUT, retries=1) as agent:
        await agent.approve_device(claw.agent_id, device.device_id, public_key)


async def _open_upstream(
    app: web.Application, link: Link, url: str, token: str,
    approve: Callable[[DeviceIdentity], Awaitable[None]] | None = None,
) -> Hello | None:  # fmt: skip
    """Connect and handshake (retrying UNAVAILABLE; once more after ``approve`` when the device
    is not paired); on failure close the browser and return None."""
    links, state = app[LINKS], app[STATE]
    session = links.session
    assert session is not None
    if links.device is None and state.data_dir is not None:
        links.device = load_or_create(state.data_dir)
    device = links.device
    deadline, approved = time.monotonic() + HANDSHAKE_RETRY, False
    while True:
        try:
            upstream = await session.ws_connect(
                url, max_msg_size=MAX_FRAME, heartbeat=30.0, autoclose=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )  # fmt: skip
        except (aiohttp.ClientError, OSError):
            await _end(link, 4502, "gateway unreachable")
            return None
        link.upstream = upstream
        try:
            hello = await handshake_on(
                upstream, token, scopes=DEFAULT_SCOPES, timeout=HANDSHAKE_TIMEOUT,
                where="gateway", device=device,
            )  # fmt: skip
        except GatewayUnavailable as exc:
            await upstream.close()
            if time.monotonic() >= deadline:
                await _end(link, 4503, "gateway handshake failed: gateway not ready")
                return None
            await asyncio.sleep(min((exc.retry_after_ms or 500) / 1000, 2.0))
            continue
        except PairingRequired as exc:
            await upstream.close()
            if approved or approve is None or device is None:
                await _end(link, 4503, f"gateway handshake failed: {_short(exc)}")
                return None
            approved = True
            try:
                await approve(device)
            except ClawopsError as err:
                log.warning("ws proxy: the agent did not approve device %s: %s",
                            device.device_id[:12], err)  # fmt: skip
                await _end(link, 4503, "gateway handshake failed: device not approved")
                return None
            continue
        except ClawopsError as exc:
            await _end(link, 4503, f"gateway handshake failed: {_short(exc)}")
            return None
        missing = [s for s in DEFAULT_SCOPES if s not in hello.scopes]
        if missing:
            await _end(link, 4503, f"gateway handshake failed: scopes not granted: {missing}")
            return None
        return hello


def _short(exc: Exception) -> str:
    # Our handshake errors never carry the token; keep the close reason within 123 bytes.
    return str(exc).replace("gateway ", "", 1)[:80]


async def _end(link: Link, code: int, reason: str) -> None:
    """Close both sides; the browser gets ``code``/``reason`` (the first one set wins)."""
    if link.closing is None:
        link.closing = (code, reason)
    code, reason = link.closing
    if link.upstream is not None and not link.upstream.closed:
        await link.upstream.close()
    if not link.browser.closed:
        await link.browser.close(code=code, message=reason.encode()[:120])


def _keepalive(data: str) -> bool:
    if not data.startswith(_EVENT_PREFIX):
        return False
    name = data[len(_EVENT_PREFIX) : data.find('"', len(_EVENT_PREFIX))]
    return name in KEEPALIVE_EVENTS


def _frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One final WebSocket frame (RFC 6455 5.2), masked when we are the client."""
    size, mask_bit = len(payload), 0x80 if masked else 0
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, mask_bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, size)
    if not masked:
        return header + payload
    key, data = os.urandom(4), bytearray(payload)
    websocket_mask(key, data)
    return header + key + bytes(data)


async def _send(ws: _Socket, batch: list[tuple[int, bytes]]) -> None:
    """Send frames in order; a batch of several goes out in one write (one syscall).

    aiohttp writes one frame per ``transport.write``; relaying a burst frame by frame costs a
    syscall each. Several frames already read are framed here and written at once, then the
    writer's flow control is honoured (wait while the transport is paused): same backpressure.
    """
    # These are aiohttp internals (checked on 3.14): where one is missing, as after an aiohttp
    # upgrade that moved it, the frames go out one by one through the public API instead.
    writer: Any = getattr(ws, "_writer", None)
    protocol: Any = getattr(writer, "protocol", None)
    batched = (
        len(batch) > 1 and writer is not None and not getattr(writer, "compress", True)
        and hasattr(writer, "use_mask") and hasattr(protocol, "_paused")
        and hasattr(protocol, "_drain_helper")
    )  # fmt: skip
    if not batched:
        for opcode, payload in batch:
            await (ws.send_bytes(payload) if opcode == 2 else ws.send_str(payload.decode()))
        return
    transport = writer.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("socket closed")
    transport.write(b"".join(_frame(op, data, writer.use_mask) for op, data in batch))
    if protocol._paused:
        await protocol._drain_helper()


def _queued(ws: _Socket) -> bool:
    """More frames already read and waiting (no need to wait for the network)."""
    reader = getattr(ws, "_reader", None)
    return bool(getattr(reader, "_buffer", None))


async def _browser_to_gateway(link: Link) -> tuple[int, str]:
    assert link.upstream is not None
    browser = link.browser
    while True:
        batch: list[tuple[int, bytes]] = []
        while True:
            msg = await browser.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                if batch:
                    await _send(link.upstream, batch)
                return 1000, ""
            bad = _refusal(msg)
            if bad is not None:
                return 4400, f"bad frame from browser: {bad}"
            batch.append((1, msg.data.encode()))
            if len(batch) >= BATCH or not _queued(browser):
                break
        link.last_frame = time.monotonic()
        await _send(link.upstream, batch)


def _refusal(msg: aiohttp.WSMessage) -> str | None:
    if msg.type != WSMsgType.TEXT:
        return "binary" if msg.type == WSMsgType.BINARY else "unexpected frame"
    try:
        frame = json.loads(msg.data)
    except ValueError:
        return "not JSON"
    if not isinstance(frame, dict):
        return "not an object"
    if frame.get("method") == "connect":
        return "connect is the proxy's"
    return None


async def _gateway_to_browser(link: Link) -> tuple[int, str]:
    assert link.upstream is not None
    upstream = link.upstream
    while True:
        batch: list[tuple[int, bytes]] = []
        ended = False
        while True:
            msg = await upstream.receive()
            if msg.type == WSMsgType.TEXT:
                if not _keepalive(msg.data):
                    link.last_frame = time.monotonic()
                batch.append((1, msg.data.encode()))
            elif msg.type == WSMsgType.BINARY:
                batch.append((2, msg.data))
            else:
                ended = True
                break
            if len(batch) >= BATCH or not _queued(upstream):
                break
        if batch:
            await _send(link.browser, batch)
        if ended:
            return 4504, "gateway closed"


async def _watch(
    link: Link, idle: float, recheck_every: float, recheck: Recheck
) -> tuple[int, str]:
    step = max(0.05, min(idle / 4, recheck_every, 5.0))
    next_check = time.monotonic() + recheck_every
    while True:
        await asyncio.sleep(step)
        now = time.monotonic()
        if now - link.last_frame >= idle:
            return 4408, "idle timeout"
        if now >= next_check:
            next_check = now + recheck_every
            with contextlib.suppress(StorageError):  # a database hiccup closes nobody
                closing = await recheck()
                if closing is not None:
                    return closing


async def _relay(link: Link, idle: float, recheck_every: float, recheck: Recheck) -> None:
    link.last_frame = time.monotonic()
    tasks: list[asyncio.Task[tuple[int, str]]] = [
        asyncio.create_task(_browser_to_gateway(link)),
        asyncio.create_task(_gateway_to_browser(link)),
        asyncio.create_task(_watch(link, idle, recheck_every, recheck)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        code, reason = 1011, "proxy error"
        for task in done:
            if not task.cancelled() and task.exception() is None:
                code, reason = task.result()
                break
            if task.exception() is not None and link.closing is None:
                exc: Any = task.exception()
                # a send to a side that just went away: the other reader tells why
                log.debug("ws proxy: relay ended by %r", exc)
                code, reason = 4504, "gateway closed"
        if link.browser.closed and link.closing is None:
            code, reason = 1000, ""
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await _end(link, code, reason)
