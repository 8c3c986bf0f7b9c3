"""The Mac Mini inventory (table ``mac_minis``): add, list, drain, undrain, remove.

Input is validated before anything is written; a bad field raises ``InputError`` naming it.
A Mini's agent token is either the name of an environment variable (``agent_token_env``) or the
token itself, sealed with the Keyring under the context ``mini:<hostname>``. Claws are only
placed on ``online`` Minis; ``draining`` keeps the claws it has and takes no new ones.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.agent_client import AgentClient, AgentHealth, Unauthorized
from core.config import MiniConfig
from core.crypto import Keyring, SecretsError
from core.db import Database
from core.errors import InputError, RemoteError, StartupRefused, StorageError, Unreachable
from core.tables import claws, mac_minis, utcnow

HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,199}$")
DNS_SUFFIX = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
PORTS = re.compile(r"^(\d{1,5})-(\d{1,5})$")
STATUSES = ("online", "draining", "offline")


@dataclass(frozen=True)
class Mini:
    id: int
    hostname: str
    agent_url: str
    agent_token_env: str | None
    agent_token_sealed: str | None
    tunnel_suffix: str | None
    gateway_host: str | None
    port_low: int
    port_high: int
    capacity: int
    status: str
    last_seen: datetime | None
    used: int = 0
    # What the claws_health job saw (core/clawwatch.py): the agent answers; its version; why not.
    reachable: bool = True
    agent_version: str | None = None
    health_error: str = ""

    @property
    def state(self) -> str:
        """What placement and /minis go by: ``offline`` while the agent does not answer, else
        the operator's status (online, draining, offline)."""
        return self.status if self.reachable else "offline"

    @property
    def ports(self) -> str:
        return f"{self.port_low}-{self.port_high}"

    @property
    def address(self) -> str:
        """Where its gateways listen when there is no tunnel: gateway_host, else the agent's."""
        return self.gateway_host or urlsplit(self.agent_url).hostname or self.hostname


def parse_ports(value: str) -> tuple[int, int]:
    match = PORTS.match(value.strip())
    if not match:
        raise InputError(f"ports: {value!r} is not a range like 3001-3100")
    low, high = int(match[1]), int(match[2])
    if not 1024 <= low <= high <= 65535:
        raise InputError(f"ports: {value!r} must satisfy 1024 <= low <= high <= 65535")
    return low, high


def check_agent_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"agent_url: {value!r} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InputError(f"agent_url: {value!r} has a bad port") from None
    return value.rstrip("/")


def agent_token(mini: Mini, keyring: Keyring | None) -> str:
    """The bearer token for ``mini``'s agent, from its env variable or its sealed value."""
    if mini.agent_token_env:
        value = os.environ.get(mini.agent_token_env)
        if not value:
            raise InputError(f"{mini.hostname}: agent token variable {mini.agent_token_env} unset")
        return value
    if mini.agent_token_sealed is None:
        raise InputError(f"{mini.hostname}: no agent token stored")
    if keyring is None:
        raise SecretsError(f"{mini.hostname}: its agent token is sealed and no key is set")
    return keyring.open(mini.agent_token_sealed, f"mini:{mini.hostname}")


def agent_client(
    mini: Mini, keyring: Keyring | None, *, timeout: float = 10.0, retries: int = 2
) -> AgentClient:
    return AgentClient(
        mini.agent_url, agent_token(mini, keyring), timeout=timeout, retries=retries
    )  # fmt: skip


def with_usage() -> Select[Any]:
    """Every Mini with ``used``: the number of claws holding one of its ports."""
    used = (
        select(claws.c.mini_id, func.count().label("used"))
        .where(claws.c.mini_id.is_not(None))
        .group_by(claws.c.mini_id)
        .subquery()
    )
    return select(mac_minis, func.coalesce(used.c.used, 0).label("used")).outerjoin(
        used, used.c.mini_id == mac_minis.c.id
    )


