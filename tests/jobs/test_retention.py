"""Retention: rows past their TTL are deleted in batches; newer rows are left alone (the status
log and the audit log here; the other tables in test_retention_tables.py)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, func, insert, select

from core.tables import audit_log, status_log, utcnow
from jobs.registry import builtin_jobs

# What a run that purges nothing reports: every table it looks at, none deleted.
TABLES = "status_log audit_log job_runs alert_flips outbox web_logins web_sessions leases mutes"
NONE = dict.fromkeys(TABLES.split(), 0)
SETTINGS = {"jobs": {"retention": {"batch_size": 7, "status_log_ttl": "48h", "audit_ttl": "24h"}}}


async def seed(h, old_logs, new_logs, old_audits, new_audits):
    now = utcnow()

    def log(i, age):
        return {"job_id": f"job-{i}", "status": "ok", "message": f"entry {i}",
                "created_at": now - age, "node": "test"}  # fmt: skip

    def audit(i, age):
        return {"at": now - age, "node": "test", "command": f"cmd-{i}", "outcome": "ok"}

    logs = [log(i, timedelta(hours=49, minutes=i)) for i in range(old_logs)]
    logs += [log(old_logs + i, timedelta(hours=47)) for i in range(new_logs)]
    audits = [audit(i, timedelta(hours=25, minutes=i)) for i in range(old_audits)]
    audits += [audit(old_audits + i, timedelta(minutes=5)) for i in range(new_audits)]
    async with h.ctx.db.begin() as conn:
        # Interleave old and new ids, so a purge by id range would be caught.
        for row in sorted(logs, key=lambda r: r["job_id"][::-1]):
            await conn.execute(insert(status_log).values(**row))
        for row in sorted(audits, key=lambda r: r["command"][::-1]):
            await conn.execute(insert(audit_log).values(**row))


async def remaining(h):
    async with h.ctx.db.connect() as conn:
        logs = (await conn.execute(select(status_log.c.job_id))).scalars().all()
        audits = (await conn.execute(select(audit_log.c.command))).scalars().all()
    return sorted(logs), sorted(audits)


async def run_retention(h):
    for spec in builtin_jobs(h.config):
        if spec.name == "retention":
            h.runner.add(spec)
    run, result = await h.runner.run("retention")
    assert result.outcome == "ok" and run is not None and run.outcome == "ok"
    return result


async def test_it_purges_only_rows_past_their_ttl_over_several_batches(harness):
    h = harness(SETTINGS)
    await seed(h, old_logs=23, new_logs=5, old_audits=15, new_audits=4)
    deletes: list[int] = []

    def count_deletes(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(1)

    engine = h.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count_deletes)
    try:
        result = await run_retention(h)
    finally:
        event.remove(engine, "before_cursor_execute", count_deletes)
    # 23 = 7 + 7 + 7 + 2 and 15 = 7 + 7 + 1: one short transaction per batch (and none for the
    # seven other tables, which have nothing to purge).
    assert len(deletes) == 4 + 3
    assert result.summary == "purged 23 status_log, 15 audit_log row(s)"
    assert result.data == {**NONE, "status_log": 23, "audit_log": 15}
    logs, audits = await remaining(h)
    assert logs == sorted(f"job-{i}" for i in range(23, 28))
    assert audits == sorted(f"cmd-{i}" for i in range(15, 19))


async def test_a_purge_of_an_exact_multiple_of_the_batch_size_ends(harness):
    h = harness(SETTINGS)
    await seed(h, old_logs=14, new_logs=1, old_audits=7, new_audits=0)
    result = await run_retention(h)
    assert result.data == {**NONE, "status_log": 14, "audit_log": 7}
    logs, audits = await remaining(h)
    assert logs == ["job-14"] and audits == []


async def test_with_nothing_old_it_deletes_nothing(harness):
    h = harness(SETTINGS)
    await seed(h, old_logs=0, new_logs=3, old_audits=0, new_audits=2)
    result = await run_retention(h)
    assert result.summary == "nothing past retention"
    assert result.data == NONE
    async with h.ctx.db.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(status_log))).scalar()
    assert count == 3
    assert (await remaining(h))[1] == ["cmd-0", "cmd-1"]


async def test_the_configured_ttl_decides_what_is_old(harness):
    h = harness({"jobs": {"retention": {"batch_size": 7, "status_log_ttl": "50h"}}})
    await seed(h, old_logs=3, new_logs=2, old_audits=0, new_audits=0)
    # Rows aged 49h, 49h01m, 49h02m and 47h are all younger than 50h.
    result = await run_retention(h)
    assert result.data == NONE
    assert len((await remaining(h))[0]) == 5
