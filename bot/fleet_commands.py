"""Fleet commands: /health, /services, /ports, /restart, /logs, /kill (SPEC section 3)."""

from __future__ import annotations

import asyncio

from bot.commands import Command, Context, Reply, UsageError
from bot.format import esc
from core.config import MachineConfig, ServiceConfig
from core.errors import ClawopsError, InputError
from core.health import MachineReport, ServiceReport
from core.ports import conflicts, end_listener, holders, listeners
from core.services import ServiceStatus, check_lines

STATE_ICON = {"running": "🟢", "stopped": "⚪", "failed": "🔴", "unknown": "❔"}
RESTART_SETTLE = 2.0  # seconds a restarted service gets before its state is read back


def _machines(ctx: Context) -> list[str] | None:
    args = ctx.inv.args
    if len(args) > 1:
        raise UsageError("at most one machine")
    if args:
        ctx.node.fleet.machine(args[0])  # validates, with the list of known machines
        return [args[0]]
    return None


def _metrics_line(report: MachineReport) -> str:
    if not report.reachable:
        return f"🔴 <b>{esc(report.name)}</b> unreachable: {esc(report.error)}"
    m = report.metrics
    if m is None:
        return f"🟡 <b>{esc(report.name)}</b> {esc(report.error)}"
    parts = []
    if m.cpu_percent is not None:
        parts.append(f"CPU {m.cpu_percent:g}%")
    if m.load1 is not None:
        parts.append(f"load {m.load1:g}")
    if m.memory_percent is not None:
        parts.append(f"mem {m.memory_percent:g}%")
    if m.swap_percent is not None:
        parts.append(f"swap {m.swap_percent:g}%")
    if m.disk_percent is not None:
        parts.append(f"disk {m.disk_percent:g}% ({m.disk_free_gb:g} GB free)")
    if m.processes is not None:
        parts.append(f"{m.processes} procs")
    return f"🟢 <b>{esc(report.name)}</b> " + " · ".join(parts)


def _service_line(report: ServiceReport) -> str:
    if report.skipped:
        return f"⏸ {esc(report.service)}@{esc(report.machine)}: {esc(report.error)}"
    icon = "✅" if report.healthy else "❌"
    parts: list[str] = []
    if report.status is not None:
        parts.append(report.status.state)
    if report.check is not None:
        latency = f" {report.check.latency_ms:g} ms" if report.check.latency_ms else ""
        parts.append(f"{report.check.detail}{latency}")
    if report.error:
        parts.append(report.error)
    return f"{icon} {esc(report.service)}@{esc(report.machine)}: {esc(' · '.join(parts))}"


async def health_command(ctx: Context) -> Reply:
    async def on_machine(machine: MachineReport, done: int, total: int) -> None:
        state = "up" if machine.reachable else "unreachable"
        await ctx.progress(f"Health: {done}/{total} machines ({esc(machine.name)} {state})")

    report = await ctx.node.run_sweep(_machines(ctx), on_machine)
    lines = [_metrics_line(m) for m in report.machines]
    if report.services:
        lines.append("")
        lines += [_service_line(s) for s in report.services]
    lines.append(f"\n<i>swept in {report.seconds:.1f} s</i>")
    return Reply("\n".join(lines))


def _status_line(status: ServiceStatus, port: int | None, manager: str) -> str:
    pid = f" pid {status.pid}" if status.pid else ""
    restarts = f" ↻{status.restarts}" if status.restarts else ""
    where = f" :{port}" if port else ""
    detail = f" ({esc(status.detail)})" if status.detail and status.state != "running" else ""
    return (
        f"{STATE_ICON[status.state]} {esc(status.service)}{where} · {manager}{pid}{restarts}"
        f"{detail}"
    )


async def services_command(ctx: Context) -> Reply:
    fleet = ctx.node.fleet
    chosen = _machines(ctx) or [m.name for m in fleet.machines]
    lines: list[str] = []
    for machine in chosen:
        services = fleet.services_on(machine)
        if not services:
            continue
        lines.append(f"<b>{esc(machine)}</b>")

        async def one(svc: ServiceConfig) -> str:
            try:
                status = await fleet.manager(svc).status()
            except ClawopsError as exc:
                return f"❔ {esc(svc.name)} · {svc.manager}: {esc(exc)}"
            return _status_line(status, svc.port, svc.manager)

        lines += await asyncio.gather(*(one(s) for s in services))
    return Reply("\n".join(lines) or "No services configured.")


