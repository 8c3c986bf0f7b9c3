"""The claws fleet's health (issue 14): one round asks every Mini's agent how it is.

Each Mini's agent is asked, concurrently and each bounded by ``timeout``, for ``GET /health``
and ``GET /claws``. An answer writes ``last_seen``; the Mini's run of answers (``hits``) or
misses (``misses``) is counted with a conditional update claimed on the counts read at the
start of the round (``WHERE misses = :m AND hits = :h AND reachable = :r``), so two nodes on one
database record one round once: the one whose update matches nothing leaves that Mini alone.
``reachable`` goes false after ``failures`` misses in a row and true after ``successes`` answers
in a row; ``health_error`` says why it did not answer.

Alerts (``core.alerts``) follow the machine-style parent suppression of
``core.health.observe``: ``mini:<hostname>`` is critical while the Mini is unreachable, with one
message naming the claws it takes down, and its claws are not observed meanwhile; ok (``back
online``, naming them again) once it is reachable. Each active claw on an answering Mini gets a
gateway state from the agent's list, stored in the claws' ``gateway_*`` columns and observed
under ``claw:<org>/<slug>``:

    running     ready                                               ok
    starting    not ready yet, within ``start_grace``               not observed
    handshake   running or starting, not ready for longer           critical
    restarting  crashed, or its restarts grew since the last round  critical
    stopped     the agent stopped it                                critical
    missing     the agent does not hold it                          critical

A restarted agent starts its gateways again (``starting``, its restart count back at zero):
that makes no claw alert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from core.agent_client import AgentHealth, ClawInfo
from core.alerts import Alerts, Flip
from core.config import ClawsHealthJob
from core.crypto import Keyring
from core.db import Database
from core.durations import format_duration
from core.errors import InputError, RemoteError
from core.minis import Mini, agent_client, mini_from_row
from core.tables import claws, mac_minis, utcnow

log = logging.getLogger("clawops.clawwatch")
BAD_STATES = ("handshake", "restarting", "stopped", "missing")
MAX_NAMES = 20


@dataclass(frozen=True)
class WatchSettings:
    failures: int = 3
    successes: int = 2
    start_grace: timedelta = timedelta(minutes=2)
    timeout: float = 10.0

    @classmethod
    def from_job(cls, job: ClawsHealthJob) -> WatchSettings:
        return cls(job.failures, job.successes, job.start_grace, job.timeout.total_seconds())


@dataclass(frozen=True)
class Probe:
    """What one agent said: its health and its claws, or why there is no answer."""

    health: AgentHealth | None = None
    claws: dict[str, ClawInfo] = field(default_factory=dict)
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.health is not None


@dataclass
class MiniRound:
    """One Mini in one round: whether it answered, its state after it, what flipped."""

    hostname: str
    answered: bool
    reachable: bool
    error: str = ""
    claimed: bool = True  # False: another node recorded this round of this Mini first
    flipped: str | None = None  # "offline" or "online"
    claws: dict[str, str] = field(default_factory=dict)  # org/slug -> gateway state


@dataclass
class RoundSummary:
    minis: list[MiniRound] = field(default_factory=list)
    flips: list[Flip] = field(default_factory=list)

    def text(self) -> str:
        if not self.minis:
            return "no Mac Minis"
        offline = [m.hostname for m in self.minis if not m.reachable]
        missed = [m.hostname for m in self.minis if m.reachable and not m.answered]
        states: dict[str, int] = {}
        down: list[str] = []
        for mini in self.minis:
            for name, state in mini.claws.items():
                states[state] = states.get(state, 0) + 1
                if state in BAD_STATES:
                    down.append(f"{name} {state}")
        parts = [f"{len(self.minis)} Mini(s), {len(self.minis) - len(offline)} online"]
        if offline:
            parts.append("offline: " + ", ".join(offline))
        if missed:
            parts.append("no answer this round: " + ", ".join(missed))
        if states:
            parts.append("claws: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        if down:
            parts.append("down: " + ", ".join(down[:MAX_NAMES]))
        return "; ".join(parts)

    def data(self) -> dict[str, Any]:
        return {
            "minis": {
                m.hostname: {
                    "answered": m.answered,
                    "reachable": m.reachable,
                    "error": m.error,
                    "claws": m.claws,
                }
                for m in self.minis
            },
            "flips": len(self.flips),
        }


def mini_key(hostname: str) -> str:
    return f"mini:{hostname}"


def _names(found: Sequence[str]) -> str:
    shown = ", ".join(found[:MAX_NAMES])
    return shown + (f" and {len(found) - MAX_NAMES} more" if len(found) > MAX_NAMES else "")


def _reason(exc: BaseException, url: str) -> str:
    """An agent failure without the ``agent <url>: `` every client message starts with."""
    text = str(exc) or type(exc).__name__
    prefix = f"agent {url}: "
    return (text[len(prefix) :] if text.startswith(prefix) else text)[:500]


class ClawWatch:
    def __init__(
        self, db: Database, alerts: Alerts, keyring: Keyring | None, settings: WatchSettings
    ) -> None:
        self.db, self.alerts, self.keyring, self.settings = db, alerts, keyring, settings

    async def round(self) -> RoundSummary:
        """Ask every Mini once; record, observe and summarise what they said."""
        async with self.db.connect() as conn:
            mini_rows = (await conn.execute(select(mac_minis).order_by(mac_minis.c.id))).all()
            claw_rows = (
                await conn.execute(
                    select(claws).where(claws.c.status == "active").order_by(claws.c.id)
                )
            ).all()
        summary = RoundSummary()
        await self._settle_gone(
            {f"{row.org}/{row.slug}" for row in claw_rows}, {row.hostname for row in mini_rows}
        )
        if not mini_rows:
            return summary
        held: dict[int, list[Any]] = {}
        for row in claw_rows:
            held.setdefault(row.mini_id, []).append(row)
        minis = [mini_from_row(row) for row in mini_rows]
        probes = await asyncio.gather(*(self.probe(mini) for mini in minis))
        for row, mini, probe in zip(mini_rows, minis, probes, strict=True):
            summary.minis.append(
                await self._record(row, mini, probe, held.get(mini.id, []), summary.flips)
            )
        return summary

    async def _settle_gone(self, active: set[str], minis: set[str]) -> None:
        """Open ``claw:`` and ``mini:`` alerts of what is no longer watched (a claw deleted, a
        Mini removed) are put up without a word: nothing is left to recover."""
        for state in await self.alerts.open_alerts():
            kind, _, name = state.key.partition(":")
            if kind == "claw" and name not in active:
                await self.alerts.settle(state.key, "the claw is no longer active")
            elif kind == "mini" and name not in minis:
                await self.alerts.settle(state.key, "the Mini left the inventory")

    async def probe(self, mini: Mini) -> Probe:
        """``GET /health`` and ``GET /claws``, together bounded by the timeout; never raises."""
        timeout = self.settings.timeout
        try:
            client = agent_client(mini, self.keyring, timeout=timeout, retries=0)
        except (InputError, RemoteError) as exc:
            return Probe(error=str(exc))
        except Exception as exc:  # a token that cannot be opened (SecretsError, a bad key)
            return Probe(error=f"agent token: {exc}")
        try:
            async with client, asyncio.timeout(timeout):
                health, listed = await asyncio.gather(client.health(), client.list())
        except TimeoutError:
            return Probe(error=f"no answer within {format_duration(timedelta(seconds=timeout))}")
        except RemoteError as exc:
            return Probe(error=_reason(exc, client.base_url))
        return Probe(health=health, claws={c.claw_id: c for c in listed})

    async def _record(
        self, row: Any, mini: Mini, probe: Probe, held: list[Any], flips: list[Flip]
    ) -> MiniRound:
        settings, now = self.settings, utcnow()
        if probe.answered:
            assert probe.health is not None
            hits, misses = row.hits + 1, 0
            reachable = row.reachable or hits >= settings.successes
            values: dict[str, Any] = {
                "hits": hits,
                "misses": 0,
                "reachable": reachable,
                "last_seen": now,
                "agent_version": probe.health.version,
                "health_error": "",
            }
        else:
            hits, misses = 0, row.misses + 1
            reachable = row.reachable and misses < settings.failures
            values = {
                "hits": 0,
                "misses": misses,
                "reachable": reachable,
                "health_error": probe.error[:2000],
            }
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(mac_minis)
                .where(
                    mac_minis.c.id == row.id,
                    mac_minis.c.misses == row.misses,
                    mac_minis.c.hits == row.hits,
                    mac_minis.c.reachable == row.reachable,
                )
                .values(**values)
            )
        outcome = MiniRound(mini.hostname, probe.answered, reachable, probe.error)
        if result.rowcount != 1:
            # Another node recorded this round of this Mini first: it observes it too.
            outcome.claimed, outcome.reachable = False, bool(row.reachable)
            return outcome
        names = [f"{c.org}/{c.slug}" for c in held]
        affected = f"; {len(names)} claw(s) affected: {_names(names)}" if names else ""
        if reachable != bool(row.reachable):
            outcome.flipped = "online" if reachable else "offline"
            log.warning("Mini %s is %s (%s)", mini.hostname, outcome.flipped, probe.error)
        key = mini_key(mini.hostname)
        if not reachable:
            if not probe.answered:  # answering again, not yet ``successes`` times: no verdict
                message = f"{mini.hostname} offline: {probe.error}{affected}"
                await self._observe(key, "critical", message, flips)
            return outcome
        if probe.answered:
            version = probe.health.version if probe.health else "unknown"
            with_claws = f"; {len(names)} claw(s): {_names(names)}" if names else ""
            message = f"{mini.hostname} back online (agent {version}){with_claws}"
            await self._observe(key, "ok", message, flips)
            for claw_row in held:
                state = await self._claw(claw_row, mini, probe, now, flips)
                if state is not None:
                    outcome.claws[f"{claw_row.org}/{claw_row.slug}"] = state
        return outcome

    async def _observe(self, key: str, status: Any, message: str, flips: list[Flip]) -> None:
        flip = await self.alerts.observe(key, status, message)
        if flip is not None:
            flips.append(flip)

    def gateway_state(
        self, row: Any, info: ClawInfo | None, now: datetime
    ) -> tuple[str, str, datetime]:
        """The claw's gateway state, what to say of it and since when (see the module doc)."""
        old, since = row.gateway_state, row.gateway_since or now
        if info is None:
            return "missing", "the agent does not hold it", since if old == "missing" else now
        grew = old is not None and info.restarts > row.gateway_restarts
        if info.status == "crashed" or grew:
            said = f": {info.error}" if info.error else ""
            text = f"restarted {info.restarts} time(s) by its agent, now {info.status}{said}"
            return "restarting", text, since if old == "restarting" else now
        if info.status == "stopped":
            said = f": {info.error}" if info.error else ""
            return "stopped", f"stopped on its agent{said}", since if old == "stopped" else now
        if info.ready:
            return "running", "running", since if old == "running" else now
        started = since if old in ("starting", "handshake") else now
        waited = now - started
        if waited <= self.settings.start_grace:
            return "starting", "starting", started
        said = f": {info.error}" if info.error else ""
        text = f"failing the handshake: not ready for {format_duration(waited)}{said}"
        return "handshake", text, started

    async def _claw(
        self, row: Any, mini: Mini, probe: Probe, now: datetime, flips: list[Flip]
    ) -> str | None:
        info = probe.claws.get(f"claw-{row.id}")
        state, text, since = self.gateway_state(row, info, now)
        restarts = info.restarts if info is not None else row.gateway_restarts
        error = info.error if info is not None else ""
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(claws)
                .where(
                    claws.c.id == row.id,
                    claws.c.status == "active",
                    claws.c.gateway_state.is_not_distinct_from(row.gateway_state),
                    claws.c.gateway_restarts == row.gateway_restarts,
                )
                .values(
                    gateway_state=state,
                    gateway_restarts=restarts,
                    gateway_error=error[:2000],
                    gateway_since=since,
                    checked_at=now,
                )
            )
        if result.rowcount != 1:
            return None  # deleted meanwhile, or another node recorded it first
        key, name = f"claw:{row.org}/{row.slug}", f"{row.org}/{row.slug}"
        if state == "running":
            await self._observe(key, "ok", f"{name} gateway running on {mini.hostname}", flips)
        elif state != "starting":
            message = f"{name} gateway {text} (on {mini.hostname})"
            await self._observe(key, "critical", message, flips)
        return state
