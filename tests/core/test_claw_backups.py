"""Never lose a claw, on both backends: backups, soft delete, restore, purge (issue 14)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from core.buckets import Buckets, S3Settings
from core.claws import BackupFailed
from core.errors import InputError, RemoteError
from core.provision import NoCapacity
from core.tables import claws as claws_table
from core.tables import utcnow
from tests.auxil.net import free_port
from tests.core.test_claws import add_mini, fleet, keyring, row, service, start_agent

__all__ = ["fleet", "keyring", "start_agent"]  # fixtures


async def active(db, fleet, start_agent, keyring, s3, **kwargs):
    agent = await start_agent()
    await add_mini(fleet, agent.url, tunnel_suffix="m1.claws.example.com")
    claws = service(db, keyring, s3, **kwargs)
    claw = await claws.provision("acme", "support")
    return agent, claws, claw


async def test_a_backup_is_recorded_and_kept_to_the_configured_count(
    db, fleet, start_agent, keyring, s3
):
    agent, claws, claw = await active(db, fleet, start_agent, keyring, s3, backups_keep=3)
    info = await claws.backup("acme", "support")
    assert (info.key, info.size, info.method) == (
        f"backups/{claw.agent_id}-1.tar.gz",
        12288,
        "tarball",
    )
    after = await claws.get("acme", "support")
    assert after.backup_key == info.key and after.backup_at is not None
    assert agent.calls.count(f"POST /claws/{claw.agent_id}/backup") == 1


async def test_a_backup_that_fails_or_is_silent_says_so_within_its_timeout(
    db, fleet, start_agent, keyring, s3
):
    agent, claws, _ = await active(db, fleet, start_agent, keyring, s3, backup_timeout=0.5)
    agent.refuse_backup = True
    with pytest.raises(BackupFailed, match=r"backup failed: .*S3 store unreachable"):
        await claws.backup("acme", "support")
    agent.refuse_backup, agent.latency = False, 2.0
    started = asyncio.get_running_loop().time()
    with pytest.raises(BackupFailed, match="backup failed"):
        await claws.backup("acme", "support")
    assert asyncio.get_running_loop().time() - started < 15  # bounded, not hung
    assert (await claws.get("acme", "support")).backup_key is None


async def test_delete_keeps_the_bucket_frees_the_port_and_restore_brings_it_back(
    db, fleet, start_agent, keyring, s3
):
    agent, claws, claw = await active(db, fleet, start_agent, keyring, s3)
    token = await claws.gateway_token("acme", "support")
    final = await claws.deprovision("acme", "support")
    assert final is not None and final.key == f"backups/{claw.agent_id}-1.tar.gz"
    gone = await claws.get("acme", "support")
    assert (gone.status, gone.mini, gone.mini_port, gone.tunnel_hostname) == (
        "deleted",
        None,
        None,
        None,
    )
    assert gone.deleted_at is not None and gone.backup_key == final.key
    assert agent.claws == {} and await Buckets(s3).exists(claw.bucket)
    assert (await fleet.get("mini-1")).used == 0
    assert [c.slug for c in await claws.list()] == []
    assert [c.slug for c in await claws.list(deleted=True)] == ["support"]
    assert claws.purge_at(gone) == gone.deleted_at + timedelta(days=30)
    with pytest.raises(InputError, match="restore acme support"):
        await claws.provision("acme", "support")
    other = await claws.provision("acme", "other")  # the freed port goes to the next claw
    assert other.mini_port == 3001

    back = await claws.restore("acme", "support")
    assert (back.id, back.status, back.bucket, back.deleted_at) == (
        claw.id,
        "active",
        claw.bucket,
        None,
    )
    assert back.mini_port == 3002 and back.tunnel_hostname == claw.tunnel_hostname
    held = agent.claws[claw.agent_id]
    assert held["restore"] is True and held["bucket"] == claw.bucket and held["token"] == token
    assert back.steps == ["reserved", "agent", "tunnel", "ready"]


async def test_delete_stops_when_the_final_backup_fails_and_force_skips_it(
    db, fleet, start_agent, keyring, s3
):
    agent, claws, claw = await active(db, fleet, start_agent, keyring, s3)
    agent.refuse_backup = True
    with pytest.raises(BackupFailed, match="S3 store unreachable"):
        await claws.deprovision("acme", "support")
    still = await claws.get("acme", "support")
    assert (still.status, still.mini_port) == ("active", 3001) and claw.agent_id in agent.claws
    assert await claws.deprovision("acme", "support", force=True) is None
    assert (await claws.get("acme", "support")).status == "deleted" and agent.claws == {}
    with pytest.raises(InputError, match="already deleted"):
        await claws.deprovision("acme", "support")


async def test_restore_refuses_a_live_claw_one_past_retention_and_without_room(
    db, fleet, start_agent, keyring, s3
):
    agent, claws, _ = await active(db, fleet, start_agent, keyring, s3)
    with pytest.raises(InputError, match="is active, not deleted"):
        await claws.restore("acme", "support")
    with pytest.raises(InputError, match="no claw acme/ghost"):
        await claws.restore("acme", "ghost")
    await claws.deprovision("acme", "support")
    await fleet.drain("mini-1")
    with pytest.raises(NoCapacity, match="no Mini has capacity"):
        await claws.restore("acme", "support")
    assert (await claws.get("acme", "support")).status == "deleted"
    await fleet.undrain("mini-1")
    async with db.begin() as conn:
        await conn.execute(claws_table.update().values(deleted_at=utcnow() - timedelta(days=31)))
    with pytest.raises(InputError, match="past the retention"):
        await claws.restore("acme", "support")
    assert (await claws.get("acme", "support")).status == "deleted" and agent.claws == {}


async def test_two_restores_at_once_one_wins(db, fleet, start_agent, keyring, s3):
    agent, claws, claw = await active(db, fleet, start_agent, keyring, s3)
    await claws.deprovision("acme", "support")
    other = service(db, keyring, s3)
    other.bucket_prefix = claws.bucket_prefix
    results = await asyncio.gather(
        claws.restore("acme", "support"),
        other.restore("acme", "support"),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1 and len(losses) == 1 and isinstance(losses[0], InputError), results
    assert "not deleted" in str(losses[0]) or "changed meanwhile" in str(losses[0])
    assert list(agent.claws) == [claw.agent_id]
    assert (await claws.get("acme", "support")).status == "active"


async def test_a_restore_whose_gateway_never_comes_up_goes_back_to_deleted(
    db, fleet, start_agent, keyring, s3
):
    agent, claws, claw = await active(db, fleet, start_agent, keyring, s3, provision_timeout=0.3)
    await claws.deprovision("acme", "support")
    deleted_at = (await claws.get("acme", "support")).deleted_at
    agent.fault = "never-ready"
    with pytest.raises(RemoteError, match=r"restore failed at ready: .*it is deleted again"):
        await claws.restore("acme", "support")
    back = await claws.get("acme", "support")
    assert (back.status, back.mini_port, back.deleted_at) == ("deleted", None, deleted_at)
    assert agent.claws == {} and await Buckets(s3).exists(claw.bucket)


async def test_a_restore_whose_agent_dies_is_rolled_back_to_deleted_by_recover(
    db, fleet, start_agent, keyring, s3
):
    agent, claws, claw = await active(db, fleet, start_agent, keyring, s3, provision_timeout=30)
    await claws.deprovision("acme", "support")
    agent.fault = "never-ready"
    task = asyncio.create_task(claws.restore("acme", "support"))
    for _ in range(500):  # the node dies while the restored gateway is starting
        await asyncio.sleep(0.01)
        if claw.agent_id in agent.claws and "tunnel" in (await row(db)).steps:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await claws.get("acme", "support")).status == "provisioning"
    assert await claws.recover(timedelta(0)) == ["acme/support: restore rolled back (deleted)"]
    back = await claws.get("acme", "support")
    assert (back.status, back.mini_port) == ("deleted", None)
    assert agent.claws == {} and await Buckets(s3).exists(claw.bucket)


async def test_purge_deletes_old_buckets_and_rows_and_keeps_a_row_whose_bucket_fails(
    db, fleet, start_agent, keyring, s3
):
    _agent, claws, claw = await active(db, fleet, start_agent, keyring, s3)
    second = await claws.provision("acme", "recent")
    await claws.deprovision("acme", "support")
    await claws.deprovision("acme", "recent")
    assert await claws.purge() == []  # nothing is old enough
    async with db.begin() as conn:
        await conn.execute(
            claws_table.update()
            .where(claws_table.c.id == claw.id)
            .values(deleted_at=utcnow() - timedelta(days=31))
        )
    good = claws.buckets
    claws.buckets = Buckets(S3Settings(f"http://127.0.0.1:{free_port()}", "k", "s", timeout=0.5))
    (failed,) = await claws.purge()
    assert failed.name == "acme/support" and "unreachable" in failed.error
    assert await row(db) is not None and await Buckets(s3).exists(claw.bucket)
    with pytest.raises(InputError, match="past the retention"):
        await claws.restore("acme", "support")
    claws.buckets = good
    assert [(p.name, p.error) for p in await claws.purge()] == [("acme/support", "")]
    assert await row(db) is None and not await Buckets(s3).exists(claw.bucket)
    assert await Buckets(s3).exists(second.bucket)
    assert [c.slug for c in await claws.list(deleted=True)] == ["recent"]
