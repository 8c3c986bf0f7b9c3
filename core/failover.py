"""The failover watchdog's state machine: counters, thresholds and dwell, with explicit times.

The standby checks its primary every interval and feeds each result to ``observe``:

1. A failed check adds a failure and clears the successes; a good one does the reverse, so a
   flapping primary (up one check, down the next) never reaches either threshold.
2. ``failures`` consecutive failures while idle → ``"takeover"``.
3. ``successes`` consecutive successes while active, and at least ``min_dwell`` since the
   takeover → ``"yield"`` (never before the dwell time: a flapping primary cannot make it flap).

The machine only decides; the driver (``bot.failover``) acts and then calls ``took_over`` or
``yielded``, so a takeover that could not start polling leaves the state as it was. A pinned
takeover (an admin's ``/failover takeover``) does not yield on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

Decision = Literal["none", "takeover", "yield"]


@dataclass
class FailoverMachine:
    failures_needed: int = 3
    successes_needed: int = 5
    min_dwell: timedelta = timedelta(minutes=10)
    active: bool = False
    pinned: bool = False
    since: datetime | None = None
    failures: int = 0
    successes: int = 0
    last_check: datetime | None = None
    last_error: str = ""
    takeovers: int = field(default=0)

    def __post_init__(self) -> None:
        if self.failures_needed < 1 or self.successes_needed < 1:
            raise ValueError("the failure and success thresholds must be at least 1")
        if self.min_dwell < timedelta(0):
            raise ValueError("min_dwell must not be negative")

    @property
    def state(self) -> str:
        if not self.active:
            return "standby"
        return "active (pinned)" if self.pinned else "active"

    def dwell_left(self, now: datetime) -> timedelta:
        """How long an active standby must still keep the role (zero when it may yield)."""
        if not self.active or self.since is None:
            return timedelta(0)
        return max(self.min_dwell - (now - self.since), timedelta(0))

    def observe(self, ok: bool, now: datetime, error: str = "") -> Decision:
        """Count one check of the primary; what the driver should do now."""
        self.last_check = now
        if ok:
            self.successes, self.failures, self.last_error = self.successes + 1, 0, ""
        else:
            self.failures, self.successes, self.last_error = self.failures + 1, 0, error
        if not self.active and self.failures >= self.failures_needed:
            return "takeover"
        if (
            self.active
            and not self.pinned
            and self.successes >= self.successes_needed
            and self.dwell_left(now) == timedelta(0)
        ):
            return "yield"
        return "none"

    def took_over(self, now: datetime, *, pinned: bool = False) -> None:
        self.active, self.pinned, self.since = True, pinned, now
        self.failures = self.successes = 0
        self.takeovers += 1

    def yielded(self, now: datetime) -> None:
        self.active, self.pinned, self.since = False, False, now
        self.failures = self.successes = 0

    def reset_counters(self) -> None:
        self.failures = self.successes = 0

    # -- persistence (StateStore JSON) ---------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "pinned": self.pinned,
            "since": self.since.isoformat() if self.since else None,
            "failures": self.failures,
            "successes": self.successes,
            "takeovers": self.takeovers,
        }

    def restore(self, value: dict[str, Any]) -> None:
        """Take back a dumped state; unknown or malformed fields keep their defaults."""
        self.active = value.get("active") is True
        self.pinned = value.get("pinned") is True and self.active
        since = value.get("since")
        try:
            self.since = datetime.fromisoformat(since) if isinstance(since, str) else None
        except ValueError:
            self.since = None
        for name in ("failures", "successes", "takeovers"):
            number = value.get(name)
            if isinstance(number, int) and number >= 0:
                setattr(self, name, number)
