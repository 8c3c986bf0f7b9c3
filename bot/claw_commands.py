"""Claws commands: /minis, /claws [org] [--deleted], /claw new|status|backup|delete|restore
(SPEC 3 and 6; issue 14: nothing lost on delete)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from bot.builtin import ago
from bot.commands import Command, Context, Reply, UsageError
from bot.format import esc
from core.agent_client import BackupInfo
from core.claws import BackupFailed, Claw, Claws
from core.errors import InputError
from core.minis import Minis

STATUS_ICON = {"active": "🟢", "provisioning": "⏳", "error": "🔴", "deleting": "🗑", "deleted": "🗑"}
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


def _day(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else "never"


def _deleted_line(service: Claws, claw: Claw) -> str:
    backup = f"{esc(claw.backup_key)} ({_day(claw.backup_at)})" if claw.backup_key else "none"
    return (
        f"🗑 <b>{esc(claw.org)}/{esc(claw.slug)}</b> · deleted {_day(claw.deleted_at)} · "
        f"purged {_day(service.purge_at(claw))}\n   last backup: {backup}"
    )


async def claws_command(ctx: Context) -> Reply:
    args = [a for a in ctx.inv.args if a != "--deleted"]
    deleted = len(args) != len(ctx.inv.args)
    if len(args) > 1:
        raise UsageError("at most one org")
    org = args[0] if args else None
    service = _claws(ctx)
    found = await service.list(org, deleted=deleted)
    where = f" in {esc(org)}" if org else ""
    if deleted:
        if not found:
            return Reply(f"No deleted claws{where}.")
        lines = [_deleted_line(service, c) for c in found]
        return Reply("\n".join([*lines, "Bring one back: /claw restore ORG NAME"]))
    if not found:
        return Reply("No claws" + (f"{where}." if org else " yet: /claw new ORG NAME"))
    return Reply("\n".join(_claw_line(c) for c in found))


async def _find(ctx: Context, name: str, *, deleted: bool = False) -> Claw:
    """``ORG/NAME``, or ``NAME`` when only one org has a claw of that name."""
    service = _claws(ctx)
    if "/" in name:
        org, slug = name.split("/", 1)
        claw = await service.get(org, slug)
        if deleted and claw.status not in ("deleted", "purging"):
            raise InputError(f"{name} is {claw.status}, not deleted: nothing to restore")
        if not deleted and claw.status in ("deleted", "purging"):
            raise InputError(f"{name} is deleted: /claw restore {claw.org} {claw.slug} first")
        return claw
    matches = [c for c in await service.list(deleted=deleted) if c.slug == name]
    if not matches:
        raise InputError(f"no {'deleted ' if deleted else ''}claw {name!r}")
    if len(matches) > 1:
        orgs = ", ".join(sorted(c.org for c in matches))
        raise InputError(f"{name!r} exists in {orgs}: say ORG/{name}")
    return matches[0]


VERBS = ("new", "status", "delete", "backup", "restore")
USAGE = "new ORG NAME | status NAME | backup NAME | delete NAME [--force] | restore ORG NAME"


def _mutates(args: tuple[str, ...]) -> bool:
    return bool(args) and args[0] in ("new", "delete", "backup", "restore")


def _usage(args: tuple[str, ...]) -> tuple[str, tuple[str, ...], bool]:
    """The verb, its arguments, and whether ``--force`` was given (delete only)."""
    if not args or args[0] not in VERBS:
        raise UsageError(", ".join(USAGE.split(" | ")))
    verb, rest = args[0], args[1:]
    force = verb == "delete" and "--force" in rest
    rest = tuple(a for a in rest if not (force and a == "--force"))
    if verb in ("new", "restore") and len(rest) != 2:
        raise UsageError(f"/claw {verb} ORG NAME")
    if verb in ("status", "delete", "backup") and len(rest) != 1:
        raise UsageError(f"/claw {verb} NAME (or ORG/NAME)" + (" [--force]" if force else ""))
    return verb, rest, force


def _confirm_again(args: tuple[str, ...]) -> str | None:
    """``/claw delete NAME --force`` skips the final backup: asked a second time."""
    try:
        verb, rest, force = _usage(args)
    except UsageError:
        return None
    if verb != "delete" or not force:
        return None
    return (
        f"⚠️ <b>--force</b>: {esc(rest[0])} is deleted <b>without a final backup</b>; whatever "
        "changed since its last backup is lost. Really?"
    )


async def claw_check(ctx: Context) -> None:
    verb, rest, _force = _usage(ctx.inv.args)
    if verb in ("delete", "backup"):
        await _find(ctx, rest[0])
    if verb == "new":
        await _claws(ctx).check_new(rest[0], rest[1])
    if verb == "restore":
        await _claws(ctx).check_restore(rest[0], rest[1])


async def claw_command(ctx: Context) -> Reply:
    verb, rest, force = _usage(ctx.inv.args)
    service = _claws(ctx)
    if verb == "new":
        claw = await service.provision(
            rest[0], rest[1], created_by=ctx.inv.user_id, progress=lambda step: _step(ctx, step)
        )
        return Reply("🟢 Claw ready\n" + _claw_line(claw) + _gateway(claw), links=_links(ctx, claw))
    if verb == "restore":
        claw = await service.restore(rest[0], rest[1], progress=lambda step: _step(ctx, step))
        return Reply(
            "♻️ Claw restored from its newest backup\n" + _claw_line(claw) + _gateway(claw),
            links=_links(ctx, claw),
        )
    claw = await _find(ctx, rest[0])
    name = f"{esc(claw.org)}/{esc(claw.slug)}"
    if verb == "backup":
        await ctx.progress(f"Claw <b>{name}</b>: backing up")
        info = await service.backup(claw.org, claw.slug)
        return Reply(f"💾 {name} backed up: {_backup(info)}")
    if verb == "delete":
        try:
            final = await service.deprovision(
                claw.org, claw.slug, force=force, progress=lambda step: _step(ctx, step, claw)
            )
        except BackupFailed as exc:
            raise InputError(
                f"{exc}. Nothing was deleted; /claw delete {claw.org}/{claw.slug} --force "
                "deletes it without a final backup (asked twice)."
            ) from None
        gone = await service.get(claw.org, claw.slug) if claw.bucket else None
        if gone is None:
            return Reply(f"🗑 <b>{name}</b> deleted (agent, port; it had no bucket to keep).")
        saved = f"final backup {_backup(final)}" if final else "no final backup (--force)"
        return Reply(
            f"🗑 <b>{name}</b> deleted: gateway stopped, port freed; {saved}.\n"
            f"Its bucket is kept until {_day(service.purge_at(gone))}: "
            f"<code>/claw restore {esc(claw.org)} {esc(claw.slug)}</code> brings it back."
        )
    steps = ", ".join(claw.steps) or "none"
    return Reply(
        _claw_line(claw) + _gateway(claw)
        + f"\nsteps done: {esc(steps)}\ncreated {ago(claw.created_at)}, "
        f"changed {ago(claw.updated_at)}"
        + gateway_text(claw),
        links=_links(ctx, claw),
    )  # fmt: skip


def _backup(info: BackupInfo) -> str:
    pruned = f"; {info.pruned} older removed" if info.pruned else ""
    return (
        f"{esc(info.key)}, {_size(info.size)} in {info.seconds:.1f} s ({esc(info.method)}){pruned}"
    )


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size //= 1024
    return f"{size:.0f} GB"


async def _step(ctx: Context, step: str, claw: Claw | None = None) -> None:
    org, name = (claw.org, claw.slug) if claw else ctx.inv.args[1:3]
    await ctx.progress(f"Claw <b>{esc(org)}/{esc(name)}</b>: {esc(step)}")


def _gateway(claw: Claw) -> str:
    return f"\ngateway: <code>{esc(claw.gateway_url)}</code>" if claw.gateway_url else ""


def claw_links(claw: Claw, public_url: str | None) -> tuple[tuple[str, str], ...]:
    """The claw's buttons: its gateway through its tunnel, and its web chat on the sidecar."""
    links: list[tuple[str, str]] = []
    if claw.gateway_link:
        links.append(("OpenClaw Gateway", claw.gateway_link))
    if public_url and public_url.lower().startswith(("https://", "http://")):
        path = f"/claws/{quote(claw.org, safe='')}/{quote(claw.slug, safe='')}"
        links.append(("Web chat", public_url.rstrip("/") + path))
    return tuple(links)


def _links(ctx: Context, claw: Claw) -> tuple[tuple[str, str], ...]:
    return claw_links(claw, ctx.node.config.sidecar.public_url)


CLAW_COMMANDS = [
    Command("minis", "Mac Mini fleet: status, capacity, used ports", minis_command),
    Command("claws", "Claws, of one org or all; --deleted: the deleted ones", claws_command,
            usage="[org] [--deleted]"),
    Command("claw", "Claw lifecycle: new, status, backup, delete, restore", claw_command,
            usage=USAGE, check=claw_check, mutates_when=_mutates, confirm_again=_confirm_again),
]  # fmt: skip
