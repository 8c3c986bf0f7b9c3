"""Reload without a restart: SIGHUP and ``/reload`` re-read the config file and apply it.

1. Read and validate the file the node started with (bounded: a file on a hung mount does not
   hold the node). A config that does not validate, or that the next start would refuse, is
   refused whole: the running config stays, and the alert ``config:<node>`` says why until a
   good reload (or a restart) clears it.
2. Sort the differences (``core.config.config_changes``) into what a reload applies and what
   needs a restart. The latter keep their running values (``keep_running``), so the node never
   claims a setting it does not use, and the answer names them.
3. Swap in memory, where nothing can fail: the fleet (an unchanged machine keeps its SSH
   connection; the others' executors are closed after a grace for work in flight), the jobs and
   scheduled commands (only changed ones are rescheduled), check-ins, alert rules, the Telegram
   allowlist and roles, the alert chat, resources, the claws service.
4. Then the database side, each step bounded by ``[database] timeout``: orgs, web sign-ins of
   users no longer allowed, Mac Minis added to ``[[claws.minis]]``, and the alerts of keys the
   config no longer has (settled silently). A step that fails is named in the answer; what was
   swapped stays.

Reloads are serialised by one lock; SIGHUP's outcome goes to the log and, when something was
applied, to the alert chat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.commands import Command, Context, Reply
from bot.format import esc
from core.alerts import AlertPolicy
from core.alerts.keys import config_keys, reload_key
from core.config import (
    Config,
    ConfigChanges,
    LoadedConfig,
    config_changes,
    keep_running,
    load_config,
    startup_refusals,
)
from core.db import Database
from core.errors import ClawopsError, ConfigError
from core.executors import Executor
from core.minis import seed_minis
from core.orgs import sync_orgs
from core.resources import Leases
from core.secrets import secret_values
from core.websessions import WebAuth

if TYPE_CHECKING:
    from bot.node import Node

log = logging.getLogger("clawops.reload")
READ_TIMEOUT = 10.0
# Executors of machines a reload changed or removed are closed this long after (commands
# already running on them finish on the old connection).
RETIRE_AFTER = 120.0


@dataclass
class ReloadOutcome:
    source: str
    refused: list[str] = field(default_factory=list)
    changes: ConfigChanges = field(default_factory=ConfigChanges)
    jobs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused

    def html(self) -> str:
        if self.refused:
            lines = [f"❌ Config refused ({esc(self.source)}); the running config stays:"]
            lines += [f"• {esc(p)}" for p in self.refused]
            return "\n".join(lines)
        if self.changes.empty:
            return f"✅ Config re-read ({esc(self.source)}): nothing changed."
        lines = [f"✅ Config reloaded ({esc(self.source)})."]
        if self.changes.applied:
            lines.append("Applied: " + esc("; ".join(c.text for c in self.changes.applied)))
        if self.jobs:
            lines.append("Jobs: " + esc("; ".join(self.jobs)))
        if self.changes.restart:
            keys = "; ".join(c.text for c in self.changes.restart)
            lines.append(f"⚠️ Needs a restart (still running the old value): {esc(keys)}")
        lines += [f"⚠️ {esc(w)}" for w in self.warnings]
        return "\n".join(lines)


class Reloader:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        # Executors a reload replaced, waiting RETIRE_AFTER (or the node's stop) to be closed.
        self._retired: list[Executor] = []

    def on_sighup(self) -> None:
        """SIGHUP: reload in the background; what it applied is told to the alert chat too (a
        refusal is the ``config:<node>`` alert)."""
        self._background(self._sighup())

    async def _sighup(self) -> None:
        outcome = await self.reload("SIGHUP")
        if outcome.ok and not outcome.changes.empty:
            try:
                await self.node.outbox.put(f"🔄 {self.node.name}: " + outcome.html())
            except ClawopsError as exc:
                log.warning("reload: cannot queue the chat message: %s", exc)
            self.node._wake_notifier()

    async def preview(self) -> ReloadOutcome:
        """What a reload would do now, without doing it (the /reload confirmation)."""
        path = self.node.loaded.path
        outcome = ReloadOutcome(str(path) if path else "no file")
        new = await self._read(outcome)
        if new is not None:
            outcome.changes = config_changes(self.node.config, new)
        return outcome

    async def reload(self, trigger: str) -> ReloadOutcome:
        async with self._lock:
            node = self.node
            path = node.loaded.path
            outcome = ReloadOutcome(str(path) if path else "no file")
            new = await self._read(outcome)
            if new is None:
                log.error("reload (%s) refused: %s", trigger, "; ".join(outcome.refused))
                await self._alert(f"{trigger}: " + "; ".join(outcome.refused), ok=False)
                return outcome
            old, old_jobs = node.config, list(node.jobs.specs)
            outcome.changes = config_changes(old, new)
            if not outcome.changes.empty:
                self._apply(keep_running(old, new, outcome.changes), outcome)
                await self._sync(config_keys(old, old_jobs), outcome)
            await self._alert(f"config reloaded by {trigger}", ok=True)
            log.info("reload (%s): %s", trigger, outcome.html().replace("\n", " | "))
            return outcome

    async def _read(self, outcome: ReloadOutcome) -> Config | None:
        path = self.node.loaded.path
        if path is None:
            outcome.refused.append(
                "this node runs on the embedded default (no config file): there is nothing to "
                "re-read; start it with --config PATH to reload later"
            )
            return None
        try:
            loaded = await asyncio.wait_for(asyncio.to_thread(load_config, path), READ_TIMEOUT)
        except TimeoutError:
            outcome.refused.append(f"reading {path} took over {READ_TIMEOUT:.0f} s")
            return None
        except ConfigError as exc:
            outcome.refused += [str(p) for p in exc.problems]
            return None
        if refusals := startup_refusals(loaded.config):
            outcome.refused += [f"the next start would refuse it: {r}" for r in refusals]
            return None
        return loaded.config

    def _apply(self, config: Config, outcome: ReloadOutcome) -> None:
        """Step 3: swap what the running parts read (nothing here can fail half-way)."""
        from bot.cli import SECRET_FILTER
        from jobs.registry import builtin_jobs

        node = self.node
        for value in secret_values(config):
            SECRET_FILTER.add(value)
        node.config = config
        node.loaded = LoadedConfig(config, node.loaded.path)
        self._retire(node.fleet.reconfigure(config))
        node.jobs.ctx.config = config
        jobs = node.jobs.reconfigure(builtin_jobs(config))
        for label, names in (("+", jobs.added), ("−", jobs.removed), ("~", jobs.changed)):
            outcome.jobs += [f"{label}{n}" for n in names]
        node.checkins.reconfigure(config.checkins)
        node.alerts.policy = AlertPolicy(config.alerts)
        node.alerts.warning_repeats = config.telegram.warning_repeats
        if node.bot is not None:
            node.bot.apply_settings(config.telegram)
            if outcome.changes.touches("telegram.admins"):
                self._background(node.bot.register_commands())
        if node.notifier is not None and config.alert_chat_id is not None:
            node.notifier.chat_id = config.alert_chat_id
        node.leases = Leases(node.db, config.resources)
        node.sidecar_state.leases = node.leases

    async def _sync(self, old_keys: set[str], outcome: ReloadOutcome) -> None:
        """Step 4: the database side, each step on its own."""
        node = self.node
        extra = node.bot.extra_admins if node.bot is not None else ()
        try:
            await sync_database(node.db, node.config, extra)
        except ClawopsError as exc:
            outcome.warnings.append(f"orgs, sign-ins or Minis not updated: {exc}")
        gone = old_keys - config_keys(node.config, node.jobs.specs)
        try:
            for key in sorted(gone):
                if await node.alerts.settle(key, "removed from the config by a reload"):
                    outcome.warnings.append(f"alert {key} closed: no longer in the config")
        except ClawopsError as exc:
            outcome.warnings.append(f"alerts of removed keys not closed: {exc}")

    async def _alert(self, message: str, *, ok: bool) -> None:
        node = self.node
        try:
            flip = await node.alerts.observe(
                reload_key(node.name), "ok" if ok else "critical", message
            )
        except ClawopsError as exc:
            log.warning("reload: cannot record the alert: %s", exc)
            return
        if flip is not None:
            node._wake_notifier()

    def _retire(self, executors: list[Executor]) -> None:
        async def later() -> None:
            await asyncio.sleep(RETIRE_AFTER)
            for executor in executors:
                self._retired.remove(executor)
                await executor.close()

        if executors:
            self._retired += executors
            self._background(later())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """At the node's stop: what waits to be closed is closed now."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for executor in self._retired:
            await executor.close()
        self._retired.clear()


