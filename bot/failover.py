"""The failover watchdog's driver: checks the peer, starts and stops polling, announces.

Both nodes run one (SPEC 4). Who may poll is settled by claim-then-check, so that at no moment
two nodes poll with one token:

1. A node that wants to poll first claims it (its ``GET /api/failover`` answers ``active``),
   then asks its peer's ``/api/failover``.
2. If the peer is active too, it backs off (the primary waits, the standby aborts its takeover);
   since each claims before it asks, at least one of two simultaneous claimers sees the other.
3. Otherwise it starts polling; a peer that cannot be reached does not stop it.

A node stops polling before it stops claiming, so its peer never starts while it still polls.
The standby feeds ``/healthz`` checks of the primary to ``core.failover.FailoverMachine``; the
primary, while it waits, re-asks the standby every interval. A 409 Conflict from Telegram (a
split brain) stops polling at once, alerts, and leaves the decision to the next check.

A node that is not polling, whose peer is active, mirrors the peer's open alerts
(``GET /api/alerts``, ``core.alerts.mirror``) at each of its checks — the standby after a good
``/healthz``, the primary while it waits for the standby to yield — and once more right before
it starts polling when the peer still answers: after a takeover or a yield, nothing the other
node announced is announced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import httpx

from bot.commands import Command, Context, Reply, UsageError
from bot.format import esc
from core.durations import format_duration
from core.errors import StorageError
from core.failover import FailoverMachine
from core.tables import utcnow

if TYPE_CHECKING:
    from bot.node import Node

log = logging.getLogger("clawops.failover")
SPLIT_BRAIN = "failover:split-brain"


def peer_base(peer_url: str) -> str:
    """The peer's sidecar root (``peer_url`` may be written with its ``/healthz``)."""
    return peer_url.rstrip("/").removesuffix("/healthz").rstrip("/")


