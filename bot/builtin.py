"""The commands every node has: /start, /help, /status (the fleet commands plug in beside)."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.alert_commands import silence_line
from bot.commands import Command, Context, Reply
from bot.format import esc
from core.tables import utcnow

STATUS_ICON = {"ok": "✅", "warning": "⚠️", "critical": "🔴"}
# /status reuses a whole-fleet sweep this recent (the healer and /health make them too); an
# older one is redone, so the screen never shows stale machine states as current.
STATUS_SWEEP_MAX_AGE = timedelta(seconds=60)


def ago(when: datetime) -> str:
    seconds = int((utcnow() - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


FIRST_COMMANDS = ("status", "health", "help")


async def start_command(ctx: Context) -> Reply:
    """Who the bot is and who the user is here, with the few commands to try first."""
    node, role = ctx.node, ctx.inv.role
    mine = {c.name: c for c in node.registry.for_role(role)}
    can = (
        "you read the fleet's state and change it (restarts, jobs, claws…); every change "
        "asks you to confirm with a button first"
        if role == "admin"
        else "you read the fleet's state; changing it is for admins"
    )
    lines = [
        f"👋 I am <b>clawops</b> on <b>{esc(node.name)}</b>: I watch this fleet's machines, "
        "services, scheduled jobs and claws, alert here when something breaks, and run what "
        "you ask.",
        f"You are {'an' if role == 'admin' else 'a'} <b>{role}</b> here: {can}.",
        "",
        "Try first:",
    ]
    lines += [f"/{name} — {esc(mine[name].help)}" for name in FIRST_COMMANDS if name in mine]
    return Reply("\n".join(lines))


async def help_command(ctx: Context) -> Reply:
    registry = ctx.node.registry
    lines = ["<b>clawops</b>: what I can do here"]
    for command in registry.for_role(ctx.inv.role):
        usage = f" {esc(command.usage)}" if command.usage else ""
        mark = " 🔐" if command.mutates else ""
        lines.append(f"/{command.name}{usage} — {esc(command.help)}{mark}")
    if ctx.inv.role == "admin":
        lines.append("🔐 asks for confirmation first.")
    return Reply("\n".join(lines))


async def status_command(ctx: Context) -> Reply:
    node = ctx.node
    swept = await node.recent_sweep(STATUS_SWEEP_MAX_AGE) if node.config.machines else None
    summary = await node.status_summary()
    lines = [f"<b>{esc(node.name)}</b> · {esc(summary['role'])}"]
    lines.append(f"Telegram: {esc(summary['telegram'])} · sidecar {esc(summary['sidecar'])}")
    mode = await node.emergency.accounts.emergency()
    if mode.on:
        lines.append(f"🚨 <b>Emergency mode</b> (bots Ollama-only): {esc(mode.reason)}")
    if swept is not None:
        up = [m for m in swept.machines if m.reachable]
        icons = {True: "🟢 ", False: "🔴 ", None: "⚪ "}  # None: no SSH and no check to ask
        shown = ", ".join(icons[m.reachable] + esc(m.name) for m in swept.machines)
        lines.append(f"Machines {len(up)}/{len(swept.machines)} up: {shown}")
        bad = swept.unhealthy
        skipped = [s for s in swept.services if s.skipped]
        healthy = len(swept.services) - len(bad) - len(skipped)
        lines.append(f"Services: {healthy}/{len(swept.services)} healthy")
        for report in bad[:10]:
            lines.append(f"❌ {esc(report.service)}@{esc(report.machine)}: {esc(report.reason)}")
        no_ssh = {m.name for m in swept.machines if m.no_ssh}
        blind = [s for s in skipped if s.machine in no_ssh]
        if len(skipped) > len(blind):
            lines.append(
                f"⏸ {len(skipped) - len(blind)} service(s) on unreachable machines not checked"
            )
        if blind:
            lines.append(f"⏸ {len(blind)} service(s) without SSH or an HTTP/TCP check not watched")
    runs = await node.runs.last_per_job()
    if runs:
        failing = sorted(n for n, run in runs.items() if run.outcome in ("failed", "warning"))
        lines.append(f"Jobs: {len(runs) - len(failing)}/{len(runs)} ok at their last run" + (
            ": " + ", ".join(f"{'❌' if runs[n].outcome == 'failed' else '⚠️'} {esc(n)}"
                             for n in failing) if failing else ""
        ))  # fmt: skip
    alerts = summary["alerts"]
    lines.append("")
    if alerts:
        lines.append(f"<b>Open alerts ({len(alerts)})</b>")
        for a in alerts[:10]:
            held = await node.alerts.silenced_by(a["key"])
            note = f" · 🔕 {esc(held)}" if held else ""
            lines.append(f"🔴 {esc(a['key'])}: {esc(a['message'][:120])}{note}")
    else:
        lines.append("No open alerts.")
    if silenced := await silence_line(node):
        lines.append(silenced)
    reports = summary["last_reports"]
    if reports:
        lines.append("")
        lines.append("<b>Last reports</b>")
        for entry in reports[:20]:
            when = datetime.fromisoformat(entry["createdAt"])
            icon = STATUS_ICON.get(entry["status"], "•")
            lines.append(
                f"{icon} {esc(entry['jobId'])} · {ago(when)} · {esc(entry['message'][:80])}"
            )
    return Reply("\n".join(lines))


BUILTIN = [
    Command("start", "What this bot is and who you are here", start_command),
    Command("help", "The command list", help_command),
    Command("status", "Node, alerts and the last report of every job", status_command),
]
