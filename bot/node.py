"""The node: database, status log, sidecar, scheduler (and the bot) in one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from alembic.script import ScriptDirectory
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import select

from core.config import LoadedConfig, startup_refusals
from core.db import Database, alembic_config
from core.errors import StartupRefused
from core.statuslog import StatusLog
from core.tables import alert_states
from proxy.sidecar import Sidecar, SidecarState, create_app

log = logging.getLogger("clawops.node")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class Node:
    """One clawops node. ``start`` brings every component up or raises; ``stop`` undoes it."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.name = self.config.node.name
        self.db = Database(loaded.database_url)
        self.statuslog = StatusLog(self.db, self.name)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.sidecar_state = SidecarState(
            statuslog=self.statuslog,
            node=self.name,
            token=self.config.sidecar_token(),
            max_body=self.config.sidecar.max_body,
            status=self.status_summary,
        )
        self.sidecar = Sidecar(
            create_app(self.sidecar_state), self.config.sidecar.host, self.config.sidecar.port
        )
        self._started: list[str] = []

    async def start(self) -> None:
        reasons = startup_refusals(self.config)
        if reasons:
            raise StartupRefused("; ".join(reasons))
        log.info(
            "config: %s (node %s, role %s)", self.loaded.source, self.name, self.config.node.role
        )
        await self._open_database()
        await self.statuslog.start()
        self._started.append("statuslog")
        try:
            await self.sidecar.start()
        except OSError as exc:
            raise StartupRefused(
                f"sidecar cannot listen on {self.config.sidecar.host}:"
                f"{self.config.sidecar.port}: {exc.strerror or exc}"
            ) from exc
        self._started.append("sidecar")
        auth = "bearer token required" if self.sidecar_state.token else "no token (loopback)"
        log.info("sidecar: listening on %s (%s)", self.sidecar.url, auth)
        self.scheduler.start()
        self._started.append("scheduler")
        log.info("scheduler: started, %d job(s)", len(self.scheduler.get_jobs()))
        if self.config.telegram_token() is None:
            log.info("telegram: off (%s is not set)", self.config.telegram.token_env)
        else:
            log.info("telegram: token set; the bot arrives with its own issue, not started")

    async def _open_database(self) -> None:
        head = head_revision()
        if self.db.dialect == "sqlite":
            await self.db.upgrade()
        current = await self.db.revision()
        if current != head:
            raise StartupRefused(
                f"the database is at revision {current or 'none'}, this clawops needs {head}: "
                "run `clawops db upgrade`"
            )
        self._started.append("database")
        log.info("database: %s (revision %s)", self.db.display_url, current)

    async def stop(self) -> None:
        """Stop in reverse order: no new requests, flush the log, then close the database."""
        if "scheduler" in self._started:
            self.scheduler.shutdown(wait=False)
        if "sidecar" in self._started:
            await self.sidecar.stop()
        if "statuslog" in self._started:
            await self.statuslog.stop()
        await self.db.close()
        self._started.clear()
        log.info("stopped")

    async def status_summary(self) -> dict[str, Any]:
        """What GET /api/status answers (and /status shows)."""
        async with self.db.connect() as conn:
            down = (
                await conn.execute(select(alert_states).where(alert_states.c.state == "down"))
            ).all()
        latest = await self.statuslog.latest_per_job()
        return {
            "role": self.config.node.role,
            "machines": [
                {"name": m.name, "os": m.os, "address": m.address, "local": m.local}
                for m in self.config.machines
            ],
            "services": [
                {"name": s.name, "machine": s.machine, "manager": s.manager, "port": s.port}
                for s in self.config.services
            ],
            "jobs": [
                {
                    "id": job.id,
                    "next_run": job.next_run_time.isoformat() if job.next_run_time else None,
                }
                for job in self.scheduler.get_jobs()
            ],
            "last_reports": [e.as_json() for e in latest],
            "failover": {"role": self.config.node.role, "peer_url": self.config.node.peer_url},
            "alerts": [
                {"key": r.key, "since": r.changed_at.isoformat(), "message": r.last_message}
                for r in down
            ],
        }


async def run_node(loaded: LoadedConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    node = Node(loaded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        log.info("node %s is up; Ctrl-C or SIGTERM stops it", node.name)
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await node.stop()
