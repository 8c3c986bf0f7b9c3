"""``clawops with RESOURCE -- COMMAND...`` (the seed's with-ollama.sh) and
``clawops account limited NAME --until TIME``: clients of the sidecar's resources API.

``with`` joins the queue, prints its place while it waits, runs the command as a child while a
thread heartbeats the lease every TTL/3, and releases the lease however it ends: the command's
exit code is passed through; a command that cannot start is 127 (126 if not executable); Ctrl-C
or SIGTERM is forwarded to the child, then the lease released and 128+signal returned; giving
up after --timeout is 75 (EX_TEMPFAIL).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import httpx

from core.config import load_config
from core.durations import parse_duration

TIMED_OUT = 75
POLL = 0.2


class Api:
    def __init__(self, args: argparse.Namespace) -> None:
        config = load_config(args.config).config
        host = config.sidecar.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
        self.url = args.url or f"http://{host}:{config.sidecar.port}"
        token = config.sidecar_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=15)

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        response = self.client.post(path, json=body or {})
        try:
            answer = response.json()
        except ValueError:
            answer = {"error": response.text.strip()[:200]}
        return response.status_code, answer if isinstance(answer, dict) else {"error": answer}


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _fail(what: str, status: int, answer: dict[str, Any]) -> int:
    print(f"clawops with: {what}: {status}: {answer.get('error', answer)}", file=sys.stderr)
    return 1


def _options(args: argparse.Namespace) -> list[str]:
    """Split ``[OPTIONS] -- COMMAND`` after RESOURCE (argparse's REMAINDER takes both)."""
    rest = list(args.cmd)
    if rest and rest[0] == "--":
        return rest[1:]
    if not rest or not rest[0].startswith("-"):
        return rest
    if "--" not in rest:
        raise SystemExit("clawops with: put the command after --")
    cut = rest.index("--")
    options = argparse.ArgumentParser(prog="clawops with", add_help=False)
    options.add_argument("--who")
    options.add_argument("--timeout", type=float)
    options.add_argument("--url")
    options.add_argument("--config")
    for key, value in vars(options.parse_args(rest[:cut])).items():
        if value is not None:
            setattr(args, key, value)
    return rest[cut + 1 :]


def cmd_with(args: argparse.Namespace) -> int:
    command = _options(args)
    if not command:
        print("clawops with: give the command after --", file=sys.stderr)
        return 2
    try:
        api = Api(args)
        return _run_with(api, args, command)
    except httpx.HTTPError as exc:
        print(f"clawops with: cannot reach the sidecar: {exc}", file=sys.stderr)
        return 1


def _run_with(api: Api, args: argparse.Namespace, command: list[str]) -> int:
    who = args.who or f"{os.environ.get('USER', 'someone')}@{os.uname().nodename}:{os.getpid()}"
    status, answer = api.post(f"/api/resources/{args.resource}/enqueue", {"who": who})
    if status != 201:
        return _fail(f"cannot queue for {args.resource}", status, answer)
    lease, ttl = str(answer["lease"]), float(answer["ttl"])
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    child: subprocess.Popen[bytes] | None = None
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if child is None:
            raise Interrupted(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    stop = threading.Event()
    try:
        if not _wait_turn(api, args, lease):
            return TIMED_OUT if not received else 128 + received[0]
        beat = threading.Thread(target=_heartbeat, args=(api, lease, ttl / 3, stop), daemon=True)
        beat.start()
        try:
            child = subprocess.Popen(command)
        except FileNotFoundError:
            print(f"clawops with: {command[0]}: command not found", file=sys.stderr)
            return 127
        except PermissionError:
            print(f"clawops with: {command[0]}: not executable", file=sys.stderr)
            return 126
        code = child.wait()
        if received:
            return 128 + received[0]
        return code if code >= 0 else 128 - code
    except Interrupted as exc:
        return 128 + exc.signum
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            api.post(f"/api/leases/{lease}/release")
        except httpx.HTTPError as exc:
            print(f"clawops with: could not release {lease} ({exc}); it expires", file=sys.stderr)


def _wait_turn(api: Api, args: argparse.Namespace, lease: str) -> bool:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    shown = None
    while True:
        status, answer = api.post(f"/api/leases/{lease}/poll")
        if status != 200:
            _fail("lost the place in the queue", status, answer)
            return False
        if answer.get("held"):
            if shown is not None:
                print(f"got {args.resource}", file=sys.stderr)
            return True
        if answer.get("place") != shown:
            shown = answer.get("place")
            print(f"waiting for {args.resource}: place {shown}", file=sys.stderr, flush=True)
        if deadline is not None and time.monotonic() >= deadline:
            print(f"clawops with: no slot of {args.resource} within {args.timeout:g} s",
                  file=sys.stderr)  # fmt: skip
            return False
        time.sleep(POLL)


def _heartbeat(api: Api, lease: str, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            status, answer = api.post(f"/api/leases/{lease}/heartbeat")
        except httpx.HTTPError:
            continue  # the sidecar restarts; the next beat may still be in time
        if status == 404:
            print(f"clawops with: the lease was lost: {answer.get('error')}", file=sys.stderr)
            return


def parse_until(text: str, now: datetime | None = None) -> datetime:
    """An ISO time (no zone: local time) or a duration from now like ``45m``."""
    now = now or datetime.now(UTC)
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO time (2026-01-29T15:00Z) nor a duration (45m)"
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


def cmd_account_limited(args: argparse.Namespace) -> int:
    try:
        until = parse_until(args.until)
    except ValueError as exc:
        print(f"clawops account limited: {exc}", file=sys.stderr)
        return 2
    try:
        api = Api(args)
        status, answer = api.post(
            f"/api/accounts/{args.name}/limited", {"until": until.astimezone(UTC).isoformat()}
        )
    except httpx.HTTPError as exc:
        print(f"clawops account limited: cannot reach the sidecar: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"clawops account limited: {status}: {answer.get('error')}", file=sys.stderr)
        return 1
    print(f"{args.name} limited until {until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC; "
          f"mode: {answer.get('mode')}")  # fmt: skip
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    run = sub.add_parser(
        "with", parents=[common], help="run a command holding a slot of a shared resource",
        usage="clawops with RESOURCE [--who NAME] [--timeout S] -- COMMAND...",
    )  # fmt: skip
    run.add_argument("resource", metavar="RESOURCE")
    run.add_argument("--who", help="who holds the slot (default: user@host:pid)")
    run.add_argument("--timeout", type=float, help="give up waiting after S seconds (exit 75)")
    run.add_argument("--url", help="sidecar URL (default: from the config)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    run.set_defaults(func=cmd_with)

    account = sub.add_parser("account", help="LLM accounts (rate limits)")
    account_sub = account.add_subparsers(dest="account_command", required=True, metavar="COMMAND")
    limited = account_sub.add_parser(
        "limited", parents=[common], help="report that an account is rate limited"
    )
    limited.add_argument("name", metavar="NAME")
    limited.add_argument("--until", required=True, help="ISO time, or a duration like 45m")
    limited.add_argument("--url", help="sidecar URL (default: from the config)")
    limited.set_defaults(func=cmd_account_limited)