async def sync_database(db: Database, config: Config, extra_staff: tuple[int, ...]) -> None:
    """What the config says that lives in the database (at start, and on a reload): the orgs,
    the web sign-ins of users no longer allowed (``extra_staff`` stay: the local operator), the
    Minis of ``[[claws.minis]]``."""
    await sync_orgs(db, config.orgs)
    staff = [*config.telegram.admins, *config.telegram.viewers, *extra_staff]
    if pruned := await WebAuth(db).prune(staff):
        log.info("web: revoked %s of users no longer admin, viewer or in an org", pruned)
    for hostname in await seed_minis(db, config.claws.minis):
        log.info("claws: Mac Mini %s added to the inventory from the config", hostname)


async def reload_command(ctx: Context) -> Reply:
    who = f"@{ctx.inv.username}" if ctx.inv.username else str(ctx.inv.user_id)
    outcome = await ctx.node.reloader.reload(f"/reload by {who}")
    return Reply(outcome.html())


async def describe_reload(ctx: Context) -> str:
    outcome = await ctx.node.reloader.preview()
    if not outcome.ok:
        return "The file does not validate now; a reload will be refused:\n" + "\n".join(
            f"• {esc(p)}" for p in outcome.refused[:10]
        )
    changes = outcome.changes
    if changes.empty:
        return f"Re-read {esc(outcome.source)}: nothing has changed."
    lines = [f"Re-read {esc(outcome.source)} and apply:"]
    lines += [f"• {esc(c.text)}" for c in changes.applied]
    if changes.restart:
        lines.append("Needs a restart: " + esc("; ".join(c.text for c in changes.restart)))
    return "\n".join(lines)


RELOAD_COMMANDS = [
    Command(
        "reload",
        "Re-read the config file and apply it (no restart)",
        reload_command,
        role="admin",
        mutates=True,
        describe=describe_reload,
    ),
]
