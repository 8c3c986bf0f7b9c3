"""The environment file a service reads its secrets from (``clawops service install``).

launchd has no EnvironmentFile: the plist carries only ``CLAWOPS_ENV_FILE`` and ``clawops``
loads that file itself at start (``load_env_file``); systemd reads the same file through
``EnvironmentFile=``. So the file is written in the subset of systemd's format that both read
the same way, and our parser refuses anything outside it rather than guess:

- one ``NAME=VALUE`` per line; blank lines and lines starting with ``#`` or ``;`` are ignored;
- VALUE is empty, plain (no quote, backslash or leading/trailing space), ``'single quoted'``
  (no ``'`` inside), or ``"double quoted"`` where ``\\"``, ``\\\\``, ``\\` `` and ``\\$`` stand
  for the character and any other backslash stays as it is (systemd's rule);
- no value spans lines: a line break in a secret is refused when writing.

systemd accepts more (quotes glued to text, continuation lines); we refuse those with the line
number and never the value, since the line may hold a secret.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from core.errors import ConfigError, InstallError, Problem

ENV_FILE_VAR = "CLAWOPS_ENV_FILE"
MASK = "***"  # what --dry-run shows instead of a secret value
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN = re.compile(r"[^\s'\"\\]+(?:[ \t]+[^\s'\"\\]+)*\Z")
_DOUBLE_ESCAPED = '"\\`$'  # systemd's SHELL_NEED_ESCAPE


def quote(value: str) -> str:
    """``value`` as systemd and ``parse_env`` both read it back unchanged.

    Single quotes unless the value holds one; then double quotes with systemd's escapes."""
    if "'" not in value:
        return f"'{value}'"
    escaped = "".join(f"\\{c}" if c in _DOUBLE_ESCAPED else c for c in value)
    return f'"{escaped}"'


def render_env(values: Mapping[str, str], header: str = "", masked: bool = False) -> str:
    """The file's text; ``masked`` shows ``***`` for every value (for --dry-run)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, value in values.items():
        if not NAME.match(name):
            raise InstallError(f"{name!r} is not a valid environment variable name")
        if any(c in value for c in "\n\r\0"):
            raise InstallError(
                f"{name} holds a line break (or NUL): an environment file cannot carry it. "
                "Nothing was written."
            )
        lines.append(f"{name}={quote(MASK if masked else value)}")
    return "\n".join(lines) + "\n"


def parse_env(text: str, source: str = "") -> dict[str, str]:
    """``NAME -> value`` from the file's text; ConfigError naming every bad line (never its text,
    which may hold a secret)."""
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").lstrip(" \t")
        if not line or line[0] in "#;":
            if line.endswith("\\"):  # older systemd continues such a comment onto the next line
                problems.append(Problem(f"line {number}", "a comment must not end with \\"))
            continue
        name, sep, rest = line.partition("=")
        if not sep or not NAME.match(name):
            problems.append(Problem(f"line {number}", "not NAME=VALUE (NAME: letters, digits, _)"))
            continue
        value = _value(rest.lstrip(" \t"))
        if value is None:
            problems.append(
                Problem(
                    f"line {number}",
                    f"the value of {name} is not plain, 'single' or \"double\" quoted text "
                    "on one line",
                )
            )
            continue
        values[name] = value
    if problems:
        raise ConfigError(problems, source)
    return values


def _value(text: str) -> str | None:
    text = text.rstrip(" \t")
    if not text:
        return ""
    if text[0] == "'":
        inner = text[1:-1]
        return inner if len(text) >= 2 and text[-1] == "'" and "'" not in inner else None
    if text[0] == '"':
        return _double(text)
    return text if _PLAIN.match(text) else None


def _double(text: str) -> str | None:
    out: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out) if i == len(text) - 1 else None
        if c == "\\":
            if i + 1 >= len(text):
                return None  # a continuation line: refused
            nxt = text[i + 1]
            out.append(nxt if nxt in _DOUBLE_ESCAPED else f"\\{nxt}")
            i += 2
            continue
        out.append(c)
        i += 1
    return None


def read_env_file(path: Path) -> tuple[dict[str, str], int]:
    """The variables of an env file and its permission bits (no check of them)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError([Problem("", "not a regular file")], str(path))
        data = handle.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(f"line {line}", "not UTF-8")], str(path)) from None
    return parse_env(text, str(path)), stat.S_IMODE(info.st_mode)


def load_env_file(path: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Put the file's variables into ``environ`` (default ``os.environ``) without replacing any
    already there; the names set. Refused, changing nothing, when the file is missing, a symlink,
    readable or writable by group/others, or malformed.

    The mode is checked on the opened file, so a swap between check and read changes nothing."""
    target = os.environ if environ is None else environ
    try:
        values, mode = read_env_file(path)
    except FileNotFoundError:
        problem = f"{ENV_FILE_VAR} names {path}, which does not exist"
        raise ConfigError([Problem("", problem)], str(path)) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if os.path.islink(path):
            reason = "it is a symlink (the env file must be a regular file)"
        raise ConfigError([Problem("", f"cannot read it: {reason}")], str(path)) from None
    if mode & 0o077:
        raise ConfigError(
            [
                Problem(
                    "",
                    f"it is mode {mode:04o}: group/others may read these secrets; "
                    f"run `chmod 600 {path}` (and rotate them if others could read them)",
                )
            ],
            str(path),
        )
    loaded = [name for name in values if name not in target]
    for name in loaded:
        target[name] = values[name]
    return loaded
