"""``clawops status [--json]``: the running node's status, asked of its sidecar, as tables.

The answer of ``GET /api/status`` is read once into typed rows (``NodeStatus``); an answer of
another shape (another clawops version, another server on the port) is a ``RemoteError`` that
names the first field that does not fit, never a traceback. The request is bounded as a whole
by ``--timeout``: a sidecar that accepts and then says nothing cannot hold the command.

    clawops status: no node answers at URL ...      connection refused (nothing listens)
    clawops status: ... did not answer within S s   accepted, silent
    clawops status: ... refused the token in NAME   401: the token is wrong or missing
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from core.config import Config, load_config
from core.errors import ClawopsError, RemoteError, Unreachable

DEFAULT_TIMEOUT = 10.0
DETAIL_WIDTH = 60  # characters of a service's detail or an alert's message shown in a cell


def sidecar_url(config: Config) -> str:
    """The URL a client on this machine reaches the configured sidecar at."""
    host = config.sidecar.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.sidecar.port}"


def sidecar_headers(config: Config) -> dict[str, str]:
    """The bearer token header when the config names a token and it is set."""
    token = config.sidecar_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- the answer, typed ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineRow:
    name: str
    os: str
    reachable: bool | None  # None: not checked yet
    error: str


@dataclass(frozen=True)
class ServiceRow:
    name: str
    machine: str
    manager: str
    port: int | None
    healthy: bool | None  # None: not checked (yet) or skipped
    state: str | None
    detail: str


@dataclass(frozen=True)
class JobRow:
    id: str
    next_run: datetime | None  # None: paused


@dataclass(frozen=True)
class AlertRow:
    key: str
    since: datetime | None
    message: str


@dataclass(frozen=True)
class NodeStatus:
    node: str
    role: str
    telegram: str
    failover: str
    checked_at: datetime | None
    machines: list[MachineRow]
    services: list[ServiceRow]
    jobs: list[JobRow]
    alerts: list[AlertRow]


def _wrong(what: str) -> RemoteError:
    return RemoteError(f"its answer is not a clawops status: {what} (another clawops version?)")


def _take(obj: Mapping[str, Any], key: str, kind: Any, where: str, *, null: bool = False) -> Any:
    if key not in obj:
        raise _wrong(f"{where}{key} is missing")
    value = obj[key]
    if value is None and null:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _wrong(f"{where}{key} is {json.dumps(value)[:40]}, not a {kind.__name__}")
    return value


def _items(obj: Mapping[str, Any], key: str) -> list[tuple[str, Mapping[str, Any]]]:
    items = _take(obj, key, list, "")
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise _wrong(f"{key}[{n}] is not an object")
    return [(f"{key}[{n}].", item) for n, item in enumerate(items)]


def _time(obj: Mapping[str, Any], key: str, where: str) -> datetime | None:
    text = _take(obj, key, str, where, null=True)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _wrong(f"{where}{key} is {text[:40]!r}, not a time") from None


def parse_status(answer: object) -> NodeStatus:
    """The typed status of an /api/status answer; a RemoteError names the first field amiss."""
    if not isinstance(answer, dict):
        raise _wrong("it is not a JSON object")
    failover = _take(answer, "failover", dict, "")
    state = str(failover.get("state", "?"))
    if failover.get("active"):
        state += ", active"
    if failover.get("polling"):
        state += ", polling"
    return NodeStatus(
        node=_take(answer, "node", str, ""),
        role=_take(answer, "role", str, ""),
        telegram=_take(answer, "telegram", str, ""),
        failover=state,
        checked_at=_time(answer, "checked_at", ""),
        machines=[
            MachineRow(
                name=_take(m, "name", str, w),
                os=_take(m, "os", str, w),
                reachable=_take(m, "reachable", bool, w, null=True),
                error=_take(m, "error", str, w, null=True) or "",
            )
            for w, m in _items(answer, "machines")
        ],
        services=[
            ServiceRow(
                name=_take(s, "name", str, w),
                machine=_take(s, "machine", str, w),
                manager=_take(s, "manager", str, w),
                port=_take(s, "port", int, w, null=True),
                healthy=_take(s, "healthy", bool, w, null=True),
                state=_take(s, "state", str, w, null=True),
                detail=_take(s, "detail", str, w, null=True) or "",
            )
            for w, s in _items(answer, "services")
        ],
        jobs=[
            JobRow(id=_take(j, "id", str, w), next_run=_time(j, "next_run", w))
            for w, j in _items(answer, "jobs")
        ],
        alerts=[
            AlertRow(
                key=_take(a, "key", str, w),
                since=_time(a, "since", w),
                message=_take(a, "message", str, w, null=True) or "",
            )
            for w, a in _items(answer, "alerts")
        ],
    )


# -- rendering ------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A boxed table, like ``pm2 list``'s."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def rule(left: str, middle: str, right: str) -> str:
        return left + middle.join("─" * (w + 2) for w in widths) + right

    def cells(values: Sequence[str]) -> str:
        return "│" + "│".join(f" {v:<{w}} " for v, w in zip(values, widths, strict=True)) + "│"

    return [
        rule("┌", "┬", "┐"),
        cells(headers),
        rule("├", "┼", "┤"),
        *(cells(row) for row in rows),
        rule("└", "┴", "┘"),
    ]


def _mark(flag: bool | None) -> str:
    return "?" if flag is None else "✓" if flag else "✗"


def _short(text: str, width: int = DETAIL_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _ago(seconds: float) -> str:
    """A span in at most two units: 45s, 3m, 1h59m, 2d3h."""
    seconds = int(abs(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for n, (unit, size) in enumerate(units[:-1]):
        if seconds >= size:
            smaller, small = units[n + 1]
            rest = (seconds % size) // small
            return f"{seconds // size}{unit}" + (f"{rest}{smaller}" if rest and small > 1 else "")
    return f"{seconds}s"


def _when(moment: datetime | None, now: datetime, none: str) -> str:
    if moment is None:
        return none
    local = moment.astimezone()
    delta = (moment - now).total_seconds()
    relative = f"in {_ago(delta)}" if delta >= 0 else f"{_ago(delta)} ago"
    return f"{local:%Y-%m-%d %H:%M:%S} ({relative})"


def render(status: NodeStatus, now: datetime) -> list[str]:
    """The tables ``clawops status`` prints (``now`` is aware: times are shown relative to it)."""
    checked = _when(status.checked_at, now, "not yet")
    lines = [
        f"node {status.node} · role {status.role} · telegram {status.telegram} · "
        f"failover {status.failover} · checked {checked}",
    ]

    def section(title: str, headers: Sequence[str], rows: list[list[str]]) -> None:
        lines.append("")
        if not rows:
            lines.append(f"{title}: none")
            return
        lines.append(f"{title}:")
        lines.extend(table(headers, rows))

    section(
        "machines",
        ("name", "os", "reachable", "error"),
        [[m.name, m.os, _mark(m.reachable), _short(m.error)] for m in status.machines],
    )
    section(
        "services",
        ("name", "machine", "manager", "port", "health", "state", "detail"),
        [
            [
                s.name,
                s.machine,
                s.manager,
                "" if s.port is None else str(s.port),
                _mark(s.healthy),
                s.state or "",
                _short(s.detail),
            ]
            for s in status.services
        ],
    )
    section(
        "jobs",
        ("id", "next run"),
        [[j.id, _when(j.next_run, now, "paused")] for j in status.jobs],
    )
    section(
        "open alerts",
        ("key", "since", "message"),
        [[a.key, _when(a.since, now, "?"), _short(a.message)] for a in status.alerts],
    )
    return lines


# -- asking the sidecar ---------------------------------------------------------------------------


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _get(url: str, headers: Mapping[str, str], timeout: float) -> httpx.Response:
    async with asyncio.timeout(timeout):  # the whole request, however the server trickles
        async with httpx.AsyncClient(timeout=timeout) as client:
            return await client.get(url, headers=headers)


def fetch_status(url: str, config: Config, timeout: float) -> object:
    """The JSON of ``GET {url}/api/status``; Unreachable or RemoteError say what went wrong."""
    try:
        response = asyncio.run(_get(f"{url}/api/status", sidecar_headers(config), timeout))
    except (TimeoutError, httpx.TimeoutException):
        raise Unreachable(f"the sidecar at {url} did not answer within {timeout:g} s") from None
    except httpx.ConnectError as exc:
        if _refused(exc):
            raise Unreachable(f"no node answers at {url} (is `clawops run` running?)") from None
        raise Unreachable(f"cannot reach the sidecar at {url}: {exc}") from None
    except httpx.HTTPError as exc:
        raise Unreachable(f"the sidecar at {url} failed: {exc or type(exc).__name__}") from None
    if response.status_code == 401:
        raise RemoteError(_token_problem(url, config))
    try:
        answer = response.json()
    except ValueError:
        raise RemoteError(
            f"{url} answered {response.status_code} with something that is not JSON: "
            f"{_short(response.text, 80)!r} (is it a clawops sidecar?)"
        ) from None
    if response.status_code != 200:
        error = answer.get("error", answer) if isinstance(answer, dict) else answer
        raise RemoteError(f"{url} answered {response.status_code}: {_short(str(error), 200)}")
    return answer


def _token_problem(url: str, config: Config) -> str:
    name = config.sidecar.token_env
    if name is None:
        return (
            f"the sidecar at {url} wants a token and this config names none: set "
            "sidecar.token_env (as in the node's config) and that variable"
        )
    if config.sidecar_token() is None:
        return f"the sidecar at {url} wants a token: {name} is not set here"
    return f"the sidecar at {url} refused the token in {name}: it is not the node's token"


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config).config
    url = (args.url or sidecar_url(config)).rstrip("/")
    try:
        answer = fetch_status(url, config, args.timeout)
    except ClawopsError as exc:
        print(f"clawops status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return 0
    try:
        status = parse_status(answer)
    except RemoteError as exc:
        print(f"clawops status: {url}/api/status answered, but {exc}", file=sys.stderr)
        return 1
    for line in render(status, datetime.now().astimezone()):
        print(line)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 3600]")
    return value


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    status = sub.add_parser(
        "status", parents=[common], help="the running node's status (asks its sidecar)"
    )
    status.add_argument("--json", action="store_true", help="print the JSON as the node sent it")
    status.add_argument("--url", help="sidecar URL (default: from the config)")
    status.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT:g})",
    )
    status.set_defaults(func=cmd_status)
