"""``clawops``: the one entry point (SPEC section 1)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from core.config import LoadedConfig, load_config, startup_refusals
from core.envfile import ENV_FILE_VAR, load_env_file
from core.errors import ClawopsError, ConfigError, InputError
from core.logs import configure_logging
from core.secrets import SecretFilter, secret_values
from core.statuslog import STATUSES
from core.version import clawops_version

log = logging.getLogger("clawops")
# On every log handler: the secrets of the config loaded (and anything shaped like a bot token)
# are redacted from messages and tracebacks, at any log level.
SECRET_FILTER = SecretFilter()


def _load(args: argparse.Namespace) -> LoadedConfig:
    loaded = load_config(args.config)
    for value in secret_values(loaded.config):
        SECRET_FILTER.add(value)
    return loaded


def _redacted_excepthook(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    sys.stderr.write(SECRET_FILTER.redact("".join(traceback.format_exception(kind, value, tb))))


def cmd_run(args: argparse.Namespace) -> int:
    from bot.node import run_node

    asyncio.run(run_node(_load(args)))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = _load(args)
    config = loaded.config
    print(f"config OK: {loaded.source}")
    print(
        f"  node {config.node.name} ({config.node.role}), {len(config.machines)} machine(s), "
        f"{len(config.services)} service(s), {len(config.port_ranges)} port range(s), "
        f"{len(config.jobs.commands)} scheduled command(s), {len(config.checkins)} check-in(s), "
        f"{len(config.orgs)} org(s)"
    )
    print(f"  database: {loaded.database_url.split('@')[-1]}")
    notes = [f"`clawops run` refuses to start here: {r}" for r in startup_refusals(config)]
    if config.telegram_token() is None:
        notes.append(f"{config.telegram.token_env} is not set: Telegram will be off")
    elif problem := config.alert_chat_problem():
        notes.append(problem)
    for note in notes:
        print(f"  note: {note}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:

    loaded = _load(args)

    async def upgrade() -> str | None:
        db = loaded.open_database()
        try:
            await db.upgrade()
            return await db.revision()
        finally:
            await db.close()

    revision = asyncio.run(upgrade())
    print(f"database at revision {revision}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from bot.cli_status import sidecar_headers, sidecar_url

    config = _load(args).config
    url = args.url or sidecar_url(config)
    headers = sidecar_headers(config)
    body = {"jobId": args.job_id, "status": args.status, "message": args.message}
    try:
        response = httpx.post(f"{url}/api/log", json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"clawops log: cannot reach the sidecar at {url}: {exc}", file=sys.stderr)
        return 1
    try:
        answer = response.json()
    except json.JSONDecodeError:
        answer = {"error": response.text.strip()[:200]}
    if response.status_code != 201:
        message = answer.get("error", answer) if isinstance(answer, dict) else answer
        print(f"clawops log: {response.status_code}: {message}", file=sys.stderr)
        return 1
    print(answer["id"])
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from bot.chat import CHAT_HISTORY, run_chat
    from bot.node import LOCAL_OPERATOR
    from core.localtelegram import ACCESS_FILE, read_access_file

    loaded = _load(args)
    access = loaded.data_dir / ACCESS_FILE
    try:
        url, secret = read_access_file(access)
    except (OSError, ValueError) as exc:
        reason = "it does not exist" if isinstance(exc, FileNotFoundError) else exc
        print(
            f"clawops chat: cannot read {access} ({reason}). Is `clawops run` running with this "
            "config and without a Telegram token? Run chat as the user that runs the node.",
            file=sys.stderr,
        )
        return 1
    user = args.user if args.user is not None else LOCAL_OPERATOR
    chat = args.chat if args.chat is not None else user
    history = loaded.data_dir / CHAT_HISTORY
    return run_chat(args.url or url, secret, user, chat, args.username, args.command, history)


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.main import run

    if args.config is not None:
        raise InputError("`clawops agent` takes its own --config (agent.toml), after `agent`")

    return run(args.agent_config)


def cmd_tokens(args: argparse.Namespace) -> int:
    from alembic.script import ScriptDirectory

    from core.db import alembic_config
    from core.errors import StorageError
    from core.websessions import WebAuth

    loaded = _load(args)

    async def act() -> None:
        db = loaded.open_database()
        try:
            if db.dialect == "sqlite":
                await db.upgrade()  # as `clawops run` does on SQLite
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            current = await db.revision()
            if current != head:
                raise StorageError(
                    f"the database is at revision {current or 'none'}, this clawops needs "
                    f"{head}: run `clawops db upgrade`"
                )
            auth = WebAuth(db)
            if args.tokens_command == "create":
                secret = await auth.create_token(args.user, args.name)
                print(secret)
                print(
                    f"API token {args.name!r} for user {args.user} created. It is shown only "
                    "now; scripts send it as `Authorization: Bearer TOKEN`.",
                    file=sys.stderr,
                )
            elif args.tokens_command == "revoke":
                info = await auth.revoke_token(args.name)
                print(f"revoked API token {info.name!r} (id {info.id}, user {info.user_id})")
            else:
                tokens = await auth.tokens()
                if not tokens:
                    print("no API tokens")
                for t in tokens:
                    used = f"{t.last_used:%Y-%m-%d %H:%M}" if t.last_used else "never"
                    state = "active" if t.active else f"revoked {t.revoked_at:%Y-%m-%d %H:%M}"
                    print(
                        f"{t.id:>4}  {t.name:<24} user {t.user_id:<12} created "
                        f"{t.created_at:%Y-%m-%d %H:%M}  last used {used}  {state}"
                    )
        finally:
            await db.close()

    asyncio.run(act())
    return 0


def build_parser() -> argparse.ArgumentParser:
    config_help = "config file (default: $CLAWOPS_CONFIG, else ./clawops.toml, else built-in)"
    # --config goes before or after the subcommand. The subcommand's has no default (SUPPRESS):
    # a default there would overwrite the value given before; given both, the one after wins.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=config_help)
    parser = argparse.ArgumentParser(
        prog="clawops", description="ChatOps control plane for a small fleet and its claws."
    )
    parser.add_argument("--config", metavar="PATH", help=config_help)
    parser.add_argument("--version", action="version", version=f"clawops {clawops_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the node (bot, scheduler, sidecar)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", parents=[common], help="validate the config")
    check.set_defaults(func=cmd_check_config)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_sub.add_parser("upgrade", parents=[common], help="apply migrations")
    upgrade.set_defaults(func=cmd_db_upgrade)

    post = sub.add_parser("log", parents=[common], help="post a status entry to the sidecar")
    post.add_argument("job_id", metavar="JOB_ID")
    post.add_argument("status", metavar="STATUS", choices=STATUSES)
    post.add_argument("message", metavar="MESSAGE")
    post.add_argument("--url", help="sidecar URL (default: from the config)")
    post.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    post.set_defaults(func=cmd_log)

    chat = sub.add_parser("chat", parents=[common], help="talk to the bot from this terminal")
    chat.add_argument("-c", dest="command", metavar="TEXT", help="send one message and exit")
    chat.add_argument("--user", type=int, help="user id to speak as (default: local operator)")
    chat.add_argument("--chat", type=int, help="chat id (default: the user's private chat)")
    chat.add_argument("--username", default="operator", help="username to speak as")
    chat.add_argument(
        "--url", help="local Bot API URL (default: the one the node wrote in its data dir)"
    )
    chat.set_defaults(func=cmd_chat)

    agent = sub.add_parser("agent", help="run the Mini agent (supervises OpenClaw gateways)")
    agent.add_argument(
        "--config", dest="agent_config", metavar="PATH", required=True, help="agent.toml"
    )
    agent.set_defaults(func=cmd_agent)

    from bot.cli_claws import add_parsers as add_claws_parsers

    add_claws_parsers(sub, common)
    from bot.cli_with import add_parsers as add_with_parsers

    add_with_parsers(sub, common)
    from bot.cli_service import add_parsers as add_service_parsers

    add_service_parsers(sub, common)
    from bot.cli_status import add_parsers as add_status_parsers

    add_status_parsers(sub, common)
    tokens = sub.add_parser("tokens", help="API tokens for scripts (web sign-in)")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")
    create = tokens_sub.add_parser(
        "create", parents=[common], help="make a token (its secret is printed once)"
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--user", type=int, required=True, help="Telegram user id it acts as")
    create.set_defaults(func=cmd_tokens)
    listing = tokens_sub.add_parser("list", parents=[common], help="list tokens (no secrets)")
    listing.set_defaults(func=cmd_tokens)
    revoke = tokens_sub.add_parser("revoke", parents=[common], help="revoke a token")
    revoke.add_argument("name", metavar="NAME", help="its name (or id)")
    revoke.set_defaults(func=cmd_tokens)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    sys.excepthook = _redacted_excepthook
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        if env_file := os.environ.get(ENV_FILE_VAR):  # a service's secrets (clawops service)
            load_env_file(Path(env_file))
        # CLAWOPS_LOG_LEVEL, _FORMAT, _FILE ...: a bad one stops every command before it acts.
        configure_logging(os.environ, filters=[SECRET_FILTER])
        return func(args)
    except ConfigError as exc:
        print(f"clawops: config invalid ({exc.source or 'config'}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except ClawopsError as exc:
        print(f"clawops: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
