"""Web sign-in without passwords: one-time login links, browser sessions, API tokens (SPEC 7).

Users are Telegram user ids. ``/web`` makes a one-time login link; redeeming it makes a session
(the browser's cookie); ``clawops tokens create`` makes an API token for scripts. Every secret is
``secrets.token_urlsafe(32)`` (256 bits) and only its SHA-256 is stored, so a copy of the
database signs nobody in. A link is claimed with a conditional update (``WHERE used_at IS NULL
AND expires_at > now``): of two concurrent redemptions exactly one gets a session.

Revocation (``prune``): a user keeps sessions, login links and API tokens only while they are an
admin, a viewer, or a member of at least one org. Org membership is read from ``org_members``
(the config's mirror, ``core.orgs.sync_orgs``), so ``prune`` runs right after that sync: at
start, and on any later reload of the config.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database
from core.errors import InputError
from core.tables import api_tokens, org_members, utcnow, web_logins, web_sessions

LOGIN_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(days=7)
# last_seen / last_used are written at most this often: a page load is not a write each time.
TOUCH_EVERY = timedelta(seconds=60)
# Spent and expired login links are deleted this long after they expire.
KEEP_LOGINS = timedelta(days=1)
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Serialises token creation on PostgreSQL (SQLite's BEGIN IMMEDIATE already does): two
# concurrent ``create`` of one name must not both find the name free.
_TOKEN_LOCK = 7_461_005
# A secret we hand out is 43 URL-safe characters; anything far off is refused before hashing.
_MAX_SECRET = 200


def digest(secret: str) -> str:
    """The SHA-256 (hex) of a secret: what the database keeps instead of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def _plausible(secret: str) -> bool:
    return 0 < len(secret) <= _MAX_SECRET


@dataclass(frozen=True)
class TokenInfo:
    """An API token as listed (never its secret)."""

    id: int
    name: str
    user_id: int
    created_at: datetime
    revoked_at: datetime | None
    last_used: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Pruned:
    """What ``WebAuth.prune`` ended: sessions, unspent login links and API tokens."""

    sessions: int = 0
    logins: int = 0
    tokens: int = 0

    def __bool__(self) -> bool:
        return bool(self.sessions or self.logins or self.tokens)

    def __str__(self) -> str:
        return (
            f"{self.sessions} session(s), {self.logins} login link(s), {self.tokens} API token(s)"
        )


