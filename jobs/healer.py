"""The healer: a health sweep, verified auto-restarts with a crash-loop guard, resource warnings
and emergency mode (SPEC 4 and 7b).

Restart policy, per service with ``auto_restart = true`` (its record is shared node state under
``healer:MACHINE/SERVICE``, so it survives a restart and every node sees it):

- at most ``max_restarts_per_run`` restarts per run, and one per service per run;
- a restart counts as done only once verified by the policy /restart uses too
  (``core.health.restart``): over the service's settle window (``restart_settle``) the manager
  says running, it does not crash again, and its health check (if any) passes at the end;
- a restart is stable once the service is seen up ``min_uptime`` after it (watched right away,
  crashes counted the same way, when ``min_uptime`` is short, else checked by a later run); a
  restart that is not verified, or after which the service is found down before it was seen
  stable, is unstable;
- after ``max_unstable`` unstable restarts the healer gives up: one critical observation on the
  record's alert key, then no restart before ``min_uptime * 2**k`` (k: how often it gave up);
- once the service has stayed up for ``min_uptime`` the record is cleared (and the key recovers).

Services on an unreachable machine are left alone: the machine is the problem (the sweep already
marks them skipped). So are those on a machine without SSH (none can be restarted there; the
config refuses ``auto_restart`` on one): the run's data lists such machines under ``no_ssh``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from core.accounts import Accounts, settle_emergency
from core.config import ServiceConfig
from core.config._jobs import HealerJob
from core.errors import ClawopsError
from core.health import MachineReport, SweepReport, Verdict, restart_verified, watch
from core.resources import Leases
from core.tables import utcnow
from jobs.base import Ending, JobContext, JobResult

STABLE_NOW = timedelta(seconds=15)  # min_uptime up to this is waited for within the run
MAX_BACKOFF = timedelta(days=1)


def _when(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


class Healer:
    def __init__(self, ctx: JobContext, client: httpx.AsyncClient) -> None:
        self.ctx = ctx
        self.client = client
        self.settings: HealerJob = ctx.config.jobs.healer
        self.restarted: list[dict[str, Any]] = []
        self.gave_up: list[dict[str, Any]] = []
        self.new_give_ups = 0

    @staticmethod
    def key(service: ServiceConfig) -> str:
        return f"healer:{service.machine}/{service.name}"

    async def _stable(self, service: ServiceConfig, record: dict[str, Any]) -> None:
        """The service stayed up: forget its unstable restarts (and recover its alert key)."""
        await self.ctx.state.delete(self.key(service))
        if record.get("gave_up"):
            message = f"{service.name} on {service.machine} is stable again"
            if await self.ctx.alerts.observe(self.key(service), "ok", message):
                self.ctx.wake_notifier()

    async def _unstable(self, service: ServiceConfig, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "unstable": int(record.get("unstable", 0)) + 1, "pending": False}
        # After a give-up, the one try past the back-off decides: unstable again, back off longer.
        if record["unstable"] < self.settings.max_unstable and not record.get("gave_up"):
            return record
        times = int(record.get("give_ups", 0)) + 1
        backoff = min(self.settings.min_uptime * 2**times, MAX_BACKOFF)
        until = utcnow() + backoff
        record.update(gave_up=True, give_ups=times, unstable=0, backoff_until=until.isoformat())
        self.new_give_ups += 1
        message = (
            f"{service.name} on {service.machine}: gave up after {self.settings.max_unstable} "
            f"unstable restarts (it does not stay up for {self.settings.min_uptime}); "
            f"next try after {until:%H:%M:%S} UTC"
        )
        if await self.ctx.alerts.observe(self.key(service), "critical", message):
            self.ctx.wake_notifier()
        return record

    async def tend(self, service: ServiceConfig, healthy: bool) -> None:
        """One auto-restart service: settle its record, restart it if it is down and allowed."""
        key = self.key(service)
        record = await self.ctx.state.get(key) or {}
        now = utcnow()
        restarted_at = _when(record.get("last_restart_at"))
        if healthy:
            if record and (restarted_at is None or now - restarted_at >= self.settings.min_uptime):
                await self._stable(service, record)
            return
        if record.get("pending"):  # restarted, verified, but down before it was seen stable
            record = await self._unstable(service, record)
            await self.ctx.state.put(key, record)
        backoff_until = _when(record.get("backoff_until"))
        if record.get("gave_up") and backoff_until is not None and now < backoff_until:
            self.gave_up.append(
                {"service": service.name, "machine": service.machine,
                 "until": backoff_until.isoformat()}
            )  # fmt: skip
            return
        if len(self.restarted) >= self.settings.max_restarts_per_run:
            return
        await self.restart(service, record)

    async def restart(self, service: ServiceConfig, record: dict[str, Any]) -> None:
        key = self.key(service)
        entry: dict[str, Any] = {"service": service.name, "machine": service.machine}
        self.restarted.append(entry)
        started = utcnow()
        record = {**record, "last_restart_at": started.isoformat(), "pending": False}
        fleet, settle = self.ctx.fleet, self.ctx.config.settle_for(service)
        verdict: Verdict | None = None
        try:
            verdict = await restart_verified(fleet, service, settle, client=self.client)
            left = started + self.settings.min_uptime - utcnow()
            if verdict.healthy and self.settings.min_uptime <= STABLE_NOW and left > timedelta(0):
                verdict = await watch(
                    fleet, service, left, client=self.client, since=verdict.status
                )
        except ClawopsError as exc:
            entry["error"] = str(exc)
        verified = verdict is not None and verdict.healthy
        entry["verified"] = verified
        if verdict is not None and not verified:
            entry["reason"] = verdict.reason
        if verified and self.settings.min_uptime <= STABLE_NOW:
            await self._stable(service, record)
            return
        if verified:
            await self.ctx.state.put(key, {**record, "pending": True})
            return
        before = self.new_give_ups
        record = await self._unstable(service, record)
        if self.new_give_ups > before:
            self.gave_up.append(
                {"service": service.name, "machine": service.machine,
                 "until": record["backoff_until"]}
            )  # fmt: skip
        await self.ctx.state.put(key, record)


def resource_warnings(settings: HealerJob, machines: list[MachineReport]) -> list[str]:
    found = []
    for report in machines:
        m = report.metrics
        if not report.reachable or m is None:
            continue
        for what, value, limit in (
            ("swap", m.swap_percent, settings.swap_warn_percent),
            ("memory", m.memory_percent, settings.memory_warn_percent),
            ("disk", m.disk_percent, settings.disk_warn_percent),
        ):
            if value is not None and value > limit:
                found.append(f"{report.name}: {what} {value:g}% (over {limit:g}%)")
    return found


async def emergency(ctx: JobContext) -> bool:
    """Switch emergency mode on when every LLM account is limited, off when one is free."""
    names = [a.name for a in ctx.config.llm_accounts]
    return await settle_emergency(Accounts(ctx.state), names, ctx.announce)


async def healer(ctx: JobContext) -> JobResult:
    report: SweepReport = await ctx.sweep()
    reachable = {m.name for m in report.machines if m.reachable and not m.no_ssh}
    no_ssh = [m.name for m in report.machines if m.no_ssh]
    unhealthy = {(s.machine, s.service) for s in report.unhealthy}
    seen = {(s.machine, s.service) for s in report.services if not s.skipped}
    async with httpx.AsyncClient(follow_redirects=False) as client:
        work = Healer(ctx, client)
        for service in ctx.config.services:
            where = (service.machine, service.name)
            if service.auto_restart and service.machine in reachable and where in seen:
                await work.tend(service, where not in unhealthy)
    warnings = resource_warnings(work.settings, report.machines)
    mode = await emergency(ctx)
    stale = await Leases(ctx.db, ctx.config.resources).reclaim_expired()
    unverified = [r for r in work.restarted if not r["verified"]]
    parts = [f"{len(report.unhealthy)} unhealthy", f"{len(work.restarted)} restarted"]
    if unverified:
        parts.append(f"{len(unverified)} not verified")
    if work.gave_up:
        parts.append("gave up on " + ", ".join(g["service"] for g in work.gave_up))
    parts += warnings
    if stale:
        parts.append("reclaimed stale leases: " + ", ".join(
            f"{x.resource} ({x.holder})" for x in stale
        ))  # fmt: skip
    if mode:
        parts.append("emergency mode")
    outcome: Ending = "warning" if warnings or unverified or work.new_give_ups else "ok"
    data = {"restarted": work.restarted, "gave_up": work.gave_up, "warnings": warnings,
            "emergency": mode, "reclaimed": [x.as_json() for x in stale]}  # fmt: skip
    if no_ssh:
        data["no_ssh"] = no_ssh
    return JobResult(outcome, "; ".join(parts), data)
