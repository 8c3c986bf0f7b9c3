"""``[alerts]``: thresholds (global and per key pattern), reminders and maintenance windows.

Alert keys look like ``service:mini/ollama``, ``machine:mini``, ``job:rnd``, ``checkin:rnd``,
``claw:acme/bob``; a ``match`` is a glob over them (``service:mini/*``). A key takes its
thresholds from the last rule that matches it, else from ``[alerts]`` itself.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field

from core.config._models import Cron, Duration, _Model

Threshold = Annotated[int, Field(ge=1, le=1000)]
Pattern = Annotated[str, Field(min_length=1, max_length=200)]


def _check_timezone(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone (e.g. 'Europe/Berlin', 'UTC')") from None
    return name


TimeZone = Annotated[str | None, AfterValidator(_check_timezone)]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0 s")
    return value


Positive = Annotated[Duration, AfterValidator(_positive)]


class AlertRule(_Model):
    """Thresholds for the keys ``match`` covers (unset fields: the ``[alerts]`` value)."""

    match: Pattern
    failure_threshold: Threshold | None = None
    success_threshold: Threshold | None = None
    reminder_interval: Positive | None = None


class MaintenanceWindow(_Model):
    """Every time ``cron`` fires (in ``timezone``, default UTC), for ``duration``, nothing is sent
    for the keys ``match`` covers; a key still down when the window ends is announced then."""

    match: Pattern = "*"
    cron: Cron
    duration: Positive
    timezone: TimeZone = None
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.match} at {self.cron}"


class AlertsConfig(_Model):
    failure_threshold: Threshold = 1
    success_threshold: Threshold = 1
    # While a key stays down, say so again this often (off when unset).
    reminder_interval: Positive | None = None
    # Where alerts go; unset: telegram.alert_chat, else the first allowed chat.
    alert_chat: int | None = None
    rules: list[AlertRule] = []
    maintenance: list[MaintenanceWindow] = []
