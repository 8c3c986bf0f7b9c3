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

Nothing is lost on delete (issue 14): ``deprovision`` first takes a final backup (unless
forced), then stops the gateway on its agent and frees the port, but keeps the row and its
bucket: status ``deleted``. ``restore`` places the same row again (same id, bucket and agent id)
and has its agent restore the newest backup; a failed restore goes back to ``deleted``.
``purge`` deletes the buckets and rows of claws deleted ``deleted_retention`` ago.
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

from sqlalchemy import delete, or_, select, update

from core.agent_client import BackupInfo, NotFound, NotReached
from core.buckets import Buckets, S3Settings, check_bucket_name
from core.config import ClawsBackupJob, ClawsConfig
from core.crypto import Keyring, SecretsError
from core.db import Database
from core.durations import format_duration
from core.errors import ClawopsError, InputError, RemoteError
from core.minis import Mini, agent_client, mini_from_row
from core.orgs import org_exists
from core.provision import (
    Progress,
    Reservation,
    Stopwatch,
    reserve,
    token_context,
    transition,
)
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
_PurgedList = list["Purged"]


class _TakenOver(Exception):
    """Someone else (another node's recover) changed the claw's status under us."""


class BackupFailed(RemoteError):
    """A claw's backup could not be made (nothing else was changed)."""


