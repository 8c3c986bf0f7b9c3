"""Thresholds per key pattern, maintenance windows, reminders and the end of silences, with
explicit times (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from core.alerts import AlertPolicy, Alerts, covers
from core.config import AlertsConfig, parse_config
from core.db import Database
from core.errors import ConfigError
from core.tables import mutes

T0 = datetime(2026, 12, 6, 2, 50, tzinfo=UTC)  # a Sunday, 10 minutes before 03:00
MIN = timedelta(minutes=1)


def policy(**raw: object) -> AlertPolicy:
    return AlertPolicy(AlertsConfig.model_validate(raw))


async def pending(alerts: Alerts) -> list[tuple[str, str, str, str]]:
    """What the notifier would send now: (kind, key, old, new) of each pending flip."""
    return [(f.kind, f.key, f.old_state, f.new_state) for f in await alerts.pending()]


async def drain(alerts: Alerts) -> None:
    for flip in await alerts.pending():
        await alerts.mark_notified(flip.id)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("service:mini/*", "service:mini/ollama", True),
        ("service:mini/*", "service:msi/ollama", False),
        ("mini", "machine:mini", True),
        ("mini", "service:mini/ollama", True),
        ("ollama", "service:mini/ollama", True),
        ("oll", "service:mini/ollama", False),
        ("job:*", "checkin:rnd", False),
        ("*", "anything:at/all", True),
        (None, "job:rnd", True),
        ("[", "job:[", True),  # a lone bracket is a literal to fnmatch, never an error
    ],
)
def test_patterns_cover_keys_or_things(pattern, key, expected):
    assert covers(pattern, key) is expected


def test_the_last_matching_rule_wins_and_unset_fields_inherit():
    p = policy(
        failure_threshold=2,
        reminder_interval="1h",
        rules=[
            {"match": "service:*", "failure_threshold": 3},
            {"match": "service:msi/*", "success_threshold": 4},
        ],
    )
    assert (p.thresholds("job:rnd").failure, p.thresholds("job:rnd").success) == (2, 1)
    msi = p.thresholds("service:msi/ollama")
    assert (msi.failure, msi.success, msi.reminder) == (3, 4, timedelta(hours=1))


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"failure_threshold": 0}, "alerts.failure_threshold"),
        ({"reminder_interval": "0s"}, "alerts.reminder_interval"),
        ({"rules": [{"match": "x", "success_threshold": -1}]}, "alerts.rules[0].success_threshold"),
        ({"rules": [{"failure_threshold": 2}]}, "alerts.rules[0].match"),
        ({"maintenance": [{"cron": "61 * * * *", "duration": "1h"}]}, "alerts.maintenance[0].cron"),
        ({"maintenance": [{"cron": "0 3 * * sun", "duration": "0s"}]}, "duration"),
        (
            {"maintenance": [{"cron": "0 3 * * *", "duration": "1h", "timezone": "Mars/Base"}]},
            "timezone",
        ),
        ({"maintenance": [{"cron": "0 3 * * *", "duration": "1h", "when": "x"}]}, "when"),
    ],
)
def test_bad_alert_config_names_the_key(raw, named):
    with pytest.raises(ConfigError) as caught:
        parse_config({"alerts": raw})
    assert named in str(caught.value)


def test_a_window_is_open_from_its_cron_for_its_duration():
    p = policy(
        maintenance=[{"name": "backup", "match": "mini", "cron": "0 3 * * sun", "duration": "1h"}]
    )
    (window,) = p.windows
    assert window.open_until(T0) is None
    assert window.next_start(T0) == T0 + 10 * MIN
    assert window.open_until(T0 + 10 * MIN) == T0 + 70 * MIN
    assert window.open_until(T0 + 69 * MIN) == T0 + 70 * MIN
    assert window.open_until(T0 + 70 * MIN) is None
    assert p.window_over("service:mini/ollama", T0 + 30 * MIN) is not None
    assert p.window_over("service:msi/ollama", T0 + 30 * MIN) is None


def test_a_window_follows_its_time_zone():
    p = policy(maintenance=[{"cron": "0 3 * * *", "duration": "1h", "timezone": "Asia/Tokyo"}])
    (window,) = p.windows
    tokyo_three = datetime(2026, 12, 5, 18, 0, tzinfo=UTC)  # 03:00 in Tokyo (UTC+9)
    assert window.open_until(tokyo_three + MIN) == tokyo_three + 60 * MIN
    assert window.open_until(datetime(2026, 12, 6, 3, 30, tzinfo=UTC)) is None


async def test_rule_thresholds_apply_to_their_keys_only(db: Database):
    alerts = Alerts(
        db,
        policy=policy(
            rules=[{"match": "service:msi/*", "failure_threshold": 3, "success_threshold": 2}]
        ),
    )
    assert await alerts.observe("service:msi/ollama", "critical", "1", T0) is None
    assert await alerts.observe("service:msi/ollama", "critical", "2", T0) is None
    down = await alerts.observe("service:msi/ollama", "critical", "3", T0)
    assert down is not None and down.new_state == "down"
    other = await alerts.observe("service:mini/ollama", "critical", "1", T0)
    assert other is not None and other.new_state == "down"
    assert await alerts.observe("service:msi/ollama", "ok", "back", T0) is None
    up = await alerts.observe("service:msi/ollama", "ok", "back", T0)
    assert up is not None and up.new_state == "up" and not up.suppressed


async def test_inside_a_window_nothing_is_sent_and_a_key_still_down_is_announced_once_at_its_end(
    db: Database,
):
    alerts = Alerts(
        db,
        policy=policy(
            maintenance=[
                {"name": "backup", "match": "mini", "cron": "0 3 * * sun", "duration": "1h"}
            ]
        ),
    )
    inside = T0 + 20 * MIN
    down = await alerts.observe("service:mini/ollama", "critical", "refused", inside)
    assert down is not None and down.suppressed and "maintenance window backup" in down.silenced_by
    flapped = await alerts.observe("machine:mini", "critical", "unreachable", inside)
    assert flapped is not None and flapped.suppressed
    await alerts.observe("machine:mini", "ok", "reachable", inside + MIN)
    outside = await alerts.observe("service:msi/ollama", "critical", "refused", inside)
    assert outside is not None and not outside.suppressed
    await drain(alerts)
    assert await alerts.follow_ups(inside + 10 * MIN) == []  # still in the window
    (late,) = await alerts.follow_ups(T0 + 71 * MIN)
    assert (late.kind, late.key, late.new_state) == ("unsilenced", "service:mini/ollama", "down")
    assert "maintenance window backup" in late.reason and "refused" in late.reason
    assert await pending(alerts) == [("unsilenced", "service:mini/ollama", "up", "down")]
    assert await alerts.follow_ups(T0 + 72 * MIN) == [], "announced once"
    up = await alerts.observe("service:mini/ollama", "ok", "fine", T0 + 80 * MIN)
    assert up is not None and not up.suppressed, "its end-of-window notice told the chat"


async def test_a_key_announced_down_that_recovers_while_muted_is_announced_up_when_the_mute_ends(
    db: Database,
):
    alerts = Alerts(db)
    await alerts.observe("job:rnd", "critical", "late", T0)
    await drain(alerts)
    await db_mute(alerts, T0 + 30 * MIN)
    up = await alerts.observe("job:rnd", "ok", "back", T0 + 5 * MIN)
    assert up is not None and up.suppressed and up.silenced_by.startswith("muted until")
    assert await alerts.follow_ups(T0 + 10 * MIN) == []
    (told,) = await alerts.follow_ups(T0 + 31 * MIN)
    assert (told.kind, told.old_state, told.new_state) == ("unsilenced", "down", "up")


async def test_a_key_back_to_what_the_chat_knows_is_let_go_without_a_word(db: Database):
    alerts = Alerts(db)
    await db_mute(alerts, T0 + 30 * MIN)
    await alerts.observe("job:rnd", "critical", "late", T0)
    await alerts.observe("job:rnd", "ok", "back", T0 + MIN)
    assert await alerts.follow_ups(T0 + 31 * MIN) == []
    assert await pending(alerts) == []
    state = await alerts.state("job:rnd")
    assert state is not None and state.state == "up"


async def db_mute(alerts: Alerts, until: datetime) -> None:
    """A mute of every key until ``until``, made as if it were T0 (mute refuses a past end)."""
    mute_id = await alerts.mute(datetime.now(UTC) + timedelta(days=1))
    async with alerts.db.begin() as conn:
        await conn.execute(update(mutes).where(mutes.c.id == mute_id).values(until=until))


async def test_reminders_repeat_while_down_and_stop_when_it_recovers(db: Database):
    alerts = Alerts(
        db,
        policy=policy(
            reminder_interval="1h", rules=[{"match": "job:*", "reminder_interval": "30m"}]
        ),
    )
    await alerts.observe("service:mini/ollama", "critical", "refused", T0)
    await alerts.observe("job:rnd", "critical", "late", T0)
    await drain(alerts)
    assert await alerts.follow_ups(T0 + 29 * MIN) == []
    (job,) = await alerts.follow_ups(T0 + 30 * MIN)
    assert (job.kind, job.key) == ("reminder", "job:rnd") and "down for 30m" in job.reason
    assert await alerts.follow_ups(T0 + 45 * MIN) == []
    both = await alerts.follow_ups(T0 + 60 * MIN)
    assert sorted(f.key for f in both) == ["job:rnd", "service:mini/ollama"]
    assert all("down for 1h" in f.reason for f in both)
    await alerts.observe("job:rnd", "ok", "back", T0 + 61 * MIN)
    (service,) = await alerts.follow_ups(T0 + 121 * MIN)
    assert service.key == "service:mini/ollama"


async def test_no_reminder_by_default_nor_while_muted(db: Database):
    quiet = Alerts(db)
    await quiet.observe("job:rnd", "critical", "late", T0)
    assert await quiet.follow_ups(T0 + timedelta(days=30)) == []
    alerts = Alerts(db, policy=policy(reminder_interval="10m"))
    await db_mute(alerts, T0 + 60 * MIN)
    assert await alerts.follow_ups(T0 + 30 * MIN) == []
    (reminder,) = await alerts.follow_ups(T0 + 61 * MIN)
    assert reminder.kind == "reminder"


async def test_two_nodes_store_each_follow_up_once(db: Database):
    config = policy(reminder_interval="10m")
    nodes = [Alerts(db, policy=config), Alerts(db, policy=config)]
    for i in range(10):
        await nodes[0].observe(f"job:j{i}", "critical", "late", T0)
    results = await asyncio.gather(*(n.follow_ups(T0 + 10 * MIN) for n in nodes * 3))
    keys = [f.key for flips in results for f in flips]
    assert sorted(keys) == sorted(f"job:j{i}" for i in range(10))


async def test_a_reminder_not_sent_yet_is_superseded_by_the_next(db: Database):
    alerts = Alerts(db, policy=policy(reminder_interval="1h"))
    await alerts.observe("job:rnd", "critical", "late", T0)
    await drain(alerts)
    for hours in range(1, 6):  # Telegram away for five hours
        await alerts.follow_ups(T0 + timedelta(hours=hours))
    (last,) = await alerts.pending()
    assert last.kind == "reminder" and "down for 5h" in last.reason
