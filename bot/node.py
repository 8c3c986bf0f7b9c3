"""The node: database, status log, sidecar, scheduler (and the bot) in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import datetime, timedelta
from typing import Any

from alembic.script import ScriptDirectory
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from telegram.error import InvalidToken

from bot.alert_commands import ALERT_COMMANDS
from bot.builtin import BUILTIN
from bot.checkin_commands import CHECKIN_COMMANDS
from bot.claw_commands import CLAW_COMMANDS
from bot.commands import Registry
from bot.failover import FAILOVER_COMMANDS, Watchdog
from bot.fleet_commands import FLEET_COMMANDS
from bot.job_commands import JOB_COMMANDS
from bot.notify import Notifier
from bot.reload import RELOAD_COMMANDS, Reloader, sync_database
from bot.resource_commands import RESOURCE_COMMANDS
from bot.telegram import TelegramBot
from bot.web_commands import WEB_COMMANDS
from core.accounts import Accounts, EmergencyWatch
from core.alerts import AlertPolicy, Alerts
from core.alerts.mirror import AlertMirror
from core.audit import AuditLog
from core.checkins import Checkins
from core.claws import Claws
from core.config import Config, LoadedConfig, startup_refusals
from core.db import DatabaseProbe, alembic_config
from core.errors import StartupRefused, StorageError
from core.fleet import Fleet
from core.health import MachineDone, ServiceReport, SweepReport, sweep
from core.health.observe import observe_sweep
from core.jobruns import JobRuns
from core.localtelegram import LocalTelegram, random_bot_token
from core.outbox import Outbox
from core.resources import Leases
from core.secrets import private_database_files, private_dir
from core.state import StateStore
from core.statuslog import Entry, StatusLog
from core.tables import utcnow
from jobs.base import JobContext
from jobs.registry import builtin_jobs
from jobs.runner import JobRunner
from proxy.sidecar import Sidecar, SidecarState, create_app

log = logging.getLogger("clawops.node")
# In local mode (no token) the local Bot API's operator, user 1 in its private chat, is an admin:
# only processes that can read the control secret in the data dir can drive that server.
LOCAL_OPERATOR = 1


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class Node:
    """One clawops node. ``start`` brings every component up or raises; ``stop`` undoes it."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.name = self.config.node.name
        private_dir(loaded.data_dir)  # before the database, the keys and the secret files in it
        self.db = loaded.open_database()
        self.statuslog = StatusLog(self.db, self.name)
        self.audit = AuditLog(self.db, self.name)
        self.alerts = Alerts(
            self.db,
            warning_repeats=self.config.telegram.warning_repeats,
            policy=AlertPolicy(self.config.alerts),
        )
        self.notifier: Notifier | None = None
        self._observations: asyncio.Queue[Entry] = asyncio.Queue()
        self._feeder: asyncio.Task[None] | None = None
        self.registry = Registry()
        self.registry.extend(BUILTIN)
        self.registry.extend(ALERT_COMMANDS)
        self.registry.extend(FLEET_COMMANDS)
        self.registry.extend(JOB_COMMANDS)
        self.registry.extend(FAILOVER_COMMANDS)
        self.registry.extend(WEB_COMMANDS)
        self.registry.extend(CLAW_COMMANDS)
        self.registry.extend(RESOURCE_COMMANDS)
        self.registry.extend(CHECKIN_COMMANDS)
        self.registry.extend(RELOAD_COMMANDS)
        self.reloader = Reloader(self)
        self._claws: Claws | None = None
        self._claws_for: Config | None = None
        self.fleet = Fleet(self.config)
        self.last_sweep: SweepReport | None = None
        self.last_sweep_at: datetime | None = None
        self._sweeping = asyncio.Lock()
        self.bot: TelegramBot | None = None
        self.failover: Watchdog | None = None
        self.local_api: LocalTelegram | None = None
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.runs = JobRuns(self.db, self.name)
        self.state = StateStore(self.db)
        self.checkins = Checkins(self.config.checkins, self.state, self.statuslog, self.alerts)
        self.alerts.silencers.append(self.checkins.silenced_by)
        self.mirror = AlertMirror(self.alerts, self.state)
        self.outbox = Outbox(self.db, self.name)
        self.leases = Leases(self.db, self.config.resources)
        self.emergency = EmergencyWatch(
            Accounts(self.state), [a.name for a in self.config.llm_accounts], self._announce
        )
        self.jobs = JobRunner(
            JobContext(
                config=self.config, node=self.name, data_dir=loaded.data_dir, db=self.db,
                fleet=self.fleet, alerts=self.alerts, statuslog=self.statuslog, runs=self.runs,
                state=self.state, outbox=self.outbox, sweep=self.run_sweep,
                is_active=lambda: self.active, wake_notifier=self._wake_notifier,
            ),
            self.scheduler,
        )  # fmt: skip
        for spec in builtin_jobs(self.config):
            self.jobs.add(spec)
        self.sidecar_state = SidecarState(
            statuslog=self.statuslog,
            node=self.name,
            token=self.config.sidecar_token(),
            max_body=self.config.sidecar.max_body,
            status=self.status_summary,
            failover=self.failover_state,
            alerts=self.alerts_report,
            on_entry=[self._observe_entry],
            public_url=self.config.sidecar.public_url,
            claws=self.claws_service,
            data_dir=loaded.data_dir,
            leases=self.leases,
            emergency=self.emergency,
            database=DatabaseProbe(self.db),
            bind_host=self.config.sidecar.host,
            allowed_hosts=self.config.sidecar.allowed_hosts,
            trust_loopback=self.config.sidecar.trust_loopback,
            limits=self.config.sidecar.limits,
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
        # Who left admins, viewers and every org signs in no more (the local operator stays).
        local = () if self.config.telegram_token() else (LOCAL_OPERATOR,)
        await sync_database(self.db, self.config, local)
        await self.statuslog.start()
        self._started.append("statuslog")
        self._feeder = asyncio.create_task(self._feed_alerts(), name="alert-feeder")
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
        # Claws a crashed node left mid-way are looked at soon after start, not in 5 minutes.
        self.jobs.run_soon("claw_recovery", 10)
        log.info("scheduler: started, %d job(s)", len(self.scheduler.get_jobs()))
        await self.emergency.check()  # cooldowns that ended while no node was up; arms the timer
        await self._start_bot()

    async def _start_bot(self) -> None:
        settings = self.config.telegram
        token = self.config.telegram_token()
        if token is None:
            local_token = random_bot_token()
            self.local_api = LocalTelegram("127.0.0.1", settings.local_api_port, token=local_token)
            try:
                await self.local_api.start()
            except OSError as exc:
                raise StartupRefused(
                    f"the local Bot API cannot listen on 127.0.0.1:{settings.local_api_port}: "
                    f"{exc.strerror or exc} (set telegram.local_api_port)"
                ) from exc
            self._started.append("local_api")
            self.local_api.write_access_file(self.loaded.data_dir)
            self.bot = TelegramBot(
                self, self.registry, local_token, self.local_api.base_url,
                extra_admins=(LOCAL_OPERATOR,),
            )  # fmt: skip
            await self.bot.start(poll=True)
            self._started.append("bot")
            self._start_notifier(self.config.alert_chat_id or LOCAL_OPERATOR)
            log.info(
                "telegram: off (%s is not set); the bot answers on the local Bot API at %s "
                "(try `clawops chat`)", settings.token_env, self.local_api.url,
            )  # fmt: skip
            return
        self.bot = TelegramBot(self, self.registry, token, settings.api_base_url)
        try:
            await self.bot.start(poll=False)
        except InvalidToken:
            # PTB's message quotes the token; ours names only where it comes from.
            raise StartupRefused(
                f"Telegram refused the bot token (check {settings.token_env}: it must be the "
                "token @BotFather gave, and the bot must not be deleted)"
            ) from None
        self._started.append("bot")
        self._start_notifier(self.config.alert_chat_id)
        if problem := self.config.alert_chat_problem():
            log.warning("alerts: %s", problem)
        # The watchdog decides who polls: the primary unless its standby has taken over.
        self.failover = Watchdog(self)
        self.bot.on_conflict = self.failover.on_conflict
        await self.failover.start()
        self._started.append("failover")
        poll = self.bot.polling
        log.info(
            "telegram: bot via %s, %s", settings.api_base_url.split("/bot")[0],
            "polling" if poll else f"not polling ({self.failover.state})",
        )  # fmt: skip

    def _start_notifier(self, chat_id: int | None) -> None:
        if chat_id is None:
            log.warning("alerts: no alert chat (set telegram.alert_chat or allowed_chats)")
        self.notifier = Notifier(self.alerts, lambda: self.bot, chat_id, outbox=self.outbox)
        self.notifier.start()

    def claws_service(self) -> Claws:
        """The claws service (made on first use, and again after a reload: a claws config
        problem is an answer to the claws commands, not a reason for the node not to start)."""
        if self._claws is None or self._claws_for is not self.config:
            backup = self.config.jobs.claws_backup.timeout  # also bounds /claw backup, restore
            self._claws = Claws.from_config(self.db, self.config.claws, backup_timeout=backup)
            self._claws_for = self.config
        return self._claws

    @property
    def active(self) -> bool:
        """The active node is the one talking to Telegram (or the only one, with no bot)."""
        return self.bot is None or self.bot.polling

    async def _announce(self, text: str) -> None:
        await self.outbox.put(text)
        self._wake_notifier()

    def _wake_notifier(self) -> None:
        if self.notifier is not None:
            self.notifier.wake()

    async def _observe_entry(self, entry: Entry) -> None:
        """A status-log entry is an observation of its job's alert key (fed in order, later)."""
        self._observations.put_nowait(entry)

    async def _feed_alerts(self) -> None:
        """One feeder per node: each key sees its observations in order, and a burst of
        posts costs the request path nothing (they are evaluated here, one at a time)."""
        while True:
            entry = await self._observations.get()
            for attempt in range(5):
                try:
                    flip = await self.alerts.observe(
                        f"job:{entry.job_id}", entry.status, entry.message, entry.created_at
                    )
                    break
                except StorageError as exc:
                    log.warning("alerts: cannot record entry %d (%s); retrying", entry.id, exc)
                    await asyncio.sleep(2**attempt)
            else:
                log.error("alerts: gave up on entry %d of %s", entry.id, entry.job_id)
                continue
            if flip is not None and self.notifier is not None:
                self.notifier.wake()

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
        private_database_files(self.loaded.database_url)
        self._started.append("database")
        log.info("database: %s (revision %s)", self.db.display_url, current)

    async def stop(self) -> None:
        """Stop in reverse order: no new requests, flush the log, then close the database."""
        self.emergency.stop()
        await self.reloader.close()
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeder
        if self.failover is not None and "failover" in self._started:
            await self.failover.stop()
        if self.notifier is not None:
            await self.notifier.stop()
        if self.bot is not None and "bot" in self._started:
            await self.bot.stop()
        if self.local_api is not None and "local_api" in self._started:
            await self.local_api.stop()
        if "scheduler" in self._started:
            self.scheduler.shutdown(wait=False)
        if "sidecar" in self._started:
            await self.sidecar.stop()
        if "statuslog" in self._started:
            await self.statuslog.stop()
        await self.fleet.close()
        await self.db.close()
        self._started.clear()
        log.info("stopped")

    async def run_sweep(
        self, machines: list[str] | None = None, on_machine: MachineDone | None = None
    ) -> SweepReport:
        """A health sweep now; a whole-fleet one is kept for /status and GET /api/status."""
        if machines is not None:
            return await sweep(self.fleet, machines, on_machine=on_machine)
        async with self._sweeping:
            return await self._sweep_all(on_machine)

    async def recent_sweep(self, max_age: timedelta) -> SweepReport:
        """The last whole-fleet sweep if younger than ``max_age``, else a new one (callers that
        arrive while one runs wait for it instead of starting their own)."""
        async with self._sweeping:
            at = self.last_sweep_at
            if self.last_sweep is None or at is None or utcnow() - at > max_age:
                return await self._sweep_all()
            return self.last_sweep

    async def _sweep_all(self, on_machine: MachineDone | None = None) -> SweepReport:
        report = await sweep(self.fleet, on_machine=on_machine)
        self.last_sweep, self.last_sweep_at = report, utcnow()
        try:
            if await observe_sweep(self.alerts, report):
                self._wake_notifier()
        except StorageError as exc:  # the sweep itself is still good to show
            log.warning("alerts: cannot record the sweep: %s", exc)
        return report

    @property
    def telegram_state(self) -> str:
        if self.bot is None:
            return "off"
        where = "local Bot API" if self.local_api is not None else "Telegram"
        return f"{where}, {'polling' if self.bot.polling else 'not polling'}"

    async def failover_state(self) -> dict[str, Any]:
        """What GET /api/failover answers: the watchdog's state (a peer asks before polling)."""
        if self.failover is None:
            return {"role": self.config.node.role, "active": self.active,
                    "polling": self.bot is not None and self.bot.polling, "state": "off",
                    "peer_url": self.config.node.peer_url}  # fmt: skip
        return self.failover.describe()

    async def alerts_report(self) -> dict[str, Any]:
        """What GET /api/alerts answers: the open alerts, whether this node polls or claims."""
        active = self.failover.active if self.failover is not None else self.active
        return {"active": active, **(await self.mirror.report())}

    async def status_summary(self) -> dict[str, Any]:
        """What GET /api/status answers (and /status shows)."""
        down = await self.alerts.open_alerts()
        latest = await self.statuslog.latest_per_job()
        swept = self.last_sweep
        reachable = {m.name: m for m in swept.machines} if swept else {}
        health = {(s.service, s.machine): s for s in swept.services} if swept else {}
        return {
            "role": self.config.node.role,
            "telegram": self.telegram_state,
            "sidecar": self.sidecar.url,
            "checked_at": self.last_sweep_at.isoformat() if self.last_sweep_at else None,
            "machines": [
                {
                    "name": m.name,
                    "os": m.os,
                    "address": m.address,
                    "local": m.local,
                    "reachable": reachable[m.name].reachable if m.name in reachable else None,
                    "error": reachable[m.name].error if m.name in reachable else "",
                }
                for m in self.config.machines
            ],
            "services": [
                {
                    "name": s.name,
                    "machine": s.machine,
                    "manager": s.manager,
                    "port": s.port,
                    **_service_health(health.get((s.name, s.machine))),
                }
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
            "failover": await self.failover_state(),
            "alerts": [
                {"key": r.key, "since": r.changed_at.isoformat(), "message": r.last_message}
                for r in down
            ],
        }


def _service_health(report: ServiceReport | None) -> dict[str, Any]:
    if report is None:
        return {"healthy": None, "state": None, "detail": "not checked yet"}
    detail = report.error or (report.check.detail if report.check else "")
    state = report.status.state if report.status else None
    return {"healthy": None if report.skipped else report.healthy, "state": state,
            "detail": detail}  # fmt: skip


async def run_node(loaded: LoadedConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly; SIGHUP reloads the config."""
    node = Node(loaded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.reloader.on_sighup)
    try:
        await node.start()
        log.info("node %s is up; Ctrl-C or SIGTERM stops it", node.name)
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await node.stop()
