"""The claws_backup and claws_purge jobs on both backends, with stand-in agents and moto's S3."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from core.buckets import Buckets
from core.claws import Claws
from core.config import OrgConfig
from core.minis import Minis
from core.orgs import sync_orgs
from core.tables import claws as claws_table
from core.tables import utcnow
from jobs.claws_backup import claws_backup
from jobs.claws_health import claws_health
from jobs.claws_purge import claws_purge
from jobs.registry import builtin_jobs
from tests.auxil.fakeagent import FakeAgent
from tests.auxil.net import free_port
from tests.core.test_claws import AGENT_ENV

KEY_ENV = "CLAWS_JOBS_TEST_KEY"


def settings(s3_url: str, prefix: str) -> dict:
    return {
        "claws": {
            "secret_key_env": KEY_ENV,
            "provision_timeout": "5s",
            "r2": {
                "endpoint_url": s3_url,
                "region": "us-east-1",
                "bucket_prefix": prefix,
                "access_key_id_env": "CLAWOPS_TEST_S3_KEY",
                "secret_access_key_env": "CLAWOPS_TEST_S3_SECRET",
            },
        }
    }


async def setup(h, monkeypatch, n: int = 2):
    from core.crypto import generate_key

    monkeypatch.setenv(KEY_ENV, generate_key())
    monkeypatch.setenv(AGENT_ENV, FakeAgent.token)
    agents = [await FakeAgent().start() for _ in range(n)]
    await sync_orgs(h.ctx.db, [OrgConfig(slug="acme", name="Acme", members=[7])])
    service = Claws.from_config(h.ctx.db, h.config.claws)
    service.poll_interval = 0.02
    for i, agent in enumerate(agents):
        await Minis(h.ctx.db).add(
            f"mini-{i}", agent.url, ports="3001-3010", capacity=1, agent_token_env=AGENT_ENV
        )
        await service.provision("acme", f"c{i}")
    return agents, service


async def test_the_backup_job_backs_up_every_claw_and_names_the_ones_that_failed(
    harness, s3, monkeypatch
):
    h = harness(settings(s3.endpoint_url, f"j{uuid.uuid4().hex[:8]}-"))
    assert (await claws_backup(h.ctx)).summary == "no active claws to back up"
    agents, service = await setup(h, monkeypatch)
    try:
        ok = await claws_backup(h.ctx)
        assert ok.outcome == "ok" and ok.summary == "backed up 2 claw(s)"
        assert [len(a.backups) for a in agents] == [1, 1]
        assert all(c.backup_key for c in await service.list())
        agents[0].refuse_backup = True
        partly = await claws_backup(h.ctx)
        assert partly.outcome == "warning" and "1 of 2 claw backup(s) failed: acme/c0" in (
            partly.summary
        )
        assert [len(a.backups) for a in agents] == [1, 2]  # the failure did not stop c1
        await agents[1].stop()
        failed = await claws_backup(h.ctx)
        assert failed.outcome == "failed" and "acme/c0, acme/c1" in failed.summary
    finally:
        for agent in agents:
            await agent.stop()


async def test_the_purge_job_deletes_old_buckets_says_so_and_keeps_what_failed(
    harness, s3, monkeypatch
):
    prefix = f"j{uuid.uuid4().hex[:8]}-"
    h = harness(settings(s3.endpoint_url, prefix))
    assert {"claws_backup", "claws_purge"} <= {j.name for j in builtin_jobs(h.config)}
    assert (await claws_purge(h.ctx)).summary == "nothing past the retention"
    agents, service = await setup(h, monkeypatch)
    try:
        for i in range(2):
            await service.deprovision("acme", f"c{i}")
        async with h.ctx.db.begin() as conn:
            await conn.execute(
                claws_table.update().values(deleted_at=utcnow() - timedelta(days=40))
            )
        # A store that does not answer: nothing purged, the rows stay, the chat is told.
        down = harness(settings(f"http://127.0.0.1:{free_port()}", prefix))
        failed = await claws_purge(down.ctx)
        assert failed.outcome == "warning" and "not purged: acme/c0" in failed.summary
        (told,) = await h.ctx.outbox.pending()
        assert "Not purged, tried again next run" in told.text and "acme/c1" in told.text
        async with h.ctx.db.connect() as conn:
            assert len((await conn.execute(select(claws_table.c.id))).all()) == 2
        done = await claws_purge(h.ctx)
        assert done.outcome == "ok" and done.summary == "purged acme/c0, acme/c1"
        texts = [m.text for m in await h.ctx.outbox.pending()]
        assert any("Purged 2 deleted claw(s)" in t and "<b>acme/c0</b>" in t for t in texts)
        assert await service.list(deleted=None) == []
        assert not await Buckets(s3).exists(f"{prefix}1")
    finally:
        for agent in agents:
            await agent.stop()


async def test_the_health_job_with_no_minis_lets_go_the_alert_of_a_removed_one(db, harness):
    h = harness()
    await h.ctx.alerts.observe("mini:gone-mini", "critical", "offline; 2 claw(s) affected")
    result = await claws_health(h.ctx)
    assert result.outcome == "ok" and result.summary == "no Mac Minis"
    assert await h.ctx.alerts.open_alerts() == []