class Watchdog:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = node.config.jobs.failover
        self.role = node.config.node.role
        peer = node.config.node.peer_url
        self.peer = peer_base(peer) if peer else None
        self.enabled = self.settings.enabled and self.peer is not None
        self.interval = (self.settings.every or self.settings.timeout).total_seconds()
        self.machine = FailoverMachine(
            self.settings.failures, self.settings.successes, self.settings.min_dwell
        )
        self.key = f"failover:{node.name}"
        self.claiming = False
        self.waiting_reason = ""
        self.lock = asyncio.Lock()
        self._client = httpx.AsyncClient(timeout=self.settings.timeout.total_seconds())
        self._task: asyncio.Task[None] | None = None
        self._split_task: asyncio.Task[None] | None = None
        self._split_seen = False
        self._hold_until = 0.0  # after a split brain, no claim before this (loop time)
        # The peer was active at the last mirror: mirror once more before this node polls.
        self._following = False
        self._mirror_error = ""  # the last reason the peer's alerts could not be mirrored
        token = node.config.sidecar_token()
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    # -- what the peer and /status see ----------------------------------------------------------

    @property
    def polling(self) -> bool:
        return self.node.bot is not None and self.node.bot.polling

    @property
    def active(self) -> bool:
        """Holding or claiming the Telegram role (the peer must not start while this is so)."""
        return self.claiming or self.polling

    @property
    def state(self) -> str:
        if self.polling:
            return "polling" if self.role == "primary" else self.machine.state
        if self.claiming:
            return "claiming"
        if self.role == "primary":
            return f"waiting: {self.waiting_reason}" if self.waiting_reason else "not polling"
        return "standby"

    def describe(self) -> dict[str, Any]:
        m = self.machine
        return {
            "node": self.node.name, "role": self.role, "active": self.active,
            "polling": self.polling, "state": self.state,
            "since": m.since.isoformat() if m.since else None,
            "failures": m.failures, "successes": m.successes, "peer_url": self.peer,
            "enabled": self.enabled, "takeovers": m.takeovers,
            "last_check": m.last_check.isoformat() if m.last_check else None,
            "last_error": m.last_error,
        }  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the saved state, claim polling if this node should poll, start checking."""
        if not self.enabled:
            await self._start_polling()
            return
        with contextlib.suppress(StorageError):
            saved = await self.node.state.get(self.key)
            if saved is not None:
                self.machine.restore(saved)
        async with self.lock:
            if self.role == "primary":
                await self._claim("primary start-up")
            elif self.machine.active:  # it had taken over before a restart: claim again
                if not await self._claim("resuming the takeover"):
                    self.machine.yielded(utcnow())
                await self._save()
        self._task = asyncio.create_task(self._loop(), name="failover-watchdog")

    async def stop(self) -> None:
        for task in (self._task, self._split_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._client.aclose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                async with self.lock:
                    await self.tick()
            except StorageError as exc:
                log.warning("failover: cannot record the state: %s", exc)

    async def tick(self) -> None:
        """One check: the standby checks the primary, a waiting primary re-asks the standby."""
        if self.role == "primary":
            if not self.polling and asyncio.get_running_loop().time() >= self._hold_until:
                await self._claim("re-check")
            return
        ok, error = await self._healthz()
        if ok and not self.polling:
            await self._mirror()
        decision = self.machine.observe(ok, utcnow(), error)
        if decision == "takeover":
            await self._take_over(f"the primary failed {self.machine.failures} checks ({error})")
        elif decision == "yield":
            await self._yield(f"the primary answered {self.machine.successes} checks in a row")
        await self._save()

    # -- peer ------------------------------------------------------------------------------------

    async def _healthz(self) -> tuple[bool, str]:
        try:
            response = await self._client.get(f"{self.peer}/healthz")
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return response.status_code == 200, f"HTTP {response.status_code}"

    async def peer_state(self) -> dict[str, Any] | None:
        """The peer's ``/api/failover`` answer, or None when it cannot be reached."""
        try:
            response = await self._client.get(f"{self.peer}/api/failover")
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def _peer_alerts(self) -> dict[str, Any] | None:
        """The peer's ``/api/alerts`` answer; None (logged when the reason is new) when it does
        not give one: an old version, a wrong token, a timeout."""
        try:
            response = await self._client.get(f"{self.peer}/api/alerts", headers=self._auth)
            body = response.json() if response.status_code == 200 else None
            problem = "" if isinstance(body, dict) else f"HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            body, problem = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
        if problem:
            if problem != self._mirror_error:
                log.warning("failover: cannot mirror the peer's alerts (%s)", problem)
            self._mirror_error = problem
            return None
        return body

    async def _mirror(self, *, last: bool = False) -> None:
        """Copy the peer's open alerts when it is active; ``last``: once more right before this
        node polls, from a peer that was active at the previous check (it may have just yielded)."""
        answer = await self._peer_alerts()
        if answer is None or not (last or answer.get("active") is True):
            return
        try:
            result = await self.node.mirror.apply(answer)
        except (ValueError, StorageError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._mirror_error:
                log.warning("failover: cannot mirror the peer's alerts (%s)", problem)
            self._mirror_error = problem
            return
        self._following = answer.get("active") is True
        self._mirror_error = ""
        if result.changed or result.skipped:
            log.info("failover: mirrored %s's alerts: %s", answer.get("node"), result.describe())

    # -- acting ----------------------------------------------------------------------------------

    async def _claim(self, why: str) -> bool:
        """Claim, check the peer, poll unless the peer is active (see the module docstring)."""
        self.claiming = True
        try:
            peer = await self.peer_state() if self.peer else None
            if peer is not None and peer.get("active") is True:
                self.waiting_reason = f"{peer.get('node', 'the peer')} is active"
                log.info("failover: not polling (%s): %s", why, self.waiting_reason)
                await self._mirror()
                return False
            if peer is not None and self._following:
                await self._mirror(last=True)  # what the peer announced until it stopped
            self._following = False
            await self._start_polling()
            self.waiting_reason = ""
            log.info("failover: polling (%s; peer %s)", why, "unreachable" if peer is None
                     else "idle")  # fmt: skip
            return True
        finally:
            self.claiming = False

    async def _start_polling(self) -> None:
        if self.node.bot is not None:
            await self.node.bot.start_polling()
        if self._split_seen:
            self._split_seen = False
            await self.node.alerts.observe(SPLIT_BRAIN, "ok", f"{self.node.name} polls alone")
            self.node._wake_notifier()

    async def _take_over(self, reason: str, *, pinned: bool = False) -> bool:
        if not await self._claim("takeover"):
            self.machine.reset_counters()
            return False
        self.machine.took_over(utcnow(), pinned=pinned)
        await self._announce(
            f"🔀 <b>{esc(self.node.name)}</b> took over Telegram polling\n{esc(reason)}"
        )
        return True

    async def _yield(self, reason: str) -> None:
        # Announced while still polling (so it goes out), then polling stops, then the claim.
        await self._announce(
            f"↩️ <b>{esc(self.node.name)}</b> hands Telegram back to the primary\n{esc(reason)}",
            wait=2.0,
        )
        if self.node.bot is not None:
            await self.node.bot.stop_polling()
        self.machine.yielded(utcnow())

    async def _announce(self, html: str, wait: float = 0.0) -> None:
        message_id = await self.node.outbox.put(html)
        self.node._wake_notifier()
        deadline = asyncio.get_running_loop().time() + wait
        while asyncio.get_running_loop().time() < deadline:
            if all(m.id != message_id for m in await self.node.outbox.pending()):
                return
            await asyncio.sleep(0.05)

    async def _save(self) -> None:
        await self.node.state.put(self.key, {**self.machine.dump(), "state": self.state})

    # -- split brain -----------------------------------------------------------------------------

    def on_conflict(self) -> None:
        """Called from the polling loop on a 409: handled in a task of its own (the handler stops
        that very loop)."""
        if self._split_task is None or self._split_task.done():
            self._split_task = asyncio.create_task(self._split_brain(), name="failover-split")

    async def _split_brain(self) -> None:
        async with self.lock:
            if not self.polling:
                return
            if self.node.bot is not None:
                await self.node.bot.stop_polling()
            if self.machine.active:
                self.machine.yielded(utcnow())
            peer = await self.peer_state() if self.peer else None
            seen = "unreachable" if peer is None else esc(peer.get("state", "?"))
            self._split_seen = True
            flip = await self.node.alerts.observe(
                SPLIT_BRAIN, "critical",
                f"409 Conflict on {self.node.name}: another poller uses this bot token; "
                f"{self.node.name} stopped polling (peer: {seen})",
            )  # fmt: skip
            if flip is not None:
                self.node._wake_notifier()
            self.waiting_reason = "split brain (409 Conflict)"
            # Whoever else polls gets two checks' time to show up before this node tries again.
            self._hold_until = asyncio.get_running_loop().time() + 2 * self.interval
            await self._save()


# -- /failover ----------------------------------------------------------------------------------


def _watchdog(ctx: Context) -> Watchdog:
    watchdog = ctx.node.failover
    if watchdog is None:
        raise UsageError("failover is off on this node (Telegram runs on the local Bot API)")
    return watchdog


async def failover_check(ctx: Context) -> None:
    watchdog = _watchdog(ctx)
    args = ctx.inv.args
    if len(args) > 1 or (args and args[0] not in ("takeover", "yield")):
        raise UsageError("give nothing, takeover or yield")
    if args and watchdog.role == "primary":
        raise UsageError(f"/failover {args[0]} acts on an active standby; this is the primary")
    if args and not watchdog.machine.active:
        raise UsageError("this standby has not taken over")


NO_FAILOVER = (
    "<b>Failover</b>: two nodes share one bot; the standby watches the primary, takes Telegram "
    "over when the primary stops answering and hands it back once it is healthy again.\n"
    "It is <b>off here</b>: this node runs without a Telegram token and answers on its local "
    "Bot API (<code>clawops chat</code>), where there is no standby. Set the token "
    "(telegram.token_env) on a primary and a standby to use it."
)


async def failover_command(ctx: Context) -> Reply:
    if ctx.node.failover is None and not ctx.inv.args:
        return Reply(NO_FAILOVER)
    watchdog = _watchdog(ctx)
    if ctx.inv.args:
        await failover_check(ctx)
        async with watchdog.lock:
            if ctx.inv.args[0] == "takeover":
                watchdog.machine.took_over(utcnow(), pinned=True)
                text = "📌 Pinned: this standby keeps Telegram until /failover yield."
            else:
                await watchdog._yield(f"/failover yield by {ctx.inv.username or ctx.inv.user_id}")
                text = "↩️ Yielded; the primary starts polling at its next check."
            await watchdog._save()
        return Reply(text)
    d = watchdog.describe()
    m = watchdog.machine
    lines = [f"<b>Failover on {esc(d['node'])}</b> ({esc(d['role'])})",
             f"State: {esc(d['state'])} · polling: {'yes' if d['polling'] else 'no'}",
             f"Peer: {esc(d['peer_url'] or 'none')}"]  # fmt: skip
    if watchdog.role == "standby":
        s = watchdog.settings
        lines.append(f"Checks: {m.failures}/{s.failures} failures, {m.successes}/{s.successes} "
                     f"successes · every {format_duration(s.every or s.timeout)}")  # fmt: skip
        if m.active:
            lines.append(f"Dwell left: {format_duration(m.dwell_left(utcnow()))}")
        if m.last_error:
            lines.append(f"Last error: {esc(m.last_error)}")
    return Reply("\n".join(lines))


FAILOVER_COMMANDS = [
    Command("failover", "Failover state; takeover (pin) or yield on an active standby",
            failover_command, usage="[takeover|yield]", check=failover_check,
            mutates_when=lambda args: bool(args)),
]  # fmt: skip
