"""Orgs and their members, mirrored from ``[[orgs]]`` into tables ``orgs`` and ``org_members``.

The config is the truth; ``sync_orgs`` makes the tables equal to it (in one transaction) so every
node and the proxy read the same membership from the database.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update

from core.config import OrgConfig
from core.db import Database
from core.tables import org_members, orgs


async def sync_orgs(db: Database, configured: Sequence[OrgConfig]) -> None:
    """Insert, rename and remove orgs, and replace every org's members, to match ``configured``."""
    wanted = {org.slug: org for org in configured}
    async with db.begin_write() as conn:
        present = set((await conn.execute(select(orgs.c.slug))).scalars())
        gone = present - set(wanted)
        if gone:
            await conn.execute(delete(org_members).where(org_members.c.org.in_(gone)))
            await conn.execute(delete(orgs).where(orgs.c.slug.in_(gone)))
        for slug, org in wanted.items():
            if slug in present:
                await conn.execute(update(orgs).where(orgs.c.slug == slug).values(name=org.name))
            else:
                await conn.execute(insert(orgs).values(slug=slug, name=org.name))
            await conn.execute(delete(org_members).where(org_members.c.org == slug))
            members = sorted(set(org.members))
            if members:
                await conn.execute(
                    insert(org_members), [{"org": slug, "user_id": m} for m in members]
                )


async def org_exists(db: Database, slug: str) -> bool:
    async with db.connect() as conn:
        found = await conn.execute(select(orgs.c.slug).where(orgs.c.slug == slug))
        return found.scalar_one_or_none() is not None


async def is_member(db: Database, slug: str, user_id: int) -> bool:
    query = select(org_members.c.user_id).where(
        org_members.c.org == slug, org_members.c.user_id == user_id
    )
    async with db.connect() as conn:
        return (await conn.execute(query)).scalar_one_or_none() is not None
