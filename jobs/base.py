"""What a scheduled job is: a name, its ``[jobs.*]`` settings, and an async function.

A job function gets a ``JobContext`` (the node's core services, nothing from bot/) and returns a
``JobResult``; the runner records the run, turns an exception into a failed run and feeds the
outcome to the job's alert key. Jobs import only ``core``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.alerts import Alerts
from core.config import Config, JobConfig
from core.db import Database
from core.fleet import Fleet
from core.health import SweepReport
from core.jobruns import JobRuns
from core.outbox import Outbox
from core.state import StateStore
from core.statuslog import StatusLog

Ending = Literal["ok", "warning", "failed"]


@dataclass
class JobContext:
    """The node's services, as a job sees them."""

    config: Config
    node: str
    data_dir: Path
    db: Database
    fleet: Fleet
    alerts: Alerts
    statuslog: StatusLog
    runs: JobRuns
    state: StateStore
    outbox: Outbox
    # A whole-fleet health sweep now (the node keeps the last one for /status).
    sweep: Callable[[], Awaitable[SweepReport]]
    # Whether this node is the active one (the one talking to Telegram).
    is_active: Callable[[], bool]
    # Something was stored for the alert chat (a flip, an outbox message): send it soon.
    wake_notifier: Callable[[], None] = lambda: None

    async def announce(self, text: str) -> None:
        """Queue an HTML message for the alert chat (sent when Telegram takes it)."""
        await self.outbox.put(text)
        self.wake_notifier()


@dataclass(frozen=True)
class JobResult:
    outcome: Ending = "ok"
    summary: str = ""
    data: dict[str, Any] | None = None
    # False: the outcome is recorded but never alerts (a command with alert_on_failure off).
    alert: bool = True


JobFunc = Callable[[JobContext], Awaitable[JobResult]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    description: str
    settings: JobConfig
    func: JobFunc = field(compare=False)