def mini_from_row(row: Any, used: int = 0) -> Mini:
    return Mini(
        id=row.id, hostname=row.hostname, agent_url=row.agent_url,
        agent_token_env=row.agent_token_env, agent_token_sealed=row.agent_token_sealed,
        tunnel_suffix=row.tunnel_suffix, gateway_host=row.gateway_host, port_low=row.port_low,
        port_high=row.port_high, capacity=row.capacity, status=row.status,
        last_seen=row.last_seen, used=used, reachable=bool(row.reachable),
        agent_version=row.agent_version, health_error=row.health_error or "",
    )  # fmt: skip


def _validated(
    hostname: str,
    agent_url: str,
    *,
    ports: str,
    capacity: int,
    agent_token_env: str | None = None,
    agent_token: str | None = None,
    tunnel_suffix: str | None = None,
    gateway_host: str | None = None,
) -> tuple[str, int, int]:
    """Every field of a new Mini checked (InputError naming the first bad one); its URL, ports."""
    if not HOSTNAME.match(hostname):
        raise InputError(f"hostname: {hostname!r} is not a host name")
    url = check_agent_url(agent_url)
    low, high = parse_ports(ports)
    if capacity < 1:
        raise InputError(f"capacity: {capacity} must be at least 1")
    if capacity > high - low + 1:
        raise InputError(f"capacity: {capacity} is more than the {high - low + 1} ports")
    if (agent_token_env is None) == (agent_token is None):
        raise InputError("agent_token: give either a variable name or a token, not both")
    if agent_token_env is not None and not ENV_NAME.match(agent_token_env):
        raise InputError(f"agent_token_env: {agent_token_env!r} is not a variable name")
    if tunnel_suffix is not None and not DNS_SUFFIX.match(tunnel_suffix):
        raise InputError(f"tunnel_suffix: {tunnel_suffix!r} is not a lower-case DNS name")
    if gateway_host is not None and not HOSTNAME.match(gateway_host):
        raise InputError(f"gateway_host: {gateway_host!r} is not a host name or address")
    if agent_token is not None and len(agent_token) < 16:
        raise InputError("agent_token: shorter than 16 characters")
    return url, low, high


