"""What the config says about a key: its thresholds, its reminders, its maintenance windows.

Patterns are globs over alert keys (``service:mini/*``). A pattern without a ``:`` names a
thing rather than a key: ``mini`` covers ``machine:mini`` and everything on it
(``service:mini/ollama``), ``ollama`` covers ``service:mini/ollama`` — what an operator types
after ``/mute 1h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from apscheduler.triggers.cron import CronTrigger

from core.config import AlertsConfig, MaintenanceWindow


def covers(pattern: str | None, key: str) -> bool:
    """Whether ``pattern`` (None: everything) covers the alert key ``key``."""
    if pattern is None:
        return True
    if ":" in pattern:
        return fnmatchcase(key, pattern)
    name = key.partition(":")[2] or key
    parts = name.split("/")
    return any(fnmatchcase(candidate, pattern) for candidate in (name, parts[0], parts[-1]))


@dataclass(frozen=True)
class Thresholds:
    failure: int = 1
    success: int = 1
    reminder: timedelta | None = None


@dataclass(frozen=True)
class Window:
    """One maintenance window of the config, evaluated at given times."""

    config: MaintenanceWindow

    @property
    def label(self) -> str:
        return self.config.label

    def _trigger(self) -> CronTrigger:
        return CronTrigger.from_crontab(self.config.cron, timezone=self.config.timezone or "UTC")

    def open_until(self, at: datetime) -> datetime | None:
        """The end of the window open at ``at``, or None when it is closed then."""
        duration = self.config.duration
        trigger = self._trigger()
        start = trigger.get_next_fire_time(None, at - duration)
        end: datetime | None = None
        # Windows longer than the cron's period overlap: the last one to start decides the end.
        while start is not None and start <= at:
            end = start + duration
            start = trigger.get_next_fire_time(start, start + timedelta(seconds=1))
        return end if end is not None and end > at else None

    def next_start(self, at: datetime) -> datetime | None:
        start: datetime | None = self._trigger().get_next_fire_time(
            None, at + timedelta(microseconds=1)
        )
        return start

    def covers(self, key: str) -> bool:
        return covers(self.config.match, key)


class AlertPolicy:
    """The ``[alerts]`` config as answers about keys."""

    def __init__(self, config: AlertsConfig | None = None) -> None:
        self.config = config or AlertsConfig()
        self.windows = [Window(w) for w in self.config.maintenance]

    def thresholds(self, key: str) -> Thresholds:
        c = self.config
        failure, success, reminder = c.failure_threshold, c.success_threshold, c.reminder_interval
        for rule in c.rules:  # later rules win
            if covers(rule.match, key):
                failure = rule.failure_threshold or failure
                success = rule.success_threshold or success
                reminder = rule.reminder_interval or reminder
        return Thresholds(failure, success, reminder)

    def window_over(self, key: str, at: datetime) -> tuple[Window, datetime] | None:
        """The maintenance window covering ``key`` at ``at`` (the one ending last), and its end."""
        best: tuple[Window, datetime] | None = None
        for window in self.windows:
            if not window.covers(key):
                continue
            end = window.open_until(at)
            if end is not None and (best is None or end > best[1]):
                best = (window, end)
        return best

    def open_windows(self, at: datetime) -> list[tuple[Window, datetime]]:
        """Every window open at ``at``, with its end."""
        found = [(w, w.open_until(at)) for w in self.windows]
        return [(w, end) for w, end in found if end is not None]
