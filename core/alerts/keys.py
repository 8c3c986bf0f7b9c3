"""Every alert key there is or could be, so a mute can say what it covers (and refuse a typo).

Known keys come from three places:

1. the database's ``alert_states`` (every key ever observed, up or down);
2. the config: ``machine:<m>``, ``service:<machine>/<name>``, ``job:<id>`` and ``run:<id>`` for
   each clawops job (``job:`` for what its status-log entries say, ``run:`` for the runner's own
   outcome), ``checkin:<id>`` and ``job:<id>`` for each ``[[checkins]]``, and
   ``failover:split-brain`` (every node runs the failover watchdog), ``config:<node>`` (a
   refused reload);
3. the claw fleet in the database: ``claw:<org>/<slug>`` for each claw, ``mini:<hostname>`` for
   each Mac Mini.

The clawops job names are given by the caller (the node's job runner knows the built-in ones),
which keeps ``core`` free of ``jobs``; the ``[jobs.commands]`` of the config are added here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from sqlalchemy import select

from core.alerts.policy import covers
from core.config import Config
from core.db import Database
from core.tables import alert_states, claws, mac_minis

SPLIT_BRAIN = "failover:split-brain"


def reload_key(node: str) -> str:
    """The alert of a config reload that was refused on ``node`` (until a good one)."""
    return f"config:{node}"


# A pattern is stored in mutes.key (String(200)).
MAX_PATTERN = 200


def config_keys(config: Config, jobs: Iterable[str] = ()) -> set[str]:
    """The keys the config (and the job names ``jobs``) can raise."""
    keys = {SPLIT_BRAIN, reload_key(config.node.name)}
    keys.update(f"machine:{m.name}" for m in config.machines)
    keys.update(f"service:{s.machine}/{s.name}" for s in config.services)
    for name in {*jobs, *(c.name for c in config.jobs.commands)}:
        keys.update((f"job:{name}", f"run:{name}"))
    for checkin in config.checkins:
        keys.update((f"checkin:{checkin.job_id}", f"job:{checkin.job_id}"))
    return keys


async def known_keys(config: Config, db: Database, jobs: Iterable[str] = ()) -> set[str]:
    """Every alert key there is (in ``alert_states``, any state) or could be (config, claws)."""
    keys = config_keys(config, jobs)
    async with db.connect() as conn:
        keys.update((await conn.execute(select(alert_states.c.key))).scalars())
        for org, slug in (await conn.execute(select(claws.c.org, claws.c.slug))).all():
            keys.add(f"claw:{org}/{slug}")
        keys.update(
            f"mini:{h}" for h in (await conn.execute(select(mac_minis.c.hostname))).scalars()
        )
    return keys


def covered(pattern: str | None, keys: Iterable[str]) -> list[str]:
    """The keys ``pattern`` covers (None: all), sorted."""
    return sorted(k for k in keys if covers(pattern, k))


def close_keys(pattern: str, keys: Iterable[str], limit: int = 5) -> list[str]:
    """Known keys that look like ``pattern`` (a typo's likely meaning), best first."""
    keys = sorted(keys)
    found = difflib.get_close_matches(pattern, keys, n=limit, cutoff=0.5)
    if len(found) < limit and ":" not in pattern:
        # A bare name is compared with the names in the keys (``minni`` → ``machine:mini``).
        names: dict[str, list[str]] = {}
        for key in keys:
            rest = key.partition(":")[2]
            for name in {rest, *rest.split("/")}:
                names.setdefault(name, []).append(key)
        for name in difflib.get_close_matches(pattern, list(names), n=limit, cutoff=0.6):
            found += [k for k in names[name] if k not in found]
    return found[:limit]


def kinds(keys: Iterable[str]) -> list[str]:
    """The kinds of known keys (``machine``, ``service``…), sorted."""
    return sorted({k.partition(":")[0] for k in keys if ":" in k})
