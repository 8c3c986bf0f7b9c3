"""Device pairing for a claw's gateway: approve the node's device through the gateway's own CLI.

A connect that reaches the gateway through a tunnel (cloudflared on this host forwards to the
gateway's loopback port and adds ``X-Forwarded-For``) is not direct-local, so a new device is not
paired silently: the connect is refused with ``NOT_PAIRED`` (``details.code PAIRING_REQUIRED``,
``reason not-paired``, ``requestId``) and the gateway keeps a pending request for that device
(about 5 minutes). The gateway has no way to pre-approve a key that never connected:
``openclaw devices approve`` takes only the id of a pending request. So the node connects once,
then asks this agent (``POST /claws/{id}/devices {"deviceId", "publicKey"}``) to approve it, and
connects again. Here that is::

    openclaw devices list --json            -> {"pending": [...], "paired": [...]}
    openclaw devices approve <requestId> --json

run with argv (never a shell), with the claw's HOME and env, so the CLI finds the claw's config
and token. Only a pending request for exactly that device id AND public key is approved, and only
for role ``operator`` with scopes within ``APPROVABLE_SCOPES``; a device already paired is fine.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from typing import Any

from agent.claw import Claw
from agent.fleet import Refused
from agent.openclaw_cli import cli_reason, json_object, run_cli
from core.errors import InputError, RemoteError

DEVICE_ID = re.compile(r"^[0-9a-f]{64}$")
PUBLIC_KEY = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 raw bytes, base64url without padding
APPROVABLE_SCOPES = frozenset({"operator.read", "operator.write"})
PENDING_WAIT = 5.0  # how long to look for the pending request the node's connect just left
POLL = 0.5
CLI_TIMEOUT = 30.0


def parse_device(body: Any) -> tuple[str, str]:
    """``(deviceId, publicKey)`` from the body; the id must be the SHA-256 of the key."""
    if not isinstance(body, dict) or set(body) != {"deviceId", "publicKey"}:
        raise InputError('the body must be {"deviceId": str, "publicKey": str}')
    device_id, public_key = body["deviceId"], body["publicKey"]
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise InputError("deviceId must be 64 lowercase hex characters")
    if not isinstance(public_key, str) or not PUBLIC_KEY.match(public_key):
        raise InputError("publicKey must be a raw Ed25519 key in base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(public_key + "=")
    except (binascii.Error, ValueError):
        raise InputError("publicKey is not valid base64url") from None
    if hashlib.sha256(raw).hexdigest() != device_id:
        raise InputError("deviceId is not the SHA-256 of publicKey")
    return device_id, public_key


async def _cli(argv: list[str], claw: Claw, drop_env: set[str]) -> tuple[int, str, str]:
    return await run_cli(argv, claw.environment(drop_env), claw.home, CLI_TIMEOUT)


async def list_devices(cli: list[str], claw: Claw, drop_env: set[str]) -> dict[str, Any]:
    code, out, err = await _cli([*cli, "devices", "list", "--json"], claw, drop_env)
    if code != 0:
        raise RemoteError(f"openclaw devices list failed ({code}): {cli_reason(out, err)}")
    listing = json_object(out, "devices list")
    for key in ("pending", "paired"):
        if not isinstance(listing.get(key, []), list):
            raise RemoteError(f"openclaw devices list: {key} is not a list")
    return listing


def _check_request(request: dict[str, Any], device_id: str) -> None:
    roles = set(request.get("roles") or [request.get("role")])
    scopes = set(request.get("scopes") or [])
    if roles != {"operator"} or not scopes <= APPROVABLE_SCOPES:
        raise Refused(403, f"the pending request of device {device_id[:12]} asks for roles "
                           f"{sorted(roles, key=str)} and scopes {sorted(scopes)}; this agent "
                           f"approves only operator with {sorted(APPROVABLE_SCOPES)}")  # fmt: skip


async def approve_device(
    claw: Claw, cli: list[str] | None, drop_env: set[str], device_id: str, public_key: str,
    *, wait: float = PENDING_WAIT,
) -> dict[str, str]:  # fmt: skip
    """Approve the pending request of exactly this device; ``{"status", "requestId"?}``.

    ``status`` is ``approved``, or ``paired`` when the device is already paired (a repeat, or
    another request approved it first). No pending request within ``wait`` seconds: 409.
    """
    if cli is None:
        reason = "no openclaw CLI: set [agent] cli_command (gateway_command has no 'gateway')"
        raise Refused(501, reason)
    deadline = time.monotonic() + wait
    while True:
        listing = await list_devices(cli, claw, drop_env)
        for request in listing.get("pending", []):
            if not isinstance(request, dict) or request.get("deviceId") != device_id:
                continue
            if request.get("publicKey") != public_key:
                continue
            _check_request(request, device_id)
            request_id = str(request.get("requestId", ""))
            code, _, _ = await _cli(
                [*cli, "devices", "approve", request_id, "--json"], claw, drop_env
            )
            if code == 0:
                return {"status": "approved", "requestId": request_id}
            break  # superseded or approved by someone else meanwhile: look again
        else:
            for device in listing.get("paired", []):
                if (isinstance(device, dict) and device.get("deviceId") == device_id
                        and device.get("publicKey") == public_key):  # fmt: skip
                    return {"status": "paired"}
        if time.monotonic() >= deadline:
            raise Refused(409, f"no pending pairing request for device {device_id[:12]} on claw "
                               f"{claw.claw_id}: the device must try to connect first "
                               "(the gateway cannot pre-approve a key)")  # fmt: skip
        await asyncio.sleep(POLL)
