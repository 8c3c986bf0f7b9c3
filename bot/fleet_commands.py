"""Fleet commands: /health, /services, /ports, /restart, /logs, /kill (SPEC section 3)."""

from __future__ import annotations

import asyncio
import os

from bot.commands import Command, Context, Reply, UsageError, number
from bot.format import esc
from core.config import MachineConfig, ServiceConfig
from core.errors import ClawopsError, InputError, NoSSH, StorageError
from core.health import MachineReport, ServiceReport, restart_verified
from core.health.observe import observe_restart
from core.minis import Minis
from core.portguard import KillGuard, kill_guard
from core.ports import (
    Listener,
    Owners,
    conflicts,
    end_listener,
    holders,
    listeners,
    listening,
    service_owners,
)
from core.processes import command_lines
from core.services import ServiceLogs, ServiceStatus, check_lines

STATE_ICON = {"running": "🟢", "stopped": "⚪", "failed": "🔴", "unknown": "❔"}
LOGS_INLINE = 3500  # characters of log text shown in the chat; more is sent as a document


def _machines(ctx: Context) -> list[str] | None:
    args = ctx.inv.args
    if len(args) > 1:
        raise UsageError("at most one machine")
    if args:
        ctx.node.fleet.machine(args[0])  # validates, with the list of known machines
        return [args[0]]
    return None


def _metrics_line(report: MachineReport) -> str:
    if report.no_ssh:  # no metrics without SSH: what its HTTP/TCP checks saw
        icon = {True: "🟢", False: "🔴", None: "⚪"}[report.reachable]
        return f"{icon} <b>{esc(report.name)}</b> {esc(report.error)}"
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
    if report.note:
        parts.append(report.note)
    return f"{icon} {esc(report.service)}@{esc(report.machine)}: {esc(' · '.join(parts))}"


async def health_command(ctx: Context) -> Reply:
    async def on_machine(machine: MachineReport, done: int, total: int) -> None:
        state = {True: "up", False: "unreachable", None: "not watched"}[machine.reachable]
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
        if not fleet.machine(machine).runs_commands:  # one line, not the same error per service
            names = ", ".join(s.name for s in services)
            lines.append(
                f"⏸ {esc(names)}: no SSH from this node, their states are unknown "
                "(/health runs their HTTP/TCP checks)"
            )
            continue

        async def one(svc: ServiceConfig) -> str:
            try:
                status = await fleet.manager(svc).status()
            except ClawopsError as exc:
                return f"❔ {esc(svc.name)} · {svc.manager}: {esc(exc)}"
            return _status_line(status, svc.port, svc.manager)

        lines += await asyncio.gather(*(one(s) for s in services))
    return Reply("\n".join(lines) or "No services configured.")


def _holder(item: Listener, owners: Owners) -> str:
    service = owners.of(item)
    return (
        f"{esc(item.process)} (pid {item.pid}{f', service {esc(service)}' if service else ''})"
        f" on {esc(item.address)}"
    )


async def ports_command(ctx: Context) -> Reply:
    fleet, args = ctx.node.fleet, ctx.inv.args
    if len(args) > 2:
        raise UsageError("give a machine, a port, or both")
    port = next((n for n in map(number, args) if n is not None), None)
    names = [a for a in args if number(a) is None]
    machines = [fleet.machine(n) for n in names] or fleet.machines
    lines: list[str] = []
    for machine in machines:
        try:
            executor = fleet.executor(machine.name)
            found = await listeners(machine, executor)
        except NoSSH:
            lines.append(f"⏸ <b>{esc(machine.name)}</b>: no SSH from this node, ports not listed")
            continue
        except ClawopsError as exc:
            lines.append(f"🔴 <b>{esc(machine.name)}</b>: {esc(exc)}")
            continue
        owners = await service_owners(fleet.config, machine, executor)
        if port is not None:
            who = ", ".join(_holder(h, owners) for h in holders(found, port))
            lines.append(f"<b>{esc(machine.name)}</b> :{port} — {who or 'free'}")
            continue
        problems = conflicts(fleet.config, machine.name, found, owners)
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
    service = _restart_target(ctx)
    ctx.node.fleet.executor(service.machine)  # NoSSH: refused before any confirmation


async def restart_command(ctx: Context) -> Reply:
    node = ctx.node
    service = _restart_target(ctx)
    settle = node.config.settle_for(service)
    verdict = await restart_verified(
        node.fleet, service, settle, progress=lambda text: ctx.progress(esc(text))
    )
    where = f"{esc(service.name)}@{esc(service.machine)}"
    if verdict.healthy:
        lines = [f"🟢 {where} restarted, healthy"]
    else:
        lines = [f"⚠️ {where} restarted but unhealthy: {esc(verdict.reason)}"]
    if verdict.status is not None:
        lines.append(_status_line(verdict.status, service.port, service.manager))
    try:
        if await observe_restart(node.alerts, service, verdict):
            node._wake_notifier()
    except StorageError as exc:  # the restart happened; say the alert could not be recorded
        lines.append(f"(its alert could not be recorded: {esc(exc)})")
    return Reply("\n".join(lines))