@dataclass(frozen=True)
class Purged:
    """One claw the purge looked at: its name and, when its bucket could not go, why."""

    name: str
    error: str = ""


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
        backup_timeout: float = 600.0,
        backups_keep: int = 7,
        deleted_retention: timedelta = timedelta(days=30),
    ) -> None:
        self.db, self.keyring, self.buckets = db, keyring, buckets
        self.bucket_prefix = bucket_prefix
        # A backup (or a restore's create, which downloads one) may take minutes, not seconds.
        self.backup_timeout, self.backups_keep = backup_timeout, backups_keep
        self.deleted_retention = deleted_retention
        self.provision_timeout, self.poll_interval = provision_timeout, poll_interval
        self.agent_timeout, self.agent_retries = agent_timeout, agent_retries
        self.no_key_reason = no_key_reason

    @classmethod
    def from_config(
        cls, db: Database, config: ClawsConfig, backup_timeout: timedelta | None = None
    ) -> Claws:
        """Keys from ``secret_key_env`` (a missing key is kept and refused per operation).
        ``backup_timeout`` bounds one claw's backup or restore (default: the
        ``[jobs.claws_backup]`` timeout's default, 10 minutes)."""
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
            backup_timeout=(backup_timeout or ClawsBackupJob().timeout).total_seconds(),
            backups_keep=config.backups_keep, deleted_retention=config.deleted_retention,
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

    async def list(self, org: str | None = None, *, deleted: bool | None = False) -> _ClawList:
        """The claws (of ``org``): live ones by default, ``deleted=True`` the deleted ones (kept
        for restore until purged), ``deleted=None`` all."""
        where = [claws.c.org == org] if org else []
        if deleted is not None:
            where.append(
                claws.c.status.in_(("deleted", "purging"))
                if deleted
                else claws.c.status.not_in(("deleted", "purging"))
            )
        return await self._select(*where)

    def purge_at(self, claw: Claw) -> datetime | None:
        """When a deleted claw's bucket is purged (no restore after that)."""
        return None if claw.deleted_at is None else claw.deleted_at + self.deleted_retention

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
        if existing and existing[0].status in ("deleted", "purging"):
            raise InputError(
                f"claw {org}/{slug} was deleted and is kept until purged: "
                f"/claw restore {org} {slug} brings it back"
            )
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
        await self._start(org, slug, placed, keyring, token, say, restore=False)
        return await self.get(org, slug)

    async def check_restore(self, org: str, slug: str) -> tuple[Claw, datetime]:
        """The deleted claw, still within retention, and the retention's cutoff; else
        InputError (nothing changed)."""
        claw = await self.get(org, slug)
        if claw.status not in ("deleted", "purging"):
            raise InputError(f"{org}/{slug} is {claw.status}, not deleted: nothing to restore")
        cutoff = utcnow() - self.deleted_retention
        if claw.status == "purging" or claw.deleted_at is None or claw.deleted_at <= cutoff:
            kept = format_duration(self.deleted_retention)
            raise InputError(
                f"{org}/{slug} was deleted more than {kept} ago: "
                "past the retention, it cannot be restored"
            )
        return claw, cutoff

    async def restore(self, org: str, slug: str, progress: Progress | None = None) -> Claw:
        """A deleted claw (within ``deleted_retention``) placed again on any Mini with room:
        the same row, bucket and agent id, its agent restoring the newest backup, then waited
        for like a new claw. On failure it goes back to ``deleted`` (its bucket kept) and
        RemoteError says why; not deleted, past retention or no room: InputError."""
        say = Stopwatch(progress)
        keyring = self._keys()
        claw, cutoff = await self.check_restore(org, slug)
        token = secrets.token_urlsafe(32)
        async with self.db.connect() as conn:
            sealed = (
                await conn.execute(
                    select(claws.c.gateway_token_sealed).where(claws.c.id == claw.id)
                )
            ).scalar_one_or_none()
        try:  # its own token again (browsers and devices paired with it keep working)
            token = keyring.open(sealed or "", token_context(org, slug))
        except SecretsError:
            sealed = None  # under a key no longer held: a new token
        sealed = sealed or keyring.seal(token, token_context(org, slug))
        placed = await reserve(self.db, org, slug, None, sealed, restore_after=cutoff)
        await self._start(org, slug, placed, keyring, token, say, restore=True)
        return await self.get(org, slug)

    async def _start(
        self,
        org: str,
        slug: str,
        placed: Reservation,
        keyring: Keyring,
        token: str,
        say: Stopwatch,
        *,
        restore: bool,
    ) -> None:
        """The remote steps of a provision (or restore) of a reserved row, to ``active``."""
        claw_id, mini, port = placed.claw_id, placed.mini, placed.port
        await say(f"reserved {mini.hostname}:{port}")
        steps: _Strings = ["reserved"]
        step = "agent"
        bucket = check_bucket_name(f"{self.bucket_prefix}{claw_id}") if self.buckets else None
        # A restore's create downloads and unpacks the newest backup: bounded like a backup.
        create_timeout = self.backup_timeout if restore else self.agent_timeout
        try:
            async with (
                agent_client(
                    mini, keyring, timeout=self.agent_timeout, retries=self.agent_retries
                ) as client,
                agent_client(
                    mini, keyring, timeout=create_timeout, retries=self.agent_retries
                ) as creator,
            ):
                await self._record(claw_id, steps := [*steps, "agent"])
                await say("restoring the newest backup" if restore else "gateway starting")
                try:
                    await creator.create(f"claw-{claw_id}", port, token, bucket, restore=restore)
                except NotReached:
                    steps.remove("agent")  # the request never left: nothing to undo there
                    raise
                if restore:
                    await say("gateway starting")
                if self.buckets is not None and bucket is not None and not restore:
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
            done = {"deleted_at": None} if restore else {}
            if not await transition(
                self.db, claw_id, "provisioning", status="active", steps=[*steps, "ready"], **done
            ):
                raise _TakenOver
        except _TakenOver:
            raise RemoteError(f"{org}/{slug}: taken over by another node's recovery") from None
        except ClawopsError as exc:
            reason = f"{step}: {exc}"
            if restore:
                after = await self._restore_failed(claw_id, steps, reason)
                raise RemoteError(f"{org}/{slug}: restore failed at {reason}; {after}") from None
            await self._fail(claw_id, steps, reason, mini)
            raise RemoteError(f"{org}/{slug}: provisioning failed at {reason}") from None

    async def _restore_failed(self, claw_id: int, steps: _Strings, reason: str) -> str:
        """A restore that failed: provisioning -> deleting -> (its agent claw undone) deleted."""
        if not await transition(
            self.db,
            claw_id,
            "provisioning",
            status="deleting",
            steps=steps,
            error=f"restore failed at {reason}",
        ):
            return "taken over by another node's recovery"
        found = await self._select(claws.c.id == claw_id)
        if not found:
            return "its row is gone"
        try:
            await self._finish_delete(found[0])
        except RemoteError as exc:
            return f"{exc}; it stays deleting, its port held, until recover() finishes"
        return "it is deleted again (its bucket and backups kept)"

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

    # -- backups ------------------------------------------------------------------------------

    async def backup(self, org: str, slug: str) -> BackupInfo:
        """Have the claw's agent back it up into its bucket, keeping the newest
        ``backups_keep``; records the key and time on the row. Only an active claw with a
        bucket; an agent or store that fails or is silent (bounded by ``backup_timeout``):
        BackupFailed."""
        keyring = self._keys()
        claw = await self.get(org, slug)
        if claw.status != "active":
            raise InputError(f"{org}/{slug} is {claw.status}: only an active claw is backed up")
        if not claw.bucket:
            raise InputError(f"{org}/{slug} has no bucket (no [claws.r2] store): no backups")
        mini = await self._mini(claw.id)
        if mini is None:
            raise InputError(f"{org}/{slug} is on no Mini")
        try:
            async with agent_client(
                mini, keyring, timeout=self.backup_timeout, retries=self.agent_retries
            ) as client:
                info = await asyncio.wait_for(
                    client.backup(claw.agent_id, self.backups_keep), self.backup_timeout + 5
                )
        except (ClawopsError, TimeoutError) as exc:
            why = str(exc) or f"no answer within {self.backup_timeout:g}s"
            raise BackupFailed(f"{org}/{slug}: backup failed: {why}") from None
        async with self.db.begin() as conn:
            await conn.execute(
                update(claws)
                .where(claws.c.id == claw.id)
                .values(backup_key=info.key, backup_at=utcnow())
            )
        return info

    # -- deprovisioning and recovery ----------------------------------------------------------

    async def deprovision(
        self, org: str, slug: str, *, force: bool = False, progress: Progress | None = None
    ) -> BackupInfo | None:
        """Soft delete: a final backup of an active claw (skipped with ``force``; one that fails
        raises BackupFailed and changes nothing), then active/error/deleting -> deleting, the
        gateway stopped on its agent, the port and tunnel freed, -> ``deleted`` with its bucket
        kept (until ``purge``). A claw without a bucket holds nothing worth keeping: its row
        goes. Returns the final backup, if one was made."""
        self._keys()
        say = Stopwatch(progress)
        claw = await self.get(org, slug)
        if claw.status == "provisioning":
            raise InputError(f"{org}/{slug} is still provisioning; try again when it settles")
        if claw.status in ("deleted", "purging"):
            raise InputError(f"{org}/{slug} is already deleted")
        final = None
        if claw.status == "active" and claw.bucket and not force:
            await say("final backup")
            final = await self.backup(org, slug)
            await say(f"backed up: {final.key}")
            claw = await self.get(org, slug)
        if not await transition(self.db, claw.id, claw.status, status="deleting"):
            raise InputError(f"{org}/{slug} changed meanwhile (another node?); try again")
        await say("stopping the gateway")
        await self._finish_delete(claw)
        return final

    async def _finish_delete(self, claw: Claw) -> None:
        """deleting: undo the agent step (the bucket stays), then ``deleted`` with the port and
        tunnel freed, or the row deleted when there is no bucket to keep."""
        kept = [s for s in claw.steps if s != "bucket"]
        left = await self._undo(claw.id, kept, await self._mini(claw.id))
        if left:
            await transition(
                self.db, claw.id, "deleting", error=f"delete incomplete: {'; '.join(left)}"
            )  # fmt: skip
            raise RemoteError(f"{claw.org}/{claw.slug}: delete incomplete: {'; '.join(left)}")
        if not claw.bucket:
            async with self.db.begin() as conn:
                await conn.execute(
                    delete(claws).where(claws.c.id == claw.id, claws.c.status == "deleting")
                )
            return
        await transition(
            self.db,
            claw.id,
            "deleting",
            status="deleted",
            steps=[],
            mini_id=None,
            mini_port=None,
            tunnel_hostname=None,
            deleted_at=claw.deleted_at or utcnow(),
            gateway_state=None,
        )

    async def purge(self, now: datetime | None = None) -> _PurgedList:
        """Delete the buckets, then the rows, of claws deleted ``deleted_retention`` ago. Each
        is first claimed (deleted -> purging, so a restore cannot race it); a bucket that
        cannot go leaves its row (``purging``) for the next run, and the answer says why."""
        cutoff = (now or utcnow()) - self.deleted_retention
        due = [
            c
            for c in await self.list(deleted=True)
            if c.deleted_at is not None and c.deleted_at <= cutoff
        ]
        done: _PurgedList = []
        for claw in due:
            name = f"{claw.org}/{claw.slug}"
            if claw.status == "deleted" and not await transition(
                self.db, claw.id, "deleted", status="purging"
            ):
                continue  # restored or purged meanwhile (another node)
            try:
                if claw.bucket:
                    if self.buckets is None:
                        raise RemoteError("no [claws.r2] store configured to delete it from")
                    await self.buckets.delete(check_bucket_name(claw.bucket))
            except ClawopsError as exc:
                await transition(self.db, claw.id, "purging", error=f"purge: {exc}")
                done.append(Purged(name, str(exc)))
                continue
            async with self.db.begin() as conn:
                await conn.execute(
                    delete(claws).where(claws.c.id == claw.id, claws.c.status == "purging")
                )
            done.append(Purged(name))
        return done

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
                    await transition(
                        self.db,
                        claw.id,
                        "provisioning",
                        status="active",
                        steps=steps,
                        deleted_at=None,
                    )
                    done.append(f"{name}: finished (active)")
                elif claw.status == "provisioning" and claw.deleted_at is not None:
                    # A restore left half-way: back to deleted, its bucket kept.
                    reason = claw.error or "the node stopped while restoring"
                    await transition(
                        self.db, claw.id, "provisioning", status="deleting", error=reason
                    )
                    await self._finish_delete(claw)
                    done.append(f"{name}: restore rolled back (deleted)")
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