class Minis:
    def __init__(self, db: Database, keyring: Keyring | None = None) -> None:
        self.db = db
        self.keyring = keyring

    async def add(
        self,
        hostname: str,
        agent_url: str,
        *,
        ports: str,
        capacity: int,
        agent_token_env: str | None = None,
        agent_token: str | None = None,
        tunnel_suffix: str | None = None,
        gateway_host: str | None = None,
        reachable: bool = True,
        health: AgentHealth | None = None,
    ) -> Mini:
        """Validate everything, then insert one row; a bad field changes nothing.

        ``reachable=False`` adds a Mini that takes no claw until the claws_health job has seen
        its agent answer; ``health`` is what ``verify`` got from the agent (its version)."""
        url, low, high = _validated(
            hostname,
            agent_url,
            ports=ports,
            capacity=capacity,
            agent_token_env=agent_token_env,
            agent_token=agent_token,
            tunnel_suffix=tunnel_suffix,
            gateway_host=gateway_host,
        )
        sealed = None
        if agent_token is not None:
            if self.keyring is None:
                raise SecretsError("agent_token: storing a token needs the claws key; none is set")
            sealed = self.keyring.seal(agent_token, f"mini:{hostname}")
        now = utcnow()
        values = dict(
            hostname=hostname, agent_url=url, agent_token_env=agent_token_env,
            agent_token_sealed=sealed, tunnel_suffix=tunnel_suffix, gateway_host=gateway_host,
            port_low=low, port_high=high, capacity=capacity, status="online",
            created_at=now, reachable=reachable,
            agent_version=health.version if health else None,
            last_seen=now if health else None,
        )  # fmt: skip
        try:
            async with self.db.begin() as conn:
                await conn.execute(insert(mac_minis).values(**values))
        except StorageError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise InputError(f"hostname: {hostname} is already in the inventory") from None
            raise
        return await self.get(hostname)

    async def verify(
        self, hostname: str, agent_url: str, *, timeout: float = 10.0, **fields: Any
    ) -> AgentHealth:
        """Check the fields as ``add`` does (the same keywords), then ask the agent for
        ``GET /health`` with the token, bounded by ``timeout``; InputError with the reason when
        it cannot answer."""
        url, _low, _high = _validated(hostname, agent_url, **fields)
        agent_token, agent_token_env = fields.get("agent_token"), fields.get("agent_token_env")
        token = agent_token
        if agent_token_env is not None:
            token = os.environ.get(agent_token_env)
            if not token:
                raise InputError(f"agent_token_env: the variable {agent_token_env} is unset")
        assert token is not None
        try:
            async with (
                AgentClient(url, token, timeout=timeout, retries=0) as client,
                asyncio.timeout(timeout),
            ):
                return await client.health()
        except TimeoutError:
            raise InputError(f"agent {url}: no answer within {timeout:g} s") from None
        except Unreachable as exc:
            raise InputError(f"agent not reachable: {exc}") from None
        except Unauthorized:
            raise InputError(f"agent {url} refused the token (401): wrong token") from None
        except RemoteError as exc:
            raise InputError(f"agent {url} did not answer as an agent: {exc}") from None

    async def list(self) -> list[Mini]:
        query = with_usage().order_by(mac_minis.c.hostname)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [mini_from_row(row, int(row.used)) for row in rows]

    async def get(self, hostname: str) -> Mini:
        for mini in await self.list():
            if mini.hostname == hostname:
                return mini
        raise InputError(f"no Mini {hostname!r} in the inventory")

    async def drain(self, hostname: str) -> Mini:
        return await self._set_status(hostname, "draining")

    async def undrain(self, hostname: str) -> Mini:
        return await self._set_status(hostname, "online")

    online = undrain

    async def offline(self, hostname: str) -> Mini:
        return await self._set_status(hostname, "offline")

    async def _set_status(self, hostname: str, status: str) -> Mini:
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(mac_minis).where(mac_minis.c.hostname == hostname).values(status=status)
            )
        if result.rowcount != 1:
            raise InputError(f"no Mini {hostname!r} in the inventory")
        return await self.get(hostname)

    async def remove(self, hostname: str) -> None:
        """Delete a Mini that holds no claw (in the same write transaction as the check)."""
        async with self.db.begin_write() as conn:
            mini_id = (
                await conn.execute(select(mac_minis.c.id).where(mac_minis.c.hostname == hostname))
            ).scalar_one_or_none()
            if mini_id is None:
                raise InputError(f"no Mini {hostname!r} in the inventory")
            if self.db.dialect == "postgresql":
                lock = select(mac_minis.c.id).where(mac_minis.c.id == mini_id).with_for_update()
                await conn.execute(lock)
            held = (
                await conn.execute(
                    select(func.count()).select_from(claws).where(claws.c.mini_id == mini_id)
                )
            ).scalar_one()
            if held:
                raise InputError(
                    f"{hostname} still holds {held} claw(s): drain it and delete them first"
                )
            await conn.execute(delete(mac_minis).where(mac_minis.c.id == mini_id))


async def seed_minis(db: Database, configured: Sequence[MiniConfig]) -> list[str]:
    """Add the config's ``[[claws.minis]]`` that the inventory lacks; the hostnames added.

    The inventory is then managed with ``clawops minis``: the config never changes or removes
    a Mini already there. A config Mini the inventory refuses stops the node's start.
    """
    minis = Minis(db)
    existing = {m.hostname for m in await minis.list()}
    added: list[str] = []
    for index, mini in enumerate(configured):
        if mini.hostname in existing:
            continue
        try:
            await minis.add(
                mini.hostname, mini.agent_url, ports=mini.ports, capacity=mini.capacity,
                agent_token_env=mini.agent_token_env, tunnel_suffix=mini.tunnel_suffix,
                gateway_host=mini.gateway_host,
            )  # fmt: skip
        except InputError as exc:
            if "already in the inventory" in str(exc):
                continue  # another node seeded it first
            raise StartupRefused(f"claws.minis[{index}] ({mini.hostname}): {exc}") from None
        added.append(mini.hostname)
    return added
