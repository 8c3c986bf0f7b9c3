"""A small client for the OpenClaw gateway's connect handshake (protocol 4).

The gateway speaks first (event ``connect.challenge``); the client's first frame must be the
``connect`` request; success is a ``res`` with ``payload.type == "hello-ok"``. Failures are
translated into clawops errors::

    RemoteError
    ├── TokenRefused          the gateway refused the token (AUTH_TOKEN_MISMATCH)
    ├── GatewayUnavailable    a retryable refusal (UNAVAILABLE while starting); .retry_after_ms
    ├── PairingRequired       the device is not paired (NOT_PAIRED / PAIRING_REQUIRED): a connect
    │                         that is not direct-local left a pending request (.request_id)
    └── Unreachable           no connection, or no challenge/answer in time

The frame builders and ``handshake_on`` work on a WebSocket that is already open, so the proxy can
do the handshake itself and then hand the socket over. With a ``DeviceIdentity`` (an Ed25519
key) the ``connect`` carries a signed ``device`` proof (payload ``v3``, see ``DeviceIdentity``);
without one, loopback ``gateway-client``/``backend`` connects still keep their scopes. The granted
scopes are reported in ``Hello.scopes`` and may be fewer than asked — check them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import platform as _platform
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.errors import RemoteError, Unreachable

PROTOCOL = 4
CLIENT_VERSION = "0.1.0"
DEFAULT_SCOPES: tuple[str, ...] = ("operator.read", "operator.write")


class TokenRefused(RemoteError):
    """The gateway refused the token."""


class GatewayUnavailable(RemoteError):
    """The gateway refused for now (e.g. still starting); try again after ``retry_after_ms``."""

    def __init__(self, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class PairingRequired(RemoteError):
    """The gateway wants this device approved first; ``reason`` e.g. ``not-paired``."""

    def __init__(self, message: str, request_id: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.request_id, self.reason = request_id, reason


@dataclass(frozen=True)
class Hello:
    """The parts of ``hello-ok`` clawops uses; ``payload`` keeps the whole answer."""

    protocol: int
    role: str
    scopes: tuple[str, ...]
    server_version: str
    main_session_key: str | None
    payload: dict[str, Any] = field(repr=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class DeviceIdentity:
    """An Ed25519 device key; ``proof`` builds the ``connect.params.device`` object.

    ``id`` is the hex SHA-256 of the raw 32-byte public key; ``publicKey`` that raw key in
    base64url without padding; the signature covers the UTF-8 string
    ``v3|id|client id|mode|role|scopes,joined|signedAt|token|nonce|platform|deviceFamily``
    (platform and family lowercased), with ``signedAt``/``nonce`` from the challenge.
    """

    key: Ed25519PrivateKey = field(repr=False)
    family: str = ""

    @property
    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def device_id(self) -> str:
        return hashlib.sha256(self.public_raw).hexdigest()

    def payload(self, *, client_id: str, mode: str, role: str, scopes: Sequence[str],
                signed_at: int, token: str, nonce: str, platform: str) -> str:  # fmt: skip
        parts = [
            "v3", self.device_id, client_id, mode, role, ",".join(scopes), str(signed_at),
            token, nonce, platform.lower(), self.family.lower(),
        ]  # fmt: skip
        return "|".join(parts)

    def proof(self, *, signed_at: int, nonce: str, **fields: Any) -> dict[str, Any]:
        text = self.payload(signed_at=signed_at, nonce=nonce, **fields)
        return {
            "id": self.device_id,
            "publicKey": _b64url(self.public_raw),
            "signature": _b64url(self.key.sign(text.encode())),
            "signedAt": signed_at,
            "nonce": nonce,
        }


def connect_request(
    token: str,
    *,
    request_id: str | None = None,
    client_id: str = "gateway-client",
    mode: str = "backend",
    scopes: Sequence[str] = DEFAULT_SCOPES,
    version: str = CLIENT_VERSION,
    platform: str | None = None,
    device: DeviceIdentity | None = None,
    challenge: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``connect`` request frame (every schema is closed: send only known fields).

    With ``device``, the ``challenge`` payload ``{nonce, ts}`` is signed into ``params.device``.
    """
    platform = platform or _platform.system().lower() or "unknown"
    params: dict[str, Any] = {
        "minProtocol": PROTOCOL,
        "maxProtocol": PROTOCOL,
        "client": {"id": client_id, "version": version, "platform": platform, "mode": mode},
        "role": "operator",
        "scopes": list(scopes),
        "auth": {"token": token},
    }
    if device is not None:
        challenge = challenge or {}
        nonce, signed_at = challenge.get("nonce"), challenge.get("ts")
        if not isinstance(nonce, str) or not isinstance(signed_at, int) or signed_at < 0:
            raise RemoteError("gateway: the connect.challenge has no usable nonce and ts")
        params["device"] = device.proof(
            signed_at=signed_at, nonce=nonce, client_id=client_id, mode=mode, role="operator",
            scopes=list(scopes), token=token, platform=platform,
        )  # fmt: skip
    return {
        "type": "req",
        "id": request_id or str(uuid.uuid4()),
        "method": "connect",
        "params": params,
    }


def challenge_of(frame: dict[str, Any]) -> dict[str, Any] | None:
    """The challenge's payload ``{nonce, ts}`` if ``frame`` is the connect challenge."""
    if frame.get("type") == "event" and frame.get("event") == "connect.challenge":
        payload = frame.get("payload")
        return payload if isinstance(payload, dict) else {}
    return None