class WebAuth:
    """Login links, sessions and API tokens in the database every node shares."""

    def __init__(
        self,
        db: Database,
        *,
        login_ttl: timedelta = LOGIN_TTL,
        session_ttl: timedelta = SESSION_TTL,
    ) -> None:
        if login_ttl <= timedelta(0) or session_ttl <= timedelta(0):
            raise ValueError("the login and session lifetimes must be positive")
        self.db = db
        self.login_ttl = login_ttl
        self.session_ttl = session_ttl

    # -- login links -------------------------------------------------------------------------

    async def create_login(self, user_id: int, ttl: timedelta | None = None) -> str:
        """A one-time login secret for ``user_id``, valid ``ttl`` (default: the login TTL)."""
        ttl = self.login_ttl if ttl is None else ttl
        if ttl <= timedelta(0):
            raise InputError("a login link must live a positive time")
        secret, now = _new_secret(), utcnow()
        async with self.db.begin() as conn:
            await conn.execute(
                delete(web_logins).where(web_logins.c.expires_at < now - KEEP_LOGINS)
            )
            await conn.execute(
                insert(web_logins).values(
                    token_hash=digest(secret), user_id=user_id, created_at=now,
                    expires_at=now + ttl,
                )
            )  # fmt: skip
        return secret

    async def redeem_login(self, secret: str, user_agent: str = "") -> str | None:
        """Spend a login secret: a new session secret, or None (unknown, used or expired).

        1. Claim the link: ``UPDATE ... SET used_at = now WHERE hash AND used_at IS NULL AND
           expires_at > now``; a row count other than 1 means it was not ours to spend.
        2. In the same transaction, read its user and insert the session.
        """
        if not _plausible(secret):
            return None
        now, hashed = utcnow(), digest(secret)
        session = _new_secret()
        async with self.db.begin() as conn:
            claimed = await conn.execute(
                update(web_logins)
                .where(
                    web_logins.c.token_hash == hashed,
                    web_logins.c.used_at.is_(None),
                    web_logins.c.expires_at > now,
                )
                .values(used_at=now)
            )
            if claimed.rowcount != 1:
                return None
            user_id = (
                await conn.execute(
                    select(web_logins.c.user_id).where(web_logins.c.token_hash == hashed)
                )
            ).scalar_one()
            await conn.execute(
                insert(web_sessions).values(
                    session_hash=digest(session), user_id=user_id, created_at=now,
                    expires_at=now + self.session_ttl, last_seen=now,
                    user_agent=user_agent[:300],
                )
            )  # fmt: skip
        return session

    # -- sessions ----------------------------------------------------------------------------

    async def session_user(self, secret: str) -> int | None:
        """The user of a live session (touching its last_seen), or None."""
        if not _plausible(secret):
            return None
        now, hashed = utcnow(), digest(secret)
        async with self.db.begin() as conn:
            row = (
                await conn.execute(
                    select(web_sessions.c.user_id, web_sessions.c.last_seen).where(
                        web_sessions.c.session_hash == hashed,
                        web_sessions.c.revoked_at.is_(None),
                        web_sessions.c.expires_at > now,
                    )
                )
            ).first()
            if row is None:
                return None
            if now - row.last_seen >= TOUCH_EVERY:
                await conn.execute(
                    update(web_sessions)
                    .where(web_sessions.c.session_hash == hashed)
                    .values(last_seen=now)
                )
        return int(row.user_id)

    async def revoke_session(self, secret: str) -> bool:
        """Sign one session out; False when it was unknown or already over."""
        if not _plausible(secret):
            return False
        now = utcnow()
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(web_sessions)
                .where(web_sessions.c.session_hash == digest(secret), _live_session(now))
                .values(revoked_at=now)
            )
        return result.rowcount == 1

    async def revoke_all(self, user_id: int) -> int:
        """Sign a user out everywhere: every live session ends and every unspent login link is
        spent. Returns how many sessions ended."""
        now = utcnow()
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(web_sessions)
                .where(web_sessions.c.user_id == user_id, _live_session(now))
                .values(revoked_at=now)
            )
            await conn.execute(
                update(web_logins)
                .where(web_logins.c.user_id == user_id, web_logins.c.used_at.is_(None))
                .values(used_at=now)
            )
        return int(result.rowcount)

    async def prune(self, staff: Iterable[int]) -> Pruned:
        """Revoke everything held by users who are no longer allowed to sign in.

        Allowed: the ``staff`` ids (admins and viewers) and every member of an org, as
        ``org_members`` says now. Everyone else loses their live sessions, unspent login links
        and active API tokens, in one transaction. Expired and revoked rows are left as they are
        (the record).
        """
        keep = sorted(set(staff))
        now = utcnow()
        members = select(org_members.c.user_id)

        def gone(column: ColumnElement[int]) -> ColumnElement[bool]:
            return and_(column.not_in(keep), column.not_in(members))

        async with self.db.begin_write() as conn:
            sessions = await conn.execute(
                update(web_sessions)
                .where(gone(web_sessions.c.user_id), _live_session(now))
                .values(revoked_at=now)
            )
            logins = await conn.execute(
                update(web_logins)
                .where(gone(web_logins.c.user_id), web_logins.c.used_at.is_(None))
                .values(used_at=now)
            )
            tokens = await conn.execute(
                update(api_tokens)
                .where(gone(api_tokens.c.user_id), api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return Pruned(int(sessions.rowcount), int(logins.rowcount), int(tokens.rowcount))

    # -- API tokens --------------------------------------------------------------------------

    async def create_token(self, user_id: int, name: str) -> str:
        """A new API token for ``user_id``; ``name`` must be unique among the active tokens."""
        if not TOKEN_NAME.match(name) or name.isdigit():
            raise InputError(
                f"token name {name!r} must be 1-64 letters, digits, '.', '_' or '-', start with "
                "a letter or digit, and not be a number"
            )
        if user_id <= 0:
            raise InputError(f"{user_id} is not a Telegram user id (a positive number)")
        secret = _new_secret()
        async with self.db.begin_write() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TOKEN_LOCK})
            if await self._active_by_name(conn, name):
                raise InputError(f"an active token named {name!r} exists; revoke it first")
            await conn.execute(
                insert(api_tokens).values(
                    name=name, token_hash=digest(secret), user_id=user_id, created_at=utcnow()
                )
            )
        return secret

    async def revoke_token(self, name_or_id: str | int) -> TokenInfo:
        """Revoke the active token with this name (or id); InputError when there is none."""
        now = utcnow()
        async with self.db.begin_write() as conn:
            if isinstance(name_or_id, int) or name_or_id.isdigit():
                where = api_tokens.c.id == int(name_or_id)
                rows = (await conn.execute(select(api_tokens).where(where))).all()
            else:
                rows = await self._active_by_name(conn, name_or_id)
            live = [r for r in rows if r.revoked_at is None]
            if not live:
                raise InputError(f"no active API token {name_or_id!r}")
            row = live[0]
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id.in_([r.id for r in live]))
                .values(revoked_at=now)
            )
        return TokenInfo(row.id, row.name, row.user_id, row.created_at, now, row.last_used)

    async def token_user(self, secret: str) -> int | None:
        """The user of an active API token (touching its last_used), or None."""
        if not _plausible(secret):
            return None
        now, hashed = utcnow(), digest(secret)
        async with self.db.begin() as conn:
            row = (
                await conn.execute(
                    select(api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.last_used).where(
                        api_tokens.c.token_hash == hashed, api_tokens.c.revoked_at.is_(None)
                    )
                )
            ).first()
            if row is None:
                return None
            if row.last_used is None or now - row.last_used >= TOUCH_EVERY:
                await conn.execute(
                    update(api_tokens).where(api_tokens.c.id == row.id).values(last_used=now)
                )
        return int(row.user_id)

    async def tokens(self) -> list[TokenInfo]:
        """Every API token, oldest first (revoked ones too, for the record)."""
        async with self.db.connect() as conn:
            rows = (await conn.execute(select(api_tokens).order_by(api_tokens.c.id))).all()
        return [
            TokenInfo(r.id, r.name, r.user_id, r.created_at, r.revoked_at, r.last_used)
            for r in rows
        ]

    @staticmethod
    async def _active_by_name(conn: AsyncConnection, name: str) -> list[Row[Any]]:
        query = select(api_tokens).where(
            api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None)
        )
        return list((await conn.execute(query)).all())


def _live_session(now: datetime) -> ColumnElement[bool]:
    return and_(web_sessions.c.revoked_at.is_(None), web_sessions.c.expires_at > now)
