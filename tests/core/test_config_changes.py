"""What a reload applies and what it names as needing a restart (core.config._changes), and the
fleet keeping the executors of machines a reload did not change."""

from __future__ import annotations

from typing import Any

from core.config import config_changes, keep_running, parse_config
from core.fleet import Fleet

HERE = {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}
MINI = {"name": "mini", "os": "macos", "address": "10.0.0.2", "ssh": {"host": "10.0.0.2"}}


def config(**sections: Any) -> Any:
    return parse_config({"machines": [HERE, MINI], **sections})


def test_list_sections_name_the_items_added_removed_and_changed():
    old = config(services=[{"name": "a", "machine": "here", "manager": "process"}])
    new = config(
        services=[
            {"name": "a", "machine": "here", "manager": "process", "port": 8080},
            {"name": "b", "machine": "mini", "manager": "launchd"},
        ],
        checkins=[{"job_id": "cleaner", "period": "2h"}],
    )
    changes = config_changes(old, new)
    assert [c.text for c in changes.applied] == [
        "checkins (+cleaner)",
        "services (+mini/b, ~here/a)",
    ]
    assert changes.restart == []


def test_what_is_bound_at_start_needs_a_restart_and_keeps_its_running_value():
    old = config(node={"name": "a"}, sidecar={"port": 9010}, telegram={"admins": [1]})
    new = config(
        node={"name": "b", "role": "standby", "peer_url": "http://10.0.0.1:9010/healthz"},
        sidecar={"port": 9020},
        telegram={"admins": [1, 2], "local_api_port": 9300},
        jobs={"failover": {"every": "10s"}, "heartbeat": {"every": "10m"}},
    )
    changes = config_changes(old, new)
    assert [c.path for c in changes.restart] == [
        "jobs.failover.every",
        "node.name",
        "node.peer_url",
        "node.role",
        "sidecar.port",
        "telegram.local_api_port",
    ]
    assert [c.path for c in changes.applied] == ["jobs.heartbeat.every", "telegram.admins"]
    running = keep_running(old, new, changes)
    assert (running.node.name, running.node.role, running.sidecar.port) == ("a", "primary", 9010)
    assert running.telegram.local_api_port == old.telegram.local_api_port
    assert running.jobs.failover == old.jobs.failover
    assert running.telegram.admins == [1, 2]
    assert running.jobs.heartbeat.every == new.jobs.heartbeat.every


def test_an_unchanged_file_has_no_changes():
    assert config_changes(config(), config()).empty


async def test_a_reconfigured_fleet_keeps_the_executors_of_unchanged_machines():
    fleet = Fleet(config())
    here, mini = fleet.executors["here"], fleet.executors["mini"]
    moved = {**MINI, "address": "10.0.0.3", "ssh": {"host": "10.0.0.3"}}
    retired = fleet.reconfigure(parse_config({"machines": [HERE, moved]}))
    assert fleet.executors["here"] is here and fleet.executors["mini"] is not mini
    assert retired == [mini]
    retired = fleet.reconfigure(parse_config({"machines": [HERE]}))
    assert list(fleet.executors) == ["here"] and len(retired) == 1
    unreached = {"name": "mini", "os": "macos", "address": "10.0.0.2"}  # no SSH: no executor
    assert fleet.reconfigure(parse_config({"machines": [HERE, unreached]})) == []
    assert list(fleet.executors) == ["here"]
    assert fleet.machine("here") == parse_config({"machines": [HERE]}).machines[0]
    await fleet.close()
