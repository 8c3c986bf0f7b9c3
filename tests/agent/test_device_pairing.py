"""The agent approves the node's device on a claw's REAL gateway, as a tunnel makes necessary.

Through cloudflared the gateway sees loopback connects carrying forwarded headers, and a loopback
connect with ``X-Forwarded-For`` is not direct-local: a new device is not paired silently. The
``Forwarder`` below reproduces that on 127.0.0.1 only: it adds the headers cloudflared adds (the
client address in them is a documentation address; no traffic goes anywhere but loopback). The
agent makes every claw trust loopback as its proxy (``gateway.trustedProxies``, a default of
agent/claw.py) as it must behind cloudflared — without it the gateway refuses such an upgrade
outright (HTTP 403, proxy_attribution_required).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable, Sequence

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.openclaw import DEFAULT_SCOPES, DeviceIdentity, Hello, PairingRequired, handshake_on
from tests.agent.conftest import Agent, claw_token
from tests.agent.test_real_gateway import NODE, OPENCLAW, clean_openclaw_tmp  # noqa: F401

REAL_GATEWAY = [str(NODE), str(OPENCLAW), "gateway", "run"]
CLIENT_IP = "203.0.113.7"  # TEST-NET-3: only ever written into a header
real_gateway = pytest.mark.skipif(
    not (NODE.exists() and OPENCLAW.exists()),
    reason="the real OpenClaw gateway is not installed: run scripts/setup-openclaw",
)


class Forwarder:
    """A loopback TCP forwarder that adds cloudflared's headers to each request head."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.forwarded = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            request_line, rest = head.split(b"\r\n", 1)
            added = (f"X-Forwarded-For: {CLIENT_IP}\r\nX-Forwarded-Proto: https\r\n"
                     f"Cf-Connecting-Ip: {CLIENT_IP}\r\n").encode()  # fmt: skip
            upstream.write(request_line + b"\r\n" + added + rest)
            self.forwarded += 1
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    side.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.write_eof()


def new_device() -> DeviceIdentity:
    return DeviceIdentity(Ed25519PrivateKey.generate())


def public_key(device: DeviceIdentity) -> str:
    return base64.urlsafe_b64encode(device.public_raw).rstrip(b"=").decode()


async def tunnel_handshake(
    port: int, token: str, device: DeviceIdentity, scopes: Sequence[str] = DEFAULT_SCOPES
) -> Hello:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        return await handshake_on(ws, token, device=device, scopes=scopes, timeout=15)


async def approve(agent: Agent, claw_id: str, device: DeviceIdentity) -> tuple[int, dict[str, str]]:
    body = {"deviceId": device.device_id, "publicKey": public_key(device)}
    answer = await asyncio.to_thread(agent.call, "POST", f"/claws/{claw_id}/devices", body)
    return answer.status_code, answer.json()


@pytest.mark.slow
@real_gateway
async def test_a_device_connecting_through_a_tunnel_is_approved_by_the_agent_and_then_connects(
    start_agent: Callable[..., Agent],
    clean_openclaw_tmp: None,  # noqa: F811
) -> None:
    agent = start_agent(gateway_command=REAL_GATEWAY)  # trusts loopback by default
    port, token = agent.free_port(), claw_token()
    created = agent.call("POST", "/claws", {"clawId": "paired", "port": port, "token": token})
    assert created.status_code == 201, created.text
    await asyncio.to_thread(agent.wait_for, "paired", lambda i: i["ready"] is True, 90)
    tunnel = Forwarder(port)
    await tunnel.start()
    try:
        device = new_device()
        # The gateway cannot pre-approve a key that never connected: nothing is pending yet.
        status, body = await approve(agent, "paired", device)
        assert status == 409 and "must try to connect first" in body["error"], body

        with pytest.raises(PairingRequired) as refused:
            await tunnel_handshake(tunnel.port, token, device)
        assert refused.value.reason == "not-paired" and refused.value.request_id
        assert tunnel.forwarded == 1

        status, body = await approve(agent, "paired", device)
        assert status == 200, body
        assert body == {"ok": True, "deviceId": device.device_id, "status": "approved",
                        "requestId": refused.value.request_id}  # fmt: skip
        hello = await tunnel_handshake(tunnel.port, token, device)
        assert {"operator.read", "operator.write"} <= set(hello.scopes)
        assert hello.payload["auth"].get("deviceToken"), "a paired device gets its device token"

        # Asking again is harmless: the device is already paired.
        assert await approve(agent, "paired", device) == (
            200, {"ok": True, "deviceId": device.device_id, "status": "paired"})  # fmt: skip

        # A device asking for more than read/write is left pending, and still cannot connect.
        greedy = new_device()
        admin = ("operator.read", "operator.write", "operator.admin")
        with pytest.raises(PairingRequired):
            await tunnel_handshake(tunnel.port, token, greedy, admin)
        status, body = await approve(agent, "paired", greedy)
        assert status == 403 and "operator.admin" in body["error"], body
        with pytest.raises(PairingRequired):
            await tunnel_handshake(tunnel.port, token, greedy, admin)
    finally:
        await tunnel.stop()
    assert agent.call("DELETE", "/claws/paired").json() == {"ok": True}


async def test_device_approval_refuses_bad_input_unknown_claws_and_a_failing_cli_clearly(
    start_agent: Callable[..., Agent],
) -> None:
    agent = start_agent()  # the stand-in gateway: it has no `devices` command
    created = agent.create("stub", agent.free_port())
    assert created.status_code == 201, created.text
    # Once the claw listens, the stand-in run as a CLI cannot take its port and fails at once.
    agent.wait_for("stub", lambda i: i["ready"] is True)
    device = new_device()
    good = {"deviceId": device.device_id, "publicKey": public_key(device)}
    other = new_device()
    bad_bodies = [
        [], {}, {"deviceId": device.device_id},
        {**good, "extra": 1},
        {**good, "deviceId": device.device_id.upper()},
        {**good, "deviceId": device.device_id[:-1]},
        {**good, "publicKey": public_key(device) + "="},
        {**good, "publicKey": "!" * 43},
        {**good, "publicKey": public_key(other)},  # a key that is not this id's
    ]  # fmt: skip
    for body in bad_bodies:
        answer = agent.call("POST", "/claws/stub/devices", body)
        assert answer.status_code == 400 and answer.json()["ok"] is False, (body, answer.text)
    raw = agent.call("POST", "/claws/stub/devices", None)
    assert raw.status_code == 400, raw.text

    assert agent.call("POST", "/claws/stub/devices", good, token="wrong" * 8).status_code == 401
    missing = agent.call("POST", "/claws/nope/devices", good)
    assert missing.status_code == 404 and "no claw nope" in missing.json()["error"]

    failed = agent.call("POST", "/claws/stub/devices", good)
    assert failed.status_code == 502, failed.text
    assert failed.json()["ok"] is False
    assert "openclaw devices list failed" in failed.json()["error"], failed.json()
