"""Known alert keys (what a mute can cover) from the config and the database, on both backends."""

from __future__ import annotations

from sqlalchemy import insert

from core.alerts import Alerts
from core.alerts.keys import close_keys, covered, kinds, known_keys
from core.config import Config, parse_config
from core.db import Database
from core.minis import Minis
from core.tables import claws, utcnow

CONFIG = {
    "node": {"name": "test"},
    "machines": [
        {
            "name": "mini",
            "os": "macos",
            "address": "10.0.0.2",
            "ssh": {"host": "10.0.0.9", "user": "ops"},
        },
        {
            "name": "studio",
            "os": "macos",
            "address": "10.0.0.3",
            "ssh": {"host": "10.0.0.9", "user": "ops"},
        },
    ],
    "services": [
        {"name": "ollama", "machine": "mini", "manager": "launchd"},
        {"name": "gateway", "machine": "mini", "manager": "pm2"},
        {"name": "ollama", "machine": "studio", "manager": "launchd"},
    ],
    "jobs": {"commands": [{"name": "backup", "machine": "mini", "argv": ["true"], "every": "1h"}]},
    "checkins": [{"job_id": "rnd", "period": "1h"}],
}


def config() -> Config:
    return parse_config(CONFIG)


async def add_claw(db: Database, org: str, slug: str, status: str) -> None:
    now = utcnow()
    async with db.begin() as conn:
        await conn.execute(
            insert(claws).values(org=org, slug=slug, status=status, created_at=now, updated_at=now)
        )


async def test_known_keys_come_from_the_config_the_states_and_the_claw_fleet(db):
    alerts = Alerts(db)
    await alerts.observe("job:nightly-export", "ok", "fine")  # a status-log job, up
    await alerts.observe("service:gone/old", "critical", "down")  # not in the config any more
    await Minis(db).add(
        "m1.local",
        "http://10.0.0.9:8080",
        ports="20000-20009",
        capacity=2,
        agent_token_env="AGENT_TOKEN",
    )
    await add_claw(db, "acme", "bob", "active")
    await add_claw(db, "acme", "eve", "deleting")
    keys = await known_keys(config(), db, jobs=["healer"])
    assert keys >= {
        "machine:mini",
        "machine:studio",
        "service:mini/ollama",
        "service:mini/gateway",
        "service:studio/ollama",
        "job:healer",
        "run:healer",
        "job:backup",
        "run:backup",
        "checkin:rnd",
        "job:rnd",
        "job:nightly-export",
        "service:gone/old",
        "claw:acme/bob",
        "claw:acme/eve",
        "mini:m1.local",
        "failover:split-brain",
        "config:test",  # a refused reload of this node
    }
    assert kinds(keys) == [
        "checkin",
        "claw",
        "config",
        "failover",
        "job",
        "machine",
        "mini",
        "run",
        "service",
    ]


async def test_an_empty_database_still_knows_the_configured_keys(db):
    keys = await known_keys(config(), db)
    assert "service:studio/ollama" in keys and "job:backup" in keys
    assert not any(k.startswith(("claw:", "mini:")) for k in keys)


async def test_a_bare_machine_name_covers_the_machine_and_its_services(db):
    keys = await known_keys(config(), db)
    assert covered("mini", keys) == ["machine:mini", "service:mini/gateway", "service:mini/ollama"]
    assert covered("ollama", keys) == ["service:mini/ollama", "service:studio/ollama"]
    assert covered("service:*/ollama", keys) == ["service:mini/ollama", "service:studio/ollama"]
    assert covered("minni", keys) == [] and covered("service:mini/olama", keys) == []
    assert covered(None, keys) == sorted(keys) == covered("*", keys)


def test_a_typo_gets_the_keys_close_to_it():
    keys = {"machine:mini", "service:mini/ollama", "service:studio/ollama", "job:backup"}
    assert close_keys("service:mini/olama", keys)[0] == "service:mini/ollama"
    assert "machine:mini" in close_keys("minni", keys)
    assert close_keys("backpu", keys) == ["job:backup"]
    assert close_keys("zzzzzz", keys) == []
