"""``clawops minis …`` and ``clawops secrets …``: the claws inventory and its keys (SPEC 1, 6)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.config import LoadedConfig, load_config
from core.crypto import Keyring, generate_key
from core.db import Database
from core.errors import InputError, StartupRefused
from core.minis import Mini, Minis
from core.provision import rotate_secrets

T = TypeVar("T")
AGENT_TIMEOUT = 10.0  # seconds `minis add` waits for the agent's /health


async def _with_db(loaded: LoadedConfig, work: Callable[[Database], Awaitable[T]]) -> T:
    """Open the configured database (brought up to date on SQLite, checked on PostgreSQL)."""
    from bot.node import head_revision

    db = loaded.open_database()
    try:
        if db.dialect == "sqlite":
            await db.upgrade()
        if await db.revision() != head_revision():
            raise StartupRefused("the database is not up to date: run `clawops db upgrade`")
        return await work(db)
    finally:
        await db.close()


def _run(args: argparse.Namespace, work: Callable[[Database], Awaitable[T]]) -> T:
    return asyncio.run(_with_db(load_config(args.config), work))


def _keyring_if_set(loaded: LoadedConfig) -> Keyring | None:
    import os

    env = loaded.config.claws.secret_key_env
    return Keyring.from_env(env) if os.environ.get(env) else None


def _line(mini: Mini) -> str:
    where = f", tunnel *.{mini.tunnel_suffix}" if mini.tunnel_suffix else f", {mini.address}"
    unreachable = "" if mini.reachable else f"; agent not reachable {mini.health_error}"
    return (
        f"{mini.hostname}: {mini.status}, {mini.used}/{mini.capacity} claws, "
        f"ports {mini.ports}, agent {mini.agent_url}{where}{unreachable}".rstrip()
    )


async def _add(args: argparse.Namespace, minis: Minis, token: str | None) -> list[str]:
    """Ask the agent first (unless ``--offline``): nothing is saved when it cannot answer."""
    fields: dict[str, Any] = dict(
        ports=args.ports,
        capacity=args.capacity,
        agent_token_env=args.agent_token_env,
        agent_token=token,
        tunnel_suffix=args.tunnel_suffix,
        gateway_host=args.gateway_host,
    )
    if args.offline:
        mini = await minis.add(args.hostname, args.agent_url, reachable=False, **fields)
        return [
            f"added {_line(mini)}",
            "not contacted (--offline): it takes no claw until the claws_health job has seen "
            "its agent answer",
        ]
    health = await minis.verify(args.hostname, args.agent_url, timeout=AGENT_TIMEOUT, **fields)
    mini = await minis.add(args.hostname, args.agent_url, health=health, **fields)
    lines = [
        f"added {_line(mini)}",
        f"agent {health.version}: capacity {health.capacity}, {health.claws} claw(s) running, "
        f"ports {health.port_range or 'not said'}",
    ]
    if args.capacity > health.capacity:
        lines.append(
            f"warning: --capacity {args.capacity} is more than the agent's max_claws "
            f"({health.capacity}): it will refuse claws beyond that"
        )
    if health.port_range and not _within(mini.port_low, mini.port_high, health.port_range):
        lines.append(
            f"warning: --ports {mini.ports} is outside the agent's port_range "
            f"({health.port_range}): it will refuse those ports"
        )
    return lines


def _within(low: int, high: int, port_range: str) -> bool:
    first, _, last = port_range.partition("-")
    try:
        return int(first) <= low and high <= int(last)
    except ValueError:
        return False


def cmd_minis(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)

    token = None
    if args.minis_command == "add" and args.agent_token_stdin:
        # The token itself, sealed in the database with the claws key (never on argv).
        token = sys.stdin.readline().strip()
        if not token:
            raise InputError("--agent-token-stdin: nothing was read from standard input")

    async def work(db: Database) -> list[str]:
        env = loaded.config.claws.secret_key_env
        minis = Minis(db, Keyring.from_env(env) if token else _keyring_if_set(loaded))
        if args.minis_command == "add":
            return await _add(args, minis, token)
        if args.minis_command == "drain":
            return [f"draining {_line(await minis.drain(args.hostname))}"]
        if args.minis_command == "online":
            return [f"online {_line(await minis.undrain(args.hostname))}"]
        if args.minis_command == "remove":
            await minis.remove(args.hostname)
            return [f"removed {args.hostname}"]
        return [_line(m) for m in await minis.list()] or ["no Mac Minis yet"]

    for line in asyncio.run(_with_db(loaded, work)):
        print(line)
    return 0


def cmd_secrets(args: argparse.Namespace) -> int:
    if args.secrets_command == "generate":
        print(generate_key())
        return 0
    loaded = load_config(args.config)
    keyring = Keyring.from_env(loaded.config.claws.secret_key_env)

    async def work(db: Database) -> int:
        return await rotate_secrets(db, keyring)

    changed = asyncio.run(_with_db(loaded, work))
    print(f"re-encrypted {changed} secret(s) with key {keyring.current}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                common: argparse.ArgumentParser) -> None:  # fmt: skip
    minis = sub.add_parser("minis", help="the Mac Mini inventory for claws")
    minis_sub = minis.add_subparsers(dest="minis_command", required=True, metavar="COMMAND")
    add = minis_sub.add_parser("add", parents=[common], help="add a Mac Mini")
    add.add_argument("hostname")
    add.add_argument("--agent-url", required=True, help="the Mini agent's URL")
    token = add.add_mutually_exclusive_group(required=True)
    token.add_argument("--agent-token-env", metavar="NAME",
                       help="environment variable holding the agent's token")  # fmt: skip
    token.add_argument("--agent-token-stdin", action="store_true",
                       help="read the token from stdin and store it encrypted")  # fmt: skip
    add.add_argument("--ports", required=True, help="port range for gateways, e.g. 3001-3100")
    add.add_argument("--capacity", required=True, type=int, help="most claws on this Mini")
    add.add_argument("--tunnel-suffix", help="claw-<id>-<suffix> is each claw's hostname")
    add.add_argument("--gateway-host", help="address of the gateways when there is no tunnel")
    add.add_argument(
        "--offline",
        action="store_true",
        help="add it without contacting its agent (takes no claw until it answers)",
    )
    for verb, text in (("drain", "take no new claws"), ("online", "take claws again"),
                       ("remove", "forget a Mini that holds no claw")):  # fmt: skip
        one = minis_sub.add_parser(verb, parents=[common], help=text)
        one.add_argument("hostname")
    minis_sub.add_parser("list", parents=[common], help="list the Minis")
    minis.set_defaults(func=cmd_minis)

    secrets = sub.add_parser("secrets", help="the encryption keys of claws secrets")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")
    secrets_sub.add_parser("generate", help="print a new random key")
    secrets_sub.add_parser("rotate", parents=[common],
                           help="re-encrypt every secret with the current (first) key")  # fmt: skip
    secrets.set_defaults(func=cmd_secrets)
