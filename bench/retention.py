"""A month of the example config's history, with the retention job and without it.

    .venv/bin/python bench/retention.py [--days 30] [--config config.example.toml]

Two SQLite databases in a temp dir get the same simulated history, written with simulated
timestamps (a fake clock: nothing waits):

- every scheduled job of the config (built-in bots and ``[[jobs.commands]]``) runs at its
  interval or cron, each run a ``job_runs`` row with a summary and data shaped like the job's
  own (a heartbeat's metrics per machine, a command's output tail...);
- every ``[[checkins]]`` posts to the status log at its period or cron;
- a few commands a day in the audit log, two alert flips and a reminder a day, the daily report
  and a takeover notice in the outbox, a web sign-in a day (a link and its session), a mute
  every third day.

In one database the retention job runs at its own schedule, purging with the simulated "now"
(``jobs.retention.purge_all(..., now)``); in the other it never runs. Released and reclaimed
leases leave no row in either (a release deletes it; the healer reclaims the expired ones), so
no lease is simulated. Prints rows per table and the file size after VACUUM for both, the ratio,
and how long the run took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Table, func, insert, select

from core.config import Config, JobConfig, parse_config
from core.db import Database
from core.tables import (
    alert_flips,
    audit_log,
    job_runs,
    metadata,
    mutes,
    outbox,
    status_log,
    web_logins,
    web_sessions,
)
from jobs.registry import builtin_jobs
from jobs.retention import purge_all
from jobs.runner import trigger_for

START = datetime(2025, 3, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]
Row = tuple[Table, dict[str, Any]]


def fire_times(settings: JobConfig, start: datetime, end: datetime) -> Iterator[datetime]:
    """When a job (or a check-in, given as a schedule) fires between ``start`` and ``end``."""
    if settings.every is not None:
        at = start + settings.every
        while at < end:
            yield at
            at += settings.every
        return
    trigger, at = trigger_for(settings), None
    while True:
        at = trigger.get_next_fire_time(at, at or start)
        if at is None or at >= end:
            return
        yield at.astimezone(UTC)
        at += timedelta(seconds=1)


# What each scheduled command of the example prints, roughly (a run keeps a 2000-character tail).
OUTPUT = {
    "lume-update": "Checking for updates…\nlume 0.2.14 is the newest version\n" * 12,
    "git-auto-sync": "Already up to date.\nnothing to commit, working tree clean\n",
    "clear-sessions": "removed 14 session file(s) older than 7 days\n",
    "auto-trim-agents": "trimmed 3 agent log(s) to 10 MB\n",
    "crash-monitor": "checked 11 process(es): no crash\n",
}


def run_payload(name: str, config: Config, rnd: random.Random) -> tuple[str, dict[str, Any]]:
    """A summary and data shaped like what job ``name`` records."""
    machines = [m.name for m in config.machines]
    if name == "heartbeat":
        metrics = {m: heartbeat_metrics(rnd) for m in machines}
        line = "cpu 23%, mem 71%, disk 64%, swap 12%, load 2.31, 512 procs"
        lines = [f"{m}: {line}" for m in machines]
        return "\n".join([*lines, "gateways: 2/2 healthy"]), {"machines": metrics}
    if name == "healer":
        data = dict(restarted=[], warnings=[], emergency="off", reclaimed=[])
        return f"all {len(config.services)} services healthy", data
    if name == "cleaner":
        per = {m: dict(simulators=0, orphans=[], ports=[]) for m in machines}
        return "no simulators, no orphans", {"machines": per}
    if name == "system_cleanup":
        out = "Freed 1.2 GB: caches, logs, DerivedData\n" * 4
        return "1 task ok", {"tasks": [dict(machine="mac-mini", exit=0, stdout=out)]}
    if name == "checkin_monitor":
        states = {c.job_id: "up" for c in config.checkins}
        return "up: " + ", ".join(states), states
    if name == "claws_health":
        claws = {f"org/claw-{i}": "running" for i in range(3)}
        mini = dict(answered=True, reachable=True, error="", claws=claws)
        return "1 Mini(s), 1 online; 3 claw(s) running", {"minis": {"mini-1": mini}, "flips": 0}
    if name == "status_report":
        beat = {m: dict(disk_percent=64.0, swap_percent=12.0) for m in machines}
        data = dict(since=START.isoformat(), failed=0, open_alerts=0, heartbeat=beat)
        return "reported 0 failed run(s), 0 restart(s), 0 open alert(s)", data
    for command in config.jobs.commands:
        if command.name == name:
            out = OUTPUT.get(name, "done\n")
            data = dict(machine=command.machine, argv=command.argv, exit=0, seconds=1.3)
            return f"ok on {command.machine} in 1.3 s", data | dict(stdout=out, stderr="")
    return "nothing to do", {}


def heartbeat_metrics(rnd: random.Random) -> dict[str, float]:
    fields = ("memory_percent", "disk_percent", "cpu_percent", "swap_percent", "load1")
    metrics = {f: round(rnd.uniform(1, 90), 1) for f in fields}
    return metrics | dict(swap_used_mb=812.5, swap_total_mb=6144.0, disk_free_gb=120.3)


def row(when: datetime, table: Table, **values: Any) -> tuple[datetime, Row]:
    return when, (table, values)


def history(config: Config, start: datetime, end: datetime) -> list[tuple[datetime, Row]]:
    """Every row the month writes, with the simulated time it is written at, oldest first."""
    rnd = random.Random(15)
    node = config.node.name
    rows: list[tuple[datetime, Row]] = []
    for spec in builtin_jobs(config):
        if not spec.settings.enabled:
            continue
        for at in fire_times(spec.settings, start, end):
            ended = at + timedelta(seconds=rnd.uniform(0.2, 8))
            summary, data = run_payload(spec.name, config, rnd)
            when = dict(started_at=at, ended_at=ended, outcome="ok")
            rows.append(
                row(
                    ended,
                    job_runs,
                    job=spec.name,
                    node=node,
                    **when,
                    summary=summary,
                    data=json.dumps(data),
                )
            )
    for checkin in config.checkins:
        schedule = JobConfig(every=checkin.period, cron=checkin.cron, timezone=checkin.timezone)
        for at in fire_times(schedule, start, end):
            message = f"cycle done: {rnd.randint(1, 40)} item(s) processed, 0 error(s)"
            rows.append(
                row(
                    at,
                    status_log,
                    job_id=checkin.job_id,
                    status="ok",
                    message=message,
                    created_at=at,
                )
            )
    day = start
    while day < end:
        rows.extend(one_day(day, rnd))
        day += timedelta(days=1)
    return sorted(rows, key=lambda r: r[0])


def one_day(day: datetime, rnd: random.Random) -> Iterator[tuple[datetime, Row]]:
    """The chat's share of a day: commands, alerts, messages, a web sign-in, a mute."""

    def at(hour: float) -> datetime:
        return day + timedelta(hours=hour)

    for _ in range(12):
        when = at(rnd.uniform(8, 23))
        command = rnd.choice(["status", "jobs", "logs", "restart", "checkins", "claws"])
        who = dict(node="macbook", user_id=1, username="felipe", chat_id=-100)
        yield row(
            when,
            audit_log,
            at=when,
            **who,
            command=command,
            args="gateway macbook",
            outcome="ok",
            duration_ms=rnd.randint(50, 4000),
        )
    down, up = at(rnd.uniform(0, 12)), at(rnd.uniform(12, 23))
    flips = [(down, "up", "down", "flip"), (up, "down", "up", "flip")]
    if up - down > timedelta(hours=4):
        flips.append((down + timedelta(hours=4), "down", "down", "reminder"))
    for when, old, new, kind in flips:
        sent = when + timedelta(seconds=2)
        yield row(
            when,
            alert_flips,
            key="checkin:rnd",
            old_state=old,
            new_state=new,
            at=when,
            reason="missed check-in: nothing since 09:12 UTC (every 6h)",
            notified_at=sent,
            kind=kind,
        )
    report = "<b>Status report</b> · macbook\n✅ no failed runs\n📈 disk · swap\n" * 2
    for when, text in [(at(13), report), (at(rnd.uniform(0, 24)), "🔁 the standby took over")]:
        sent = when + timedelta(seconds=1)
        yield row(when, outbox, node="macbook", text=text, created_at=when, sent_at=sent)
    when = at(rnd.uniform(8, 22))
    link = dict(created_at=when, expires_at=when + timedelta(minutes=10))
    yield row(
        when,
        web_logins,
        token_hash=f"{rnd.getrandbits(256):064x}",
        user_id=1,
        **link,
        used_at=when + timedelta(seconds=30),
    )
    session = dict(created_at=when, expires_at=when + timedelta(days=7))
    yield row(
        when,
        web_sessions,
        session_hash=f"{rnd.getrandbits(256):064x}",
        user_id=1,
        **session,
        last_seen=when + timedelta(hours=1),
        user_agent="Mozilla/5.0 (iPhone)",
    )
    if day.toordinal() % 3 == 0:
        yield row(
            at(10), mutes, key="job:lume-update", until=at(11), created_at=at(10), created_by=1
        )


