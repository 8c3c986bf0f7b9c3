"""Keeping secrets where they belong: private files, child environments, redacted logs.

- ``write_private`` writes a file that is 0600 from its creation and replaced atomically;
  ``private_dir`` makes (or tightens) a directory to 0700.
- ``secret_env_names`` walks the config for every ``*_env`` key: the variables that hold
  secrets. ``child_env`` is the environment a child process gets: this one without those
  variables and without any ``CLAWOPS_*`` one, unless the caller allows a name.
- ``SecretFilter`` redacts known secret values from log records (message, arguments and the
  exception text), so a DEBUG log of request URLs or a traceback never shows the bot token.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote

from pydantic import BaseModel
from sqlalchemy.engine import make_url

MIN_TOKEN = 32  # characters of a bearer token the sidecar and the agent accept
REDACTED = "[redacted]"
# A Telegram bot token's shape (digits, a colon, 30+ URL-safe characters): redacted even when no
# config named it (a token passed by hand, the local Bot API's per-start one).
BOT_TOKEN = re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{30,}")
_MIN_SECRET = 6  # shorter values are not redacted: they would blank out ordinary words

log = logging.getLogger("clawops.secrets")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by this user only from the first byte on."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> Path:
    """Create ``path`` as 0700, or tighten it to 0700 (logging that) when others could read it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o700)
        log.warning("data dir %s was mode %o; tightened to 700", path, mode)
    return path


def private_file(path: Path) -> None:
    """Tighten an existing file to 0600 (no-op when it is missing or already private)."""
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass


def secret_env_names(model: BaseModel) -> frozenset[str]:
    """The variable named by every ``*_env`` field anywhere in ``model`` (a config)."""
    names: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, BaseModel):
            for field in type(value).model_fields:
                item = getattr(value, field)
                if field.endswith("_env") and isinstance(item, str) and item:
                    names.add(item)
                else:
                    walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model)
    return frozenset(names)


def child_env(
    secret_names: Iterable[str],
    allow: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """This process's environment minus the secret variables and every ``CLAWOPS_*`` one,
    except the names in ``allow``."""
    source = os.environ if environ is None else environ
    hidden = set(secret_names)
    allowed = set(allow)
    return {
        name: value
        for name, value in source.items()
        if name in allowed or (name not in hidden and not name.startswith("CLAWOPS_"))
    }


class SecretFilter(logging.Filter):
    """Replaces every known secret value in a record with ``[redacted]``.

    Install it on the root logger's handlers (a filter on a logger does not see records of its
    children). Values are added with ``add`` as they become known (the local Bot API's token is
    made at start)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        super().__init__()
        self.values: set[str] = set()
        for value in values:
            self.add(value)

    def add(self, value: str | None) -> None:
        if value and len(value) >= _MIN_SECRET:
            self.values.add(value)

    def redact(self, text: str) -> str:
        # Longest first, so a secret containing another is redacted whole.
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        return BOT_TOKEN.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format: keep them raw
            message = f"{record.msg} {record.args}"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def private_database_files(url: str) -> None:
    """A SQLite database file (and its journal, -wal and -shm files) readable by this user only;
    SQLite gives the files it creates later the database file's mode. Other URLs: nothing."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    for suffix in ("", "-journal", "-wal", "-shm"):
        private_file(Path(f"{parsed.database}{suffix}"))


def secret_values(model: BaseModel, environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secret variables the config names, and the password of any database
    URL among them or in the config itself (so it is redacted wherever the URL is not)."""
    source = os.environ if environ is None else environ
    values = [source[name] for name in secret_env_names(model) if source.get(name)]
    urls = [*values, str(getattr(getattr(model, "database", None), "url", None) or "")]
    return values + [p for url in urls for p in url_passwords(url)]


def url_passwords(url: str) -> list[str]:
    """The password of a URL like ``postgresql://user:PASSWORD@host/db``, as written and
    percent-decoded (empty if it has none)."""
    found = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:([^/]*)@", url.strip())
    if found is None or not found.group(1):
        return []
    return list(dict.fromkeys((found.group(1), unquote(found.group(1)))))


# user:PASSWORD@ after an optional scheme:// (a URL missing its scheme still has a password).
_URL_PASSWORD = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^:/@\s'\"]*:)([^/\s'\"]*)@")


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)