async def logs_command(ctx: Context) -> Reply:
    args = ctx.inv.args
    if not 1 <= len(args) <= 3:
        raise UsageError("give a service, and optionally its machine and a number of lines")
    lines = 50
    rest = list(args[1:])
    count = number(rest[-1]) if rest else None
    if count is not None:
        lines = check_lines(count)
        rest.pop()
    elif rest and rest[-1].isdigit():  # "³", "٥": digits to str.isdigit, not to us
        raise UsageError(f"{rest[-1]!r} is not a number of lines (ASCII digits only)")
    if len(rest) > 1:
        raise UsageError(f"{rest[-1]!r} is not a number of lines")
    fleet = ctx.node.fleet
    service = fleet.service(args[0], rest[0] if rest else None)
    return logs_reply(await fleet.manager(service).logs(lines))


def logs_reply(logs: ServiceLogs) -> Reply:
    """Each stream under its name and source; all of it as a document when it is long."""
    title = f"{logs.service}@{logs.machine}, last {logs.lines} lines"
    sections = [
        f"<b>{esc(s.name)}</b> <code>{esc(s.source)}</code>\n<pre>{esc(s.body)}</pre>"
        for s in logs.streams
    ]
    if sum(len(s.body) for s in logs.streams) > LOGS_INLINE:
        return Reply(
            f"📄 {esc(title)} (attached: {esc(', '.join(s.name for s in logs.streams))})",
            document=(f"{logs.service}-{logs.machine}.log", logs.render().encode()),
        )
    return Reply(f"📄 {esc(title)}\n" + "\n".join(sections))


def _kill_target(ctx: Context) -> tuple[MachineConfig, int]:
    args = ctx.inv.args
    port = number(args[0]) if args else None
    if not 1 <= len(args) <= 2 or port is None:
        raise UsageError("give a port number, and its machine")
    if not 1 <= port <= 65535:
        raise UsageError(f"{port} is not a port: give one between 1 and 65535")
    fleet = ctx.node.fleet
    local = fleet.config.local_machine()
    if len(args) == 1 and local is None:
        raise InputError("no local machine is configured: say which machine")
    machine = fleet.machine(args[1]) if len(args) == 2 else local
    assert machine is not None
    fleet.executor(machine.name)  # NoSSH: refused before any confirmation
    return machine, port


async def _kill_guard(ctx: Context, machine: MachineConfig) -> KillGuard:
    node = ctx.node
    own = {node.config.sidecar.port: "this node's sidecar"}
    if node.local_api is not None:
        own[node.config.telegram.local_api_port] = "this node's local Bot API"
    minis = await Minis(node.db).list()
    return kill_guard(node.config, machine, node_ports=own, minis=minis, node_pid=os.getpid())


async def _kill_plan(ctx: Context) -> tuple[MachineConfig, list[Listener]]:
    """The machine and the holders /kill would end; a guarded or idle port is refused."""
    machine, port = _kill_target(ctx)
    guard = await _kill_guard(ctx, machine)
    guard.check_port(port)
    found = await listeners(machine, ctx.node.fleet.executor(machine.name))
    held = listening(found, machine, port)
    guard.check_holders(held)
    return machine, held


async def kill_check(ctx: Context) -> None:
    await _kill_plan(ctx)


async def kill_describe(ctx: Context) -> str:
    """Each pid that will end: its command line and the configured service it belongs to."""
    try:
        machine, held = await _kill_plan(ctx)
        fleet = ctx.node.fleet
        executor = fleet.executor(machine.name)
        pids = sorted({h.pid for h in held if h.pid})
        lines, owners = await asyncio.gather(
            command_lines(machine, executor, pids),
            service_owners(fleet.config, machine, executor),
        )
    except ClawopsError as exc:
        return f"⚠️ Cannot say what it would end: {esc(exc)}"
    managers = {s.name: s.manager for s in fleet.services_on(machine.name)}
    out = [f"It ends on {esc(machine.name)}:"]
    for pid in pids:
        item = next(h for h in held if h.pid == pid)
        service = owners.of(item)
        whose = f"service {esc(service)} ({managers[service]})" if service else "no service"
        command = lines.get(pid) or item.process
        out.append(f"• pid {pid} · {whose}\n  <code>{esc(command)}</code>")
    return "\n".join(out)


async def kill_command(ctx: Context) -> Reply:
    machine, port = _kill_target(ctx)
    guard = await _kill_guard(ctx, machine)
    guard.check_port(port)
    executor = ctx.node.fleet.executor(machine.name)
    ended = await end_listener(machine, executor, port, guard.check_holders)
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
            role="admin", mutates=True, usage="PORT [machine]", check=kill_check,
            describe=kill_describe),
]  # fmt: skip
