"""The command layer: a command is one small declaration; everything around it happens once.

A command declares its name, help, the role it needs, whether it mutates, and an async handler
that returns a ``Reply``. Parsing, permissions, confirmation, audit, formatting and errors are
done by ``bot.telegram`` for every command alike, so a handler only does its own work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bot.node import Node

Role = Literal["viewer", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "admin": 2}


@dataclass(frozen=True)
class Reply:
    """What a handler answers: HTML text (user-supplied parts escaped with ``bot.format.esc``)."""

    text: str
    # A long plain-text body sent as a file instead of inline (logs, say): (filename, content).
    document: tuple[str, bytes] | None = None
    # Link buttons under the reply (its first message): (label, https URL) pairs, one a row.
    links: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Invocation:
    """Who asked for what, where."""

    command: str
    args: tuple[str, ...]
    user_id: int
    username: str | None
    chat_id: int
    chat_type: str
    role: Role

    @property
    def args_text(self) -> str:
        return " ".join(self.args)


async def _no_progress(text: str) -> None:
    """Progress goes nowhere (a check, a test calling a handler directly)."""


@dataclass(frozen=True)
class Context:
    """What a handler gets: the invocation, the node it runs on, and a way to say how far a long
    command has come: ``await ctx.progress("3/5 machines")`` shows (edits) one working message
    in the chat; the final reply replaces it."""

    inv: Invocation
    node: Node
    progress: Callable[[str], Awaitable[None]] = _no_progress


Handler = Callable[[Context], Awaitable[Reply]]
# Validates a mutating command's arguments before its confirmation is asked (raises UsageError
# or a ClawopsError); the handler still validates again when it runs.
Check = Callable[[Context], Awaitable[None]]
# For a viewer command with mutating subcommands (``/failover yield``): True for the arguments
# that mutate, which then need the admin role and a confirmation like a mutating command.
MutatesWhen = Callable[[tuple[str, ...]], bool]
# For a mutating command: HTML that says what exactly will change (the pids a /kill ends), shown
# in its confirmation question. Runs after ``check`` passed; it answers, it does not raise.
Describe = Callable[[Context], Awaitable[str]]
# For arguments that need a second confirmation (``/claw delete NAME --force``): the HTML of the
# second question, asked after the first Confirm, else None.
ConfirmAgain = Callable[[tuple[str, ...]], str | None]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Handler
    role: Role = "viewer"
    mutates: bool = False
    usage: str = ""
    private_only: bool = False
    check: Check | None = None
    mutates_when: MutatesWhen | None = None
    describe: Describe | None = None
    confirm_again: ConfirmAgain | None = None

    def mutates_with(self, args: tuple[str, ...]) -> bool:
        return self.mutates or (self.mutates_when is not None and self.mutates_when(args))

    def __post_init__(self) -> None:
        if self.mutates and self.role != "admin":
            raise ValueError(f"/{self.name} mutates, so it must be admin-only")
        if not self.name.isidentifier() or self.name.lower() != self.name:
            raise ValueError(f"command name {self.name!r} must be lower-case letters and _")


@dataclass
class Registry:
    commands: dict[str, Command] = field(default_factory=dict)

    def add(self, command: Command) -> Command:
        if command.name in self.commands:
            raise ValueError(f"/{command.name} is registered twice")
        self.commands[command.name] = command
        return command

    def extend(self, commands: Iterable[Command]) -> None:
        for command in commands:
            self.add(command)

    def get(self, name: str) -> Command | None:
        return self.commands.get(name)

    def for_role(self, role: Role) -> list[Command]:
        rank = ROLE_RANK[role]
        return [c for c in self.commands.values() if ROLE_RANK[c.role] <= rank]


def number(text: str) -> int | None:
    """``text`` as a non-negative integer when it is ASCII digits only, else None.

    ``str.isdigit`` also accepts "³" (which ``int`` then refuses) and Arabic-Indic digits (which
    ``int`` accepts): neither is a number a command should act on."""
    return int(text) if text.isascii() and text.isdigit() else None


class UsageError(Exception):
    """A handler's arguments are wrong; the message is shown with the command's usage."""