def hello_of(frame: dict[str, Any], where: str = "gateway") -> Hello:
    """Parse the answer to ``connect``: a ``Hello``, or the matching clawops error."""
    if not frame.get("ok"):
        raise refusal(frame.get("error") or {}, where)
    payload = frame.get("payload")
    if not isinstance(payload, dict) or payload.get("type") != "hello-ok":
        raise RemoteError(f"{where}: connect answered without hello-ok")
    auth = payload.get("auth") or {}
    snapshot = payload.get("snapshot") or {}
    defaults = snapshot.get("sessionDefaults") or {}
    return Hello(
        protocol=int(payload.get("protocol", 0)),
        role=str(auth.get("role", "")),
        scopes=tuple(str(s) for s in auth.get("scopes") or ()),
        server_version=str((payload.get("server") or {}).get("version", "")),
        main_session_key=defaults.get("mainSessionKey"),
        payload=payload,
    )


def refusal(error: dict[str, Any], where: str = "gateway") -> RemoteError:
    """Translate a protocol ``error`` object into the most specific clawops error."""
    code = str(error.get("code", "?"))
    details = error.get("details") or {}
    detail_code = str(details.get("code", "")) if isinstance(details, dict) else ""
    message = str(error.get("message", ""))
    if detail_code == "AUTH_TOKEN_MISMATCH" or code == "AUTH_TOKEN_MISMATCH":
        return TokenRefused(f"{where} refused the token (AUTH_TOKEN_MISMATCH)")
    if code == "NOT_PAIRED" or detail_code == "PAIRING_REQUIRED":
        info = details if isinstance(details, dict) else {}
        request_id = info.get("requestId")
        return PairingRequired(
            f"{where}: device pairing required ({info.get('reason') or code})",
            request_id if isinstance(request_id, str) else None,
            str(info.get("reason") or ""),
        )
    if code == "UNAVAILABLE" or error.get("retryable"):
        retry = error.get("retryAfterMs")
        if retry is None and isinstance(details, dict):
            retry = details.get("retryAfterMs")
        return GatewayUnavailable(
            f"{where} is not ready yet ({code}: {message})",
            int(retry) if isinstance(retry, int | float) else None,
        )
    extra = f" ({detail_code})" if detail_code else ""
    return RemoteError(f"{where} refused the connect: {code}{extra}: {message}")


async def _next_frame(ws: aiohttp.ClientWebSocketResponse, where: str) -> dict[str, Any]:
    msg = await ws.receive()
    if msg.type == aiohttp.WSMsgType.TEXT:
        try:
            frame = json.loads(msg.data)
        except json.JSONDecodeError:
            raise RemoteError(f"{where} sent a frame that is not JSON") from None
        if not isinstance(frame, dict):
            raise RemoteError(f"{where} sent a frame that is not an object")
        return frame
    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        code = ws.close_code
        if code == 1013:
            raise GatewayUnavailable(f"{where} closed the socket: try again later (1013)")
        raise RemoteError(f"{where} closed the socket during the handshake (code {code})")
    raise RemoteError(f"{where} sent an unexpected {msg.type.name} frame during the handshake")


async def handshake_on(
    ws: aiohttp.ClientWebSocketResponse,
    token: str,
    *,
    client_id: str = "gateway-client",
    mode: str = "backend",
    scopes: Sequence[str] = DEFAULT_SCOPES,
    timeout: float = 10.0,
    where: str = "gateway",
    device: DeviceIdentity | None = None,
) -> Hello:
    """Do the handshake on an open socket and leave it open for the caller.

    1. Wait for ``connect.challenge`` (other frames before it are ignored).
    2. Send ``connect`` (signed with ``device`` if given); skip events until the ``res`` with
       our id arrives.
    3. Return the parsed ``Hello`` or raise (the socket is then the caller's to close).
    """
    challenge: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(timeout):
            while challenge is None:
                challenge = challenge_of(await _next_frame(ws, where))
    except TimeoutError:
        raise Unreachable(f"{where}: no connect.challenge within {timeout:g}s") from None
    request = connect_request(
        token, client_id=client_id, mode=mode, scopes=scopes, device=device, challenge=challenge
    )
    await ws.send_str(json.dumps(request))
    try:
        async with asyncio.timeout(timeout):
            while True:
                frame = await _next_frame(ws, where)
                if frame.get("type") == "res" and frame.get("id") == request["id"]:
                    return hello_of(frame, where)
    except TimeoutError:
        raise Unreachable(f"{where}: no answer to connect within {timeout:g}s") from None


async def handshake(
    url: str,
    token: str,
    *,
    client_id: str = "gateway-client",
    mode: str = "backend",
    scopes: Sequence[str] = DEFAULT_SCOPES,
    timeout: float = 10.0,
    device: DeviceIdentity | None = None,
) -> Hello:
    """Open ``url``, complete the handshake with ``token``, close, and return the ``Hello``."""
    where = f"gateway {url}"
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout)
            ) as session,
            session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws,
        ):
            return await handshake_on(
                ws, token, client_id=client_id, mode=mode, scopes=scopes,
                timeout=timeout, where=where, device=device,
            )  # fmt: skip
    except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError, OSError) as exc:
        raise Unreachable(f"{where} unreachable: {exc or type(exc).__name__}") from None


async def probe(url: str, token: str, timeout: float = 5.0) -> bool:
    """True when a handshake with ``token`` gets hello-ok now; any failure is False."""
    try:
        await handshake(url, token, timeout=timeout)
    except RemoteError:
        return False
    return True


def gateway_url(port: int, host: str = "127.0.0.1") -> str:
    return f"ws://{host}:{port}/"
