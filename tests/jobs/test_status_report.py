"""Status report: failed runs, restarts, open alerts and disk/swap trends since the last one."""

from __future__ import annotations

from datetime import timedelta

from core.tables import utcnow
from jobs.registry import builtin_jobs


async def ready(harness):
    h = harness()
    for spec in builtin_jobs(h.config):
        if spec.name == "status_report":
            h.runner.add(spec)
    return h


async def record(h, job, outcome, summary="", data=None, at=None):
    run_id = await h.ctx.runs.start(job, at=at)
    await h.ctx.runs.finish(run_id, outcome, summary, data)


def beat(**disks):
    return {"machines": {
        name: None if disk is None else {"disk_percent": disk, "swap_percent": 10.0}
        for name, disk in disks.items()
    }}  # fmt: skip


async def report(h):
    before = {m.id for m in await h.ctx.outbox.pending()}
    run, result = await h.runner.run("status_report")
    assert result.outcome == "ok"
    new = [m for m in await h.ctx.outbox.pending() if m.id not in before]
    assert len(new) == 1
    return run, new[0].text


async def test_the_digest_names_failures_restarts_missed_check_ins_and_disk_trends(harness):
    h = await ready(harness)
    await record(h, "old-job", "failed", "failed two days ago", at=utcnow() - timedelta(days=2))
    await record(h, "heartbeat", "ok", "", beat(mini=71.0, msi=40.0))
    await record(h, "lume-update", "failed", "exit 3: first")
    await record(h, "lume-update", "failed", "exit 3: <boom>\nmore output")
    await record(h, "git-sync", "ok", "synced 3 repos")
    await record(h, "healer", "ok", "restarted gateway", {"restarted": ["gateway"]})
    await record(h, "healer", "ok", "", {"restarted": [{"service": "crabwalk"}, "gateway"]})
    await record(h, "healer", "ok", "nothing to do", {"restarted": "not a list"})
    await record(h, "healer", "ok", "1 restarted", {"restarted": [
        {"service": "gateway", "machine": "mini", "verified": True}
    ]})  # fmt: skip
    await record(h, "heartbeat", "ok", "", beat(mini=80.2, msi=40.4, dead=None))
    await h.ctx.alerts.observe("checkin:nightly", "critical", "missed check-in: never seen")
    await h.ctx.alerts.observe("service:<gw>", "critical", "HTTP 502 & <worse>")

    run, text = await report(h)
    assert text.startswith("<b>Status report</b> · test · since ")
    assert "lume-update ×2: exit 3: &lt;boom&gt;" in text
    assert "more output" not in text and "old-job" not in text and "git-sync" not in text
    assert "gateway ×2" in text and "crabwalk ×1" in text and "gateway on mini ×1" in text
    assert "⏰ <b>missed check-ins</b>\n  nightly since " in text
    assert "service:&lt;gw&gt;: HTTP 502 &amp; &lt;worse&gt;" in text
    assert "mini: disk 71% → 80%, swap 10%" in text
    assert "msi: disk 40%, swap 10%" in text and "dead: no metrics" in text
    assert run.summary.startswith("reported 2 failed run(s), 4 restart(s), 2 open alert(s)")
    assert run.data["heartbeat"]["mini"]["disk_percent"] == 80.2
    assert h.woken >= 1


async def test_the_next_report_covers_only_what_happened_since_the_previous_one(harness):
    h = await ready(harness)
    await record(h, "heartbeat", "ok", "", beat(mini=71.0))
    await record(h, "lume-update", "failed", "exit 3")
    await record(h, "healer", "ok", "", {"restarted": ["gateway"]})
    await record(h, "heartbeat", "ok", "", beat(mini=80.0))
    _, first = await report(h)
    assert "lume-update" in first and "mini: disk 71% → 80%" in first

    await record(h, "git-sync", "failed", "exit 1: conflict")
    await record(h, "healer", "ok", "", {"restarted": ["ollama"]})
    await record(h, "heartbeat", "ok", "", beat(mini=85.0))
    _, second = await report(h)
    assert "git-sync ×1: exit 1: conflict" in second
    assert "lume-update" not in second
    assert "ollama ×1" in second and "gateway" not in second
    # Compared against what the first report showed, not against the day's first heartbeat.
    assert "mini: disk 80% → 85%" in second

    _, third = await report(h)
    assert "✅ no failed runs" in third and "restarts" not in third
    assert "mini: disk 85%, swap 10%" in third


async def test_a_quiet_fleet_gets_a_short_report(harness):
    h = await ready(harness)
    run, text = await report(h)
    assert text.splitlines()[0].startswith("<b>Status report</b> · test · since ")
    assert text.split("\n\n")[1:] == ["✅ no failed runs"]
    assert run.summary.startswith("reported 0 failed run(s), 0 restart(s), 0 open alert(s)")
