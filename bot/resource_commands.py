"""Shared resources and LLM accounts in chat (SPEC 7b): /locks, /release, /accounts, /emergency."""

from __future__ import annotations

from bot.builtin import ago
from bot.commands import Command, Context, Reply, UsageError
from bot.format import esc
from core.tables import utcnow


async def locks_command(ctx: Context) -> Reply:
    snapshot = await ctx.node.leases.snapshot()
    if not snapshot:
        return Reply("No shared resources configured ([[resources]]).")
    lines = ["<b>Shared resources</b>"]
    for name, info in snapshot.items():
        holders, waiters = info["holders"], info["waiters"]
        assert isinstance(holders, list) and isinstance(waiters, list)
        lines.append(
            f"<b>{esc(name)}</b> · {len(holders)}/{info['maxConcurrent']} held"
            + (f" · {len(waiters)} waiting" if waiters else "")
        )
        for lease in holders:
            lines.append(f"   🔒 {esc(lease['holder'])} · {lease['ageSeconds']:g} s "
                         f"· <code>{esc(lease['lease'])}</code>")  # fmt: skip
        for place, lease in enumerate(waiters, 1):
            lines.append(f"   ⏳ {place}. {esc(lease['holder'])} · waiting "
                         f"{lease['ageSeconds']:g} s")  # fmt: skip
    return Reply("\n".join(lines))


async def release_check(ctx: Context) -> None:
    if len(ctx.inv.args) != 1:
        raise UsageError("give one lease id (see /locks)")
    await ctx.node.leases.get(ctx.inv.args[0])  # NotFound: answered before any confirmation


async def release_command(ctx: Context) -> Reply:
    await release_check(ctx)
    gone = await ctx.node.leases.release(ctx.inv.args[0])
    return Reply(f"🔓 released {esc(gone.resource)} from {esc(gone.holder)} "
                 f"(<code>{esc(gone.lease)}</code>)")  # fmt: skip


async def accounts_command(ctx: Context) -> Reply:
    watch = ctx.node.emergency
    if not watch.names:
        return Reply("No LLM accounts configured ([[llm_accounts]]).")
    cooldowns = await watch.accounts.cooldowns()
    mode = await watch.accounts.emergency()
    lines = ["<b>LLM accounts</b>"]
    for name in watch.names:
        until = cooldowns.get(name)
        if until is None:
            lines.append(f"🟢 {esc(name)}: available")
        else:
            left = int((until - utcnow()).total_seconds())
            lines.append(f"⏳ {esc(name)}: limited until {until:%H:%M:%S} UTC ({left // 60}m)")
    if mode.on:
        since = f" since {ago(mode.since)}" if mode.since else ""
        lines.append(f"🚨 Emergency mode{since}: {esc(mode.reason)}")
    return Reply("\n".join(lines))


def _switch(ctx: Context) -> bool:
    if len(ctx.inv.args) != 1 or ctx.inv.args[0] not in ("on", "off"):
        raise UsageError("say /emergency on or /emergency off")
    return ctx.inv.args[0] == "on"


async def emergency_check(ctx: Context) -> None:
    _switch(ctx)


async def emergency_command(ctx: Context) -> Reply:
    on = _switch(ctx)
    watch = ctx.node.emergency
    who = ctx.inv.username or str(ctx.inv.user_id)
    word = "on" if on else "off"
    if not await watch.accounts.switch_emergency(on, f"switched {word} by {who}", manual=True):
        return Reply(f"Emergency mode is already {word}.")
    await watch.announce(f"{'🚨' if on else '✅'} Emergency mode {word} (by hand, {esc(who)}).")
    await watch.arm()
    return Reply(f"Emergency mode is now {word}.")


RESOURCE_COMMANDS = [
    Command("locks", "Shared resources: holders, waiters and ages", locks_command),
    Command("release", "Release a lease by hand", release_command, role="admin", mutates=True,
            usage="LEASE", check=release_check),
    Command("accounts", "LLM accounts and their cooldowns", accounts_command),
    Command("emergency", "Switch emergency mode by hand", emergency_command, role="admin",
            mutates=True, usage="on|off", check=emergency_check),
]  # fmt: skip