async def ports_command(ctx: Context) -> Reply:
    fleet, args = ctx.node.fleet, ctx.inv.args
    if len(args) > 2:
        raise UsageError("give a machine, a port, or both")
    port = next((int(a) for a in args if a.isdigit()), None)
    names = [a for a in args if not a.isdigit()]
    machines = [fleet.machine(n) for n in names] or fleet.machines
    lines: list[str] = []
    for machine in machines:
        try:
            found = await listeners(machine, fleet.executors[machine.name])
        except ClawopsError as exc:
            lines.append(f"🔴 <b>{esc(machine.name)}</b>: {esc(exc)}")
            continue
        if port is not None:
            held = holders(found, port)
            who = ", ".join(f"{esc(h.process)} (pid {h.pid}) on {esc(h.address)}" for h in held)
            lines.append(f"<b>{esc(machine.name)}</b> :{port} — {who or 'free'}")
            continue
        problems = conflicts(fleet.config, machine.name, found)
        ports = sorted({h.port for h in found})
        lines.append(f"<b>{esc(machine.name)}</b>: {len(ports)} listening")
        lines.append("<code>" + esc(" ".join(str(p) for p in ports)) + "</code>")
        lines += [f"⚠️ :{c.port} {esc(c.message)}" for c in problems]
    return Reply("\n".join(lines))


def _service_args(ctx: Context) -> tuple[str, str | None]:
    args = ctx.inv.args
    if not 1 <= len(args) <= 2:
        raise UsageError("give a service, and its machine if several have it")
    return args[0], args[1] if len(args) == 2 else None


def _restart_target(ctx: Context) -> ServiceConfig:
    name, machine = _service_args(ctx)
    return ctx.node.fleet.service(name, machine)


async def restart_check(ctx: Context) -> None:
    _restart_target(ctx)


async def restart_command(ctx: Context) -> Reply:
    fleet = ctx.node.fleet
    service = _restart_target(ctx)
    manager = fleet.manager(service)
    await manager.restart()
    await asyncio.sleep(RESTART_SETTLE)
    status = await manager.status()
    verdict = "restarted" if status.running else "restarted, but it is not running"
    return Reply(
        f"{STATE_ICON[status.state]} {esc(service.name)}@{esc(service.machine)} {verdict}\n"
        + _status_line(status, service.port, service.manager)
    )


async def logs_command(ctx: Context) -> Reply:
    args = ctx.inv.args
    if not 1 <= len(args) <= 3:
        raise UsageError("give a service, and optionally its machine and a number of lines")
    lines = 50
    rest = list(args[1:])
    if rest and rest[-1].isdigit():
        lines = check_lines(int(rest.pop()))
    if len(rest) > 1:
        raise UsageError(f"{rest[-1]!r} is not a number of lines")
    fleet = ctx.node.fleet
    service = fleet.service(args[0], rest[0] if rest else None)
    text = await fleet.manager(service).logs(lines)
    title = f"{service.name}@{service.machine}, last {lines} lines"
    if len(text) > 3500:
        return Reply(
            f"📄 {esc(title)} (attached)",
            document=(f"{service.name}-{service.machine}.log", text.encode()),
        )
    return Reply(f"📄 {esc(title)}\n<pre>{esc(text) or '(empty)'}</pre>")


def _kill_target(ctx: Context) -> tuple[MachineConfig, int]:
    args = ctx.inv.args
    if not 1 <= len(args) <= 2 or not args[0].isdigit():
        raise UsageError("give a port number, and its machine")
    port = int(args[0])
    if not 1 <= port <= 65535:
        raise UsageError(f"{port} is not a port: give one between 1 and 65535")
    fleet = ctx.node.fleet
    local = fleet.config.local_machine()
    if len(args) == 1 and local is None:
        raise InputError("no local machine is configured: say which machine")
    machine = fleet.machine(args[1]) if len(args) == 2 else local
    assert machine is not None
    return machine, port


async def kill_check(ctx: Context) -> None:
    _kill_target(ctx)


async def kill_command(ctx: Context) -> Reply:
    machine, port = _kill_target(ctx)
    ended = await end_listener(machine, ctx.node.fleet.executors[machine.name], port)
    who = ", ".join(f"{esc(e.process)} (pid {e.pid})" for e in ended)
    return Reply(f"🔪 Port {port} on {esc(machine.name)}: ended {who}.")


FLEET_COMMANDS = [
    Command("health", "Run the health checks now", health_command, usage="[machine]"),
    Command("services", "Services with manager, state and port", services_command,
            usage="[machine]"),
    Command("ports", "Listening ports, conflicts; /ports N: who holds N", ports_command,
            usage="[machine|port]"),
    Command("restart", "Restart a service through its manager", restart_command,
            role="admin", mutates=True, usage="SERVICE [machine]", check=restart_check),
    Command("logs", "Tail of a service's log", logs_command, usage="SERVICE [machine] [lines]"),
    Command("kill", "End the process listening on a port", kill_command,
            role="admin", mutates=True, usage="PORT [machine]", check=kill_check),
]  # fmt: skip