async def write(db: Database, rows: list[Row]) -> None:
    by_table: dict[Table, list[dict[str, Any]]] = {}
    for table, values in rows:
        by_table.setdefault(table, []).append(values)
    async with db.begin() as conn:
        for table, values_list in by_table.items():
            await conn.execute(insert(table), values_list)


async def counts(db: Database) -> dict[str, int]:
    async with db.connect() as conn:
        return {
            t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
            for t in metadata.sorted_tables
        }


def vacuumed_size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")
    return path.stat().st_size


async def main(days: int, config_path: Path, text: str) -> None:
    started = time.perf_counter()
    config = parse_config(tomllib.loads(text), str(config_path))
    settings = config.jobs.retention
    end = START + timedelta(days=days)
    rows = history(config, START, end)
    purges = list(fire_times(settings, START, end)) if settings.enabled else []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: Path(tmp) / f"{name}.db" for name in ("without", "with")}
        dbs = {name: Database(f"sqlite+aiosqlite:///{path}") for name, path in paths.items()}
        for db in dbs.values():
            await db.upgrade()
        purged_total: dict[str, int] = {}
        purge_seconds: list[float] = []
        i = 0
        for now in [*purges, end]:
            window = []
            while i < len(rows) and rows[i][0] <= now:
                window.append(rows[i][1])
                i += 1
            for db in dbs.values():
                await write(db, window)
            if now != end:
                timer = time.perf_counter()
                purged = await purge_all(dbs["with"], settings, now)
                purge_seconds.append(time.perf_counter() - timer)
                for table, n in purged.items():
                    purged_total[table] = purged_total.get(table, 0) + n
        found = {name: await counts(db) for name, db in dbs.items()}
        for db in dbs.values():
            await db.close()
        sizes = {name: vacuumed_size(path) for name, path in paths.items()}

    print(
        f"{days} days of {config_path.name} (SQLite, fake clock): {len(rows)} rows written, "
        f"retention run {len(purges)} times"
    )
    print(f"{'table':<16}{'without':>12}{'with':>12}{'purged':>12}")
    for table in sorted(found["without"]):
        without, kept = found["without"][table], found["with"][table]
        if without or kept:
            print(f"{table:<16}{without:>12}{kept:>12}{purged_total.get(table, 0):>12}")
    mb = {name: size / 1e6 for name, size in sizes.items()}
    print(f"{'file (VACUUM)':<16}{mb['without']:>9.1f} MB{mb['with']:>9.1f} MB")
    print(f"ratio without/with retention: {sizes['without'] / sizes['with']:.1f}")
    if purge_seconds:
        median = statistics.median(purge_seconds) * 1000
        print(
            f"a retention run: median {median:.0f} ms, slowest {max(purge_seconds) * 1000:.0f} ms"
        )
    print(f"took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--config", type=Path, default=ROOT / "config.example.toml")
    args = parser.parse_args()
    asyncio.run(main(args.days, args.config, args.config.read_text()))
