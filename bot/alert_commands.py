"""/mute, /unmute and /mutes: silences that say what they cover, and how long they last.

A mute's pattern must cover at least one known alert key (``core.alerts.keys``), so a typo is
refused instead of muting nothing and saying it did.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.commands import Command, Context, Reply, UsageError
from bot.format import esc
from core.alerts.keys import MAX_PATTERN, close_keys, covered, kinds, known_keys
from core.durations import format_duration, parse_duration
from core.tables import utcnow

if TYPE_CHECKING:
    from bot.node import Node

# How many covered keys a confirmation or a reply names.
NAMED = 5
# How many silences /status names before "+N more".
STATUS_NAMED = 3


async def node_keys(node: Node) -> set[str]:
    return await known_keys(node.config, node.db, node.jobs.specs)


def when(at: datetime, now: datetime) -> str:
    """``14:00 UTC`` within the next day, else with its date."""
    if at - now < timedelta(hours=20):
        return f"{at:%H:%M} UTC"
    return f"{at:%d %b %H:%M} UTC"


def left(at: datetime, now: datetime) -> str:
    seconds = max(int((at - now).total_seconds()), 1)
    return format_duration(timedelta(seconds=seconds if seconds < 60 else seconds // 60 * 60))


def named(keys: list[str], limit: int = NAMED) -> str:
    """``a, b, c`` or ``a, b, c and 7 more``, escaped."""
    shown = ", ".join(esc(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def count(keys: list[str]) -> str:
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''}"


async def _mute_args(ctx: Context) -> tuple[timedelta, str | None, list[str]]:
    """The duration, the pattern (None: everything) and the known keys it covers (not looked up
    for everything); refuses a pattern that covers none."""
    args = ctx.inv.args
    if not 1 <= len(args) <= 2:
        raise UsageError("give a duration, and optionally what to mute (an alert key or a glob)")
    try:
        duration = parse_duration(args[0])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    pattern = args[1] if len(args) == 2 else None
    if pattern is not None and len(pattern) > MAX_PATTERN:
        raise UsageError(f"a pattern is at most {MAX_PATTERN} characters (got {len(pattern)})")
    if pattern is None:
        return duration, None, []
    keys = await node_keys(ctx.node)
    hits = covered(pattern, keys)
    if not hits:
        raise UsageError(_no_match(pattern, keys))
    return duration, pattern, hits


def _no_match(pattern: str, keys: set[str]) -> str:
    """Plain text (the refusal escapes it): what exists instead of ``pattern``."""
    close = close_keys(pattern, keys)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    sorts = ", ".join(f"{k}:…" for k in kinds(keys)) or "none yet"
    return (
        f"{pattern!r} covers no known alert key.{hint} Keys here: {sorts}; a bare name (a "
        "machine, a service) covers its keys, a glob like service:mini/* works too. "
        "/mutes shows what is muted."
    )


async def mute_check(ctx: Context) -> None:
    await _mute_args(ctx)


async def mute_describe(ctx: Context) -> str:
    _, pattern, hits = await _mute_args(ctx)
    if pattern is None:
        known = count(covered(None, await node_keys(ctx.node)))
        return f"Mutes <b>every</b> alert ({known} known now, and any new one)."
    return f"Covers {count(hits)}: {named(hits)}."


async def mute_command(ctx: Context) -> Reply:
    duration, pattern, hits = await _mute_args(ctx)
    until = utcnow() + duration
    await ctx.node.alerts.mute(until, key=pattern, by=ctx.inv.user_id)
    span = f"for {format_duration(duration)} (until {when(until, utcnow())})"
    if pattern is None:
        return Reply(f"🔕 Muted all alerts {span}.")
    return Reply(
        f"🔕 Muted alerts for <b>{esc(pattern)}</b> {span}: {count(hits)} ({named(hits)})."
    )


async def unmute_command(ctx: Context) -> Reply:
    key = ctx.inv.args[0] if ctx.inv.args else None
    ended = await ctx.node.alerts.unmute(key)
    if not ended:
        return Reply("Nothing was muted.")
    return Reply(f"🔔 Unmuted ({ended} mute{'s' if ended != 1 else ''} ended).")


async def mutes_command(ctx: Context) -> Reply:
    node, now = ctx.node, utcnow()
    mutes = await node.alerts.active_mutes(now)
    windows = node.alerts.policy.windows
    opened = [(w, w.open_until(now)) for w in windows]
    keys = await node_keys(node)
    lines: list[str] = []
    if mutes:
        lines.append(f"<b>Mutes ({len(mutes)})</b>")
    for mute in mutes:
        what = f"<code>{esc(mute.key)}</code>" if mute.key is not None else "<b>everything</b>"
        by = f" · by {esc(mute.created_by)}" if mute.created_by is not None else ""
        lines.append(
            f"🔕 {what} until {when(mute.until, now)} ({left(mute.until, now)} left){by}"
            f" · {count(covered(mute.key, keys))}"
        )
    if windows:
        lines.append("<b>Maintenance windows</b>")
    for window, end in opened:
        label, hits = esc(window.label), count(covered(window.config.match, keys))
        if end is not None:
            lines.append(f"🛠 {label}: open until {when(end, now)} ({left(end, now)} left) · {hits}")
            continue
        start = window.next_start(now)
        nxt = f"next {when(start, now)}" if start is not None else "no next start"
        lines.append(f"🗓 {label}: {nxt}, for {format_duration(window.config.duration)} · {hits}")
    if not mutes and all(end is None for _, end in opened):
        lines.insert(0, "Nothing is muted.")
    return Reply("\n".join(lines))


async def silence_line(node: Node) -> str | None:
    """One short /status line: the active mutes and open maintenance windows, or None."""
    now = utcnow()
    parts = [
        f"🔕 Muted: {esc(m.key) if m.key is not None else 'everything'} until {when(m.until, now)}"
        for m in await node.alerts.active_mutes(now)
    ]
    parts += [
        f"🛠 Maintenance: {esc(w.label)} until {when(end, now)}"
        for w, end in node.alerts.policy.open_windows(now)
    ]
    if not parts:
        return None
    more = len(parts) - STATUS_NAMED
    return " · ".join(parts[:STATUS_NAMED]) + (f" · +{more} more (/mutes)" if more > 0 else "")


ALERT_COMMANDS = [
    Command(
        "mute",
        "Silence alerts (all, or the keys a pattern covers) for a while",
        mute_command,
        role="admin",
        mutates=True,
        usage="DURATION [PATTERN]",
        check=mute_check,
        describe=mute_describe,
    ),
    Command(
        "unmute",
        "End mutes (all, or those of one pattern)",
        unmute_command,
        role="admin",
        usage="[PATTERN]",
    ),
    Command("mutes", "Active mutes and maintenance windows", mutes_command),
]
