"""A job context on each real backend, built from core parts (no bot, no sidecar)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from core.alerts import Alerts
from core.config import parse_config
from core.db import Database
from core.fleet import Fleet
from core.health import sweep
from core.jobruns import JobRuns
from core.outbox import Outbox
from core.state import StateStore
from core.statuslog import StatusLog
from jobs.base import JobContext
from jobs.runner import JobRunner

HERE = {"name": "here", "os": "linux", "address": "127.0.0.1", "local": True}


class Harness:
    """A job context plus the switches a test flips (is this node active?)."""

    def __init__(self, db: Database, tmp_path: Path, raw: dict[str, Any]) -> None:
        raw = {"machines": [HERE], **raw}
        raw.setdefault("node", {})["data_dir"] = str(tmp_path / "data")
        self.config = parse_config(raw)
        self.active = True
        self.woken = 0
        self.fleet = Fleet(self.config)
        self.statuslog = StatusLog(db, "test")
        self.ctx = JobContext(
            config=self.config, node="test", data_dir=tmp_path / "data", db=db,
            fleet=self.fleet, alerts=Alerts(db), statuslog=self.statuslog,
            runs=JobRuns(db, "test"), state=StateStore(db), outbox=Outbox(db, "test"),
            sweep=lambda: sweep(self.fleet), is_active=lambda: self.active,
            wake_notifier=self._wake,
        )  # fmt: skip
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.runner = JobRunner(self.ctx, self.scheduler)

    def _wake(self) -> None:
        self.woken += 1


@pytest.fixture
async def harness(db: Database, tmp_path: Path) -> AsyncIterator[Callable[..., Harness]]:
    """``harness(raw_config)`` -> a Harness on the test's database; cleaned up after."""
    made: list[Harness] = []

    def make(raw: dict[str, Any] | None = None) -> Harness:
        made.append(Harness(db, tmp_path, raw or {}))
        return made[-1]

    yield make
    for h in made:
        if h.scheduler.running:
            h.scheduler.shutdown(wait=False)
        await h.statuslog.stop()
        await h.fleet.close()
