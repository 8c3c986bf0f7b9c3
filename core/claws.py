"""Claws on the Mac Mini fleet (SPEC 6): provision with rollback, deprovision, recover.

A claw's id on its agent is ``claw-<row id>`` (short, fleet-unique and always within the
agent's 63-character clawId rule, which ``<org>--<slug>`` would not be); its bucket is
``<bucket_prefix><row id>`` and its tunnel hostname ``claw-<row id>-<tunnel suffix>``.

Provisioning (``Claws.provision``):

1. Check the key, the slug and the org; generate and seal the gateway token.
2. ``provision.reserve``: one transaction picks the Mini and port and inserts the row.
3. Outside it: agent create, bucket, tunnel hostname, poll the agent until the gateway is
   ready -> ``active``. Each step is written to ``steps`` *before* it starts (the undo of every
   step is idempotent, so a crash mid-step is undone safely by ``recover``).
4. A failing step: the claw goes ``error`` (with the reason, still holding its port), the done
   steps are undone in reverse order, then the port is released. If an undo fails the claw
   keeps its port and steps and ``recover`` finishes the job later.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, or_, select

from core.agent_client import NotFound, NotReached
from core.buckets import Buckets, S3Settings, check_bucket_name
from core.config import ClawsConfig
from core.crypto import Keyring, SecretsError
from core.db import Database
from core.errors import ClawopsError, InputError, RemoteError
from core.minis import Mini, agent_client, mini_from_row
from core.orgs import org_exists
from core.provision import Progress, Stopwatch, reserve, token_context, transition
from core.tables import claws, mac_minis, utcnow

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Claw:
    id: int
    org: str
    slug: str
    status: str
    mini: str | None
    mini_port: int | None
    tunnel_hostname: str | None
    gateway_url: str | None
    bucket: str | None
    steps: list[str]
    error: str
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    # The gateway as the claws_health job last saw it (core/clawwatch.py), soft delete, backups.
    gateway_state: str | None = None
    gateway_restarts: int = 0
    gateway_error: str = ""
    gateway_since: datetime | None = None
    checked_at: datetime | None = None
    deleted_at: datetime | None = None
    backup_key: str | None = None
    backup_at: datetime | None = None

    @property
    def agent_id(self) -> str:
        return f"claw-{self.id}"

    @property
    def alert_key(self) -> str:
        return f"claw:{self.org}/{self.slug}"

    @property
    def gateway_link(self) -> str | None:
        """The gateway's page through its tunnel (the seed's "OpenClaw Gateway" button)."""
        return f"https://{self.tunnel_hostname}" if self.tunnel_hostname else None


_Strings = list[str]
_ClawList = list[Claw]


class _TakenOver(Exception):
    """Someone else (another node's recover) changed the claw's status under us."""


class Claws:
    def __init__(
        self,
        db: Database,
        keyring: Keyring | None,
        *,
        buckets: Buckets | None = None,
        bucket_prefix: str = "claw-",
        provision_timeout: float = 180.0,
        poll_interval: float = 0.5,
        agent_timeout: float = 10.0,
        agent_retries: int = 2,
        no_key_reason: str = "no claws key is configured",
    ) -> None:
        self.db, self.keyring, self.buckets = db, keyring, buckets
        self.bucket_prefix = bucket_prefix
        self.provision_timeout, self.poll_interval = provision_timeout, poll_interval
        self.agent_timeout, self.agent_retries = agent_timeout, agent_retries
        self.no_key_reason = no_key_reason

    @classmethod
    def from_config(cls, db: Database, config: ClawsConfig) -> Claws:
        """Keys from ``secret_key_env`` (a missing key is kept and refused per operation)."""
        keyring, reason = None, ""
        try:
            keyring = Keyring.from_env(config.secret_key_env)
        except SecretsError as exc:
            reason = str(exc)
        buckets, prefix = None, "claw-"
        if config.r2 is not None:
            r2 = config.r2
            settings = S3Settings.from_env(
                r2.endpoint_url, r2.access_key_id_env, r2.secret_access_key_env, r2.region
            )
            buckets, prefix = Buckets(settings), r2.bucket_prefix
        return cls(
            db, keyring, buckets=buckets, bucket_prefix=prefix,
            provision_timeout=config.provision_timeout.total_seconds(), no_key_reason=reason,
        )  # fmt: skip

    def _keys(self) -> Keyring:
        if self.keyring is None:
            raise SecretsError(self.no_key_reason)
        return self.keyring

    # -- reading ------------------------------------------------------------------------------

    async def get(self, org: str, slug: str) -> Claw:
        found: _ClawList = await self._select(claws.c.org == org, claws.c.slug == slug)
        if not found:
            raise InputError(f"no claw {org}/{slug}")
        return found[0]

    async def list(self, org: str | None = None) -> _ClawList:
        return await self._select(*([claws.c.org == org] if org else []))

    async def gateway_token(self, org: str, slug: str) -> str:
        """The claw's gateway token, opened (for the proxy's handshake; never shown)."""
        keyring = self._keys()
        async with self.db.connect() as conn:
            sealed = (
                await conn.execute(
                    select(claws.c.gateway_token_sealed).where(
                        claws.c.org == org, claws.c.slug == slug
                    )
                )
            ).scalar_one_or_none()
        if not sealed:
            raise InputError(f"no claw {org}/{slug}")
        return keyring.open(sealed, token_context(org, slug))

    async def _select(self, *where: Any) -> _ClawList:
        query = (
            select(claws, mac_minis.c.hostname.label("mini_hostname"), mac_minis.c.gateway_host,
                   mac_minis.c.agent_url)
            .outerjoin(mac_minis, mac_minis.c.id == claws.c.mini_id)
            .where(*where)
            .order_by(claws.c.org, claws.c.slug)
        )  # fmt: skip
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_claw(row) for row in rows]

    # -- provisioning -------------------------------------------------------------------------

    async def check_new(self, org: str, slug: str) -> Keyring:
        """Refuse, before anything is done, a claw that cannot be provisioned as asked."""
        keyring = self._keys()
        if not SLUG.match(slug):
            raise InputError(f"claw name {slug!r}: lower-case letters, digits, '-'; 1-63 chars")
        if not await org_exists(self.db, org):
            raise InputError(f"no org {org!r} (orgs come from [[orgs]] in the config)")
        existing = await self._select(claws.c.org == org, claws.c.slug == slug)
        if existing:
            raise InputError(f"claw {org}/{slug} exists ({existing[0].status})")
        return keyring

    async def provision(
        self, org: str, slug: str, created_by: int | None = None, progress: Progress | None = None
    ) -> Claw:
        """Place, start and wait for a claw; on failure undo everything and raise RemoteError.
        ``progress`` is told each step ("reserved mini-1:18801 · 0 s")."""
        say = Stopwatch(progress)
        keyring = await self.check_new(org, slug)
        token = secrets.token_urlsafe(32)
        sealed = keyring.seal(token, token_context(org, slug))
        placed = await reserve(self.db, org, slug, created_by, sealed)
        claw_id, mini, port = placed.claw_id, placed.mini, placed.port
        await say(f"reserved {mini.hostname}:{port}")
        steps: _Strings = ["reserved"]
        step = "agent"
        bucket = check_bucket_name(f"{self.bucket_prefix}{claw_id}") if self.buckets else None
        try:
            async with agent_client(
                mini, keyring, timeout=self.agent_timeout, retries=self.agent_retries
            ) as client:
                await self._record(claw_id, steps := [*steps, "agent"])
                await say("gateway starting")
                try:
                    await client.create(f"claw-{claw_id}", port, token, bucket)
                except NotReached:
                    steps.remove("agent")  # the request never left: nothing to undo there
                    raise
                if self.buckets is not None and bucket is not None:
                    step = "bucket"
                    await self._record(claw_id, steps := [*steps, "bucket"], bucket=bucket)
                    try:
                        await self.buckets.create(bucket)
                    except ClawopsError:
                        steps.remove("bucket")  # not created (maybe not ours): never delete
                        raise
                    await say(f"bucket {bucket} created")
                step = "tunnel"
                tunnel = f"claw-{claw_id}-{mini.tunnel_suffix}" if mini.tunnel_suffix else None
                await self._record(claw_id, steps := [*steps, "tunnel"], tunnel_hostname=tunnel)
                step = "ready"
                await say("waiting for the gateway's handshake")
                await self._wait_ready(client, f"claw-{claw_id}")
                await say("handshake ok")
            if not await transition(
                self.db, claw_id, "provisioning", status="active", steps=[*steps, "ready"]
            ):
                raise _TakenOver
        except _TakenOver:
            raise RemoteError(f"{org}/{slug}: taken over by another node's recovery") from None
        except ClawopsError as exc:
            reason = f"{step}: {exc}"
            await self._fail(claw_id, steps, reason, mini)
            raise RemoteError(f"{org}/{slug}: provisioning failed at {reason}") from None
        return await self.get(org, slug)

    async def _record(self, claw_id: int, steps: _Strings, **values: Any) -> None:
        if not await transition(self.db, claw_id, "provisioning", steps=steps, **values):
            raise _TakenOver

    async def _wait_ready(self, client: Any, agent_id: str) -> None:
        deadline = asyncio.get_running_loop().time() + self.provision_timeout
        last = "no answer yet"
        while True:
            try:
                info = await client.status(agent_id)
                if info.ready:
                    return
                last = f"status {info.status}" + (f": {info.error}" if info.error else "")
            except NotFound:
                raise
            except RemoteError as exc:
                last = str(exc)
            if asyncio.get_running_loop().time() >= deadline:
                raise RemoteError(
                    f"gateway not ready after {self.provision_timeout:g}s ({last})"
                )  # fmt: skip
            await asyncio.sleep(self.poll_interval)

    async def _fail(self, claw_id: int, steps: _Strings, reason: str, mini: Mini) -> None:
        """provisioning -> error (port still held), undo ``steps``, then release the port."""
        if await transition(
            self.db, claw_id, "provisioning", status="error", error=reason, steps=steps
        ):
            await self._undo_and_release(claw_id, steps, reason, mini)

    async def _undo(self, claw_id: int, steps: _Strings, mini: Mini | None) -> _Strings:
        """Undo the remote steps in reverse order; returns the ones that could not be undone."""
        left: _Strings = []
        for step in reversed(steps):
            try:
                if step == "bucket" and self.buckets is not None:
                    await self.buckets.delete(check_bucket_name(f"{self.bucket_prefix}{claw_id}"))
                elif step == "agent" and mini is not None:
                    async with agent_client(
                        mini, self.keyring, timeout=self.agent_timeout, retries=self.agent_retries
                    ) as client:
                        await client.delete(f"claw-{claw_id}")
            except ClawopsError as exc:
                left.insert(0, f"{step} ({exc})")
        return left

    async def _undo_and_release(
        self, claw_id: int, steps: _Strings, reason: str, mini: Mini | None
    ) -> bool:
        left = await self._undo(claw_id, steps, mini)
        if left:
            names = [s.split(" ", 1)[0] for s in left]
            await transition(
                self.db, claw_id, "error", steps=["reserved", *names],
                error=f"{reason}; rollback incomplete, recover() retries: {'; '.join(left)}",
            )  # fmt: skip
            return False
        await transition(
            self.db, claw_id, "error", steps=[], mini_id=None, mini_port=None,
            tunnel_hostname=None, bucket=None,
        )  # fmt: skip
        return True

    # -- deprovisioning and recovery ----------------------------------------------------------

    async def deprovision(self, org: str, slug: str) -> None:
        """active/error/deleting -> deleting, undo every step, delete the row."""
        self._keys()
        claw = await self.get(org, slug)
        if claw.status == "provisioning":
            raise InputError(f"{org}/{slug} is still provisioning; try again when it settles")
        if not await transition(self.db, claw.id, claw.status, status="deleting"):
            raise InputError(f"{org}/{slug} changed meanwhile (another node?); try again")
        await self._finish_delete(claw)

    async def _finish_delete(self, claw: Claw) -> None:
        left = await self._undo(claw.id, claw.steps, await self._mini(claw.id))
        if left:
            await transition(
                self.db, claw.id, "deleting", error=f"delete incomplete: {'; '.join(left)}"
            )  # fmt: skip
            raise RemoteError(f"{claw.org}/{claw.slug}: delete incomplete: {'; '.join(left)}")
        async with self.db.begin() as conn:
            await conn.execute(
                delete(claws).where(claws.c.id == claw.id, claws.c.status == "deleting")
            )

    async def _mini(self, claw_id: int) -> Mini | None:
        query = select(mac_minis).join(claws, claws.c.mini_id == mac_minis.c.id)
        async with self.db.connect() as conn:
            row = (await conn.execute(query.where(claws.c.id == claw_id))).first()
        return None if row is None else mini_from_row(row)

    async def recover(self, stale_after: timedelta | None = None) -> _Strings:
        """Finish or roll back claws left mid-way (a node crashed); returns what was done.

        Only claws untouched for ``stale_after`` (default: the provision timeout plus two
        minutes, so a provision still running on another node is left alone) are considered;
        each is claimed with a conditional update on its status and ``updated_at``.
        """
        keyring = self._keys()
        stale = (
            stale_after
            if stale_after is not None
            else timedelta(seconds=self.provision_timeout + 120)
        )
        cutoff = utcnow() - stale
        candidates = [
            c for c in await self._select(
                or_(claws.c.status.in_(("provisioning", "deleting")), claws.c.steps != "[]")
            )
            if c.updated_at <= cutoff and (c.status != "active")
        ]  # fmt: skip
        done: _Strings = []
        for claw in candidates:
            if not await self._claim(claw):
                continue
            name = f"{claw.org}/{claw.slug}"
            mini = await self._mini(claw.id)
            try:
                if claw.status == "deleting":
                    await self._finish_delete(claw)
                    done.append(f"{name}: deleted")
                elif claw.status == "provisioning" and await self._ready(claw, mini, keyring):
                    steps = [*claw.steps, "ready"]
                    await transition(self.db, claw.id, "provisioning", status="active", steps=steps)
                    done.append(f"{name}: finished (active)")
                else:
                    reason = claw.error or "the node stopped while provisioning"
                    if claw.status == "provisioning":
                        await transition(
                            self.db, claw.id, "provisioning", status="error", error=reason
                        )  # fmt: skip
                    ok = await self._undo_and_release(claw.id, claw.steps, reason, mini)
                    done.append(f"{name}: rolled back" + ("" if ok else " (incomplete)"))
            except ClawopsError as exc:
                done.append(f"{name}: {exc}")
        return done

    async def _claim(self, claw: Claw) -> bool:
        async with self.db.begin() as conn:
            result = await conn.execute(
                claws.update()
                .where(
                    claws.c.id == claw.id,
                    claws.c.status == claw.status,
                    claws.c.updated_at == claw.updated_at,
                )
                .values(updated_at=utcnow())
            )
        return result.rowcount == 1

    async def _ready(self, claw: Claw, mini: Mini | None, keyring: Keyring) -> bool:
        """Every step but the wait was done and the agent now says the gateway is ready."""
        if "tunnel" not in claw.steps or mini is None:
            return False
        try:
            async with agent_client(mini, keyring, timeout=self.agent_timeout) as client:
                return bool((await client.status(claw.agent_id)).ready)
        except ClawopsError:
            return False


def _claw(row: Any) -> Claw:
    gateway = None
    if row.tunnel_hostname:
        gateway = f"wss://{row.tunnel_hostname}"
    elif row.mini_port is not None and row.mini_hostname is not None:
        host = row.gateway_host or urlsplit(row.agent_url).hostname or row.mini_hostname
        gateway = f"ws://{host}:{row.mini_port}"
    return Claw(
        id=row.id, org=row.org, slug=row.slug, status=row.status, mini=row.mini_hostname,
        mini_port=row.mini_port, tunnel_hostname=row.tunnel_hostname, gateway_url=gateway,
        bucket=row.bucket, steps=list(json.loads(row.steps or "[]")), error=row.error,
        created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at,
        gateway_state=row.gateway_state, gateway_restarts=row.gateway_restarts or 0,
        gateway_error=row.gateway_error or "", gateway_since=row.gateway_since,
        checked_at=row.checked_at, deleted_at=row.deleted_at, backup_key=row.backup_key,
        backup_at=row.backup_at,
    )  # fmt: skip
