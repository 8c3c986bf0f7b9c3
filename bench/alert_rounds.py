"""What issue 13's alert rules cost the notifier and the observers, against the plain engine.

    .venv/bin/python bench/alert_rounds.py [--keys 1000] [--rounds 30]

One SQLite database in a temp dir, ``--keys`` alert keys of which a fifth are down. Measured in
this one run, interleaved:

1. A notifier round. Baseline: reading the pending flips (what a round did before this issue).
   Measured: ``follow_ups()`` (reminders and the ends of silences) and then the pending flips,
   with a reminder interval, ten rules, two maintenance windows and three pattern mutes.
2. An observation that flips its key. Baseline: the plain engine (no rules, windows or mutes).
   Measured: the same with the rules, windows and mutes above (thresholds per key and the
   silence check of every flip).

Prints medians, p95s and the ratio of medians for each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.alerts import AlertPolicy, Alerts
from core.config import AlertsConfig
from core.db import Database
from core.tables import utcnow

RULES = {
    "reminder_interval": "1h",
    "rules": [{"match": f"service:m{i}/*", "failure_threshold": 1} for i in range(10)],
    "maintenance": [
        {"name": "backups", "match": "job:backup-*", "cron": "0 3 * * *", "duration": "1h"},
        {"name": "always", "match": "job:never-*", "cron": "* * * * *", "duration": "2m"},
    ],
}


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return (time.perf_counter() - started) * 1000


def summary(name: str, samples: list[float]) -> str:
    p95 = statistics.quantiles(samples, n=20)[-1]
    return f"{name:<44} median {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms"


async def main(keys: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Two databases seeded alike: the plain engine's has no mutes either.
        plain = await seeded(Alerts(await opened(Path(tmp) / "plain.db")), keys)
        policy = AlertPolicy(AlertsConfig.model_validate(RULES))
        ruled = await seeded(Alerts(await opened(Path(tmp) / "ruled.db"), policy=policy), keys)
        for pattern in ("machine:m1", "service:m2/*", "m3"):
            await ruled.mute(utcnow() + timedelta(hours=2), key=pattern)

        base_round, rule_round, base_flip, rule_flip = [], [], [], []
        for r in range(rounds):
            base_round.append(await timed(plain.pending))
            rule_round.append(await timed(partial(_round, ruled)))
            i = (r * 5 + 1) % keys
            key = f"service:m{i % 20}/s{i}"  # an up key (every fifth is down): critical flips it
            base_flip.append(await timed(partial(plain.observe, key, "critical", "x")))
            rule_flip.append(await timed(partial(ruled.observe, key, "critical", "x")))
            for alerts in (plain, ruled):
                await alerts.observe(key, "ok", "x")
                for flip in await alerts.pending(limit=keys):
                    await alerts.mark_notified(flip.id)
        await plain.db.close()
        await ruled.db.close()

    print(f"{keys} keys, {keys // 5} down, {rounds} rounds (SQLite)")
    print(summary("notifier round, before (pending only)", base_round))
    print(summary("notifier round, follow_ups + pending", rule_round))
    print(f"ratio {statistics.median(rule_round) / statistics.median(base_round):.2f}")
    print(summary("flipping observation, plain engine", base_flip))
    print(summary("flipping observation, rules+windows+mutes", rule_flip))
    print(f"ratio {statistics.median(rule_flip) / statistics.median(base_flip):.2f}")


async def opened(path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    return db


async def seeded(alerts: Alerts, keys: int) -> Alerts:
    """``keys`` service keys, every fifth down, everything notified."""
    for i in range(keys):
        await alerts.observe(f"service:m{i % 20}/s{i}", "critical" if i % 5 == 0 else "ok", "seed")
    for flip in await alerts.pending(limit=keys):
        await alerts.mark_notified(flip.id)
    return alerts


async def _round(alerts: Alerts) -> None:
    await alerts.follow_ups()
    await alerts.pending()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.keys, args.rounds))
