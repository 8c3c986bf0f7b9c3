"""Leases on shared resources, on SQLite and PostgreSQL: FIFO, limits, expiry, two nodes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.config import ResourceConfig
from core.db import Database
from core.errors import InputError
from core.resources import Leases, NotFound
from core.tables import leases as leases_table

OLLAMA = ResourceConfig(name="ollama", max_concurrent=2, lease_ttl=timedelta(seconds=2))
GROK = ResourceConfig(name="grok", max_concurrent=1, lease_ttl=timedelta(seconds=30))


async def rows(db: Database) -> int:
    async with db.connect() as conn:
        count = await conn.execute(select(func.count()).select_from(leases_table))
        return int(count.scalar_one())


async def test_waiters_get_slots_first_come_first_served_up_to_the_limit(db: Database) -> None:
    store = Leases(db, [OLLAMA, GROK])
    a, b, c, d = [await store.enqueue("ollama", who) for who in "abcd"]
    # d asks before b and c while a slot is free: it stays behind them.
    assert (await store.try_acquire(a.lease)).held
    assert (await store.try_acquire(d.lease)).place == 3
    assert (await store.try_acquire(b.lease)).held
    third = await store.try_acquire(c.lease)
    assert (third.held, third.place) == (False, 1)
    assert (await store.try_acquire(d.lease)).place == 2
    await store.release(a.lease)
    assert not (await store.try_acquire(d.lease)).held  # c is first in line
    assert (await store.try_acquire(c.lease)).held
    await store.release(b.lease)
    assert (await store.try_acquire(d.lease)).held
    snap = await store.snapshot()
    assert [h["holder"] for h in snap["ollama"]["holders"]] == ["c", "d"]  # type: ignore[index]
    assert snap["grok"]["holders"] == [] and snap["grok"]["maxConcurrent"] == 1


async def test_a_holder_that_stops_heartbeating_loses_its_slot_and_reclaim_reports_it(
    db: Database,
) -> None:
    store = Leases(db, [OLLAMA])
    first = await store.enqueue("ollama", "dead")
    second = await store.enqueue("ollama", "live")
    assert (await store.try_acquire(first.lease)).held
    assert (await store.try_acquire(second.lease)).held
    third = await store.enqueue("ollama", "third")
    assert not (await store.try_acquire(third.lease)).held
    for _ in range(5):  # 2.5 s: past the TTL for 'dead', who never heartbeats
        await asyncio.sleep(0.5)
        await store.heartbeat(second.lease)
        await store.try_acquire(third.lease)
    assert (await store.try_acquire(third.lease)).held
    with pytest.raises(NotFound):
        await store.heartbeat(first.lease)
    reclaimed = await store.reclaim_expired()
    assert [x.holder for x in reclaimed] == ["dead"]
    assert await store.reclaim_expired() == []
    assert await rows(db) == 2


async def test_bad_input_is_refused_and_changes_nothing(db: Database) -> None:
    store = Leases(db, [OLLAMA])
    with pytest.raises(NotFound):
        await store.enqueue("gpu", "bot")
    for who in ("", "   ", "x" * 129, "bad\nname"):
        with pytest.raises(InputError):
            await store.enqueue("ollama", who)
    for act in (store.try_acquire, store.heartbeat, store.release):
        with pytest.raises(NotFound):
            await act("nosuchlease")
    assert await rows(db) == 0


async def contend(stores: list[Leases], workers: int, rounds: int) -> tuple[int, int]:
    """Workers spread over ``stores`` each take the resource ``rounds`` times; the most
    holders ever seen at once (counted by the holders themselves) and the acquisitions."""
    inside = peak = done = 0

    async def worker(store: Leases, n: int) -> None:
        nonlocal inside, peak, done
        for _ in range(rounds):
            lease = await store.enqueue("ollama", f"w{n}")
            while not (await store.try_acquire(lease.lease)).held:  # noqa: ASYNC110 (polling)
                await asyncio.sleep(0.01)
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.02)
            inside -= 1
            done += 1
            await store.release(lease.lease)

    await asyncio.gather(*(worker(stores[n % len(stores)], n) for n in range(workers)))
    return peak, done


async def test_concurrent_holders_never_exceed_the_limit(db: Database) -> None:
    # A TTL far above any poll gap: on a loaded machine a waiter polling a 2 s lease can lose
    # it between two polls, which is expiry (tested above), not what this test is about.
    patient = ResourceConfig(name="ollama", max_concurrent=2, lease_ttl=timedelta(seconds=60))
    peak, done = await contend([Leases(db, [patient])], workers=6, rounds=4)
    assert peak == 2 and done == 24


async def test_two_nodes_on_one_postgresql_never_hold_more_than_the_limit(pg_url: str) -> None:
    first, second = Database(pg_url), Database(pg_url)
    try:
        await first.upgrade()
        one = ResourceConfig(name="ollama", max_concurrent=1, lease_ttl=timedelta(seconds=30))
        peak, done = await contend([Leases(first, [one]), Leases(second, [one])], 8, 3)
        assert peak == 1 and done == 24
        assert await rows(first) == 0
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    "resources",
    [
        [{"name": "ollama"}, {"name": "ollama"}],
        [{"name": "ollama", "max_concurrent": 0}],
        [{"name": "ollama", "lease_ttl": "soon"}],
    ],
)
def test_a_bad_resources_table_is_refused(resources: list[dict[str, object]]) -> None:
    from core.config import parse_config
    from core.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_config({"resources": resources})
