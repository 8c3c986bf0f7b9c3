"""A whole-fleet sweep as alert observations: one key per machine and one per service.

Keys are ``machine:<name>`` and ``service:<machine>/<name>``. The parent suppresses its children
(SPEC 4): a machine that cannot be reached is one alert that says how many services it takes
down with it, and its services are not observed at all (they keep their state until the machine
is back and they are checked again).
"""

from __future__ import annotations

from core.alerts import Alerts, Flip
from core.health.sweep import SweepReport


async def observe_sweep(alerts: Alerts, report: SweepReport) -> list[Flip]:
    flips: list[Flip] = []
    affected: dict[str, int] = {}
    for service in report.services:
        if service.skipped:
            affected[service.machine] = affected.get(service.machine, 0) + 1
    for machine in report.machines:
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
        key = f"service:{service.machine}/{service.service}"
        if service.healthy:
            flip = await alerts.observe(key, "ok", "healthy again")
        else:
            flip = await alerts.observe(key, "critical", service.reason or "unhealthy")
        if flip is not None:
            flips.append(flip)
    return flips
