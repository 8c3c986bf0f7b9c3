"""Claws commands: /minis, /claws [org], /claw new|status|delete (SPEC 3 and 6)."""

from __future__ import annotations

from bot.builtin import ago
from bot.commands import Command, Context, Reply, UsageError
from bot.format import esc
from core.claws import Claw, Claws
from core.errors import InputError
from core.minis import Minis

STATUS_ICON = {"active": "🟢", "provisioning": "⏳", "error": "🔴", "deleting": "🗑"}
MINI_ICON = {"online": "🟢", "draining": "🟡", "offline": "🔴"}
GATEWAY_DOWN = ("handshake", "restarting", "stopped", "missing")
GATEWAY_ICON = {"running": "🟢", "starting": "⏳", **dict.fromkeys(GATEWAY_DOWN, "🔴")}


def _claws(ctx: Context) -> Claws:
    return ctx.node.claws_service()


async def minis_command(ctx: Context) -> Reply:
    minis = await Minis(ctx.node.db).list()
    if not minis:
        return Reply("No Mac Minis yet: <code>clawops minis add HOSTNAME …</code>")
    gateways: dict[str | None, list[str | None]] = {}
    for claw in await _claws(ctx).list():
        if claw.status == "active":
            gateways.setdefault(claw.mini, []).append(claw.gateway_state)
    lines = ["<b>Mac Minis</b>"]
    for mini in minis:
        seen = f"seen {ago(mini.last_seen)}" if mini.last_seen else "never seen"
        states = gateways.get(mini.hostname, [])
        up = sum(state == "running" for state in states)
        down = sum(state in GATEWAY_DOWN for state in states)
        other = len(states) - up - down
        pending = f", {other} starting/unchecked" if other else ""
        version = f" · agent {esc(mini.agent_version)}" if mini.agent_version else ""
        lines.append(
            f"{MINI_ICON.get(mini.state, '•')} <b>{esc(mini.hostname)}</b> · {mini.state} · "
            f"{seen} · claws {up} up, {down} down{pending} · {mini.used}/{mini.capacity} "
            f"used · ports {mini.ports}{version}"
        )
        if not mini.reachable and mini.health_error:
            lines.append(f"   {esc(mini.health_error[:300])}")
    return Reply("\n".join(lines))


def gateway_text(claw: Claw) -> str:
    """The gateway as the claws_health job last saw it (HTML-escaped), for /claw status."""
    if claw.gateway_state is None:
        return "\ngateway: not checked yet"
    since = f" since {ago(claw.gateway_since)}" if claw.gateway_since else ""
    checked = f", checked {ago(claw.checked_at)}" if claw.checked_at else ""
    error = f"\n   {esc(claw.gateway_error[:300])}" if claw.gateway_error else ""
    return (
        f"\ngateway: {GATEWAY_ICON.get(claw.gateway_state, '•')} {esc(claw.gateway_state)}"
        f"{since}, {claw.gateway_restarts} restart(s){checked}{error}"
    )


def _claw_line(claw: Claw) -> str:
    where = f" · {esc(claw.mini)}:{claw.mini_port}" if claw.mini else ""
    error = f"\n   {esc(claw.error[:200])}" if claw.status == "error" and claw.error else ""
    icon = STATUS_ICON.get(claw.status, "•")
    return f"{icon} <b>{esc(claw.org)}/{esc(claw.slug)}</b> · {claw.status}{where}{error}"


async def claws_command(ctx: Context) -> Reply:
    if len(ctx.inv.args) > 1:
        raise UsageError("at most one org")
    org = ctx.inv.args[0] if ctx.inv.args else None
    found = await _claws(ctx).list(org)
    if not found:
        return Reply("No claws" + (f" in {esc(org)}." if org else " yet: /claw new ORG NAME"))
    return Reply("\n".join(_claw_line(c) for c in found))


async def _find(ctx: Context, name: str) -> Claw:
    """``ORG/NAME``, or ``NAME`` when only one org has a claw of that name."""
    service = _claws(ctx)
    if "/" in name:
        org, slug = name.split("/", 1)
        return await service.get(org, slug)
    matches = [c for c in await service.list() if c.slug == name]
    if not matches:
        raise InputError(f"no claw {name!r}")
    if len(matches) > 1:
        orgs = ", ".join(sorted(c.org for c in matches))
        raise InputError(f"{name!r} exists in {orgs}: say ORG/{name}")
    return matches[0]


def _mutates(args: tuple[str, ...]) -> bool:
    return bool(args) and args[0] in ("new", "delete")


def _usage(args: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    if not args or args[0] not in ("new", "status", "delete"):
        raise UsageError("new ORG NAME, status NAME or delete NAME")
    verb, rest = args[0], args[1:]
    if verb == "new" and len(rest) != 2:
        raise UsageError("/claw new ORG NAME")
    if verb in ("status", "delete") and len(rest) != 1:
        raise UsageError(f"/claw {verb} NAME (or ORG/NAME)")
    return verb, rest


async def claw_check(ctx: Context) -> None:
    verb, rest = _usage(ctx.inv.args)
    if verb == "delete":
        await _find(ctx, rest[0])
    if verb == "new":
        await _claws(ctx).check_new(rest[0], rest[1])


async def claw_command(ctx: Context) -> Reply:
    verb, rest = _usage(ctx.inv.args)
    service = _claws(ctx)
    if verb == "new":
        claw = await service.provision(
            rest[0], rest[1], created_by=ctx.inv.user_id, progress=lambda step: _step(ctx, step)
        )
        return Reply("🟢 Claw ready\n" + _claw_line(claw) + _gateway(claw))
    claw = await _find(ctx, rest[0])
    if verb == "delete":
        await service.deprovision(claw.org, claw.slug)
        return Reply(f"🗑 <b>{esc(claw.org)}/{esc(claw.slug)}</b> deleted (agent, bucket, port).")
    steps = ", ".join(claw.steps) or "none"
    return Reply(
        _claw_line(claw) + _gateway(claw)
        + f"\nsteps done: {esc(steps)}\ncreated {ago(claw.created_at)}, "
        f"changed {ago(claw.updated_at)}"
        + gateway_text(claw)
    )  # fmt: skip


async def _step(ctx: Context, step: str) -> None:
    org, name = ctx.inv.args[1:3]
    await ctx.progress(f"Claw <b>{esc(org)}/{esc(name)}</b>: {esc(step)}")


def _gateway(claw: Claw) -> str:
    return f"\ngateway: <code>{esc(claw.gateway_url)}</code>" if claw.gateway_url else ""


CLAW_COMMANDS = [
    Command("minis", "Mac Mini fleet: status, capacity, used ports", minis_command),
    Command("claws", "Claws, of one org or all", claws_command, usage="[org]"),
    Command("claw", "Claw lifecycle: new, status, delete", claw_command,
            usage="new ORG NAME | status NAME | delete NAME", check=claw_check,
            mutates_when=_mutates),
]  # fmt: skip
