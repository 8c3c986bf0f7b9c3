"""A whole-fleet sweep as alert observations: one key per machine and one per service.

Keys are ``machine:<name>`` and ``service:<machine>/<name>``; a verified restart (``/restart``)
is one more observation of its service's key. The parent suppresses its children
(SPEC 4): a machine that cannot be reached is one alert that says how many services it takes
down with it, and its services are not observed at all (they keep their state until the machine
is back and they are checked again).

A machine without SSH is observed only when one of its HTTP/TCP checks answered (ok): when none
did, its services' own keys already say so, and a second alert for the machine would say it
twice; when it has none, nothing was asked of it and nothing is claimed.
"""

from __future__ import annotations

from core.alerts import Alerts, Flip
from core.config import ServiceConfig
from core.health.restart import Verdict
from core.health.sweep import SweepReport


def service_key(machine: str, name: str) -> str:
    return f"service:{machine}/{name}"


async def observe_sweep(alerts: Alerts, report: SweepReport) -> list[Flip]:
    flips: list[Flip] = []
    affected: dict[str, int] = {}
    for service in report.services:
        if service.skipped:
            affected[service.machine] = affected.get(service.machine, 0) + 1
    for machine in report.machines:
        if machine.no_ssh and not machine.reachable:
            continue
        if machine.reachable:
            flip = await alerts.observe(f"machine:{machine.name}", "ok", "reachable again")
        else:
            count = affected.get(machine.name, 0)
            also = f"; {count} service(s) on it not checked" if count else ""
            flip = await alerts.observe(
                f"machine:{machine.name}", "critical", f"{machine.error}{also}"
            )
        if flip is not None:
            flips.append(flip)
    for service in report.services:
        if service.skipped:
            continue
        key = service_key(service.machine, service.service)
        if service.healthy:
            flip = await alerts.observe(key, "ok", "healthy again")
        else:
            flip = await alerts.observe(key, "critical", service.reason or "unhealthy")
        if flip is not None:
            flips.append(flip)
    return flips


async def observe_restart(alerts: Alerts, service: ServiceConfig, verdict: Verdict) -> Flip | None:
    """A verified restart as an observation of the service's key, like a sweep's: critical when
    it did not settle healthy (raising the alert), ok when it did (recovering it)."""
    key = service_key(service.machine, service.name)
    if verdict.healthy:
        return await alerts.observe(key, "ok", "restarted, healthy")
    return await alerts.observe(key, "critical", f"restarted but unhealthy: {verdict.reason}")
