"""Login links, sessions and API tokens on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core.config import OrgConfig
from core.db import Database
from core.errors import InputError
from core.orgs import sync_orgs
from core.tables import api_tokens, metadata, utcnow, web_logins, web_sessions
from core.websessions import WebAuth, digest

USER, OTHER = 100, 200


@pytest.fixture
def auth(db: Database) -> WebAuth:
    return WebAuth(db)


async def rows(db: Database, table) -> list:
    async with db.connect() as conn:
        return list((await conn.execute(select(table))).all())


async def test_a_login_link_makes_a_session_of_its_user_once(auth, db):
    link = await auth.create_login(USER)
    session = await auth.redeem_login(link, user_agent="Firefox")
    assert session is not None and session != link
    assert await auth.session_user(session) == USER
    assert await auth.redeem_login(link) is None
    (login,) = await rows(db, web_logins)
    assert login.used_at is not None and login.user_id == USER
    (stored,) = await rows(db, web_sessions)
    assert (stored.user_id, stored.user_agent, stored.revoked_at) == (USER, "Firefox", None)
    assert stored.expires_at - stored.created_at == auth.session_ttl


async def test_an_expired_link_is_refused_and_makes_no_session(auth, db):
    link = await auth.create_login(USER, ttl=timedelta(milliseconds=50))
    await asyncio.sleep(0.1)
    assert await auth.redeem_login(link) is None
    assert await rows(db, web_sessions) == []
    assert (await rows(db, web_logins))[0].used_at is None


@pytest.mark.parametrize("secret", ["", "nope", "x" * 5000])
async def test_an_unknown_or_absurd_link_is_refused(auth, db, secret):
    await auth.create_login(USER)
    assert await auth.redeem_login(secret) is None
    assert await auth.session_user(secret) is None
    assert await auth.token_user(secret) is None
    assert await rows(db, web_sessions) == []


async def test_concurrent_redemptions_of_one_link_yield_exactly_one_session(db):
    # Separate WebAuth objects over separate engines: as two nodes (or workers) would race.
    others = [Database(db.url) for _ in range(3)]
    try:
        link = await WebAuth(db).create_login(USER)
        auths = [WebAuth(d) for d in (db, *others)] * 5
        results = await asyncio.gather(*(a.redeem_login(link) for a in auths))
    finally:
        for other in others:
            await other.close()
    sessions = [r for r in results if r is not None]
    assert len(sessions) == 1
    assert len(await rows(db, web_sessions)) == 1
    assert await WebAuth(db).session_user(sessions[0]) == USER


async def test_a_session_ends_when_it_expires(db):
    auth = WebAuth(db, session_ttl=timedelta(milliseconds=100))
    session = await auth.redeem_login(await auth.create_login(USER))
    assert session is not None and await auth.session_user(session) == USER
    await asyncio.sleep(0.15)
    assert await auth.session_user(session) is None


async def test_a_revoked_session_is_refused_and_others_live_on(auth):
    first = await auth.redeem_login(await auth.create_login(USER))
    second = await auth.redeem_login(await auth.create_login(USER))
    assert first and second
    assert await auth.revoke_session(first) is True
    assert await auth.revoke_session(first) is False
    assert await auth.session_user(first) is None
    assert await auth.session_user(second) == USER


async def test_revoke_all_ends_every_session_and_pending_link_of_one_user_only(auth):
    mine = [await auth.redeem_login(await auth.create_login(USER)) for _ in range(2)]
    pending = await auth.create_login(USER)
    theirs = await auth.redeem_login(await auth.create_login(OTHER))
    assert await auth.revoke_all(USER) == 2
    assert [await auth.session_user(s or "") for s in mine] == [None, None]
    assert await auth.redeem_login(pending) is None
    assert await auth.session_user(theirs or "") == OTHER


async def test_last_seen_is_touched_when_a_session_is_used(auth, db):
    session = await auth.redeem_login(await auth.create_login(USER))
    long_ago = utcnow() - timedelta(hours=1)
    async with db.begin() as conn:
        await conn.execute(update(web_sessions).values(last_seen=long_ago))
    assert await auth.session_user(session or "") == USER
    (stored,) = await rows(db, web_sessions)
    assert stored.last_seen > long_ago + timedelta(minutes=59)


async def test_no_secret_is_stored_only_its_hash(auth, db):
    link = await auth.create_login(USER)
    session = await auth.redeem_login(link)
    token = await auth.create_token(USER, "ci")
    dump = ""
    async with db.connect() as conn:
        for table in metadata.sorted_tables:
            dump += repr((await conn.execute(select(table))).all())
    for secret in (link, session, token):
        assert secret and secret not in dump
        assert digest(secret) in dump


async def test_an_api_token_names_its_user_until_it_is_revoked(auth, db):
    token = await auth.create_token(USER, "deploy-script")
    assert await auth.token_user(token) == USER
    (stored,) = await rows(db, api_tokens)
    assert stored.last_used is not None
    revoked = await auth.revoke_token("deploy-script")
    assert (revoked.name, revoked.user_id, revoked.active) == ("deploy-script", USER, False)
    assert await auth.token_user(token) is None
    with pytest.raises(InputError, match="no active API token"):
        await auth.revoke_token("deploy-script")


async def test_a_token_can_be_revoked_by_id_and_its_name_reused_after(auth):
    old = await auth.create_token(USER, "ci")
    with pytest.raises(InputError, match="exists"):
        await auth.create_token(OTHER, "ci")
    (info,) = await auth.tokens()
    await auth.revoke_token(str(info.id))
    new = await auth.create_token(OTHER, "ci")
    assert await auth.token_user(old) is None
    assert await auth.token_user(new) == OTHER
    assert [(t.name, t.user_id, t.active) for t in await auth.tokens()] == [
        ("ci", USER, False),
        ("ci", OTHER, True),
    ]


@pytest.mark.parametrize("name", ["", "has space", "-dash-first", "123", "x" * 65])
async def test_a_bad_token_name_is_refused_and_nothing_is_stored(auth, db, name):
    with pytest.raises(InputError, match="token name"):
        await auth.create_token(USER, name)
    assert await rows(db, api_tokens) == []


async def test_a_session_secret_is_not_an_api_token_and_the_reverse(auth):
    session = await auth.redeem_login(await auth.create_login(USER))
    token = await auth.create_token(USER, "ci")
    assert await auth.token_user(session or "") is None
    assert await auth.session_user(token) is None


async def test_a_token_for_a_non_user_id_is_refused(auth, db):
    with pytest.raises(InputError, match="not a Telegram user id"):
        await auth.create_token(-500, "group")
    assert await rows(db, api_tokens) == []


async def test_prune_ends_the_access_of_users_who_are_no_longer_staff_nor_in_an_org(auth, db):
    admin, member, gone, dropped = 10, 20, 30, 40
    await sync_orgs(db, [OrgConfig(slug="acme", name="Acme", members=[member, dropped])])
    held = {}
    for user in (admin, member, gone, dropped):
        held[user] = (
            await auth.redeem_login(await auth.create_login(user)),
            await auth.create_login(user),
            await auth.create_token(user, f"t{user}"),
        )
    # Nothing changed: nothing is pruned.
    assert not await auth.prune([admin, gone])
    # ``gone`` leaves the viewers and ``dropped`` the org: both lose everything at once.
    await sync_orgs(db, [OrgConfig(slug="acme", name="Acme", members=[member])])
    pruned = await auth.prune([admin])
    assert (pruned.sessions, pruned.logins, pruned.tokens) == (2, 2, 2)
    assert str(pruned) == "2 session(s), 2 login link(s), 2 API token(s)"
    for user, (session, link, token) in held.items():
        kept = user in (admin, member)
        assert (await auth.session_user(session) == user) is kept
        assert (await auth.token_user(token) == user) is kept
        assert (await auth.redeem_login(link) is not None) is kept
    assert not await auth.prune([admin]), "a second run finds nothing more"
    # A user who comes back needs a new link or token: what was revoked stays revoked.
    await sync_orgs(db, [OrgConfig(slug="acme", name="Acme", members=[member, dropped])])
    assert await auth.session_user(held[dropped][0]) is None
